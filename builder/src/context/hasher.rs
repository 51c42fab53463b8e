//! Content digests of what COPY/ADD sources select, for cache keys.
//!
//! Which paths a source list selects is `context::select`'s (the one resolver the
//! copy uses too); this module turns that selection into a digest.
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

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::context::dockerignore::Matcher;
use crate::context::select::{EntryKind, Selector};

const CACHE_FILE: &str = "stat-cache.json";
const CACHE_VERSION: u32 = 1;

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
/// Files listed per selection for miss explanations; more are summarised.
pub const LISTED_FILES: usize = 2000;

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
    /// Per selection, the files it held (for explaining cache misses).
    listings: std::collections::BTreeMap<String, Vec<(String, String)>>,
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
            listings: Default::default(),
        })
    }

    /// The cache directory for a context: `<kiln_root>/context-cache/<sha256 of the
    /// context's canonical path>` (first 32 hex digits).
    pub fn cache_dir_for(kiln_root: &Path, context: &Path) -> PathBuf {
        let canon = context.canonicalize().unwrap_or_else(|_| context.to_path_buf());
        let h = hex::encode(Sha256::digest(canon.as_os_str().as_bytes()));
        kiln_root.join("context-cache").join(&h[..32])
    }

    /// Hash owners too: for a stage's rootfs, whose files keep their owners in
    /// `COPY --from` and bind mounts (a context's owners never reach an image).
    pub fn set_include_owners(&mut self, yes: bool) {
        self.include_owners = yes;
    }

    /// Let a wildcard match nothing, as BuildKit does.
    pub fn set_allow_empty_wildcard(&mut self, allow: bool) {
        self.allow_empty_wildcard = allow;
    }

    /// The resolver this hasher's digests stand for.
    pub fn select(&self) -> Selector<'_> {
        Selector::new(&self.context, &self.matcher).allow_empty_wildcard(self.allow_empty_wildcard)
    }

    /// How many files had their contents read (the rest came from the stat cache).
    #[cfg(test)]
    pub fn content_reads(&self) -> u64 {
        self.reads
    }

    #[cfg(test)]
    fn set_racy_window(&mut self, d: Duration) {
        self.racy_window = d;
    }

    /// What [`digest_sources`](Self::digest_sources) saw, by sources (joined by
    /// newlines): path → content digest, at most [`LISTED_FILES`] + 1 entries (one more
    /// than listed says there were more).
    pub fn take_listings(&mut self) -> std::collections::BTreeMap<String, Vec<(String, String)>> {
        std::mem::take(&mut self.listings)
    }

    /// The digest of what `sources` select: `sha256:<hex>`.
    pub fn digest_sources(&mut self, sources: &[String]) -> Result<String> {
        let started = SystemTime::now();
        let mut listing: Vec<(String, String)> = Vec::new();
        let mut h = Sha256::new();
        h.update(b"kiln-context-v1\n");
        for src in sources {
            h.update(format!("source {}\n", quote(src.as_bytes())).as_bytes());
            for (m, entries) in self.select().list(src)? {
                h.update(format!("match {} {}\n", quote(m.path.as_bytes()), quote(m.resolved.as_bytes())).as_bytes());
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
                    if listing.len() <= LISTED_FILES {
                        listing.push((e.path.clone(), format!("{} {:o} {}", e.kind.letter(), e.mode, content)));
                    }
                    let owner = if self.include_owners { format!(" {}:{}", e.uid, e.gid) } else { String::new() };
                    h.update(
                        format!("{} {:o} {} {} {}{owner}\n", e.kind.letter(), e.mode, e.size, quote(under.as_bytes()), content)
                            .as_bytes(),
                    );
                }
            }
        }
        self.listings.insert(sources.join("\n"), listing);
        Ok(format!("sha256:{}", hex::encode(h.finalize())))
    }

    fn host(&self, rel: &str) -> PathBuf {
        self.select().host(rel)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::select::tests::tree;

    fn hasher(ctx: &Path, ignore: &str, cache: Option<&Path>) -> ContextHasher {
        ContextHasher::new(ctx, Matcher::parse(ignore).unwrap(), cache).unwrap()
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
