//! Dockerfile syntax → [`Dockerfile`] AST.
//!
//! Three passes over the physical lines, mirroring BuildKit's parser:
//! 1. parser directives (`# syntax=`, `# escape=`, `# check=`), only at the very top;
//! 2. logical lines: an instruction plus its continuation lines (escape char at end of
//!    line), skipping comment and blank lines inside a continuation;
//! 3. heredoc bodies for RUN/COPY/ADD, read from the physical lines that follow.
//!
//! Each instruction is then checked (keyword, flags, argument shape) and turned into a
//! typed [`Command`]. Values stay unexpanded here: expansion needs ARG/ENV scope, which
//! is the lowering's job. A byte-offset → (line, column) map is kept per logical line so
//! that errors about a flag or word point at the right physical place.

mod heredoc;
mod keyword;

pub(crate) use heredoc::heredoc_word;
use heredoc::{heredoc_markers, onbuild_heredoc_part};
use keyword::FlagKind;
pub use keyword::Keyword;

use crate::error::{Diag, Error, Location};
use crate::suggest;
use crate::words::{json_not_strings, parse_json_array, parse_words, split_ws};
use crate::Heredoc;
use serde::Serialize;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dockerfile {
    pub file_name: String,
    /// The escape character (`\` unless `# escape=` says otherwise).
    pub escape: char,
    pub directives: Vec<Directive>,
    pub instructions: Vec<Instruction>,
    /// Physical lines (BOM and CR stripped), kept to render errors found later.
    pub lines: Vec<String>,
}

/// A parser directive from the top of the file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Directive {
    /// Lower-cased name: `syntax`, `escape` or `check`.
    pub name: String,
    pub value: String,
    pub loc: Location,
}

/// A `--name[=value]` flag; quotes in the value are already removed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flag {
    pub name: String,
    pub value: Option<String>,
    pub loc: Location,
}

/// Exec form (JSON array) or shell form (raw text) of RUN/CMD/ENTRYPOINT/HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum CmdLine {
    Exec(Vec<String>),
    Shell(String),
}

/// A COPY/ADD source: a path (unexpanded) or the n-th heredoc of the instruction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum CopySource {
    Path(String),
    Heredoc(usize),
}

/// The typed arguments of an instruction (unexpanded).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Command {
    From {
        image: String,
        name: Option<String>,
    },
    Run(CmdLine),
    Cmd(CmdLine),
    Entrypoint(CmdLine),
    Copy {
        sources: Vec<CopySource>,
        dest: String,
    },
    Add {
        sources: Vec<CopySource>,
        dest: String,
    },
    Env(Vec<(String, String)>),
    Arg(Vec<(String, Option<String>)>),
    Label(Vec<(String, String)>),
    Expose(Vec<String>),
    Volume(Vec<String>),
    Workdir(String),
    User(String),
    StopSignal(String),
    /// `None` is `HEALTHCHECK NONE`.
    Healthcheck(Option<CmdLine>),
    Shell(Vec<String>),
    OnBuild(String),
    Maintainer(String),
}

/// One instruction with everything the lowering needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instruction {
    pub keyword: Keyword,
    /// Where the keyword is.
    pub loc: Location,
    /// Last physical line of the instruction (heredoc bodies excluded).
    pub end_line: usize,
    /// The logical line: continuation lines joined, trailing whitespace trimmed.
    pub source: String,
    pub flags: Vec<Flag>,
    /// Raw arguments after the flags.
    pub args: String,
    pub args_loc: Location,
    pub heredocs: Vec<Heredoc>,
    pub command: Command,
}

impl Instruction {
    /// The value of a single-valued flag.
    pub fn flag(&self, name: &str) -> Option<&Flag> {
        self.flags.iter().find(|f| f.name == name)
    }

    /// All values of a repeatable flag.
    pub fn flag_values(&self, name: &str) -> Vec<&Flag> {
        self.flags.iter().filter(|f| f.name == name).collect()
    }

    /// A boolean flag: present without value or `=true`.
    pub fn flag_bool(&self, name: &str) -> bool {
        self.flag(name).map(|f| f.value.as_deref().is_none_or(|v| v.eq_ignore_ascii_case("true"))).unwrap_or(false)
    }
}

/// Parse a Dockerfile. `file_name` is only used in locations and messages.
pub fn parse(file_name: &str, text: &str) -> Result<Dockerfile, Error> {
    parse_inner(file_name, text, '\\', true)
}

/// Parse an ONBUILD trigger: no directives, the escape char of the parent file.
pub(crate) fn parse_with_escape(file_name: &str, text: &str, escape: char) -> Result<Dockerfile, Error> {
    parse_inner(file_name, text, escape, false)
}

fn parse_inner(file_name: &str, text: &str, escape: char, directives: bool) -> Result<Dockerfile, Error> {
    let directives_allowed = directives;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines: Vec<String> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l).to_string()).collect();
    if text.ends_with('\n') {
        lines.pop();
    }
    let mut p = Parser { file: file_name.to_string(), lines, escape };
    let (directives, mut i) = if directives { p.directives()? } else { (Vec::new(), 0) };
    let mut instructions = Vec::new();
    while i < p.lines.len() {
        let t = p.lines[i].trim_start();
        if t.is_empty() || t.starts_with('#') {
            i += 1;
            continue;
        }
        let (inst, next) = p.instruction(i)?;
        instructions.push(inst);
        i = next;
    }
    if instructions.is_empty() && directives_allowed {
        let loc = Location { file: p.file.clone(), line: p.lines.len().max(1), column: 1 };
        return Err(p.err(loc, "file with no instructions"));
    }
    Ok(Dockerfile { file_name: p.file, escape: p.escape, directives, instructions, lines: p.lines })
}

/// A logical line with a map back to physical positions.
struct Logical {
    text: String,
    /// (offset in `text`, physical line index, byte column in that line)
    segments: Vec<(usize, usize, usize)>,
}

impl Logical {
    fn push(&mut self, line: usize, col: usize, s: &str) {
        self.segments.push((self.text.len(), line, col));
        self.text.push_str(s);
    }
}

struct Parser {
    file: String,
    lines: Vec<String>,
    escape: char,
}

impl Parser {
    fn loc(&self, line_idx: usize, byte_col: usize) -> Location {
        let text = self.lines.get(line_idx).map(String::as_str).unwrap_or("");
        let col = text.get(..byte_col.min(text.len())).map(|p| p.chars().count()).unwrap_or(0);
        Location { file: self.file.clone(), line: line_idx + 1, column: col + 1 }
    }

    fn loc_in(&self, l: &Logical, offset: usize) -> Location {
        let seg = l.segments.iter().rev().find(|s| s.0 <= offset).copied().unwrap_or((0, 0, 0));
        self.loc(seg.1, seg.2 + (offset - seg.0))
    }

    fn err(&self, loc: Location, message: impl Into<String>) -> Error {
        Error::Syntax(self.diag(loc, message))
    }

    fn diag(&self, loc: Location, message: impl Into<String>) -> Diag {
        let line_text = self.lines.get(loc.line.wrapping_sub(1)).cloned().unwrap_or_default();
        Diag { loc, message: message.into(), line_text }
    }

    /// Parser directives: `# name=value` lines at the very top. Processing stops at the
    /// first line that is not a known directive (a comment, blank line or instruction).
    fn directives(&mut self) -> Result<(Vec<Directive>, usize), Error> {
        let mut out: Vec<Directive> = Vec::new();
        // A first `#!` line is a shebang, not the end of the directives (BuildKit's
        // discardShebang), so an executable Dockerfile can still carry them.
        let mut i = usize::from(self.lines.first().is_some_and(|l| l.starts_with("#!")));
        while i < self.lines.len() {
            let line = &self.lines[i];
            let Some((name, value, vcol)) = split_directive(line) else { break };
            let lname = name.to_ascii_lowercase();
            if !matches!(lname.as_str(), "syntax" | "escape" | "check") {
                break;
            }
            let loc = self.loc(i, line.len() - line.trim_start().len());
            if out.iter().any(|d| d.name == lname) {
                return Err(self.err(loc, format!("only one {lname} parser directive can be used")));
            }
            if lname == "escape" {
                self.escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        let vloc = self.loc(i, vcol);
                        return Err(self.err(vloc, format!("invalid escape token '{value}' does not match ` or \\")));
                    }
                };
            }
            out.push(Directive { name: lname, value, loc });
            i += 1;
        }
        Ok((out, i))
    }

    /// Strip a trailing escape char (plus trailing blanks) and say whether the line
    /// continues.
    ///
    /// As BuildKit's continuation rule (`([^\\])\\[ \t]*$|^\\[ \t]*$`): the final
    /// escape must not itself be escaped, so `ENV C a\\b\\` ends its line.
    fn trim_continuation<'a>(&self, s: &'a str) -> (&'a str, bool) {
        let r = s.trim_end_matches([' ', '\t']);
        match r.strip_suffix(self.escape) {
            Some(body) if !body.ends_with(self.escape) => (body, true),
            _ => (s, false),
        }
    }

    /// Parse the instruction starting at physical line `start`; returns it and the
    /// index of the first line after it (and after its heredoc bodies).
    fn instruction(&self, start: usize) -> Result<(Instruction, usize), Error> {
        let line = &self.lines[start];
        let indent = line.len() - line.trim_start().len();
        let mut l = Logical { text: String::new(), segments: Vec::new() };
        let (body, mut cont) = self.trim_continuation(&line[indent..]);
        l.push(start, indent, body);
        let mut i = start;
        while cont {
            i += 1;
            let Some(next) = self.lines.get(i) else { break };
            let t = next.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let (body, c) = self.trim_continuation(next);
            cont = c;
            l.push(i, 0, body);
        }
        let end_line = i.min(self.lines.len().saturating_sub(1));
        let mut next_line = end_line + 1;
        let trimmed_len = l.text.trim_end().len();
        l.text.truncate(trimmed_len);

        let kw_end = l.text.find(char::is_whitespace).unwrap_or(l.text.len());
        let kw_text = &l.text[..kw_end];
        let loc = self.loc_in(&l, 0);
        let Some(keyword) = Keyword::parse(kw_text) else {
            let names = Keyword::ALL.map(Keyword::as_str);
            let message = suggest::with_suggestion(format!("unknown instruction: {kw_text}"), kw_text, names, false);
            return Err(Error::UnknownInstruction(self.diag(loc, message)));
        };
        let rest_start = kw_end + (l.text.len() - kw_end - l.text[kw_end..].trim_start().len());
        let (flags, args_start) = self.flags(keyword, &l, rest_start)?;
        for f in flags.iter().filter(|f| keyword == Keyword::Run && f.name == "mount") {
            crate::mounts::check_unexpanded(f.value.as_deref().unwrap_or(""))
                .map_err(|m| Error::Flag(self.diag(f.loc.clone(), m)))?;
        }
        let args = l.text[args_start..].to_string();
        let args_loc = self.loc_in(&l, args_start);

        // Where heredoc markers may be: the arguments of RUN/COPY/ADD, or those of the
        // RUN/COPY/ADD an ONBUILD triggers (as BuildKit's canContainHeredoc).
        let marker_text = match keyword {
            Keyword::Run | Keyword::Copy | Keyword::Add => Some((args.as_str(), 0)),
            Keyword::OnBuild => onbuild_heredoc_part(&args),
            _ => None,
        };
        let markers = match marker_text {
            Some((t, off)) => {
                heredoc_markers(t, self.escape).into_iter().map(|(o, n, e, c)| (o + off, n, e, c)).collect()
            }
            None => Vec::new(),
        };
        let mut heredocs = Vec::new();
        // The bodies as written (tabs kept), for the ONBUILD trigger text.
        let mut raw_bodies = Vec::new();
        for (marker_off, name, expand, chomp) in markers {
            let mloc = self.loc_in(&l, args_start + marker_off);
            let mut content = String::new();
            let mut raw_body = String::new();
            let mut done = false;
            while next_line < self.lines.len() {
                let raw = &self.lines[next_line];
                next_line += 1;
                let cand = if chomp { raw.trim_start_matches('\t') } else { raw.as_str() };
                if cand == name {
                    done = true;
                    break;
                }
                content.push_str(cand);
                content.push('\n');
                raw_body.push_str(raw);
                raw_body.push('\n');
            }
            if !done {
                return Err(self.err(mloc, format!("unterminated heredoc {name}")));
            }
            raw_bodies.push((raw_body, name.clone()));
            heredocs.push(Heredoc { name, content, expand, chomp });
        }
        // BuildKit keeps an ONBUILD trigger with its heredocs in one text (body and
        // delimiter after the line), which parses back to the same instruction.
        let args = if keyword == Keyword::OnBuild && !raw_bodies.is_empty() {
            let mut t = args;
            for (body, name) in &raw_bodies {
                t.push('\n');
                t.push_str(body);
                t.push_str(name);
            }
            t
        } else {
            args
        };

        let command = self.command(keyword, &args, &args_loc, &loc, &heredocs)?;
        let inst = Instruction {
            keyword,
            loc,
            end_line: end_line + 1,
            source: l.text.clone(),
            flags,
            args,
            args_loc,
            heredocs,
            command,
        };
        Ok((inst, next_line))
    }

    /// Leading `--name[=value]` words. Every instruction takes flags from the same
    /// place; an instruction that accepts none rejects any.
    fn flags(&self, kw: Keyword, l: &Logical, mut pos: usize) -> Result<(Vec<Flag>, usize), Error> {
        let text = &l.text;
        let allowed = kw.flags();
        let mut flags: Vec<Flag> = Vec::new();
        loop {
            let rest = &text[pos..];
            let ws = rest.len() - rest.trim_start().len();
            pos += ws;
            let rest = &text[pos..];
            if !rest.starts_with("--") {
                break;
            }
            // Read one word, removing quotes, honouring the escape char.
            let mut word = String::new();
            let mut quote: Option<char> = None;
            let mut end = rest.len();
            let mut it = rest.char_indices();
            while let Some((j, c)) = it.next() {
                match quote {
                    None if c.is_whitespace() => {
                        end = j;
                        break;
                    }
                    None if c == '"' || c == '\'' => quote = Some(c),
                    Some(q) if c == q => quote = None,
                    _ if c == self.escape && quote != Some('\'') => {
                        if let Some((_, n)) = it.next() {
                            word.push(n);
                        }
                    }
                    _ => word.push(c),
                }
            }
            let floc = self.loc_in(l, pos);
            pos += end;
            if word == "--" {
                break;
            }
            let body = word.strip_prefix("--").unwrap_or(&word);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            let Some((_, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
                let message = format!("unknown flag: --{name} for {}", kw.as_str());
                let message = suggest::with_suggestion(message, &name, allowed.iter().map(|(n, _)| *n), true);
                return Err(Error::Flag(self.diag(floc, message)));
            };
            match kind {
                FlagKind::Value | FlagKind::Multi if value.is_none() => {
                    return Err(Error::Flag(self.diag(floc, format!("missing a value on flag: --{name}"))));
                }
                FlagKind::Bool => {
                    if let Some(v) = &value {
                        if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") {
                            return Err(Error::Flag(
                                self.diag(floc, format!("expecting boolean value for flag --{name}, not: {v}")),
                            ));
                        }
                    }
                }
                _ => {}
            }
            if *kind != FlagKind::Multi && flags.iter().any(|f| f.name == name) {
                return Err(Error::Flag(self.diag(floc, format!("duplicate flag specified: --{name}"))));
            }
            flags.push(Flag { name, value, loc: floc });
        }
        Ok((flags, pos.min(text.len())))
    }

    /// Check the argument shape of an instruction and type it.
    fn command(
        &self,
        kw: Keyword,
        args: &str,
        aloc: &Location,
        kloc: &Location,
        heredocs: &[Heredoc],
    ) -> Result<Command, Error> {
        let name = kw.as_str();
        let err = |m: String| Err(self.err(aloc.clone(), m));
        if args.trim().is_empty() {
            // BuildKit's wording per instruction (instructions/parse.go errAtLeastTwoArguments,
            // errExactlyOneArgument); the rest need at least one.
            let need = match kw {
                Keyword::Copy | Keyword::Add => "at least two arguments",
                Keyword::Maintainer | Keyword::Workdir | Keyword::User | Keyword::StopSignal => "exactly one argument",
                _ => "at least one argument",
            };
            return Err(self.err(kloc.clone(), format!("{name} requires {need}")));
        }
        let json_kw = matches!(
            kw,
            Keyword::Run
                | Keyword::Cmd
                | Keyword::Entrypoint
                | Keyword::Shell
                | Keyword::Copy
                | Keyword::Add
                | Keyword::Volume
        );
        if json_kw && json_not_strings(args) {
            return err("when using JSON array syntax, arrays must be comprised of strings only".into());
        }
        Ok(match kw {
            Keyword::From => {
                let w = split_ws(args);
                match w.as_slice() {
                    [img] => Command::From { image: img.clone(), name: None },
                    [img, as_, n] if as_.eq_ignore_ascii_case("as") => {
                        Command::From { image: img.clone(), name: Some(n.clone()) }
                    }
                    _ => return err("FROM requires either one or three arguments: FROM <image> [AS <name>]".into()),
                }
            }
            Keyword::Run => Command::Run(cmdline(args)),
            Keyword::Cmd => Command::Cmd(cmdline(args)),
            Keyword::Entrypoint => Command::Entrypoint(cmdline(args)),
            Keyword::Shell => match parse_json_array(args) {
                Some(v) if !v.is_empty() => Command::Shell(v),
                _ => return err("SHELL requires the arguments to be in JSON form, e.g. [\"/bin/sh\", \"-c\"]".into()),
            },
            Keyword::Copy | Keyword::Add => self.copy_args(kw, args, aloc, heredocs)?,
            Keyword::Env | Keyword::Label => {
                let pairs = self.name_vals(name, args, aloc)?;
                if kw == Keyword::Env {
                    Command::Env(pairs)
                } else {
                    Command::Label(pairs)
                }
            }
            Keyword::Arg => {
                let mut out = Vec::new();
                for w in parse_words(args, self.escape) {
                    let (k, v) = match w.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (w.clone(), None),
                    };
                    if k.is_empty() {
                        return err(format!("ARG names can not be blank: {w}"));
                    }
                    out.push((k, v));
                }
                Command::Arg(out)
            }
            Keyword::Expose => Command::Expose(split_ws(args)),
            Keyword::Volume => match parse_json_array(args) {
                Some(v) if v.is_empty() => return err("VOLUME specified can not be an empty string".into()),
                Some(v) => Command::Volume(v),
                None => Command::Volume(split_ws(args)),
            },
            Keyword::Workdir => Command::Workdir(args.to_string()),
            Keyword::User => Command::User(args.to_string()),
            Keyword::StopSignal => Command::StopSignal(args.to_string()),
            Keyword::Maintainer => Command::Maintainer(args.to_string()),
            Keyword::OnBuild => {
                let trig = args.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
                match trig.as_str() {
                    "ONBUILD" => return err("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into()),
                    "FROM" | "MAINTAINER" => return err(format!("{trig} isn't allowed as an ONBUILD trigger")),
                    _ if Keyword::parse(&trig).is_none() => {
                        return err(format!("unknown instruction in ONBUILD: {trig}"))
                    }
                    _ => {}
                }
                Command::OnBuild(args.to_string())
            }
            Keyword::Healthcheck => self.healthcheck_args(args, aloc)?,
        })
    }

    /// COPY/ADD: sources then destination (JSON or words); heredoc names as sources.
    fn copy_args(&self, kw: Keyword, args: &str, aloc: &Location, heredocs: &[Heredoc]) -> Result<Command, Error> {
        let name = kw.as_str();
        let err = |m: String| Err(self.err(aloc.clone(), m));
        let words = match parse_json_array(args) {
            Some(v) => v,
            None => split_ws(args),
        };
        if words.len() < 2 {
            return err(format!("{name} requires at least two arguments, but only one was provided. Destination could not be determined"));
        }
        let (dest, srcs) = words.split_last().expect("len >= 2");
        if heredocs.iter().any(|h| heredoc_word(dest, self.escape).is_some_and(|d| d.0 == h.name)) {
            return err(format!("{name} cannot accept a heredoc as a destination"));
        }
        let mut hd = 0;
        let sources = srcs
            .iter()
            .map(|w| {
                if hd < heredocs.len() && heredoc_word(w, self.escape).is_some_and(|h| h.0 == heredocs[hd].name)
                {
                    hd += 1;
                    CopySource::Heredoc(hd - 1)
                } else {
                    CopySource::Path(w.clone())
                }
            })
            .collect();
        Ok(if kw == Keyword::Copy {
            Command::Copy { sources, dest: dest.clone() }
        } else {
            Command::Add { sources, dest: dest.clone() }
        })
    }

    /// `HEALTHCHECK NONE` or `HEALTHCHECK CMD ...` (its flags were taken before).
    fn healthcheck_args(&self, args: &str, aloc: &Location) -> Result<Command, Error> {
        let err = |m: String| Err(self.err(aloc.clone(), m));
        let mut it = args.trim_start().splitn(2, char::is_whitespace);
        let typ = it.next().unwrap_or("").to_ascii_uppercase();
        let rest = it.next().unwrap_or("").trim_start();
        Ok(match typ.as_str() {
            "NONE" => {
                if !rest.is_empty() {
                    return err("HEALTHCHECK NONE takes no arguments".into());
                }
                Command::Healthcheck(None)
            }
            "CMD" => {
                if rest.is_empty() {
                    return err("missing command after HEALTHCHECK CMD".into());
                }
                Command::Healthcheck(Some(cmdline(rest)))
            }
            _ => return err(format!("unknown type for HEALTHCHECK: {typ} (expected CMD or NONE)")),
        })
    }

    /// `k=v k2="v 2"` or the legacy `k v...` form of ENV and LABEL.
    fn name_vals(&self, name: &str, args: &str, aloc: &Location) -> Result<Vec<(String, String)>, Error> {
        let words = parse_words(args, self.escape);
        let Some(first) = words.first() else {
            return Err(self.err(aloc.clone(), format!("{name} requires at least one argument")));
        };
        if !first.contains('=') {
            let t = args.trim_start();
            let kend = t.find(char::is_whitespace).unwrap_or(t.len());
            let value = t[kend..].trim();
            if value.is_empty() {
                return Err(self.err(aloc.clone(), format!("{name} must have two arguments")));
            }
            return Ok(vec![(t[..kend].to_string(), value.to_string())]);
        }
        let mut out = Vec::new();
        for w in &words {
            let Some((k, v)) = w.split_once('=') else {
                return Err(self.err(
                    aloc.clone(),
                    format!("syntax error - can't find = in \"{w}\". Must be of the form: name=value"),
                ));
            };
            if k.is_empty() {
                return Err(self.err(aloc.clone(), format!("{name} names can not be blank")));
            }
            out.push((k.to_string(), v.to_string()));
        }
        Ok(out)
    }
}

/// `# name = value` → (name, value, byte column of value).
fn split_directive(line: &str) -> Option<(String, String, usize)> {
    let t = line.trim_start();
    let after_hash = t.strip_prefix('#')?;
    let a = after_hash.trim_start();
    let name_len = a.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(a.len());
    if name_len == 0 || !a.as_bytes()[0].is_ascii_alphabetic() {
        return None;
    }
    let name = &a[..name_len];
    let after = a[name_len..].trim_start().strip_prefix('=')?;
    let value = after.trim();
    let vcol = line.len() - after.trim_start().len();
    Some((name.to_string(), value.to_string(), vcol))
}

/// A RUN/CMD/ENTRYPOINT/HEALTHCHECK command line: exec form when it is a JSON
/// array of strings, shell form otherwise.
fn cmdline(s: &str) -> CmdLine {
    match parse_json_array(s) {
        Some(v) => CmdLine::Exec(v),
        None => CmdLine::Shell(s.to_string()),
    }
}
