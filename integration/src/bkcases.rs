//! BuildKit's Dockerfile frontend integration tests, translated into kiln's own
//! table: `testdata/buildkit/*.txt` (format in `testdata/buildkit/README.md`).
//!
//! One file holds many cases, each a small txtar-like archive: the BuildKit test
//! it comes from, the build context (files with modes, symlinks, empty dirs) and
//! an `expect.json` with the same keys as `testdata/cases/*/expect.json`, so
//! [`crate::cases::Expect`] checks both kinds of case. [`parse`] never panics on
//! a malformed file: it says which line is wrong.

use crate::cases::Expect;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One entry of a case's build context.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    File { path: String, data: Vec<u8>, mode: u32 },
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
        Expect { lines: Vec<String> },
    }
    fn close_section(sec: &mut Section, case: &mut Open) {
        match std::mem::replace(sec, Section::None) {
            Section::None => {}
            Section::File { path, mode, noeol, lines } => {
                let mut data = lines.join("\n");
                if !lines.is_empty() && !noeol {
                    data.push('\n');
                }
                case.entries.push(Entry::File { path, data: data.into_bytes(), mode });
            }
            Section::Expect { lines } => case.expect = Some(lines.join("\n")),
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
                close_section(&mut sec, &mut c);
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
            close_section(&mut sec, c);
            sec = section_header(header).map_err(|e| format!("{file}:{lineno}: {e}"))?.into_section(c);
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
            Section::File { lines, .. } | Section::Expect { lines } => lines.push(line.to_string()),
        }
    }
    if let Some(mut c) = case.take() {
        close_section(&mut sec, &mut c);
        out.push(finish(c)?);
    }

    enum Header {
        File { path: String, mode: u32, noeol: bool },
        Symlink { path: String, target: String },
        Dir { path: String, mode: u32 },
        Expect,
    }
    impl Header {
        fn into_section(self, c: &mut Open) -> Section {
            match self {
                Header::File { path, mode, noeol } => Section::File { path, mode, noeol, lines: Vec::new() },
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
        for w in words {
            if let Some(m) = w.strip_prefix("mode=") {
                mode = Some(u32::from_str_radix(m, 8).map_err(|_| format!("bad mode {m:?}"))?);
            } else if w == "noeol" {
                noeol = true;
            } else {
                return Err(format!("unknown attribute {w:?} (mode=OCTAL, noeol)"));
            }
        }
        Ok(match path.strip_suffix('/') {
            Some(d) => Header::Dir { path: d.to_string(), mode: mode.unwrap_or(0o755) },
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
}
