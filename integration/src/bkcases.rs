//! BuildKit's Dockerfile frontend integration tests, translated into kiln's own
//! table: `testdata/buildkit/*.txt` (format in `testdata/buildkit/README.md`).
//!
//! One file holds many cases, each a small txtar-like archive: the BuildKit test
//! it comes from, the build context (text or base64-encoded binary files with
//! modes, symlinks, empty dirs) and
//! an `expect.json` with the same keys as `testdata/cases/*/expect.json`, so
//! [`crate::cases::Expect`] checks both kinds of case, and the files a per-case
//! HTTP server serves (`-- http:/path --`, [`crate::fileserver`]). [`parse`]
//! never panics on a malformed file: it says which line is wrong.

use crate::cases::Expect;
use crate::fileserver::{parse_http_date, ServedFile};
use base64::Engine as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One entry of a case's build context.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    /// A text file: `127.0.0.1:5000` in it becomes the test registry.
    File { path: String, data: Vec<u8>, mode: u32 },
    /// A `base64` section's decoded bytes, written as they are (a rewrite would
    /// corrupt an archive that happened to hold the registry address).
    Binary { path: String, data: Vec<u8>, mode: u32 },
    Symlink { path: String, target: String },
    Dir { path: String, mode: u32 },
}

/// A translated BuildKit test (or one variant of it).
#[derive(Clone, Debug)]
pub struct BkCase {
    /// `testFoo` or `testFoo/variant`: unique across all files.
    pub name: String,
    /// Where it comes from: `dockerfile_copy_test.go:testFoo`.
    pub from: String,
    /// The `.txt` file and line the case starts at (for messages).
    pub origin: String,
    pub entries: Vec<Entry>,
    /// With `127.0.0.1:5000` rewritten to the registry; `127.0.0.1:5001` (the
    /// case's HTTP server) is left as written: see [`BkCase::expect_for`].
    pub expect: Expect,
    /// `-- http:/path --` sections: served by the case's server, not in the context.
    pub served: Vec<ServedFile>,
    /// expect.json as written, for [`BkCase::expect_for`].
    expect_src: Option<String>,
}

/// The token a case writes for the registry, and the one for its HTTP server.
pub const REGISTRY_TOKEN: &str = "127.0.0.1:5000";
pub const HTTP_TOKEN: &str = "127.0.0.1:5001";

/// Replace both tokens in one pass: a registry address such as 127.0.0.1:50012
/// holds the HTTP token, so one replacement after the other would corrupt it.
pub fn rewrite_hosts(text: &str, registry_host: &str, http_host: Option<&str>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    const COMMON: &str = "127.0.0.1:500";
    while let Some(i) = rest.find(COMMON) {
        out.push_str(&rest[..i]);
        let at = &rest[i..];
        if let Some(after) = at.strip_prefix(REGISTRY_TOKEN) {
            out.push_str(registry_host);
            rest = after;
        } else if let (Some(h), Some(after)) = (http_host, at.strip_prefix(HTTP_TOKEN)) {
            out.push_str(h);
            rest = after;
        } else {
            out.push_str(COMMON);
            rest = &at[COMMON.len()..];
        }
    }
    out.push_str(rest);
    out
}

impl BkCase {
    /// The BuildKit test function this case translates (without the variant).
    pub fn function(&self) -> &str {
        self.from.rsplit(':').next().unwrap_or(&self.from)
    }

    /// Whether the case needs its HTTP server: it serves files or names the server.
    pub fn uses_http(&self) -> bool {
        !self.served.is_empty()
            || self.expect_src.as_deref().is_some_and(|s| s.contains(HTTP_TOKEN))
            || self.entries.iter().any(|e| {
                matches!(e, Entry::File { data, .. } if String::from_utf8_lossy(data).contains(HTTP_TOKEN))
            })
    }

    /// The expectations with both tokens rewritten, the HTTP server's to `http_host`.
    pub fn expect_for(&self, registry_host: &str, http_host: &str) -> Result<Expect, String> {
        let Some(src) = &self.expect_src else { return Ok(self.expect.clone()) };
        let raw = serde_json::from_str(&rewrite_hosts(src, registry_host, Some(http_host)))
            .map_err(|e| format!("{}: case {}: expect.json: {e}", self.origin, self.name))?;
        Ok(Expect { name: self.name.clone(), raw })
    }

    /// Write the context into `dir` (created), with `127.0.0.1:5000` in every
    /// text file replaced by `registry_host` and `127.0.0.1:5001` by `http_host`.
    pub fn materialize(&self, dir: &Path, registry_host: &str, http_host: Option<&str>) -> std::io::Result<()> {
        fs::create_dir_all(dir)?;
        // Directories' modes are set last: a 0555 directory would refuse its files.
        let mut dir_modes = Vec::new();
        for e in &self.entries {
            match e {
                Entry::File { path, data, mode } => {
                    let p = dir.join(path);
                    if let Some(parent) = p.parent() {
                        fs::create_dir_all(parent)?;
                    }
                    let data = match std::str::from_utf8(data) {
                        Ok(s) => rewrite_hosts(s, registry_host, http_host).into_bytes(),
                        Err(_) => data.clone(),
                    };
                    fs::write(&p, data)?;
                    fs::set_permissions(&p, fs::Permissions::from_mode(*mode))?;
                }
                Entry::Binary { path, data, mode } => {
                    let p = dir.join(path);
                    if let Some(parent) = p.parent() {
                        fs::create_dir_all(parent)?;
                    }
                    fs::write(&p, data)?;
                    fs::set_permissions(&p, fs::Permissions::from_mode(*mode))?;
                }
                Entry::Symlink { path, target } => {
                    let p = dir.join(path);
                    if let Some(parent) = p.parent() {
                        fs::create_dir_all(parent)?;
                    }
                    std::os::unix::fs::symlink(target, &p)?;
                }
                Entry::Dir { path, mode } => {
                    let p = dir.join(path);
                    fs::create_dir_all(&p)?;
                    dir_modes.push((p, *mode));
                }
            }
        }
        for (p, mode) in dir_modes.into_iter().rev() {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }
}

/// `testdata/buildkit`.
pub fn dir() -> PathBuf {
    crate::paths::testdata_dir().join("buildkit")
}

/// Every case of every `testdata/buildkit/*.txt` (files sorted, cases in file
/// order), with `127.0.0.1:5000` in the expectations rewritten to `registry_host`.
pub fn load_all(registry_host: &str) -> Result<Vec<BkCase>, String> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir())
        .map_err(|e| format!("{}: {e}", dir().display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    let mut out: Vec<BkCase> = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for c in parse(&name, &text, registry_host)? {
            if let Some(prev) = out.iter().find(|p| p.name == c.name) {
                return Err(format!("{}: case {} already defined at {}", c.origin, c.name, prev.origin));
            }
            out.push(c);
        }
    }
    Ok(out)
}

/// A case being read: what its sections gave so far.
struct Open {
    name: String,
    line: usize,
    from: Option<String>,
    entries: Vec<Entry>,
    served: Vec<ServedFile>,
    expect: Option<String>,
}
// The section being filled: a file entry or expect.json.
enum Section {
    None,
    File { path: String, mode: u32, noeol: bool, lines: Vec<String> },
    /// `line` is the header's line number; body lines follow it.
    Base64 { path: String, mode: u32, line: usize, lines: Vec<String> },
    Expect { lines: Vec<String> },
    Http { file: ServedFile, base64: bool, noeol: bool, line: usize, lines: Vec<String> },
}
fn close_section(file: &str, sec: &mut Section, case: &mut Open) -> Result<(), String> {
    match std::mem::replace(sec, Section::None) {
        Section::None => {}
        Section::File { path, mode, noeol, lines } => {
            let mut data = lines.join("\n");
            if !lines.is_empty() && !noeol {
                data.push('\n');
            }
            case.entries.push(Entry::File { path, data: data.into_bytes(), mode });
        }
        Section::Base64 { path, mode, line, lines } => {
            let data = decode_base64(&lines).map_err(|(offset, e)| {
                format!("{file}:{}: {path}: bad base64 body: {e}", line + 1 + offset)
            })?;
            case.entries.push(Entry::Binary { path, data, mode });
        }
        Section::Expect { lines } => case.expect = Some(lines.join("\n")),
        Section::Http { file: mut served, base64, noeol, line, lines } => {
            served.data = if base64 {
                decode_base64(&lines).map_err(|(offset, e)| {
                    format!("{file}:{}: http:{}: bad base64 body: {e}", line + 1 + offset, served.path)
                })?
            } else {
                let mut data = lines.join("\n");
                if !lines.is_empty() && !noeol {
                    data.push('\n');
                }
                data.into_bytes()
            };
            if case.served.iter().any(|f| f.path == served.path) {
                return Err(format!("{file}:{line}: http:{} is served twice", served.path));
            }
            case.served.push(served);
        }
    }
    Ok(())
}
/// The body's bytes; on error, which body line (0-based) is wrong. Line
/// breaks are free, so a character outside the alphabet is found per line
/// and the rest (length, padding) is judged on the whole text, whose
/// trouble is put on its last line.
fn decode_base64(lines: &[String]) -> Result<Vec<u8>, (usize, String)> {
    let body: Vec<&str> = lines.iter().map(|l| l.trim()).collect();
    for (i, l) in body.iter().enumerate() {
        if let Some(c) = l.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))) {
            return Err((i, format!("{c:?} is not a base64 character")));
        }
    }
    let last = body.iter().rposition(|l| !l.is_empty()).unwrap_or(0);
    base64::engine::general_purpose::STANDARD
        .decode(body.concat())
        .map_err(|e| (last, e.to_string()))
}
// Blank lines before the next `=== ` (or the end of the file) separate cases: the
// last section of a case must not get them as content, or a `noeol` file ends in
// a line end after all (and exact comparisons such as `cmp` fail while `$(cat)`
// hides it).
fn drop_separator_lines(sec: &mut Section) {
    if let Section::File { lines, .. } | Section::Expect { lines } | Section::Http { lines, base64: false, .. } = sec {
        while lines.last().is_some_and(|l| l.trim().is_empty()) {
            lines.pop();
        }
    }
}

fn finish(file: &str, registry_host: &str, case: Open) -> Result<BkCase, String> {
    let origin = format!("{file}:{}", case.line);
    let from = case.from.ok_or_else(|| format!("{origin}: case {} has no `from:` line", case.name))?;
    let raw = match &case.expect {
        None => serde_json::Value::Object(Default::default()),
        Some(s) => serde_json::from_str(&rewrite_hosts(s, registry_host, None))
            .map_err(|e| format!("{origin}: case {}: expect.json: {e}", case.name))?,
    };
    if !case.entries.iter().any(|e| matches!(e, Entry::File { path, .. } if path.to_ascii_lowercase().contains("dockerfile")))
        && raw.get("dockerfile").is_none()
    {
        return Err(format!("{origin}: case {} has no Dockerfile", case.name));
    }
    Ok(BkCase {
        name: case.name.clone(),
        from,
        origin,
        entries: case.entries,
        expect: Expect { name: case.name, raw },
        served: case.served,
        expect_src: case.expect,
    })
}

enum Header {
    File { path: String, mode: u32, noeol: bool },
    Base64 { path: String, mode: u32 },
    Symlink { path: String, target: String },
    Dir { path: String, mode: u32 },
    Expect,
    Http { file: ServedFile, base64: bool, noeol: bool },
}
impl Header {
    fn into_section(self, c: &mut Open, line: usize) -> Section {
        match self {
            Header::File { path, mode, noeol } => Section::File { path, mode, noeol, lines: Vec::new() },
            Header::Base64 { path, mode } => Section::Base64 { path, mode, line, lines: Vec::new() },
            Header::Expect => Section::Expect { lines: Vec::new() },
            Header::Http { file, base64, noeol } => Section::Http { file, base64, noeol, line, lines: Vec::new() },
            Header::Symlink { path, target } => {
                c.entries.push(Entry::Symlink { path, target });
                Section::None
            }
            Header::Dir { path, mode } => {
                c.entries.push(Entry::Dir { path, mode });
                Section::None
            }
        }
    }
}
fn section_header(h: &str) -> Result<Header, String> {
    if h == "expect.json" {
        return Ok(Header::Expect);
    }
    if let Some(rest) = h.strip_prefix("http:") {
        return http_header(rest);
    }
    if let Some((path, target)) = h.split_once(" -> ") {
        return Ok(Header::Symlink { path: path.trim().to_string(), target: target.trim().to_string() });
    }
    let mut words = h.split_whitespace();
    let path = words.next().ok_or("empty section name")?.to_string();
    if path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Err(format!("context path {path:?} must be relative and stay inside"));
    }
    let mut mode = None;
    let mut noeol = false;
    let mut base64 = false;
    for w in words {
        if let Some(m) = w.strip_prefix("mode=") {
            mode = Some(u32::from_str_radix(m, 8).map_err(|_| format!("bad mode {m:?}"))?);
        } else if w == "noeol" {
            noeol = true;
        } else if w == "base64" {
            base64 = true;
        } else {
            return Err(format!("unknown attribute {w:?} (mode=OCTAL, noeol, base64)"));
        }
    }
    if base64 && noeol {
        // The decoded bytes are the file: there is no line end to drop.
        return Err(format!("{path}: noeol has no meaning with base64"));
    }
    Ok(match path.strip_suffix('/') {
        Some(d) if base64 => return Err(format!("{d}/: a directory has no base64 body")),
        Some(d) => Header::Dir { path: d.to_string(), mode: mode.unwrap_or(0o755) },
        None if base64 => Header::Base64 { path, mode: mode.unwrap_or(0o644) },
        None => Header::File { path, mode: mode.unwrap_or(0o644), noeol },
    })
}
/// `http:/path [base64] [noeol] [last-modified=DATE]`, where DATE (an HTTP date,
/// which has blanks, or epoch seconds) is the rest of the header.
fn http_header(h: &str) -> Result<Header, String> {
    let (words, date) = match h.split_once("last-modified=") {
        Some((w, d)) => (w, Some(d.trim())),
        None => (h, None),
    };
    let mut words = words.split_whitespace();
    let path = words.next().ok_or("http: needs a path (http:/file)")?.to_string();
    if !path.starts_with('/') {
        return Err(format!("http:{path}: the served path must start with /"));
    }
    let (mut base64, mut noeol) = (false, false);
    for w in words {
        match w {
            "base64" => base64 = true,
            "noeol" => noeol = true,
            _ => return Err(format!("http:{path}: unknown attribute {w:?} (base64, noeol, last-modified=DATE last)")),
        }
    }
    if base64 && noeol {
        return Err(format!("http:{path}: noeol has no meaning with base64"));
    }
    let last_modified = match date {
        None => None,
        Some(d) if !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) => {
            Some(d.parse::<i64>().map_err(|e| format!("http:{path}: last-modified={d}: {e}"))?)
        }
        Some(d) => Some(parse_http_date(d).map_err(|e| format!("http:{path}: last-modified: {e}"))?),
    };
    Ok(Header::Http { file: ServedFile { path, data: Vec::new(), last_modified }, base64, noeol })
}

/// Parse one file. Layout:
///
/// ```text
/// free text before the first case
/// === testName[/variant]
/// from: dockerfile_x_test.go:testName
/// -- Dockerfile --
/// FROM 127.0.0.1:5000/base/busybox:latest
/// -- dir/file mode=0600 noeol --
/// contents (noeol: without the last line end)
/// -- a.tar.gz mode=0600 base64 --
/// H4sIAAAAAAAA...   (the file's bytes in base64, lines of any length)
/// -- link -> target --
/// -- emptydir/ mode=0700 --
/// -- http:/files/a.tar.gz base64 last-modified=Tue, 14 Nov 2023 22:13:20 GMT --
/// H4sIAAAAAAAA...   (served by the case's HTTP server, not in the context)
/// -- expect.json --
/// {"files": {"/x": {"content": "y\n"}}}
/// ```
pub fn parse(file: &str, text: &str, registry_host: &str) -> Result<Vec<BkCase>, String> {
    let mut out = Vec::new();
    let mut case: Option<Open> = None;
    let mut sec = Section::None;
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if let Some(name) = line.strip_prefix("=== ") {
            if let Some(mut c) = case.take() {
                drop_separator_lines(&mut sec);
                close_section(file, &mut sec, &mut c)?;
                out.push(finish(file, registry_host, c)?);
            }
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(format!("{file}:{lineno}: bad case name {name:?}"));
            }
            case = Some(Open { name: name.to_string(), line: lineno, from: None, entries: Vec::new(), served: Vec::new(), expect: None });
            continue;
        }
        let Some(c) = case.as_mut() else { continue };
        if let Some(header) = line.strip_prefix("-- ").and_then(|l| l.strip_suffix(" --")) {
            close_section(file, &mut sec, c)?;
            sec = section_header(header).map_err(|e| format!("{file}:{lineno}: {e}"))?.into_section(c, lineno);
            continue;
        }
        match &mut sec {
            Section::None => {
                if let Some(f) = line.strip_prefix("from:") {
                    c.from = Some(f.trim().to_string());
                } else if !line.trim().is_empty() && !line.starts_with('#') {
                    return Err(format!("{file}:{lineno}: expected `from:`, a `-- name --` section or `=== case`, got {line:?}"));
                }
            }
            Section::File { lines, .. }
            | Section::Base64 { lines, .. }
            | Section::Expect { lines }
            | Section::Http { lines, .. } => {
                lines.push(line.to_string())
            }
        }
    }
    if let Some(mut c) = case.take() {
        drop_separator_lines(&mut sec);
        close_section(file, &mut sec, &mut c)?;
        out.push(finish(file, registry_host, c)?);
    }

    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_files_modes_links_dirs_and_expectations() {
        let text = "intro\n=== testA/one\nfrom: x_test.go:testA\n-- Dockerfile --\nFROM 127.0.0.1:5000/b\nRUN true\n-- bin/x mode=0755 noeol --\nhi\n-- l -> ../t --\n-- d/ mode=0700 --\n-- expect.json --\n{\"files\": {\"/x\": {\"content\": \"127.0.0.1:5000\"}}}\n=== testB\nfrom: x_test.go:testB\n-- Dockerfile --\nFROM scratch\n";
        let cases = parse("f.txt", text, "127.0.0.1:9").unwrap();
        assert_eq!(cases.len(), 2);
        let a = &cases[0];
        assert_eq!((a.name.as_str(), a.function()), ("testA/one", "testA"));
        assert_eq!(a.entries[0], Entry::File { path: "Dockerfile".into(), data: b"FROM 127.0.0.1:5000/b\nRUN true\n".to_vec(), mode: 0o644 });
        assert_eq!(a.entries[1], Entry::File { path: "bin/x".into(), data: b"hi".to_vec(), mode: 0o755 });
        assert_eq!(a.entries[2], Entry::Symlink { path: "l".into(), target: "../t".into() });
        assert_eq!(a.entries[3], Entry::Dir { path: "d".into(), mode: 0o700 });
        assert_eq!(a.expect.raw["files"]["/x"]["content"], "127.0.0.1:9");
        assert_eq!(cases[1].origin, "f.txt:13");
    }

    #[test]
    fn malformed_files_name_their_line() {
        for (text, want) in [
            ("=== a\n-- Dockerfile --\nFROM x\n", "no `from:`"),
            ("=== a\nfrom: f:a\n", "no Dockerfile"),
            ("=== a\nfrom: f:a\nstray\n", "f.txt:3"),
            ("=== a\nfrom: f:a\n-- /abs --\n", "must be relative"),
            ("=== a\nfrom: f:a\n-- x mode=9 --\n", "bad mode"),
            ("=== a\nfrom: f:a\n-- Dockerfile --\nFROM x\n-- expect.json --\n{\n", "expect.json"),
        ] {
            let err = parse("f.txt", text, "h").unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn base64_sections_decode_to_bytes_written_unchanged() {
        // NUL, 0xff and the registry address: binary stays as it is.
        let bytes: Vec<u8> = [&[0u8, 0xff, 0x1f, 0x8b][..], b"127.0.0.1:5000", &[0u8; 40]].concat();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        // Split mid-quantum and indented: line breaks and surrounding blanks are free.
        let (l1, l2) = b64.split_at(10);
        let text = format!(
            "=== a\nfrom: f:a\n-- Dockerfile --\nFROM scratch\n-- sub/t.tar mode=0600 base64 --\n{l1}\n  {l2}\n\n-- empty base64 --\n-- expect.json --\n{{}}\n"
        );
        let cases = parse("f.txt", &text, "127.0.0.1:9").unwrap();
        let e = &cases[0].entries;
        assert_eq!(e[1], Entry::Binary { path: "sub/t.tar".into(), data: bytes.clone(), mode: 0o600 });
        assert_eq!(e[2], Entry::Binary { path: "empty".into(), data: Vec::new(), mode: 0o644 });
        let dir = tempfile::tempdir().unwrap();
        cases[0].materialize(dir.path(), "127.0.0.1:9", None).unwrap();
        let p = dir.path().join("sub/t.tar");
        assert_eq!(fs::read(&p).unwrap(), bytes);
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o7777, 0o600);
    }

    #[test]
    fn malformed_base64_names_the_file_and_line() {
        let head = "=== a\nfrom: f:a\n-- Dockerfile --\nFROM x\n-- t.tar base64 --\n";
        for (body, want) in [
            // line 7: a character outside the alphabet
            ("AAAA\nAA*A\nAAAA\n", "f.txt:7: t.tar: bad base64 body: '*'"),
            // a length that is no base64 text: reported on the body's last line
            ("AAAA\nAAAAA\n", "f.txt:7: t.tar: bad base64 body"),
            // padding in the middle
            ("AA==\nAAAA\n", "f.txt:7: t.tar: bad base64 body"),
        ] {
            let err = parse("f.txt", &format!("{head}{body}"), "h").unwrap_err();
            assert!(err.contains(want), "{body:?}: {err}");
        }
        for (header, want) in [
            ("-- t.tar base64 noeol --", "noeol has no meaning with base64"),
            ("-- d/ base64 --", "no base64 body"),
            ("-- t.tar base46 --", "unknown attribute \"base46\""),
        ] {
            let err = parse("f.txt", &format!("=== a\nfrom: f:a\n{header}\n"), "h").unwrap_err();
            assert!(err.contains("f.txt:3") && err.contains(want), "{header}: {err}");
        }
    }

    #[test]
    fn blank_lines_between_cases_are_not_content() {
        // A `noeol` file as the last section, then the blank line before the next case
        // (and at the end of the file): the file holds exactly its text.
        let text = "=== a\nfrom: f:a\n-- Dockerfile --\nFROM x\n-- foo noeol --\nbar\n\n=== b\nfrom: f:b\n-- Dockerfile --\nFROM x\n-- foo --\nbar\n\n\n";
        let cases = parse("f.txt", text, "h").unwrap();
        assert_eq!(cases[0].entries[1], Entry::File { path: "foo".into(), data: b"bar".to_vec(), mode: 0o644 });
        assert_eq!(cases[1].entries[1], Entry::File { path: "foo".into(), data: b"bar\n".to_vec(), mode: 0o644 });
        // Inside a case a blank line before the next section stays content.
        let cases = parse("f.txt", "=== a\nfrom: f:a\n-- foo noeol --\nbar\n\n-- Dockerfile --\nFROM x\n", "h").unwrap();
        assert_eq!(cases[0].entries[0], Entry::File { path: "foo".into(), data: b"bar\n".to_vec(), mode: 0o644 });
    }

    #[test]
    fn http_sections_are_served_not_in_the_context() {
        let text = "=== a\nfrom: f:a\n-- Dockerfile --\nFROM scratch\nADD http://127.0.0.1:5001/foo /\n\
            -- http:/foo noeol --\ncontent1\n\
            -- http:/ last-modified=Tue, 14 Nov 2023 22:13:20 GMT --\ncontent2\n\
            -- http:/t.tar base64 last-modified=1700000402 --\nAAEC\n\
            -- http:/dir/x?y=1 --\n\
            -- expect.json --\n{\"http_requests\": [\"GET /foo\"], \"files\": {\"/u\": {\"content\": \"127.0.0.1:5001 127.0.0.1:5000\"}}}\n\n\
            === b\nfrom: f:b\n-- Dockerfile --\nFROM scratch\n-- http:/last --\nline\n\n\n";
        let cases = parse("f.txt", text, "127.0.0.1:50012").unwrap();
        let a = &cases[0];
        assert_eq!(a.entries.len(), 1, "only the Dockerfile is context: {:?}", a.entries);
        let served: Vec<(&str, &[u8], Option<i64>)> =
            a.served.iter().map(|f| (f.path.as_str(), f.data.as_slice(), f.last_modified)).collect();
        assert_eq!(
            served,
            [
                ("/foo", &b"content1"[..], None),
                ("/", &b"content2\n"[..], Some(1_700_000_000)),
                ("/t.tar", &[0u8, 1, 2][..], Some(1_700_000_402)),
                ("/dir/x?y=1", &b""[..], None),
            ]
        );
        // The blank lines before the next case are no part of the last served file.
        assert_eq!(cases[1].served[0].data, b"line\n");
        assert!(a.uses_http() && cases[1].uses_http());

        // The registry's port starts like the HTTP token: each token is rewritten once.
        let e = a.expect_for("127.0.0.1:50012", "127.0.0.1:41000").unwrap();
        assert_eq!(e.raw["files"]["/u"]["content"], "127.0.0.1:41000 127.0.0.1:50012");
        assert_eq!(e.raw["http_requests"][0], "GET /foo");
        assert_eq!(a.expect.raw["files"]["/u"]["content"], "127.0.0.1:5001 127.0.0.1:50012");
        let dir = tempfile::tempdir().unwrap();
        a.materialize(dir.path(), "127.0.0.1:50012", Some("127.0.0.1:41000")).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("Dockerfile")).unwrap(), "FROM scratch\nADD http://127.0.0.1:41000/foo /\n");
        assert!(!dir.path().join("foo").exists());
    }

    #[test]
    fn rewrites_hosts_in_one_pass() {
        assert_eq!(
            rewrite_hosts("a 127.0.0.1:5000/x 127.0.0.1:5001/y 127.0.0.1:5002 z", "127.0.0.1:50011", Some("127.0.0.1:50001")),
            "a 127.0.0.1:50011/x 127.0.0.1:50001/y 127.0.0.1:5002 z"
        );
        assert_eq!(rewrite_hosts("127.0.0.1:5001 127.0.0.1:5000", "R", None), "127.0.0.1:5001 R");
        let no_http = parse("f.txt", "=== a\nfrom: f:a\n-- Dockerfile --\nFROM scratch\n", "h").unwrap();
        assert!(!no_http[0].uses_http());
    }

    #[test]
    fn malformed_http_sections_name_their_line() {
        for (header, want) in [
            ("-- http:foo --", "must start with /"),
            ("-- http: --", "needs a path"),
            ("-- http:/foo mode=0600 --", "unknown attribute \"mode=0600\""),
            ("-- http:/foo base64 noeol --", "noeol has no meaning with base64"),
            ("-- http:/foo last-modified=Mon, 14 Nov 2023 22:13:20 GMT --", "that day is a Tue"),
            ("-- http:/foo last-modified=yesterday --", "not an HTTP date"),
        ] {
            let err = parse("f.txt", &format!("=== a\nfrom: f:a\n{header}\n"), "h").unwrap_err();
            assert!(err.contains("f.txt:3") && err.contains(want), "{header}: {err}");
        }
        let twice = "=== a\nfrom: f:a\n-- http:/x --\na\n-- http:/x --\nb\n-- Dockerfile --\nFROM x\n";
        let err = parse("f.txt", twice, "h").unwrap_err();
        assert!(err.contains("f.txt:5") && err.contains("served twice"), "{err}");
        let bad = "=== a\nfrom: f:a\n-- http:/t base64 --\nAA*A\n";
        let err = parse("f.txt", bad, "h").unwrap_err();
        assert!(err.contains("f.txt:4: http:/t: bad base64 body"), "{err}");
    }
}
