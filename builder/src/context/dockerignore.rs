//! `.dockerignore`: which context files a build may read, with Docker's rules exactly.
//!
//! Reference behaviour (read, not copied): `moby/patternmatcher` (`New`,
//! `MatchesOrParentMatches`, `Pattern.compile`), its `ignorefile.ReadAll`, and
//! BuildKit's context walker (`tonistiigi/fsutil` `filter.go`).
//!
//! Reading the file (`ignorefile.ReadAll`):
//! - a UTF-8 BOM on the first line is dropped;
//! - a line whose *first column* is `#` is a comment (` #x` is a pattern `#x`);
//! - surrounding whitespace is trimmed, blank lines skipped;
//! - `!` marks an exception; the rest is trimmed again, cleaned like Go's
//!   `filepath.Clean` (`./a` → `a`, `a/../b` → `b`, `a/` → `a`) and one leading `/`
//!   is dropped, so `/a` and `a` are the same pattern.
//!
//! Matching (`patternmatcher`): every pattern is anchored at the context root and
//! compiled the way Docker compiles it: `*` is `[^/]*`, `?` is `[^/]`, `**` is
//! `(.*/)?` (or `.*` at the end; `**/` eats its slash), `[...]` classes and `\`
//! escapes pass through to a Go regular expression. So `*.md` does not match
//! `docs/x.md`; `a**b` matches `ab` and `a/x/b` but not `axb`; and, because of
//! Docker's fast path for patterns that start with `**` and have no other
//! wildcard, `**foo` matches any path that *ends* in `foo` (`xfoo`, `d/xfoo`).
//! A pattern that matches a directory matches everything under it. Patterns are
//! evaluated in order and the last one that matches decides; an exception can
//! re-include a file below an excluded directory.
//!
//! Pruning (`could_contain_included`) is BuildKit's walker optimisation, kept
//! identical so that a walk yields the same set BuildKit sends.
//!
//! The Dockerfile and the ignore file are not special here: the builder reads them
//! directly, so they are used even when ignored, but an ignored Dockerfile or
//! `.dockerignore` cannot be COPYed (BuildKit sends them through a separate
//! "dockerfile" source; the classic builder removed them from the context after
//! reading them: Docker's docs, "These files are still sent to the daemon because
//! it needs them to do its job. But the ADD and COPY instructions do not copy them
//! to the image.").

// Not wired into the solver yet (COPY/ADD issue); remove once it is.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use regex::Regex;

/// The ignore file names BuildKit looks for.
pub const DOCKERIGNORE: &str = ".dockerignore";

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Pattern {
    /// Cleaned pattern text without the `!`.
    text: String,
    exclusion: bool,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// No wildcard at all: the path equals the pattern.
    Exact,
    /// `foo**`, `foo/**`: the path starts with `foo` / `foo/`.
    Prefix(String),
    /// `**foo`, `**/foo`: the path ends with it (or equals `foo` for `**/foo`).
    Suffix(String),
    Regex(Regex),
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(p) => path.starts_with(p.as_str()),
            Kind::Suffix(s) => path.ends_with(s.as_str()) || (s.starts_with('/') && path == &s[1..]),
            Kind::Regex(re) => re.is_match(path),
        }
    }
}

/// A compiled `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
    has_exclusions: bool,
    /// Every exception is a plain path (after dropping a trailing `/*` or `/**`),
    /// so excluded directories can be pruned by prefix (BuildKit's rule).
    only_prefix_exceptions: bool,
    source: Option<PathBuf>,
}

impl Matcher {
    /// A matcher that excludes nothing.
    pub fn empty() -> Self {
        Matcher { only_prefix_exceptions: true, ..Default::default() }
    }

    /// Parse the text of an ignore file.
    pub fn parse(text: &str) -> Result<Self> {
        let lines = read_patterns(text);
        let mut m = Matcher::empty();
        for (line, p) in lines {
            m.push(&p).with_context(|| format!("line {line}: invalid pattern {p:?}"))?;
        }
        Ok(m)
    }

    /// Compile patterns as `patternmatcher.New` does (each one trimmed and cleaned).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self> {
        let mut m = Matcher::empty();
        for p in patterns {
            let p = p.as_ref();
            m.push(p).with_context(|| format!("invalid pattern {p:?}"))?;
        }
        Ok(m)
    }

    fn push(&mut self, raw: &str) -> Result<()> {
        let p = raw.trim();
        if p.is_empty() {
            return Ok(());
        }
        let p = go_clean(p);
        let (exclusion, p) = match p.strip_prefix('!') {
            Some("") => bail!("illegal exclusion pattern: \"!\""),
            Some(rest) => (true, rest.to_string()),
            None => (false, p),
        };
        check_go_match_syntax(&p)?;
        let kind = compile(&p)?;
        if exclusion {
            self.has_exclusions = true;
            if without_trailing_glob(&p).contains(['*', '[', ']', '?', '^', '\\']) {
                self.only_prefix_exceptions = false;
            }
        }
        self.patterns.push(Pattern { text: p, exclusion, kind });
        Ok(())
    }

    /// Is `rel_path` (relative to the context, `/`-separated) excluded from the
    /// context? `is_dir` is accepted for callers' convenience: Docker's patterns do
    /// not distinguish directories (`dir/` is cleaned to `dir`).
    pub fn matches(&self, rel_path: &str, _is_dir: bool) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let file = go_clean(rel_path.trim_start_matches('/'));
        if file == "." || file == "/" {
            return false; // "Don't let them exclude everything"
        }
        // Parents, shortest first: a/b/c → a, a/b.
        let parents: Vec<&str> = file.match_indices('/').map(|(i, _)| &file[..i]).filter(|p| !p.is_empty()).collect();
        let mut matched = false;
        for pat in &self.patterns {
            // An exclusion is only interesting when something matched; an inclusion
            // only when nothing did.
            if pat.exclusion != matched {
                continue;
            }
            let hit = pat.matches(&file) || parents.iter().any(|p| pat.matches(p));
            if hit {
                matched = !pat.exclusion;
            }
        }
        matched
    }

    /// For an excluded directory: may something below it still be included by an
    /// exception? `false` means a walker can skip the whole directory. This is
    /// BuildKit's rule: with no exceptions, nothing; when an exception has wildcards
    /// (other than a trailing `/*` or `/**`), anything (walk it); otherwise only if
    /// an exception lies below `dir`.
    pub fn could_contain_included(&self, dir: &str) -> bool {
        if !self.has_exclusions {
            return false;
        }
        if !self.only_prefix_exceptions {
            return true;
        }
        let dir = go_clean(dir.trim_start_matches('/'));
        let dir_slash = format!("{dir}/");
        self.patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| format!("{}/", without_trailing_glob(&p.text)).starts_with(&dir_slash))
    }

    /// Does the matcher exclude anything at all?
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The cleaned patterns, `!`-prefixed for exceptions, in order (for cache keys
    /// and messages).
    #[allow(dead_code)] // for the layer cache key of COPY (issue 5)
    pub fn patterns(&self) -> Vec<String> {
        self.patterns.iter().map(|p| if p.exclusion { format!("!{}", p.text) } else { p.text.clone() }).collect()
    }

    /// The file the patterns came from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }
}

/// Load the ignore file for a build: `<Dockerfile name>.dockerignore` next to the
/// Dockerfile wins (even when empty), else `.dockerignore` at the context root,
/// else nothing is ignored. (BuildKit `dockerui`: it reads `filename +
/// ".dockerignore"` from the Dockerfile's directory and falls back to the context's
/// `.dockerignore`.)
pub fn load_for(context: &Path, dockerfile: &Path) -> Result<Matcher> {
    let mut candidates = Vec::new();
    if let Some(name) = dockerfile.file_name() {
        let mut n = name.to_os_string();
        n.push(DOCKERIGNORE);
        candidates.push(dockerfile.with_file_name(n));
    }
    candidates.push(context.join(DOCKERIGNORE));
    for path in candidates {
        // A directory named like the ignore file is not an ignore file.
        if path.is_dir() {
            continue;
        }
        match crate::fsutil::read_build_file(&path, ".dockerignore") {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let mut m = Matcher::parse(&text).with_context(|| format!("reading {}", path.display()))?;
                m.source = Some(path);
                return Ok(m);
            }
            Err(_) if std::fs::symlink_metadata(&path).is_err() => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Matcher::empty())
}

/// `ignorefile.ReadAll`: the patterns of an ignore file with their line numbers.
pub fn read_patterns(text: &str) -> Vec<(usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    // bufio.Scanner's ScanLines: split on \n, drop one trailing \r.
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        let mut p = go_trim(line);
        if p.is_empty() {
            continue;
        }
        let invert = p.starts_with('!');
        if invert {
            p = go_trim(&p[1..]);
        }
        let mut pat = String::new();
        if !p.is_empty() {
            pat = go_clean(p);
            if pat.len() > 1 && pat.starts_with('/') {
                pat.remove(0);
            }
        }
        if invert {
            pat.insert(0, '!');
        }
        out.push((i + 1, pat));
    }
    out
}

/// Go's `strings.TrimSpace` (Unicode white space).
fn go_trim(s: &str) -> &str {
    s.trim_matches(char::is_whitespace)
}

/// Go's `filepath.Clean` on Unix.
pub fn go_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for el in p.split('/') {
        match el {
            "" | "." => {}
            ".." => {
                if matches!(out.last(), Some(l) if *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            e => out.push(e),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

fn without_trailing_glob(p: &str) -> &str {
    let p = p.strip_suffix("/**").unwrap_or(p);
    p.strip_suffix("/*").unwrap_or(p)
}

/// The syntax check `patternmatcher.New` does by calling Go's
/// `filepath.Match(p, ".")`: classes must close, may not be empty, ranges need both
/// ends, `\` must escape something.
fn check_go_match_syntax(p: &str) -> Result<()> {
    let bad = || anyhow!("syntax error in pattern");
    let c: Vec<char> = p.chars().collect();
    let mut i = 0;
    // One class item: an escaped or plain char that is not `-` or `]`.
    let esc = |i: &mut usize| -> Result<()> {
        match c.get(*i) {
            None | Some('-') | Some(']') => Err(bad()),
            Some('\\') => {
                *i += 1;
                if *i >= c.len() {
                    return Err(bad());
                }
                *i += 1;
                Ok(())
            }
            Some(_) => {
                *i += 1;
                Ok(())
            }
        }
    };
    while i < c.len() {
        match c[i] {
            '\\' => {
                if i + 1 >= c.len() {
                    return Err(bad());
                }
                i += 2;
            }
            '[' => {
                i += 1;
                if c.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut nrange = 0;
                loop {
                    if c.get(i) == Some(&']') && nrange > 0 {
                        i += 1;
                        break;
                    }
                    esc(&mut i)?;
                    if c.get(i) == Some(&'-') {
                        i += 1;
                        esc(&mut i)?;
                    }
                    nrange += 1;
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// `Pattern.compile`: decide the match type and build the regular expression the
/// way Docker does, then translate Go's regexp syntax to the `regex` crate's.
fn compile(p: &str) -> Result<Kind> {
    #[derive(PartialEq, Clone, Copy)]
    enum T {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let mut re = String::from("^");
    let mut t = T::Exact;
    let c: Vec<char> = p.chars().collect();
    let mut i = 0;
    let mut n = 0; // index of the scanned token, as Docker's loop counter
    while i < c.len() {
        let ch = c[i];
        i += 1;
        if ch == '*' {
            if c.get(i) == Some(&'*') {
                i += 1;
                if c.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= c.len() {
                    if t == T::Exact {
                        t = T::Prefix;
                    } else {
                        re.push_str(".*");
                        t = T::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    t = T::Regex;
                }
                if n == 0 {
                    t = T::Suffix;
                }
            } else {
                re.push_str("[^/]*");
                t = T::Regex;
            }
        } else if ch == '?' {
            re.push_str("[^/]");
            t = T::Regex;
        } else if ".+()|{}$".contains(ch) {
            re.push('\\');
            re.push(ch);
        } else if ch == '\\' {
            if i < c.len() {
                re.push('\\');
                re.push(c[i]);
                i += 1;
                t = T::Regex;
            } else {
                re.push('\\');
            }
        } else if ch == '[' || ch == ']' {
            re.push(ch);
            t = T::Regex;
        } else {
            re.push(ch);
        }
        n += 1;
    }
    Ok(match t {
        T::Exact => Kind::Exact,
        T::Prefix => Kind::Prefix(p[..p.len() - 2].to_string()),
        T::Suffix => Kind::Suffix(p[2..].to_string()),
        T::Regex => {
            re.push('$');
            let rust = go_regex_to_rust(&re);
            Kind::Regex(Regex::new(&rust).map_err(|e| anyhow!("cannot compile pattern: {e}"))?)
        }
    })
}

/// Translate the subset of Go RE2 syntax Docker's compiler can emit into the
/// `regex` crate's: inside a class Go takes `[` literally (unless it opens a
/// `[:name:]` POSIX class) while Rust nests classes, and Rust's set operators
/// (`&&`, `--`, `~~`) do not exist in Go; outside a class a lone `]` is a literal.
fn go_regex_to_rust(go: &str) -> String {
    let c: Vec<char> = go.chars().collect();
    let mut out = String::with_capacity(go.len() + 8);
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '\\' if i + 1 < c.len() => {
                out.push('\\');
                out.push(c[i + 1]);
                i += 2;
            }
            ']' => {
                out.push_str("\\]");
                i += 1;
            }
            '[' => {
                out.push('[');
                i += 1;
                if c.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                // A `]` first in a class is a literal in Go.
                let mut first = true;
                while i < c.len() {
                    let ch = c[i];
                    if ch == ']' && !first {
                        out.push(']');
                        i += 1;
                        break;
                    }
                    first = false;
                    if ch == '\\' && i + 1 < c.len() {
                        out.push('\\');
                        out.push(c[i + 1]);
                        i += 2;
                        continue;
                    }
                    if ch == '[' && c.get(i + 1) == Some(&':') {
                        // POSIX class `[:name:]` (or `[:^name:]`).
                        let rest: String = c[i..].iter().collect();
                        if let Some(end) = rest.find(":]") {
                            let name = &rest[2..end];
                            if !name.is_empty() && name.trim_start_matches('^').chars().all(|x| x.is_ascii_alphabetic()) {
                                out.push_str(&rest[..end + 2]);
                                i += rest[..end + 2].chars().count();
                                continue;
                            }
                        }
                    }
                    match ch {
                        '[' | ']' | '&' | '~' => {
                            out.push('\\');
                            out.push(ch);
                        }
                        '-' if c.get(i + 1) == Some(&'-') => out.push_str("\\-"),
                        _ => out.push(ch),
                    }
                    i += 1;
                }
            }
            ch => {
                out.push(ch);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Case {
        patterns: Vec<String>,
        #[serde(default)]
        path: String,
        #[serde(default)]
        excluded: bool,
        #[serde(default)]
        error: bool,
        #[serde(default)]
        from: String,
    }

    /// The reference table: each line a JSON object `{patterns, path, excluded}`
    /// (or `error: true`). Expected values are Docker's; `from` says where each came
    /// from (moby/patternmatcher's tests or Docker's documentation).
    #[test]
    fn reference_table() {
        let text = include_str!("../../tests/data/dockerignore_cases.jsonl");
        let mut n = 0;
        let mut failures = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with("//") {
                continue;
            }
            let case: Case = serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
            n += 1;
            // Through the file reader, as a .dockerignore would be read.
            match Matcher::parse(&case.patterns.join("\n")) {
                Err(e) if case.error => {
                    let _ = e;
                }
                Err(e) => failures.push(format!("line {}: {:?}: unexpected error {e:#}", i + 1, case.patterns)),
                Ok(_) if case.error => failures.push(format!("line {}: {:?}: expected an error", i + 1, case.patterns)),
                Ok(m) => {
                    let got = m.matches(&case.path, false);
                    if got != case.excluded {
                        failures.push(format!(
                            "line {}: patterns {:?} path {:?}: got {got}, Docker says {} ({})",
                            i + 1,
                            case.patterns,
                            case.path,
                            case.excluded,
                            case.from
                        ));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{} of {n} cases differ:\n{}", failures.len(), failures.join("\n"));
        assert!(n >= 40, "only {n} cases");
    }

    #[test]
    fn reads_files_like_ignorefile() {
        let text = "\u{feff}test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! \n  #not a comment\n./x/../y/\r\n";
        let got: Vec<String> = read_patterns(text).into_iter().map(|(_, p)| p).collect();
        assert_eq!(
            got,
            ["test1", "test2", "a/file/here", "lastfile", "!inverted/abs/path", "!", "!", "#not a comment", "y"]
        );
        // A lone `!` is an error, with its line.
        let err = Matcher::parse("a\n!\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    }

    #[test]
    fn go_clean_cases() {
        for (i, o) in [
            ("", "."),
            ("a/../..", ".."),
            ("/../a", "/a"),
            ("./a//b/", "a/b"),
            ("/", "/"),
            ("a/./b/../../c", "c"),
            ("../../x", "../../x"),
        ] {
            assert_eq!(go_clean(i), o, "{i}");
        }
    }

    #[test]
    fn pruning_follows_buildkit() {
        let m = Matcher::parse("docs\n!docs/keep/readme.md\n").unwrap();
        assert!(m.matches("docs", true));
        assert!(m.could_contain_included("docs"));
        assert!(m.could_contain_included("docs/keep"));
        assert!(!m.could_contain_included("docs/other"));
        assert!(!m.matches("docs/keep/readme.md", false));
        assert!(m.matches("docs/keep/other.md", false));

        let none = Matcher::parse("node_modules\n").unwrap();
        assert!(!none.could_contain_included("node_modules"));

        // A wildcard exception means "walk everything".
        let wild = Matcher::parse("vendor\n!**/*.go\n").unwrap();
        assert!(wild.could_contain_included("vendor"));
        assert!(!wild.matches("vendor/a/b.go", false));
        // A trailing /** or /* does not count as a wildcard.
        let tail = Matcher::parse("*\n!src/**\n").unwrap();
        assert!(tail.could_contain_included("src"));
        assert!(!tail.could_contain_included("target"));
    }

    #[test]
    fn load_prefers_dockerfile_specific_file() {
        let t = tempfile::tempdir().unwrap();
        let ctx = t.path().join("ctx");
        std::fs::create_dir_all(ctx.join("build")).unwrap();
        std::fs::write(ctx.join(".dockerignore"), "*.log\n").unwrap();
        let df = ctx.join("build/app.Dockerfile");
        std::fs::write(&df, "FROM scratch\n").unwrap();
        let m = load_for(&ctx, &df).unwrap();
        assert_eq!(m.source(), Some(ctx.join(".dockerignore").as_path()));
        assert!(m.matches("x.log", false));

        // An empty Dockerfile-specific file still wins.
        std::fs::write(ctx.join("build/app.Dockerfile.dockerignore"), "").unwrap();
        let m = load_for(&ctx, &df).unwrap();
        assert!(!m.matches("x.log", false));
        assert_eq!(m.source(), Some(ctx.join("build/app.Dockerfile.dockerignore").as_path()));

        // None at all.
        let empty = tempfile::tempdir().unwrap();
        let m = load_for(empty.path(), &empty.path().join("Dockerfile")).unwrap();
        assert!(m.is_empty() && m.source().is_none());

        // Errors name the file.
        std::fs::write(ctx.join("build/app.Dockerfile.dockerignore"), "ok\n[\n").unwrap();
        let err = format!("{:#}", load_for(&ctx, &df).unwrap_err());
        assert!(err.contains("app.Dockerfile.dockerignore") && err.contains("line 2"), "{err}");
    }
}
