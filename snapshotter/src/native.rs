//! The native (copying) snapshotter, for where overlayfs cannot be mounted (nested
//! overlay in a pod, seccomp, old kernels).
//!
//! `prepare` materializes the merged view of the lowers into a plain directory (a
//! full copy: a RUN may modify files in place, so hardlinks into the layer store
//! would corrupt it) and records, for every path, what identifies its state: inode
//! number and ctime (any write, chmod, chown, xattr or link count change moves the
//! ctime, and nothing can set it back), size, mode and mtime; directories are
//! compared by inode, birth time, mode, owner and mtime (their ctime also moves when
//! a mount stub is made and removed in them). Recording waits until the clock has
//! passed the newest ctime, so with coarse timestamps a change right after the copy
//! still shows, and contents never need comparing.
//!
//! After the step, `diff_into` walks the rootfs and compares (metadata only: the
//! kernel's ctime makes content comparison unnecessary), then writes the changes as
//! an overlay-format upper directory: changed non-directories copied in (hardlink
//! groups kept), directories created with their metadata, deleted names as 0/0 whiteouts,
//! directories replaced by new ones marked opaque. `diff::write_layer` then turns
//! that into the same canonical layer the overlay path produces, and the directory
//! becomes the committed layer like an overlay upperdir.
//!
//! The rootfs itself, after the step, is the merged view of the lowers plus that
//! layer: the store keeps it for the next step on that stack (moved, not copied),
//! so a Dockerfile pays the full copy once per stage, not once per step.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::fsops;
use crate::xattr;

/// State of one path before the step.
#[derive(Clone, Copy, Debug)]
struct Before {
    ino: u64,
    ctime: (i64, i64),
    size: u64,
    dir: bool,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    /// Birth time where the filesystem records it: a directory removed and made
    /// again often gets the same inode number back, never the same birth time.
    btime: Option<std::time::SystemTime>,
}

impl Before {
    fn of(md: &fs::Metadata) -> Self {
        Before {
            ino: md.ino(),
            ctime: (md.ctime(), md.ctime_nsec()),
            size: md.len(),
            dir: md.is_dir(),
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            mtime: (md.mtime(), md.mtime_nsec()),
            btime: md.created().ok(),
        }
    }
}

/// What the rootfs looked like right after materializing.
#[derive(Default)]
pub(crate) struct Manifest {
    paths: HashMap<Vec<u8>, Before>,
}

impl Manifest {
    /// Record the state of `root`. Returns only once the filesystem clock has moved
    /// past every ctime recorded, so any later change gets a strictly greater ctime
    /// even with coarse timestamps (the "racy" case that otherwise needs a content
    /// comparison). `scratch` is a directory outside `root` for the clock probe.
    pub(crate) fn record(root: &Path, scratch: &Path) -> io::Result<Manifest> {
        let mut m = Manifest::default();
        m.walk(root, &mut Vec::new())?;
        let newest = m.paths.values().map(|b| b.ctime).max().unwrap_or((0, 0));
        wait_past_ctime(&scratch.join(".kiln-clock"), newest)?;
        Ok(m)
    }

    /// A non-directory the caller moved away and back by rename: the same inode,
    /// untouched, but rename moved its ctime. Every name of that inode whose recorded
    /// state is otherwise equal takes the new ctime, so the diff does not report a
    /// file nobody changed. Returns how many names were updated.
    pub(crate) fn moved_back(&mut self, md: &fs::Metadata) -> usize {
        let mut n = 0;
        for b in self.paths.values_mut() {
            let same = !b.dir
                && b.ino == md.ino()
                && b.size == md.len()
                && b.mode == md.mode()
                && b.mtime == (md.mtime(), md.mtime_nsec());
            if same {
                b.ctime = (md.ctime(), md.ctime_nsec());
                n += 1;
            }
        }
        n
    }

    fn walk(&mut self, dir: &Path, rel: &mut Vec<u8>) -> io::Result<()> {
        for e in fs::read_dir(dir)? {
            let e = e?;
            let md = e.path().symlink_metadata()?;
            let len = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(e.file_name().as_bytes());
            self.paths.insert(rel.clone(), Before::of(&md));
            if md.is_dir() {
                self.walk(&e.path(), rel)?;
            }
            rel.truncate(len);
        }
        Ok(())
    }
}

/// Walk `rootfs`, compare with `before`, and write the changes into the empty
/// directory `upper` in overlay format.
pub(crate) fn diff_into(rootfs: &Path, before: &Manifest, upper: &Path) -> io::Result<()> {
    let mut d = Differ { rootfs, upper, before, seen: HashSet::new(),
        made: HashSet::new(),
        dir_times: Vec::new(),
        links: HashMap::new(),
    };
    d.walk(b"", false)?;
    // Deleted: recorded paths not seen whose parent is still the same directory.
    let mut gone: Vec<&Vec<u8>> = before.paths.keys().filter(|p| !d.seen.contains(*p)).collect();
    gone.sort();
    let mut whiteouts = Vec::new();
    for p in gone {
        let parent = match p.iter().rposition(|&b| b == b'/') {
            Some(i) => &p[..i],
            None => &b""[..],
        };
        let parent_same = parent.is_empty() || (d.seen.contains(parent) && !d.replaced(parent));
        if parent_same {
            whiteouts.push(p.clone());
        }
    }
    for p in whiteouts {
        if let Some(i) = p.iter().rposition(|&b| b == b'/') {
            d.ensure_parents(&p[..i])?;
        }
        fsops::mkwhiteout(&upper.join(OsStr::from_bytes(&p)))?;
    }
    for (p, s, ns) in d.dir_times.iter().rev() {
        fsops::set_mtime(p, *s, *ns)?;
    }
    Ok(())
}

fn same_dir(b: &Before, md: &fs::Metadata) -> bool {
    b.ino == md.ino() && b.btime == md.created().ok()
}

struct Differ<'a> {
    rootfs: &'a Path,
    upper: &'a Path,
    before: &'a Manifest,
    /// Paths present now that were present before (same path, any state).
    seen: HashSet<Vec<u8>>,
    /// Directories created in upper.
    made: HashSet<Vec<u8>>,
    dir_times: Vec<(PathBuf, i64, i64)>,
    /// (dev, ino) of multiply-linked files copied into upper → the copy.
    links: HashMap<(u64, u64), PathBuf>,
}

impl Differ<'_> {
    fn abs(&self, rel: &[u8]) -> PathBuf {
        self.rootfs.join(OsStr::from_bytes(rel))
    }
    fn up(&self, rel: &[u8]) -> PathBuf {
        self.upper.join(OsStr::from_bytes(rel))
    }

    /// A directory that exists now under the same name but is a different one.
    fn replaced(&self, rel: &[u8]) -> bool {
        match (self.before.paths.get(rel), fs::symlink_metadata(self.abs(rel))) {
            (Some(b), Ok(md)) => !b.dir || !same_dir(b, &md),
            _ => true,
        }
    }

    /// Create `rel` and its missing ancestors in upper as directories with the
    /// rootfs's current metadata (overlay's copy-up of parents).
    fn ensure_parents(&mut self, rel: &[u8]) -> io::Result<()> {
        if rel.is_empty() || self.made.contains(rel) {
            return Ok(());
        }
        if let Some(i) = rel.iter().rposition(|&b| b == b'/') {
            self.ensure_parents(&rel[..i])?;
        }
        self.make_dir(rel, false)
    }

    fn make_dir(&mut self, rel: &[u8], opaque: bool) -> io::Result<()> {
        if self.made.contains(rel) {
            return Ok(());
        }
        let src = self.abs(rel);
        let md = fs::symlink_metadata(&src)?;
        let dst = self.up(rel);
        fsops::copy_dir(&src, &md, &dst, false)?;
        if opaque {
            let n = crate::sys::cstr(xattr::OPAQUE_XATTR.as_bytes())?;
            xattr::lset(&dst, &n, b"y")?;
        }
        self.dir_times.push((dst, md.mtime(), md.mtime_nsec()));
        self.made.insert(rel.to_vec());
        Ok(())
    }

    /// `all_new`: everything below is new (a new or replaced directory).
    fn walk(&mut self, rel: &[u8], all_new: bool) -> io::Result<()> {
        let dir = self.abs(rel);
        for name in fsops::names(&dir)? {
            let mut child = rel.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name.as_bytes());
            let md = fs::symlink_metadata(self.abs(&child))?;
            let before = if all_new { None } else { self.before.paths.get(&child).copied() };
            if before.is_some() {
                self.seen.insert(child.clone());
            }
            if md.is_dir() {
                match before {
                    Some(b) if b.dir && same_dir(&b, &md) => {
                        let changed = b.mode != md.mode()
                            || b.uid != md.uid()
                            || b.gid != md.gid()
                            || b.mtime != (md.mtime(), md.mtime_nsec());
                        if changed {
                            self.ensure_parents(&child)?;
                        }
                        self.walk(&child, false)?;
                    }
                    Some(_) => {
                        // replaced (by a new directory, or a non-directory by one)
                        self.ensure_parents(rel)?;
                        self.make_dir(&child, true)?;
                        self.walk(&child, true)?;
                    }
                    None => {
                        self.ensure_parents(rel)?;
                        self.make_dir(&child, false)?;
                        self.walk(&child, true)?;
                    }
                }
                continue;
            }
            if md.file_type().is_socket() {
                continue;
            }
            let changed = match before {
                Some(b) => {
                    b.dir
                        || b.ino != md.ino()
                        || b.ctime != (md.ctime(), md.ctime_nsec())
                        || b.size != md.len()
                        || b.mtime != (md.mtime(), md.mtime_nsec())
                        || b.mode != md.mode()
                }
                None => true,
            };
            if changed {
                self.ensure_parents(rel)?;
                // A copy, not a hardlink: the rootfs lives on as the next step's
                // (and would modify the committed layer in place). Names sharing an
                // inode in the rootfs share one in the diff (hardlink entries).
                let key = (md.dev(), md.ino());
                let first = if md.nlink() > 1 { self.links.get(&key).cloned() } else { None };
                match first {
                    Some(f) => fs::hard_link(f, self.up(&child))?,
                    None => {
                        fsops::copy_node(&self.abs(&child), &md, &self.up(&child))?;
                        if md.nlink() > 1 {
                            self.links.insert(key, self.up(&child));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

use std::os::unix::fs::FileTypeExt;

/// Waits (up to ~2 s) until a file written at `probe` gets a ctime later than
/// `newest`, then removes it: with coarse timestamps, a change made right after
/// recording `newest` then still shows as a newer ctime.
pub fn wait_past_ctime(probe: &Path, newest: (i64, i64)) -> io::Result<()> {
    for _ in 0..2000 {
        fs::write(probe, b"")?;
        let md = fs::symlink_metadata(probe)?;
        if (md.ctime(), md.ctime_nsec()) > newest {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let _ = fs::remove_file(probe);
    Ok(())
}
