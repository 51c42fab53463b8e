//! THE COPY/ADD source resolver: which paths of a source root (the build context,
//! or a stage's rootfs) a list of sources selects. The cache key
//! (`context::hasher`) and the copy (`steps::copy`) both take their file set from
//! here, so a key always stands for exactly what is copied.
//!
//! Selection follows BuildKit (`tonistiigi/fsutil` `copy.ResolveWildcards` over a
//! context already filtered by `.dockerignore`):
//! - a source is cleaned and clamped inside the root (`../x` is `x`, as
//!   `filepath.Join("/", src)` does);
//! - it is split at its first component holding `*`, `?` or `[` (a `\`-escaped
//!   character is not a wildcard); the literal part must exist, the rest is matched
//!   with Go's `filepath.Match` one segment per level, so `*` never crosses `/` and
//!   `**` is just `*` (COPY has no recursive glob); a matched directory is not
//!   descended into further;
//! - each match (and a plain source) is followed if it is a symlink, resolved inside
//!   the root; a dangling link is itself the match; files excluded by
//!   `.dockerignore` do not exist, except a directory that still holds re-included
//!   files;
//! - a plain source that does not exist is an error. A wildcard that matches
//!   nothing is an error by default; BuildKit lets it match nothing
//!   (`AllowEmptyWildcard: true` in dockerfile2llb) and
//!   [`Selector::allow_empty_wildcard`] gives that behaviour.
//!
//! `COPY --parents` selects with its own pattern walk (`steps::parents`); its key
//! hashes a directory that holds everything it can select (`ParentsSource::key_root`).

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::context::dockerignore::{go_clean, Matcher};

/// What a context entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl EntryKind {
    pub(crate) fn of(ft: fs::FileType) -> Self {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            EntryKind::Symlink
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else if ft.is_socket() {
            EntryKind::Socket
        } else if ft.is_char_device() {
            EntryKind::CharDevice
        } else if ft.is_block_device() {
            EntryKind::BlockDevice
        } else {
            EntryKind::File
        }
    }

    pub(crate) fn letter(self) -> char {
        match self {
            EntryKind::File => 'f',
            EntryKind::Dir => 'd',
            EntryKind::Symlink => 'l',
            EntryKind::Fifo => 'p',
            EntryKind::Socket => 's',
            EntryKind::CharDevice => 'c',
            EntryKind::BlockDevice => 'b',
        }
    }
}

/// One thing a COPY source selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMatch {
    /// The path that matched, relative to the context (`""` is the context itself).
    pub path: String,
    /// Where it leads after following a symlink inside the context (same as `path`
    /// when it is not a symlink).
    pub resolved: String,
    pub is_dir: bool,
}

/// One entry below a match, as it will be copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the context.
    pub path: String,
    pub kind: EntryKind,
    /// Permission and special bits (`0o7777`).
    pub mode: u32,
    pub size: u64,
    pub link: Option<PathBuf>,
    pub uid: u32,
    pub gid: u32,
}

/// Selects sources below `root`, as the build sees it after `ignore`.
#[derive(Clone, Copy)]
pub struct Selector<'a> {
    root: &'a Path,
    ignore: &'a Matcher,
    allow_empty_wildcard: bool,
}

impl<'a> Selector<'a> {
    /// `root` should be canonical: matches are reported relative to it.
    pub fn new(root: &'a Path, ignore: &'a Matcher) -> Self {
        Selector { root, ignore, allow_empty_wildcard: false }
    }

    /// Let a wildcard match nothing, as BuildKit does.
    pub fn allow_empty_wildcard(mut self, allow: bool) -> Self {
        self.allow_empty_wildcard = allow;
        self
    }

    /// The matches of one COPY source, in BuildKit's order.
    pub fn resolve(&self, source: &str) -> Result<Vec<SourceMatch>> {
        let clean = go_clean(&format!("/{source}"));
        let clean = clean.trim_start_matches('/');
        let parts: Vec<&str> = if clean.is_empty() { vec![] } else { clean.split('/').collect() };
        let split = parts.iter().position(|p| has_wildcards(p)).unwrap_or(parts.len());
        let literal = parts[..split].join("/");
        let pattern = &parts[split..];
        if pattern.is_empty() {
            let m = self
                .follow(&literal)
                .with_context(|| format!("COPY source {source:?}"))?
                .with_context(|| self.not_found(source, &literal))?;
            return Ok(vec![m]);
        }
        // The literal prefix must exist (BuildKit fails with lstat ... no such file).
        let base = match self.follow(&literal).with_context(|| format!("COPY source {source:?}"))? {
            Some(m) if m.is_dir => Some(m.resolved),
            Some(_) => None, // a file prefix: nothing can match below it
            None => return Err(anyhow::anyhow!(self.not_found(source, &literal))),
        };
        let mut out = Vec::new();
        if let Some(base) = base {
            self.glob(&base, pattern, &mut out).with_context(|| format!("COPY source {source:?}"))?;
        }
        if out.is_empty() && !self.allow_empty_wildcard {
            bail!("COPY source {source:?} matched no files in the build context{}", self.ignore_hint());
        }
        Ok(out)
    }

    /// Whether `rel` exists in the context (after `.dockerignore`).
    pub fn has(&self, rel: &str) -> bool {
        let clean = go_clean(&format!("/{rel}"));
        matches!(self.follow(clean.trim_start_matches('/')), Ok(Some(_)))
    }

    fn not_found(&self, source: &str, path: &str) -> String {
        let hint = if !path.is_empty() && self.ignore.matches(path, false) {
            format!(" (excluded by {})", self.ignore_name())
        } else {
            String::new()
        };
        format!("COPY source {source:?} not found in the build context{hint}")
    }

    fn ignore_name(&self) -> String {
        self.ignore
            .source()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| ".dockerignore".into())
    }

    fn ignore_hint(&self) -> String {
        if self.ignore.is_empty() {
            String::new()
        } else {
            format!(" (after {})", self.ignore_name())
        }
    }

    /// Walk `base` (relative, resolved) matching `pattern` one segment per level.
    fn glob(&self, base: &str, pattern: &[&str], out: &mut Vec<SourceMatch>) -> Result<()> {
        let dir = self.host(base);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let name = name.to_string_lossy().into_owned();
            if !go_match_segment(pattern[0], &name) {
                continue;
            }
            let rel = join(base, &name);
            let md = fs::symlink_metadata(self.host(&rel))?;
            if !self.present(&rel, &md)? {
                continue;
            }
            if pattern.len() == 1 {
                if let Some(m) = self.follow(&rel)? {
                    out.push(SourceMatch { path: rel, ..m });
                }
            } else if md.is_dir() {
                self.glob(&rel, &pattern[1..], out)?;
            }
        }
        Ok(())
    }

    /// Does `rel` exist in the context as BuildKit transfers it?
    fn present(&self, rel: &str, md: &fs::Metadata) -> Result<bool> {
        if rel.is_empty() || !self.ignore.matches(rel, md.is_dir()) {
            return Ok(true);
        }
        if !md.is_dir() || !self.ignore.could_contain_included(rel) {
            return Ok(false);
        }
        // An excluded directory exists if something below it is included.
        let mut probe = Vec::new();
        self.walk(rel, &mut probe, true)?;
        Ok(!probe.is_empty())
    }

    /// Follow `rel` if it is a symlink, inside the context. `None` if it (or its
    /// target) does not exist or is excluded.
    /// A dangling symlink is itself the match (BuildKit copies it as a link).
    fn follow(&self, rel: &str) -> Result<Option<SourceMatch>> {
        let mut cur = rel.to_string();
        let mut last_link: Option<String> = None;
        for _ in 0..40 {
            // Parents first: a symlinked parent is resolved inside the context.
            let parent_resolved = match cur.rsplit_once('/') {
                Some((parent, name)) => {
                    let host_parent = crate::fsutil::resolve_in_root(&self.root, &Path::new("/").join(parent), true)?;
                    let p = host_parent.strip_prefix(&self.root).unwrap_or(Path::new("")).to_string_lossy().into_owned();
                    join(&p, name)
                }
                None => cur.clone(),
            };
            cur = parent_resolved;
            let host = self.host(&cur);
            let md = match fs::symlink_metadata(&host) {
                Ok(md) => md,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {
                    return Ok(last_link.map(|l| SourceMatch { path: rel.to_string(), resolved: l, is_dir: false }))
                }
                Err(e) => return Err(e).with_context(|| format!("reading {}", host.display())),
            };
            if !self.present(&cur, &md)? {
                return Ok(None);
            }
            if md.file_type().is_symlink() {
                last_link = Some(cur.clone());
                let target = fs::read_link(&host)?;
                let t = target.to_string_lossy();
                let base = cur.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
                let next = if t.starts_with('/') { go_clean(&t) } else { go_clean(&format!("/{base}/{t}")) };
                cur = next.trim_start_matches('/').to_string();
                continue;
            }
            return Ok(Some(SourceMatch { path: rel.to_string(), resolved: cur, is_dir: md.is_dir() }));
        }
        bail!("too many levels of symbolic links resolving {rel:?} in the build context")
    }

    pub fn host(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.to_path_buf()
        } else {
            self.root.join(rel)
        }
    }

    /// Every entry below `rel` (not `rel` itself) that the build context holds,
    /// sorted by name, depth first. With `first_only`, stop at the first one found.
    pub fn walk(&self, rel: &str, out: &mut Vec<Entry>, first_only: bool) -> Result<()> {
        let dir = self.host(rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading {}", dir.display()))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let child = join(rel, &name.to_string_lossy());
            let host = dir.join(&name);
            let md = fs::symlink_metadata(&host).with_context(|| format!("reading {}", host.display()))?;
            let excluded = self.ignore.matches(&child, md.is_dir());
            if excluded && !(md.is_dir() && self.ignore.could_contain_included(&child)) {
                continue;
            }
            let entry = entry_of(&child, &host, &md)?;
            if md.is_dir() {
                let at = out.len();
                if !excluded {
                    out.push(entry);
                    if first_only {
                        return Ok(());
                    }
                    self.walk(&child, out, first_only)?;
                } else {
                    self.walk(&child, out, first_only)?;
                    // An excluded directory appears only to hold included files.
                    if out.len() > at {
                        out.insert(at, entry);
                    }
                }
                if first_only && !out.is_empty() {
                    return Ok(());
                }
            } else {
                out.push(entry);
                if first_only {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// What one source selects, match by match: the match's own entry (the path it
    /// leads to) first, then everything below it, depth first in name order.
    pub fn list(&self, source: &str) -> Result<Vec<(SourceMatch, Vec<Entry>)>> {
        let mut out = Vec::new();
        for m in self.resolve(source)? {
            let host = self.host(&m.resolved);
            let md = fs::symlink_metadata(&host).with_context(|| format!("COPY source {source:?}: reading {}", host.display()))?;
            let mut entries = vec![entry_of(&m.resolved, &host, &md)?];
            if m.is_dir {
                self.walk(&m.resolved, &mut entries, false).with_context(|| format!("COPY source {source:?}"))?;
            }
            out.push((m, entries));
        }
        Ok(out)
    }
}

pub(crate) fn entry_of(rel: &str, host: &Path, md: &fs::Metadata) -> Result<Entry> {
    let kind = EntryKind::of(md.file_type());
    let link = if kind == EntryKind::Symlink {
        Some(fs::read_link(host).with_context(|| format!("reading link {}", host.display()))?)
    } else {
        None
    };
    let size = if kind == EntryKind::File { md.size() } else { 0 };
    Ok(Entry { path: rel.to_string(), kind, mode: md.mode() & 0o7777, size, link, uid: md.uid(), gid: md.gid() })
}

fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}/{name}")
    }
}

/// fsutil's `containsWildcards`: `*`, `?` or `[`, skipping `\`-escaped characters.
fn has_wildcards(seg: &str) -> bool {
    let b = seg.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// Go's `filepath.Match` for one path segment (no `/` in `name`). A malformed
/// pattern matches nothing, as `resolveWildcards` ignores Match's error.
pub fn go_match_segment(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    glob_at(&p, &s).unwrap_or(false)
}

fn glob_at(p: &[char], s: &[char]) -> Option<bool> {
    if p.is_empty() {
        return Some(s.is_empty());
    }
    match p[0] {
        '*' => {
            // Try every split; `*` never matches `/` (not present in a segment).
            for k in 0..=s.len() {
                if glob_at(&p[1..], &s[k..])? {
                    return Some(true);
                }
            }
            Some(false)
        }
        '?' => {
            if s.is_empty() {
                return Some(false);
            }
            glob_at(&p[1..], &s[1..])
        }
        '[' => {
            let (matched, rest) = class(&p[1..], s.first().copied())?;
            if s.is_empty() || !matched {
                return Some(false);
            }
            glob_at(rest, &s[1..])
        }
        '\\' => {
            let c = *p.get(1)?;
            if s.first() != Some(&c) {
                return Some(false);
            }
            glob_at(&p[2..], &s[1..])
        }
        c => {
            if s.first() != Some(&c) {
                return Some(false);
            }
            glob_at(&p[1..], &s[1..])
        }
    }
}

/// A `[...]` class (after the `[`): whether `c` matches, and the pattern after the
/// class; `None` when malformed.
fn class(p: &[char], c: Option<char>) -> Option<(bool, &[char])> {
    let mut i = 0;
    let negated = p.first() == Some(&'^');
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut n = 0;
    loop {
        if p.get(i) == Some(&']') && n > 0 {
            i += 1;
            break;
        }
        let esc = |i: &mut usize| -> Option<char> {
            let ch = *p.get(*i)?;
            if ch == '-' || ch == ']' {
                return None;
            }
            if ch == '\\' {
                *i += 1;
                let e = *p.get(*i)?;
                *i += 1;
                return Some(e);
            }
            *i += 1;
            Some(ch)
        };
        let lo = esc(&mut i)?;
        let mut hi = lo;
        if p.get(i) == Some(&'-') {
            i += 1;
            hi = esc(&mut i)?;
        }
        if let Some(c) = c {
            if lo <= c && c <= hi {
                matched = true;
            }
        }
        n += 1;
    }
    Some((matched != negated, &p[i..]))
}


#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    pub(crate) fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let c = t.path();
        for (p, body) in [
            ("a.txt", "a"),
            ("b.txt", "b"),
            ("c.md", "c"),
            ("src/main.rs", "fn main() {}"),
            ("src/lib/mod.rs", "mod x;"),
            ("src/lib/gen.rs", "// generated"),
            ("docs/x.md", "x"),
            ("secret.key", "k"),
        ] {
            let p = c.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, body).unwrap();
        }
        symlink("src/main.rs", c.join("link.rs")).unwrap();
        symlink("../../../../etc/passwd", c.join("escape")).unwrap();
        t
    }

    fn paths(h: &Selector<'_>, src: &str) -> Vec<String> {
        h.resolve(src).unwrap().into_iter().map(|m| m.path).collect()
    }

    #[test]
    fn segment_glob_is_go_filepath_match() {
        assert!(go_match_segment("*.txt", "a.txt"));
        assert!(!go_match_segment("*.txt", "a.md"));
        assert!(go_match_segment("a?c", "abc"));
        assert!(go_match_segment("[a-c]x", "bx"));
        assert!(!go_match_segment("[^a-c]x", "bx"));
        assert!(go_match_segment("\\*", "*"));
        assert!(!go_match_segment("[", "["));
        assert!(go_match_segment("**", "anything"));
    }

    #[test]
    fn resolves_sources_like_buildkit() {
        let t = tree();
        let ignore = Matcher::parse("secret.key\nsrc/lib/gen.rs\n").unwrap();
        let root = t.path().canonicalize().unwrap();
        let h = Selector::new(&root, &ignore);
        assert_eq!(paths(&h, "*.txt"), ["a.txt", "b.txt"]);
        assert_eq!(paths(&h, "./src/../*.md"), ["c.md"]);
        // `*` does not cross `/`; `**` is `*`.
        assert_eq!(paths(&h, "*/*.rs"), ["src/main.rs"]);
        assert_eq!(paths(&h, "**/*.rs"), ["src/main.rs"]);
        assert_eq!(paths(&h, "s*"), ["src"]); // secret.key is ignored
        // Clamped inside the context.
        assert_eq!(paths(&h, "../../a.txt"), ["a.txt"]);
        // A symlink source is followed inside the context.
        let m = h.resolve("link.rs").unwrap();
        assert_eq!(m[0].resolved, "src/main.rs");
        // Escaping links resolve inside the context, here to nothing: a dangling
        // link is itself the source (BuildKit copies it as a link).
        let m = h.resolve("escape").unwrap();
        assert_eq!((m[0].resolved.as_str(), m[0].is_dir), ("escape", false));
        // Ignored files do not exist, and the message says why.
        let err = format!("{:#}", h.resolve("secret.key").unwrap_err());
        assert!(err.contains("excluded by .dockerignore"), "{err}");
        // A wildcard that matches nothing names the source.
        let err = format!("{:#}", h.resolve("*.nothing").unwrap_err());
        assert!(err.contains("\"*.nothing\" matched no files"), "{err}");
        // ... unless BuildKit's behaviour is asked for; a missing literal prefix still fails.
        let h = h.allow_empty_wildcard(true);
        assert!(h.resolve("*.nothing").unwrap().is_empty());
        assert!(h.resolve("nodir/*.txt").is_err());
    }

    #[test]
    fn walks_excluded_dirs_only_for_exceptions() {
        let t = tree();
        let ignore = Matcher::parse("src\n!src/lib/mod.rs\n").unwrap();
        let root = t.path().canonicalize().unwrap();
        let listed = Selector::new(&root, &ignore).list("src").unwrap();
        let names: Vec<_> = listed[0].1.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(names, ["src", "src/lib", "src/lib/mod.rs"]);
    }

}
