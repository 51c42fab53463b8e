//! BuildKit's Dockerfile frontend integration tests, translated into kiln's own
//! table: `testdata/buildkit/*.txt` (format in `testdata/buildkit/README.md`).
//!
//! One file holds many cases, each a small txtar-like archive: the BuildKit test
//! it comes from, the build context (text or base64-encoded binary files with
//! modes, symlinks, empty dirs) and
//! an `expect.json` with the same keys as `testdata/cases/*/expect.json`, so
//! [`crate::cases::Expect`] checks both kinds of case. [`parse`] never panics on
//! a malformed file: it says which line is wrong.

use crate::cases::Expect;
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
    pub expect: Expect,
}

impl BkCase {
    /// The BuildKit test function this case translates (without the variant).
    pub fn function(&self) -> &str {
        self.from.rsplit(':').next().unwrap_or(&self.from)
    }

    /// Write the context into `dir` (created), with `127.0.0.1:5000` in every
    /// text file replaced by `registry_host`.
    pub fn materialize(&self, dir: &Path, registry_host: &str) -> std::io::Result<()> {
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
                        Ok(s) => s.replace("127.0.0.1:5000", registry_host).into_bytes(),
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
/// -- expect.json --
/// {"files": {"/x": {"content": "y\n"}}}
/// ```
pub fn parse(file: &str, text: &str, registry_host: &str) -> Result<Vec<BkCase>, String> {
    struct Open {
        name: String,
        line: usize,
        from: Option<String>,
        entries: Vec<Entry>,
        expect: Option<String>,
    }
    // The section being filled: a file entry or expect.json.
    enum Section {
        None,
        File { path: String, mode: u32, noeol: bool, lines: Vec<String> },
        /// `line` is the header's line number; body lines follow it.
        Base64 { path: String, mode: u32, line: usize, lines: Vec<String> },
        Expect { lines: Vec<String> },
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
        if let Section::File { lines, .. } | Section::Expect { lines } = sec {
            while lines.last().is_some_and(|l| l.trim().is_empty()) {
                lines.pop();
            }
        }
    }
    let finish = |case: Open| -> Result<BkCase, String> {
        let origin = format!("{file}:{}", case.line);
        let from = case.from.ok_or_else(|| format!("{origin}: case {} has no `from:` line", case.name))?;
        let raw = match case.expect {
            None => serde_json::Value::Object(Default::default()),
            Some(s) => serde_json::from_str(&s.replace("127.0.0.1:5000", registry_host))
                .map_err(|e| format!("{origin}: case {}: expect.json: {e}", case.name))?,
        };
        if !case.entries.iter().any(|e| matches!(e, Entry::File { path, .. } if path.to_ascii_lowercase().contains("dockerfile")))
            && raw.get("dockerfile").is_none()
        {
            return Err(format!("{origin}: case {} has no Dockerfile", case.name));
        }
        Ok(BkCase { name: case.name.clone(), from, origin, entries: case.entries, expect: Expect { name: case.name, raw } })
    };

    let mut out = Vec::new();
    let mut case: Option<Open> = None;
    let mut sec = Section::None;
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if let Some(name) = line.strip_prefix("=== ") {
            if let Some(mut c) = case.take() {
                drop_separator_lines(&mut sec);
                close_section(file, &mut sec, &mut c)?;
                out.push(finish(c)?);
            }
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(format!("{file}:{lineno}: bad case name {name:?}"));
            }
            case = Some(Open { name: name.to_string(), line: lineno, from: None, entries: Vec::new(), expect: None });
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
            Section::File { lines, .. } | Section::Base64 { lines, .. } | Section::Expect { lines } => {
                lines.push(line.to_string())
            }
        }
    }
    if let Some(mut c) = case.take() {
        drop_separator_lines(&mut sec);
        close_section(file, &mut sec, &mut c)?;
        out.push(finish(c)?);
    }

    enum Header {
        File { path: String, mode: u32, noeol: bool },
        Base64 { path: String, mode: u32 },
        Symlink { path: String, target: String },
        Dir { path: String, mode: u32 },
        Expect,
    }
    impl Header {
        fn into_section(self, c: &mut Open, line: usize) -> Section {
            match self {
                Header::File { path, mode, noeol } => Section::File { path, mode, noeol, lines: Vec::new() },
                Header::Base64 { path, mode } => Section::Base64 { path, mode, line, lines: Vec::new() },
                Header::Expect => Section::Expect { lines: Vec::new() },
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
        cases[0].materialize(dir.path(), "127.0.0.1:9").unwrap();
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
}
