//! The build context as COPY/ADD see it: source selection and content digests.
//!
//! Selection follows BuildKit (`tonistiigi/fsutil` `copy.ResolveWildcards` over a
//! context already filtered by `.dockerignore`):
//! - a source is cleaned and clamped inside the context (`../x` is `x`, as
//!   `filepath.Join("/", src)` does);
//! - it is split at its first component holding `*`, `?` or `[` (a `\`-escaped
//!   character is not a wildcard); the literal part must exist, the rest is matched
//!   with Go's `filepath.Match` one segment per level, so `*` never crosses `/` and
//!   `**` is just `*` (COPY has no recursive glob); a matched directory is not
//!   descended into further;
//! - each match (and a plain source) is followed if it is a symlink, resolved inside
//!   the context; files excluded by `.dockerignore` do not exist, except a
//!   directory that still holds re-included files.
//! - A plain source that does not exist is an error. A wildcard that matches
//!   nothing is an error here by default; BuildKit lets it match nothing
//!   (`AllowEmptyWildcard: true` in dockerfile2llb) and
//!   [`ContextHasher::set_allow_empty_wildcard`] gives that behaviour.
//!
//! The digest of a source set is sha256 over a canonical listing: for every match
//! its path, then every entry below it (sorted by name) with type, permission bits,
//! size, symlink target and content sha256. Owners and times are left out, as
//! Docker leaves them out of its cache keys (COPY resets owners anyway).
//!
//! Content hashes are remembered in a stat cache (`stat-cache.json` in the cache
//! directory the builder gives, `$KILN_ROOT/context-cache/<hash of the context
//! path>`), keyed by path and validated by size, mtime, ctime and inode, so a
//! second build reads only files that changed. Files modified within the last
//! couple of seconds are not trusted from the cache ("racy" entries, as git does).

// Not wired into the solver yet (COPY/ADD issue); remove once it is.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::context::dockerignore::{go_clean, Matcher};

const CACHE_FILE: &str = "stat-cache.json";
const CACHE_VERSION: u32 = 1;

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
    fn of(ft: fs::FileType) -> Self {
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

    fn letter(self) -> char {
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct StatKey {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
}

impl StatKey {
    fn of(md: &fs::Metadata) -> Self {
        StatKey {
            size: md.size(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            ino: md.ino(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheEntry {
    #[serde(flatten)]
    key: StatKey,
    sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    entries: BTreeMap<String, CacheEntry>,
}

/// Hashes COPY/ADD sources of one build context, remembering file hashes between
/// builds.
pub struct ContextHasher {
    context: PathBuf,
    matcher: Matcher,
    cache_dir: Option<PathBuf>,
    cache: BTreeMap<String, CacheEntry>,
    /// Paths visited in this run whose cache entry changed (or vanished).
    dirty: bool,
    reads: u64,
    allow_empty_wildcard: bool,
    /// Owners enter the digest (a stage's files keep theirs when copied or mounted).
    include_owners: bool,
    racy_window: Duration,
}

impl ContextHasher {
    /// `cache_dir` (created on `save`) holds the stat cache; `None` keeps nothing.
    pub fn new(context: &Path, matcher: Matcher, cache_dir: Option<&Path>) -> Result<Self> {
        let context = context
            .canonicalize()
            .with_context(|| format!("build context {} is not accessible", context.display()))?;
        let mut cache = BTreeMap::new();
        if let Some(dir) = cache_dir {
            // A missing, unreadable or outdated cache is only a slower build.
            if let Ok(bytes) = fs::read(dir.join(CACHE_FILE)) {
                if let Ok(f) = serde_json::from_slice::<CacheFile>(&bytes) {
                    if f.version == CACHE_VERSION {
                        cache = f.entries;
                    }
                }
            }
        }
        Ok(ContextHasher {
            context,
            matcher,
            cache_dir: cache_dir.map(Path::to_path_buf),
            cache,
            dirty: false,
            reads: 0,
            allow_empty_wildcard: false,
            include_owners: false,
            racy_window: Duration::from_secs(2),
        })
    }

    /// The cache directory for a context: `<kiln_root>/context-cache/<sha256 of the
    /// context's canonical path>` (first 32 hex digits).
    pub fn cache_dir_for(kiln_root: &Path, context: &Path) -> PathBuf {
        let canon = context.canonicalize().unwrap_or_else(|_| context.to_path_buf());
        let h = hex::encode(Sha256::digest(canon.as_os_str().as_bytes()));
        kiln_root.join("context-cache").join(&h[..32])
    }

    /// Let a wildcard match nothing, as BuildKit does.
    /// Hash owners too: for a stage's rootfs, whose files keep their owners in
    /// `COPY --from` and bind mounts (a context's owners never reach an image).
    pub fn set_include_owners(&mut self, yes: bool) {
        self.include_owners = yes;
    }

    pub fn set_allow_empty_wildcard(&mut self, allow: bool) {
        self.allow_empty_wildcard = allow;
    }

    /// How many files had their contents read (the rest came from the stat cache).
    pub fn content_reads(&self) -> u64 {
        self.reads
    }

    #[cfg(test)]
    fn set_racy_window(&mut self, d: Duration) {
        self.racy_window = d;
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
        let hint = if !path.is_empty() && self.matcher.matches(path, false) {
            format!(" (excluded by {})", self.ignore_name())
        } else {
            String::new()
        };
        format!("COPY source {source:?} not found in the build context{hint}")
    }

    fn ignore_name(&self) -> String {
        self.matcher
            .source()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| ".dockerignore".into())
    }

    fn ignore_hint(&self) -> String {
        if self.matcher.is_empty() {
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
        if rel.is_empty() || !self.matcher.matches(rel, md.is_dir()) {
            return Ok(true);
        }
        if !md.is_dir() || !self.matcher.could_contain_included(rel) {
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
                    let host_parent = crate::fsutil::resolve_in_root(&self.context, &Path::new("/").join(parent), true)?;
                    let p = host_parent.strip_prefix(&self.context).unwrap_or(Path::new("")).to_string_lossy().into_owned();
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

    fn host(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.context.clone()
        } else {
            self.context.join(rel)
        }
    }

    /// Every entry below `rel` (not `rel` itself) that the build context holds,
    /// sorted by name, depth first. With `first_only`, stop at the first one found.
    fn walk(&self, rel: &str, out: &mut Vec<Entry>, first_only: bool) -> Result<()> {
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
            let excluded = self.matcher.matches(&child, md.is_dir());
            if excluded && !(md.is_dir() && self.matcher.could_contain_included(&child)) {
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

    /// The entries a list of COPY sources selects, match by match.
    pub fn list(&self, sources: &[String]) -> Result<Vec<(SourceMatch, Vec<Entry>)>> {
        let mut out = Vec::new();
        for src in sources {
            for m in self.resolve(src)? {
                let mut entries = Vec::new();
                if m.is_dir {
                    self.walk(&m.resolved, &mut entries, false).with_context(|| format!("COPY source {src:?}"))?;
                }
                out.push((m, entries));
            }
        }
        Ok(out)
    }

    /// The digest of what `sources` select: `sha256:<hex>`.
    pub fn digest_sources(&mut self, sources: &[String]) -> Result<String> {
        let started = SystemTime::now();
        let mut h = Sha256::new();
        h.update(b"kiln-context-v1\n");
        for src in sources {
            h.update(format!("source {}\n", quote(src.as_bytes())).as_bytes());
            for m in self.resolve(src)? {
                h.update(format!("match {} {}\n", quote(m.path.as_bytes()), quote(m.resolved.as_bytes())).as_bytes());
                let host = self.host(&m.resolved);
                let md = fs::symlink_metadata(&host).with_context(|| format!("COPY source {src:?}: reading {}", host.display()))?;
                let top = entry_of(&m.resolved, &host, &md)?;
                let mut entries = vec![top];
                if m.is_dir {
                    self.walk(&m.resolved, &mut entries, false).with_context(|| format!("COPY source {src:?}"))?;
                }
                for e in entries {
                    let under = e.path.strip_prefix(m.resolved.as_str()).unwrap_or(&e.path).trim_start_matches('/');
                    let content = match e.kind {
                        EntryKind::File => self
                            .file_sha(&e.path, started)
                            .with_context(|| format!("COPY source {src:?}: hashing {}", e.path))?,
                        EntryKind::Symlink => quote(e.link.as_deref().unwrap_or(Path::new("")).as_os_str().as_bytes()),
                        EntryKind::CharDevice | EntryKind::BlockDevice => {
                            format!("rdev:{}", fs::symlink_metadata(self.host(&e.path))?.rdev())
                        }
                        _ => "-".into(),
                    };
                    let owner = if self.include_owners { format!(" {}:{}", e.uid, e.gid) } else { String::new() };
                    h.update(
                        format!("{} {:o} {} {} {}{owner}\n", e.kind.letter(), e.mode, e.size, quote(under.as_bytes()), content)
                            .as_bytes(),
                    );
                }
            }
        }
        Ok(format!("sha256:{}", hex::encode(h.finalize())))
    }

    /// The content sha256 of a regular file, from the stat cache when it is valid.
    fn file_sha(&mut self, rel: &str, started: SystemTime) -> Result<String> {
        let host = self.host(rel);
        let md = fs::symlink_metadata(&host)?;
        let key = StatKey::of(&md);
        if let Some(c) = self.cache.get(rel) {
            if c.key == key && !self.racy(&key, started) {
                return Ok(c.sha256.clone());
            }
        }
        let mut f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&host)
            .with_context(|| format!("opening {}", host.display()))?;
        self.reads += 1;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let sha = hex::encode(h.finalize());
        // Re-stat: a file that changed while being read is not remembered.
        let after = StatKey::of(&f.metadata()?);
        if after == key && !self.racy(&key, started) {
            self.cache.insert(rel.to_string(), CacheEntry { key, sha256: sha.clone() });
            self.dirty = true;
        } else if self.cache.remove(rel).is_some() {
            self.dirty = true;
        }
        Ok(sha)
    }

    /// A file modified close to now may be modified again within the same timestamp
    /// tick without its stat changing: do not trust or store it.
    fn racy(&self, key: &StatKey, started: SystemTime) -> bool {
        let now_ns = started.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0);
        let newest = key.mtime_ns.max(key.ctime_ns) as i128;
        newest + self.racy_window.as_nanos() as i128 > now_ns
    }

    /// Write the stat cache (atomically: temp file, fsync, rename).
    pub fn save(&mut self) -> Result<()> {
        let Some(dir) = &self.cache_dir else { return Ok(()) };
        if !self.dirty {
            return Ok(());
        }
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = CacheFile { version: CACHE_VERSION, entries: std::mem::take(&mut self.cache) };
        let bytes = serde_json::to_vec(&file);
        self.cache = file.entries;
        let bytes = bytes?;
        let tmp = dir.join(format!(".{CACHE_FILE}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, dir.join(CACHE_FILE))
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing the context stat cache in {}", dir.display()));
        }
        self.dirty = false;
        Ok(())
    }
}

fn entry_of(rel: &str, host: &Path, md: &fs::Metadata) -> Result<Entry> {
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

/// A canonical quoting of a byte string: printable ASCII as is, the rest `\xNN`.
fn quote(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() + 2);
    s.push('"');
    for &c in b {
        if (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s.push('"');
    s
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
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
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

    fn hasher(ctx: &Path, ignore: &str, cache: Option<&Path>) -> ContextHasher {
        ContextHasher::new(ctx, Matcher::parse(ignore).unwrap(), cache).unwrap()
    }

    fn paths(h: &ContextHasher, src: &str) -> Vec<String> {
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
        let h = hasher(t.path(), "secret.key\nsrc/lib/gen.rs\n", None);
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
        let mut h = h;
        h.set_allow_empty_wildcard(true);
        assert!(h.resolve("*.nothing").unwrap().is_empty());
        assert!(h.resolve("nodir/*.txt").is_err());
    }

    #[test]
    fn walks_excluded_dirs_only_for_exceptions() {
        let t = tree();
        let h = hasher(t.path(), "src\n!src/lib/mod.rs\n", None);
        let listed = h.list(&["src".into()]).unwrap();
        let names: Vec<_> = listed[0].1.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(names, ["src/lib", "src/lib/mod.rs"]);
    }

    #[test]
    fn digest_is_stable_incremental_and_ignores_what_it_should() {
        let t = tree();
        let cache = tempfile::tempdir().unwrap();
        let srcs = vec!["src".to_string(), "*.txt".to_string()];
        let mut h = hasher(t.path(), "src/lib/gen.rs\n", Some(cache.path()));
        h.set_racy_window(Duration::ZERO);
        let d1 = h.digest_sources(&srcs).unwrap();
        assert_eq!(h.content_reads(), 4);
        h.save().unwrap();

        // Second build: nothing re-read.
        let mut h = hasher(t.path(), "src/lib/gen.rs\n", Some(cache.path()));
        h.set_racy_window(Duration::ZERO);
        assert_eq!(h.digest_sources(&srcs).unwrap(), d1);
        assert_eq!(h.content_reads(), 0);

        // An ignored file does not count.
        fs::write(t.path().join("src/lib/gen.rs"), "// changed").unwrap();
        assert_eq!(h.digest_sources(&srcs).unwrap(), d1);
        assert_eq!(h.content_reads(), 0);

        // Touching a file re-reads it but keeps the digest.
        let a = t.path().join("a.txt");
        fs::write(&a, "a").unwrap();
        assert_eq!(h.digest_sources(&srcs).unwrap(), d1);
        assert_eq!(h.content_reads(), 1);

        // New content, same size: a new digest.
        fs::write(&a, "z").unwrap();
        let d2 = h.digest_sources(&srcs).unwrap();
        assert_ne!(d2, d1);
        // A mode change too.
        fs::set_permissions(&a, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        assert_ne!(h.digest_sources(&srcs).unwrap(), d2);
        h.save().unwrap();

        // Source order and names are part of the key.
        let rev = vec!["*.txt".to_string(), "src".to_string()];
        assert_ne!(h.digest_sources(&rev).unwrap(), h.digest_sources(&srcs).unwrap());
        let err = format!("{:#}", h.digest_sources(&["missing".to_string()]).unwrap_err());
        assert!(err.contains("\"missing\""), "{err}");
    }

    #[test]
    fn racy_files_are_not_trusted() {
        let t = tree();
        let cache = tempfile::tempdir().unwrap();
        let mut h = hasher(t.path(), "", Some(cache.path()));
        h.digest_sources(&["a.txt".into()]).unwrap();
        h.save().unwrap();
        let mut h = hasher(t.path(), "", Some(cache.path()));
        h.digest_sources(&["a.txt".into()]).unwrap();
        assert_eq!(h.content_reads(), 1, "a file written just now must be re-read");
    }

    #[test]
    fn cache_dir_is_per_context() {
        let a = ContextHasher::cache_dir_for(Path::new("/k"), Path::new("/nonexistent/a"));
        let b = ContextHasher::cache_dir_for(Path::new("/k"), Path::new("/nonexistent/b"));
        assert_ne!(a, b);
        assert!(a.starts_with("/k/context-cache"));
    }
}
