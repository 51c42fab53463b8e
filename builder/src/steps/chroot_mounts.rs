//! `RUN --mount` under `--isolation chroot`, where mount(2) is not available (uid 0
//! without CAP_SYS_ADMIN, Kaniko's habitat): each mount's content is put at its
//! target in the step's rootfs before the step and taken out after, and whatever the
//! target held before is put back as it was, so the native snapshotter's diff (taken
//! after this) sees nothing of any mount.
//!
//! - What was at a target is renamed aside (beside the rootfs, so on its filesystem:
//!   it keeps its inode, which the native diff compares); missing parents are made
//!   and removed again; the times of the directory this touched are put back.
//! - Bind sources and heredoc scripts are copied in and discarded after: writes
//!   reach neither the layer nor the source (for `rw` and read-only binds alike).
//!   Tmpfs is an empty directory. A cache directory is moved in and back (the step
//!   holds its lock), or, when it cannot be moved (another filesystem, the same cache
//!   twice in one step), copied in with the step's changes merged back.
//! - A secret is a file written in the rootfs; after the step it is zeroed through
//!   the descriptor opened when it was written, synced, truncated and unlinked,
//!   wherever the step moved it. An ssh mount is the relay socket itself.
//!
//! After the step everything is reached through descriptors opened at setup
//! (`/proc/self/fd/N/NAME`), never by a path the step could have redirected with a
//! symlink.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::fsutil::resolve_in_root;
use crate::steps::sshrelay::SshRelay;

/// One `RUN --mount` (or heredoc script) of a chroot step: what goes at `target`.
#[derive(Debug)]
pub struct Mount {
    /// Absolute path in the container.
    pub target: String,
    pub fill: Fill,
}

#[derive(Debug)]
pub enum Fill {
    /// A file or directory copied in and discarded after the step (bind mounts,
    /// heredoc scripts, read-only cache mounts).
    Copy { source: PathBuf },
    /// A cache mount's data directory, moved in and back; `copy`: copied in, and the
    /// step's changes merged back (also the fallback across filesystems).
    Cache { data: PathBuf, copy: bool },
    /// An empty directory (tmpfs; a private cache mount already in use).
    Empty { mode: u32, uid: u32, gid: u32 },
    /// A secret: the staged file, whose bytes, mode and owner the target gets.
    Secret { source: PathBuf },
    /// An ssh agent: the relay listens at the target itself.
    Socket { agent: PathBuf, mode: u32, uid: u32, gid: u32 },
}

/// (seconds, nanoseconds)
type Time = (i64, i64);

/// The mounts of one step, in place. [`Placed::finish`] takes them out; dropping
/// it does the same, best effort (a step that could not run).
pub struct Placed {
    /// Canonical: where the step moved something is read back from /proc.
    real_root: PathBuf,
    stash: PathBuf,
    items: Vec<Item>,
}

struct Item {
    target: String,
    /// The target relative to the root, as resolved at setup.
    rel: PathBuf,
    parent: File,
    name: OsString,
    /// Directories made for the target, outermost first.
    created: Vec<Created>,
    touched: Option<Touched>,
    original: Option<Original>,
    held: Held,
}

struct Created {
    parent: File,
    name: OsString,
    dir: File,
}

/// The directory whose mtime the setup moved: its time before, and right after.
struct Touched {
    dir: File,
    before: Time,
    after: Time,
}

struct Original {
    stash: PathBuf,
    dir: bool,
    atime: Time,
    mtime: Time,
}

enum Held {
    Nothing,
    Discard(File),
    Moved { obj: File, data: PathBuf, meta: (u32, u32, u32) },
    Merged { obj: File, data: PathBuf, base: Baseline },
    Secret(File),
    Relay(Option<SshRelay>),
}

/// `/proc/self/fd/N`: the object behind a descriptor, by a path no symlink in the
/// rootfs can redirect.
fn via(f: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()))
}

fn open_path(p: &Path) -> io::Result<File> {
    fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC).open(p)
}

fn mtime_of(md: &fs::Metadata) -> Time {
    (md.mtime(), md.mtime_nsec())
}

fn set_times(p: &Path, atime: Time, mtime: Time) -> io::Result<()> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()))?;
    let ts = |t: Time| libc::timespec { tv_sec: t.0 as libc::time_t, tv_nsec: t.1 as _ };
    let times = [ts(atime), ts(mtime)];
    // SAFETY: a NUL-terminated path and two timespecs.
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_mtime(p: &Path, mtime: Time) -> io::Result<()> {
    let md = fs::symlink_metadata(p)?;
    set_times(p, (md.atime(), md.atime_nsec()), mtime)
}

fn same_file(p: &Path, f: &File) -> bool {
    match (fs::symlink_metadata(p), f.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Remove a file, link, node or whole tree, never following a symlink.
fn remove_any(p: &Path) -> io::Result<()> {
    let md = fs::symlink_metadata(p)?;
    if md.is_dir() {
        fs::remove_dir_all(p).or_else(|e| {
            kiln_snapshotter::snapshots::remove_tree(p);
            if fs::symlink_metadata(p).is_ok() { Err(e) } else { Ok(()) }
        })
    } else {
        fs::remove_file(p)
    }
}

fn keep(first: &mut Option<anyhow::Error>, r: Result<()>) {
    if let Err(e) = r {
        first.get_or_insert(e);
    }
}

/// Put every mount at its target in `root` (parents before children: the order of
/// `mounts`).
pub fn place(root: &Path, mounts: &[Mount]) -> Result<Placed> {
    let real_root = root.canonicalize().with_context(|| format!("reading {}", root.display()))?;
    let beside = root.parent().context("the rootfs has no parent directory")?;
    let stash = beside.join(format!("mount-stash-{}-{}", std::process::id(), crate::fsutil::next_id()));
    fs::DirBuilder::new().mode(0o700).create(&stash).with_context(|| format!("creating {}", stash.display()))?;
    let mut placed = Placed { real_root, stash, items: Vec::new() };
    for m in mounts {
        let item = placed.make_room(root, &m.target).with_context(|| format!("RUN --mount target {}", m.target))?;
        // Pushed before it is filled: a half-filled target is taken out too.
        placed.items.push(item);
        let item = placed.items.last_mut().expect("just pushed");
        fill(item, &m.fill).with_context(|| format!("RUN --mount target {} (--isolation chroot copies it in)", m.target))?;
        if let Some(t) = &mut item.touched {
            t.after = mtime_of(&t.dir.metadata()?);
        }
    }
    placed.wait_for_clock()?;
    Ok(placed)
}

impl Placed {
    /// The target's parents (made where missing) and, moved aside, what it held.
    fn make_room(&self, root: &Path, target: &str) -> Result<Item> {
        let host = resolve_in_root(root, Path::new(target), true)?;
        let rel = host.strip_prefix(root).context("mount target resolved outside the rootfs")?.to_path_buf();
        let name = rel.file_name().context("cannot mount over / (--isolation chroot)")?.to_os_string();
        let mut dir = open_path(root)?;
        let mut cur = root.to_path_buf();
        let mut created = Vec::new();
        let mut touched = None;
        for c in rel.parent().unwrap_or(Path::new("")).components() {
            let next = cur.join(c);
            match fs::symlink_metadata(&next) {
                Ok(md) if md.is_dir() => dir = open_path(&next)?,
                Ok(_) => bail!("{} is in the way (not a directory)", next.strip_prefix(root).unwrap_or(&next).display()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if touched.is_none() {
                        touched = Some(Touched { before: mtime_of(&dir.metadata()?), after: (0, 0), dir: dir.try_clone()? });
                    }
                    fs::DirBuilder::new().mode(0o755).create(&next).with_context(|| format!("creating {}", next.display()))?;
                    let made = open_path(&next)?;
                    created.push(Created { parent: dir, name: c.as_os_str().to_os_string(), dir: made.try_clone()? });
                    dir = made;
                }
                Err(e) => return Err(e).with_context(|| format!("reading {}", next.display())),
            }
            cur = next;
        }
        if touched.is_none() {
            touched = Some(Touched { before: mtime_of(&dir.metadata()?), after: (0, 0), dir: dir.try_clone()? });
        }
        let at = via(&dir).join(&name);
        let original = match fs::symlink_metadata(&at) {
            Ok(md) => {
                let stash = self.stash.join(format!("o{}", self.items.len()));
                fs::rename(&at, &stash).with_context(|| format!("moving {target} aside for the step"))?;
                Some(Original { stash, dir: md.is_dir(), atime: (md.atime(), md.atime_nsec()), mtime: mtime_of(&md) })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {target}")),
        };
        Ok(Item { target: target.to_string(), rel, parent: dir, name, created, touched, original, held: Held::Nothing })
    }

    /// Copied-in caches are compared by ctime after the step: wait until the clock
    /// has passed every ctime recorded, so a change made right away still shows.
    fn wait_for_clock(&self) -> Result<()> {
        let newest = self.items.iter().filter_map(|i| match &i.held {
            Held::Merged { base, .. } => Some(base.newest),
            _ => None,
        }).max();
        let Some(newest) = newest else { return Ok(()) };
        kiln_snapshotter::wait_past_ctime(&self.stash.join("clock"), newest)?;
        Ok(())
    }

    /// Take every mount out, children first, and put back what the targets held.
    /// `moved_back` hears of each non-directory that was put back (the native
    /// snapshotter then knows its new ctime is no change). Every mount is taken out
    /// even when one fails; the first error is returned.
    pub fn finish(mut self, moved_back: &mut dyn FnMut(&Path) -> Result<()>) -> Result<()> {
        self.teardown(moved_back)
    }

    fn teardown(&mut self, moved_back: &mut dyn FnMut(&Path) -> Result<()>) -> Result<()> {
        let mut first = None;
        while let Some(item) = self.items.pop() {
            let target = item.target.clone();
            let r = self.take_out(item, moved_back);
            keep(&mut first, r.with_context(|| format!("taking RUN --mount target {target} out of the rootfs")));
        }
        kiln_snapshotter::snapshots::remove_tree(&self.stash);
        first.map_or(Ok(()), Err)
    }

    fn take_out(&self, item: Item, moved_back: &mut dyn FnMut(&Path) -> Result<()>) -> Result<()> {
        let at = via(&item.parent).join(&item.name);
        let start = item.touched.as_ref().map(|t| t.dir.metadata().map(|m| mtime_of(&m))).transpose()?;
        let mut first = None;
        match item.held {
            Held::Nothing => {}
            Held::Relay(relay) => drop(relay),
            Held::Discard(obj) => keep(&mut first, self.remove_located(&obj)),
            Held::Secret(file) => {
                keep(&mut first, wipe(&file).context("zeroing the secret file"));
                keep(&mut first, self.remove_located(&file));
            }
            Held::Moved { obj, data, meta } => {
                let r = match self.locate(&obj) {
                    Ok(Some(p)) => fs::rename(&p, &data).with_context(|| format!("moving the cache back to {}", data.display())),
                    // The step removed the cache directory itself: the cache is empty now.
                    Ok(None) => empty_dir(&data, meta).with_context(|| format!("recreating {}", data.display())),
                    Err(e) => Err(e),
                };
                keep(&mut first, r);
            }
            Held::Merged { obj, data, base } => {
                let r = self.locate(&obj).and_then(|cur| {
                    merge_out(cur.as_deref(), &data, &base).with_context(|| format!("merging the step's changes into {}", data.display()))?;
                    self.remove_located(&obj)
                });
                keep(&mut first, r);
            }
        }
        // Whatever the step left at the mount's path is the mount's, not the layer's.
        if fs::symlink_metadata(&at).is_ok() {
            keep(&mut first, remove_any(&at).context("removing what the step left at the target"));
        }
        for c in item.created.iter().rev() {
            let p = via(&c.parent).join(&c.name);
            // Kept when the step put something there (as a stub directory is).
            if same_file(&p, &c.dir) {
                let _ = fs::remove_dir(&p);
            }
        }
        if let Some(o) = &item.original {
            fs::rename(&o.stash, &at).with_context(|| format!("putting {} back", item.target))?;
            set_times(&at, o.atime, o.mtime)?;
            if !o.dir {
                moved_back(&item.rel)?;
            }
        }
        if let (Some(t), Some(start)) = (&item.touched, start) {
            // Unless the step changed that directory too, it gets its time back.
            let want = if start == t.after { t.before } else { start };
            // "N/.": the directory itself, not the /proc link to it.
            set_mtime(&via(&t.dir).join("."), want)?;
        }
        first.map_or(Ok(()), Err)
    }

    fn remove_located(&self, obj: &File) -> Result<()> {
        if let Some(p) = self.locate(obj)? {
            remove_any(&p).with_context(|| format!("removing {}", p.display()))?;
        }
        Ok(())
    }

    /// Where the object placed at a target is now (the step may have moved it):
    /// None when it is gone.
    fn locate(&self, obj: &File) -> Result<Option<PathBuf>> {
        let md = obj.metadata()?;
        if md.nlink() == 0 {
            return Ok(None);
        }
        let p = fs::read_link(via(obj))?;
        if !p.starts_with(&self.real_root) {
            bail!("the step moved it out of the rootfs, to {}", p.display());
        }
        // A name removed while another link remains reads back as "PATH (deleted)".
        let here = fs::symlink_metadata(&p).map(|m| m.dev() == md.dev() && m.ino() == md.ino()).unwrap_or(false);
        Ok(here.then_some(p))
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        // The step did not run (or its rootfs is thrown away): no snapshot to tell.
        let _ = self.teardown(&mut |_| Ok(()));
    }
}

fn fill(item: &mut Item, fill: &Fill) -> Result<()> {
    let at = via(&item.parent).join(&item.name);
    match fill {
        Fill::Copy { source } => {
            copy_tree(source, &at).with_context(|| format!("copying {}", source.display()))?;
            item.held = Held::Discard(open_path(&at)?);
        }
        Fill::Empty { mode, uid, gid } => {
            empty_dir(&at, (*mode, *uid, *gid))?;
            item.held = Held::Discard(open_path(&at)?);
        }
        Fill::Secret { source } => {
            let md = fs::metadata(source).with_context(|| format!("reading {}", source.display()))?;
            let mut f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&at)?;
            // Held before a byte is written: it is wiped whatever happens next.
            item.held = Held::Secret(f.try_clone()?);
            let mut bytes = fs::read(source)?;
            let r = f.write_all(&bytes);
            bytes.iter_mut().for_each(|b| *b = 0);
            r?;
            std::os::unix::fs::fchown(&f, Some(md.uid()), Some(md.gid())).context("chown of the secret")?;
            f.set_permissions(fs::Permissions::from_mode(md.mode() & 0o7777))?;
        }
        Fill::Cache { data, copy } => {
            let md = fs::symlink_metadata(data).with_context(|| format!("reading {}", data.display()))?;
            if !copy {
                match fs::rename(data, &at) {
                    Ok(()) => {
                        let obj = match open_path(&at) {
                            Ok(o) => o,
                            Err(e) => {
                                let _ = fs::rename(&at, data);
                                return Err(e.into());
                            }
                        };
                        item.held = Held::Moved { obj, data: data.clone(), meta: (md.mode() & 0o7777, md.uid(), md.gid()) };
                        return Ok(());
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
                    Err(e) => return Err(e).with_context(|| format!("moving {} into the rootfs", data.display())),
                }
            }
            copy_tree(data, &at).with_context(|| format!("copying {}", data.display()))?;
            let obj = open_path(&at)?;
            let base = Baseline::record(&at)?;
            item.held = Held::Merged { obj, data: data.clone(), base };
        }
        Fill::Socket { agent, mode, uid, gid } => {
            item.held = Held::Relay(Some(SshRelay::start(&at, agent, *mode, *uid, *gid)?));
        }
    }
    Ok(())
}

fn empty_dir(p: &Path, (mode, uid, gid): (u32, u32, u32)) -> io::Result<()> {
    fs::create_dir(p)?;
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

/// Zero a secret file's bytes on disk (synced, so the zeros reach the blocks the
/// secret may have reached), then truncate it: every name of it is empty.
fn wipe(f: &File) -> io::Result<()> {
    let len = f.metadata()?.len();
    let zeros = vec![0u8; 64 << 10];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], off)?;
        off += n as u64;
    }
    f.sync_data()?;
    f.set_len(0)?;
    f.sync_all()
}

/// A copy of `src` (a file, link, node or whole tree) at the new path `dst`, with
/// modes, owners and times; hardlinks inside the tree stay hardlinks; sockets are
/// left out.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    copy_entry(src, dst, &mut HashMap::new())
}

fn copy_entry(src: &Path, dst: &Path, links: &mut HashMap<(u64, u64), PathBuf>) -> io::Result<()> {
    let md = fs::symlink_metadata(src)?;
    if md.is_dir() {
        fs::DirBuilder::new().mode(0o700).create(dst)?;
        for e in fs::read_dir(src)? {
            let e = e?;
            copy_entry(&e.path(), &dst.join(e.file_name()), links)?;
        }
        return set_meta(dst, &md);
    }
    if md.nlink() > 1 {
        if let Some(first) = links.get(&(md.dev(), md.ino())) {
            return fs::hard_link(first, dst);
        }
    }
    if !copy_node(src, dst, &md)? {
        return Ok(());
    }
    if md.nlink() > 1 {
        links.insert((md.dev(), md.ino()), dst.to_path_buf());
    }
    Ok(())
}

/// One non-directory; false for a socket (not copied).
fn copy_node(src: &Path, dst: &Path, md: &fs::Metadata) -> io::Result<bool> {
    use std::os::unix::fs::FileTypeExt;
    let ft = md.file_type();
    if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
    } else if ft.is_file() {
        // copy_file_range: a reflink where the filesystem has them.
        fs::copy(src, dst)?;
    } else if ft.is_socket() {
        return Ok(false);
    } else {
        let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dst.as_os_str()))?;
        // SAFETY: a NUL-terminated path; mode and device from the source's stat.
        if unsafe { libc::mknod(c.as_ptr(), md.mode() as libc::mode_t, md.rdev() as libc::dev_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    set_meta(dst, md)?;
    Ok(true)
}

fn set_meta(p: &Path, md: &fs::Metadata) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(md.uid()), Some(md.gid()))?;
    // After chown, which clears set-id bits.
    if !md.file_type().is_symlink() {
        fs::set_permissions(p, fs::Permissions::from_mode(md.mode() & 0o7777))?;
    }
    set_times(p, (md.atime(), md.atime_nsec()), mtime_of(md))
}

/// The state of a copied-in cache right after the copy, per path below it ("" is
/// the directory itself): what the step changed is what differs afterwards.
struct Baseline {
    paths: HashMap<PathBuf, Stamp>,
    newest: Time,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    ino: u64,
    ctime: Time,
    mtime: Time,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
}

impl Stamp {
    fn of(md: &fs::Metadata) -> Self {
        Stamp {
            ino: md.ino(),
            ctime: (md.ctime(), md.ctime_nsec()),
            mtime: mtime_of(md),
            size: md.len(),
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
        }
    }
    fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

impl Baseline {
    fn record(dir: &Path) -> io::Result<Baseline> {
        let paths = stamps(dir)?;
        let newest = paths.values().map(|s| s.ctime).max().unwrap_or((0, 0));
        Ok(Baseline { paths, newest })
    }
}

fn stamps(dir: &Path) -> io::Result<HashMap<PathBuf, Stamp>> {
    fn walk(base: &Path, rel: &Path, out: &mut HashMap<PathBuf, Stamp>) -> io::Result<()> {
        for e in fs::read_dir(base.join(rel))? {
            let e = e?;
            let r = rel.join(e.file_name());
            let md = fs::symlink_metadata(base.join(&r))?;
            out.insert(r.clone(), Stamp::of(&md));
            if md.is_dir() {
                walk(base, &r, out)?;
            }
        }
        Ok(())
    }
    let mut out = HashMap::new();
    let md = fs::symlink_metadata(dir)?;
    out.insert(PathBuf::new(), Stamp::of(&md));
    if md.is_dir() {
        walk(dir, Path::new(""), &mut out)?;
    }
    Ok(out)
}

/// `data/rel`, when every directory on the way is a directory (not a link a step
/// left in the cache).
fn inside(data: &Path, rel: &Path) -> Option<PathBuf> {
    let mut p = data.to_path_buf();
    for c in rel.parent().unwrap_or(Path::new("")).components() {
        p.push(c);
        if !fs::symlink_metadata(&p).map(|m| m.is_dir()).unwrap_or(false) {
            return None;
        }
    }
    Some(data.join(rel))
}

/// Apply to `data` what the step changed in its copy `cur` (None: the step removed
/// the copy) since `base`: removed names, new and changed entries, directory
/// metadata. Caller holds the cache's lock.
fn merge_out(cur: Option<&Path>, data: &Path, base: &Baseline) -> io::Result<()> {
    let now = match cur {
        Some(c) if fs::symlink_metadata(c).map(|m| m.is_dir()).unwrap_or(false) => stamps(c)?,
        _ => HashMap::new(),
    };
    let mut gone: Vec<&PathBuf> = base.paths.keys().filter(|p| !p.as_os_str().is_empty() && !now.contains_key(*p)).collect();
    gone.sort();
    for p in gone {
        if let Some(d) = inside(data, p) {
            match remove_any(&d) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    let Some(cur) = cur.filter(|_| !now.is_empty()) else { return Ok(()) };
    let mut names: Vec<(&PathBuf, &Stamp)> = now.iter().collect();
    names.sort_by(|a, b| a.0.cmp(b.0));
    let mut dirs = Vec::new();
    for (p, st) in names {
        let Some(dst) = inside(data, p) else { continue };
        let src = cur.join(p);
        let md = fs::symlink_metadata(&src)?;
        if st.is_dir() {
            match fs::symlink_metadata(&dst) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    remove_any(&dst)?;
                    fs::create_dir(&dst)?;
                }
                Err(_) => fs::create_dir(&dst)?,
            }
            std::os::unix::fs::lchown(&dst, Some(md.uid()), Some(md.gid()))?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(md.mode() & 0o7777))?;
            dirs.push((dst, md));
        } else if base.paths.get(p) != Some(st) {
            let tmp = dst.with_file_name(format!(".kiln-merge-{}", crate::fsutil::next_id()));
            if copy_node(&src, &tmp, &md)? {
                if fs::symlink_metadata(&dst).map(|m| m.is_dir()).unwrap_or(false) {
                    remove_any(&dst)?;
                }
                fs::rename(&tmp, &dst)?;
            }
        }
    }
    // Directory times last: writing into them moved them.
    for (dst, md) in dirs.iter().rev() {
        set_times(dst, (md.atime(), md.atime_nsec()), mtime_of(md))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "chroot_mounts_tests.rs"]
mod tests;
