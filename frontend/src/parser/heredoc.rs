//! Heredoc markers (`<<EOF`, `<<-"EOF"`, `2<<EOF`) as BuildKit finds them in the
//! arguments of RUN, COPY and ADD, and in an ONBUILD trigger.

use super::Keyword;
use crate::words::{parse_json_array, parse_words};

/// The part of an ONBUILD trigger that may hold heredoc markers, with its byte offset:
/// the arguments of a RUN/COPY/ADD trigger in shell form (a JSON form has none).
pub(super) fn onbuild_heredoc_part(args: &str) -> Option<(&str, usize)> {
    let kw_end = args.find(char::is_whitespace).unwrap_or(args.len());
    if !matches!(Keyword::parse(&args[..kw_end]), Some(Keyword::Run | Keyword::Copy | Keyword::Add)) {
        return None;
    }
    let rest = &args[kw_end..];
    let off = kw_end + (rest.len() - rest.trim_start().len());
    // Skip the trigger's own flags to see whether its command is a JSON array.
    let mut cmd = &args[off..];
    while cmd.starts_with("--") {
        let end = cmd.find(char::is_whitespace).unwrap_or(cmd.len());
        cmd = cmd[end..].trim_start();
    }
    if parse_json_array(cmd).is_some() {
        return None;
    }
    Some((&args[off..], off))
}

/// Heredoc markers in a RUN/COPY/ADD argument string: (byte offset, name, expand, chomp).
/// Words are found as BuildKit does (quote-aware whitespace split), and a word is a
/// marker when it is `[n]<<[-]NAME` with no further `<`.
pub(super) fn heredoc_markers(args: &str, escape: char) -> Vec<(usize, String, bool, bool)> {
    let mut out = Vec::new();
    // Recompute word offsets alongside parse_words' splitting rules.
    let mut offset = 0;
    let words = parse_words(args, escape);
    let mut pending: Option<(usize, bool)> = None; // a bare `<<` / `<<-`: (offset, chomp)
    for w in &words {
        let Some(off) = args.get(offset..).and_then(|r| r.find(w.as_str())).map(|o| o + offset) else { break };
        offset = off + w.len();
        if let Some((at, chomp)) = pending.take() {
            // BuildKit's marker pattern allows blanks between `<<` and the name.
            if let Some((name, expand)) = heredoc_name(w, escape) {
                out.push((at, name, expand, chomp));
            }
            continue;
        }
        let digits = w.find(|c: char| !c.is_ascii_digit()).unwrap_or(w.len());
        match &w[digits..] {
            "<<" => pending = Some((off, false)),
            "<<-" => pending = Some((off, true)),
            _ => {
                if let Some((name, expand, chomp)) = heredoc_word(w, escape) {
                    out.push((off, name, expand, chomp));
                }
            }
        }
    }
    out
}

/// Is this word a heredoc marker? → (name, expand, chomp).
pub(crate) fn heredoc_word(w: &str, escape: char) -> Option<(String, bool, bool)> {
    let digits = w.find(|c: char| !c.is_ascii_digit()).unwrap_or(w.len());
    let r = w[digits..].strip_prefix("<<")?;
    let (chomp, r) = match r.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, r),
    };
    if r.is_empty() || r.contains('<') {
        return None;
    }
    let (name, expand) = heredoc_name(r, escape)?;
    Some((name, expand, chomp))
}

/// A heredoc name as written → (name, expand). Quotes and escapes are removed (a
/// tiny shell unquote); the body is expanded unless part of the name was quoted
/// (an escaped quote is a literal character, not quoting).
fn heredoc_name(r: &str, escape: char) -> Option<(String, bool)> {
    if r.is_empty() || r.contains('<') {
        return None;
    }
    let mut quoted = false;
    let mut name = String::new();
    let mut q: Option<char> = None;
    let mut it = r.chars();
    while let Some(c) = it.next() {
        match q {
            None if c == '"' || c == '\'' => {
                q = Some(c);
                quoted = true;
            }
            Some(x) if c == x => q = None,
            _ if c == escape && q != Some('\'') => {
                if let Some(n) = it.next() {
                    name.push(n);
                }
            }
            _ => name.push(c),
        }
    }
    if name.is_empty() {
        return None;
    }
    Some((name, !quoted))
}
