//! Unpacking an OCI layer tar into a directory in overlayfs format.
//!
//! Each layer gets its own directory, later used as an overlay lowerdir (mounted with
//! `userxattr`), so whiteouts become 0/0 character devices and opaque directories get
//! `user.overlay.opaque=y`. All writes go through [`Root`], which resolves parent
//! directories with openat2(`RESOLVE_IN_ROOT`); final components are never followed.
//!
//! Each layer gets its own directory, but it is unpacked knowing the layers below
//! ([`apply_layer_onto`]), so that it means what it would mean applied onto the
//! merged rootfs, as with Docker/containerd:
//! - an entry whose parent directory is not in this layer is placed where the
//!   merged view resolves that parent: below a lower symlink `lib -> usr/lib`, the
//!   entry `lib/x` lands in `usr/lib/x`; the parents are copied up into this layer
//!   with the metadata they have below (not 0755 root, which would change them);
//! - a hardlink to a file of a lower layer copies that file up into this layer and
//!   links to the copy.
//!
//! Such a layer depends on its lowers ([`Applied::depends_on_lowers`]); the
//! snapshot store then keeps it per stack instead of sharing it by diffID.
//! Without lowers, a link to a missing file is an error
//! ([`ApplyError::HardlinkTarget`]) and missing parents are created 0755.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use kiln_oci::media::LayerCompression;
use kiln_oci::{BackgroundSha256Reader, Digest};

use crate::entry_meta::{chown_failed, finish_file, ids, read_meta, set_owner_mode, set_xattrs, set_xattrs_with, Meta};
use crate::error::{io_err, unsafe_err};
pub use crate::error::ApplyError;
use crate::safepath::{normalize, Components, NormalizeError, Root};
use crate::sys::{self, cstr, errno};
use crate::whiteout::{self, Kind};
use crate::xattr;

mod lowers;

/// The result of unpacking a layer.
#[derive(Debug, Clone)]
pub struct Applied {
    /// sha256 of the uncompressed tar stream (all of it, including end padding).
    pub diff_id: Digest,
    /// Number of tar entries processed (extension headers not counted).
    pub entries: u64,
    /// Things deliberately not reproduced, each with the entry name and why: device
    /// nodes that need privileges, ownership not mapped in our user namespace,
    /// xattrs the filesystem refused, AUFS metadata, unknown entry types.
    pub skipped: Vec<String>,
    /// Whether the result depends on what is below: parents not in the layer (made
    /// implicitly or resolved through the lowers) or hardlinks to lower files.
    pub depends_on_lowers: bool,
}

/// Unpack one OCI layer tar stream into `target` (an existing, empty directory), in
/// overlay format, as the bottom layer. See the module docs for the rules.
pub fn apply_layer<R: Read>(reader: R, compression: LayerCompression, target: &Path) -> Result<Applied, ApplyError> {
    apply_layer_onto(reader, compression, target, &[])
}

/// Like [`apply_layer`] for a layer that goes on top of `lowers` (overlay-format
/// layer directories, bottom first), which are read, never written.
pub fn apply_layer_onto<R: Read>(reader: R, compression: LayerCompression, target: &Path, lowers: &[std::path::PathBuf]) -> Result<Applied, ApplyError> {
    // KILN_UNPACK_WORKERS overrides (0: none), for measuring and as an escape hatch.
    let workers = match std::env::var("KILN_UNPACK_WORKERS").ok().and_then(|v| v.parse::<usize>().ok()) {
        Some(n) => n.min(16),
        None => {
            let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(4);
            if n > 1 { n } else { 0 }
        }
    };
    apply_layer_onto_with_workers(reader, compression, target, lowers, workers)
}

/// [`apply_layer_onto`] with `workers` file-creating threads (0: everything on the
/// calling thread). The result does not depend on it; tests compare the two.
pub fn apply_layer_onto_with_workers<R: Read>(reader: R, compression: LayerCompression, target: &Path, lowers: &[std::path::PathBuf], workers: usize) -> Result<Applied, ApplyError> {
    apply_inner(reader, compression, target, lowers, workers, None).map(|(a, _)| a)
}

/// The skeleton of a layer (`crate::skeleton`): directories, symlinks, whiteouts and
/// the files [`SKELETON_KEEPS`] as [`apply_layer_onto`] makes them; every other node
/// is only listed (its path as resolved in the root, `/`-joined). The diffID is still
/// that of the whole stream.
pub(crate) fn apply_skeleton_onto<R: Read>(
    reader: R,
    compression: LayerCompression,
    target: &Path,
    lowers: &[std::path::PathBuf],
) -> Result<(Applied, Vec<Vec<u8>>), ApplyError> {
    apply_inner(reader, compression, target, lowers, 0, Some(Vec::new())).map(|(a, i)| (a, i.unwrap_or_default()))
}

/// Files a skeleton keeps with their data: what a COPY or WORKDIR reads from the
/// rootfs it writes into (`--chown` and USER names).
pub(crate) const SKELETON_KEEPS: [&[u8]; 2] = [b"etc/passwd", b"etc/group"];

/// The tar stream of a layer blob compressed as `compression` (gzip read across all
/// its members: some tools, and eStargz, write several).
pub fn decompressed<'a, R: Read + 'a>(reader: R, compression: LayerCompression) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        LayerCompression::None => Box::new(reader),
        LayerCompression::Gzip => Box::new(crate::gunzip::MultiGzDecoder::new(reader)),
        LayerCompression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
    })
}

fn apply_inner<R: Read>(
    reader: R,
    compression: LayerCompression,
    target: &Path,
    lowers: &[std::path::PathBuf],
    workers: usize,
    skeleton: Option<Vec<Vec<u8>>>,
) -> Result<(Applied, Option<Vec<Vec<u8>>>), ApplyError> {
    let decoded = decompressed(reader, compression).map_err(ApplyError::Read)?;
    // The diffID is hashed on a second core while this thread inflates and unpacks.
    let hashed = BackgroundSha256Reader::new(decoded).map_err(ApplyError::Read)?;
    // The tar reader reads 512-byte headers one at a time: buffer the decoded stream
    // so that each of those is not a decompressor (or, uncompressed, a syscall) call.
    let mut hashing = io::BufReader::with_capacity(128 * 1024, hashed);

    let root = Root::open(target).map_err(|source| ApplyError::Target { path: target.to_path_buf(), source })?;
    let mut state = State {
        root,
        skipped: Vec::new(),
        dir_times: Vec::new(),
        target: target.to_path_buf(),
        lowers: lowers.iter().rev().cloned().collect(),
        depends_on_lowers: false,
        buf: vec![0u8; 64 * 1024],
        seq: 0,
        names: std::collections::HashSet::new(),
        workers,
        quick: true,
        pool: None,
        done: Vec::new(),
        finished: Vec::new(),
        skeleton,
        gzip: compression == LayerCompression::Gzip,
    };
    let mut entries = 0u64;
    {
        let mut archive = tar::Archive::new(&mut hashing);
        for entry in archive.entries().map_err(ApplyError::Read)? {
            let entry = entry.map_err(ApplyError::Read)?;
            if state.apply_entry(entry)? {
                entries += 1;
            }
        }
    }
    // The tar reader stops at the first zero block; the diffID covers the whole
    // decompressed stream, so read the rest (second zero block, record padding).
    io::copy(&mut hashing, &mut io::sink()).map_err(ApplyError::Read)?;
    state.barrier()?;
    state.finish_dir_times()?;
    let (_, diff_id, _) = hashing.into_inner().finish().map_err(ApplyError::Read)?;
    // In tar order, whichever thread noticed them.
    let mut skipped = std::mem::take(&mut state.skipped);
    skipped.sort_by_key(|(seq, _)| *seq);
    let skipped = skipped.into_iter().map(|(_, m)| m).collect();
    Ok((Applied { diff_id, entries, skipped, depends_on_lowers: state.depends_on_lowers }, state.skeleton.take()))
}

struct State {
    root: Root,
    /// A gzip layer: its root-level eStargz landmark and TOC are the format's, not the
    /// image's, and are not unpacked (the tree the stargz snapshotter shows).
    gzip: bool,
    /// (entry number, message), sorted at the end: workers report out of order.
    skipped: Vec<(u64, String)>,
    /// Directory mtimes, applied at the end: writing children changes them.
    dir_times: Vec<(Components, (i64, u32))>,
    target: std::path::PathBuf,
    /// Lower layer directories, top first.
    lowers: Vec<std::path::PathBuf>,
    depends_on_lowers: bool,
    /// File data goes through this one buffer: allocating (and zeroing) it per
    /// entry showed up in profiles of layers with many small files.
    buf: Vec<u8>,
    /// Number of the entry being applied.
    seq: u64,
    /// Hashes of (parent directory inode, name) of every node made by the quick
    /// paths (see [`State::barrier`]). A collision only costs a barrier.
    names: std::collections::HashSet<u64>,
    /// File-creating threads to use (0: none); the pool starts at the first job.
    workers: usize,
    /// Quick paths allowed. Off for the rest of a layer once something was copied
    /// up from the lowers: copy-ups make names that `names` does not know.
    quick: bool,
    pool: Option<crate::unpack_pool::Pool>,
    /// Finished jobs that need the barrier: failed ones, and names that existed.
    done: Vec<crate::unpack_pool::Done>,
    /// Scratch for jobs finished while submitting.
    finished: Vec<crate::unpack_pool::Done>,
    /// Making a skeleton: the nodes listed instead of made.
    skeleton: Option<Vec<Vec<u8>>>,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl State {
    /// Apply one tar entry. Returns false for entries that are not files of the
    /// image (global PAX headers), which are not counted.
    fn apply_entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<bool, ApplyError> {
        self.seq += 1;
        let raw_name = entry.path_bytes().into_owned();
        let path = lossy(&raw_name);
        let path = path.as_str();
        let mut kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            return Ok(false);
        }
        // Old (v7) tars mark directories only by a trailing slash.
        if kind == tar::EntryType::Regular && raw_name.ends_with(b"/") {
            kind = tar::EntryType::Directory;
        }
        let comps = normalize(&raw_name).map_err(|e| match e {
            NormalizeError::Escapes => unsafe_err(path, "path climbs out of the root with \"..\""),
            NormalizeError::Nul => unsafe_err(path, "path contains a NUL byte"),
        })?;
        if self.gzip && kind == tar::EntryType::Regular && comps.len() == 1 && crate::lazy::estargz::RESERVED.contains(&comps[0].as_slice()) {
            return Ok(false);
        }
        let meta = read_meta(&mut entry, path)?;

        let Some((name, parent)) = comps.split_last() else {
            // The root itself (`./`): only a directory entry makes sense; it sets the
            // root's metadata, as Docker does.
            if kind != tar::EntryType::Directory {
                return Err(unsafe_err(path, "a non-directory entry names the root"));
            }
            let fd = self.root.fd().try_clone_to_owned().map_err(io_err(path, "open root"))?;
            self.set_owner_mode_fd(fd.as_fd(), &meta, path)?;
            self.set_xattrs_fd(fd.as_fd(), &meta, path)?;
            self.dir_times.push((Vec::new(), meta.mtime));
            return Ok(true);
        };

        // Below an AUFS metadata directory (`.wh..wh.plnk/...`): not image content.
        if parent.iter().any(|c| c.starts_with(whiteout::AUFS_META_PREFIX)) {
            self.skip(format!("{path}: AUFS metadata entry ignored"));
            return Ok(true);
        }
        let resolved_parent = self.place_parent(parent, path)?;
        let (parent, comps): (&[Vec<u8>], Components) = match &resolved_parent {
            Some(p) => {
                let mut c = p.clone();
                c.push(name.clone());
                (p.as_slice(), c)
            }
            None => (parent, comps.clone()),
        };
        use tar::EntryType as T;
        let wkind = whiteout::classify(name);
        // Quick paths (no barrier, see `barrier`): a new name for a directory, file
        // or symlink in a directory of this layer. Every other entry, and every name
        // made before, first waits for the queued files. Names are recorded for all
        // entries, so that a later quick entry never meets a name made here.
        let made = match &wkind {
            Kind::Normal => Some(name.as_slice()),
            Kind::Whiteout(real) => Some(*real),
            Kind::AufsMeta | Kind::Opaque => None,
        };
        let quick = self.quick
            && resolved_parent.is_none()
            && matches!(wkind, Kind::Normal)
            && matches!(kind, T::Directory | T::Regular | T::Continuous | T::Symlink);
        let mut fresh = false;
        if let (Some(made), true) = (made, self.workers > 0) {
            // A parent that does not resolve yet may be a queued file (then this
            // entry must fail as it would in order) or is to be made: wait first.
            if self.root.dir_id(parent, false, false).is_err() {
                self.barrier()?;
            }
            let (_, ino) = self.root.dir_id(parent, true, true).map_err(io_err(path, "open parent directory"))?;
            self.record_made_dirs();
            fresh = self.names.insert(name_key(ino, made)) && quick;
        }
        if !fresh {
            self.barrier()?;
        }
        match wkind {
            Kind::Normal => {}
            marker => {
                self.apply_marker(marker, parent, &meta, path)?;
                return Ok(true);
            }
        }

        if let Some(listed) = self.skeleton.as_mut() {
            let data = matches!(kind, T::Regular | T::Continuous | T::GNUSparse | T::Link | T::Char | T::Block | T::Fifo);
            let joined = comps.join(&b'/');
            if data && !SKELETON_KEEPS.contains(&joined.as_slice()) {
                listed.push(joined);
                return Ok(true);
            }
        }
        let cname = cstr(name).map_err(io_err(path, "name"))?;
        match kind {
            T::Regular | T::Continuous if fresh && entry.size() <= crate::unpack_pool::MAX_JOB_BYTES => {
                self.queue_file(parent, cname, &mut entry, meta, path)?;
            }
            T::Directory => self.make_dir(parent, &cname, &comps, &meta, path)?,
            T::Regular | T::Continuous | T::GNUSparse => {
                self.write_file(parent, &cname, &mut entry, &meta, path)?;
            }
            T::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| unsafe_err(path, "symlink without a target"))?;
                // The target is stored verbatim: we never follow it ourselves (parents
                // are resolved in-root, final components not at all).
                let target = cstr(&target).map_err(io_err(path, "symlink target"))?;
                self.make_replacing(parent, &cname, path, |pfd| sys::symlinkat(&target, pfd, &cname))?
                    .map_err(io_err(path, "symlink"))?;
                self.finish_special(parent, &cname, &meta, path, false)?;
            }
            T::Link => {
                let target = entry.link_name_bytes().ok_or_else(|| unsafe_err(path, "hardlink without a target"))?;
                self.make_hardlink(parent, &cname, &comps, &target, path)?;
            }
            T::Char | T::Block | T::Fifo => self.make_device(parent, &cname, &entry, kind, &meta, path)?,
            other => {
                self.skip(format!("{path}: unsupported tar entry type {:?} ignored", other));
            }
        }
        Ok(true)
    }

    /// An entry named by the whiteout convention (`.wh.`): made in overlay format.
    fn apply_marker(&mut self, wkind: Kind<'_>, parent: &[Vec<u8>], meta: &Meta, path: &str) -> Result<(), ApplyError> {
        match wkind {
            Kind::Normal => {}
            Kind::AufsMeta => {
                self.skip(format!("{path}: AUFS metadata entry ignored"));
            }
            Kind::Opaque => {
                let pfd = self.root.dir(parent, true).map_err(io_err(path, "open parent directory"))?;
                let dfd = sys::openat(pfd, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .map_err(io_err(path, "open opaque directory"))?;
                let n = cstr(xattr::OPAQUE_XATTR.as_bytes()).map_err(io_err(path, "opaque xattr name"))?;
                xattr::fset(dfd.as_fd(), &n, b"y").map_err(io_err(path, "set user.overlay.opaque"))?;
            }
            Kind::Whiteout(real) => {
                if real.is_empty() || real == b"." || real == b".." {
                    return Err(unsafe_err(path, "whiteout of an invalid name"));
                }
                let real = cstr(real).map_err(io_err(path, "whiteout name"))?;
                self.remove_existing(parent, &real, path)?;
                let pfd = self.root.dir(parent, true).map_err(io_err(path, "open parent directory"))?;
                sys::mknodat(pfd, &real, libc::S_IFCHR, 0).map_err(io_err(path, "create whiteout device"))?;
                // Keep the marker's mtime so that diffing this directory again gives
                // the same layer. Ownership stays root and mode 0, as overlay does.
                sys::utimensat_nofollow(pfd, &real, meta.mtime.0, meta.mtime.1)
                    .map_err(io_err(path, "set whiteout mtime"))?;
            }
        }
        Ok(())
    }

    /// A new file for the workers: its data read now, its parent resolved here.
    fn queue_file<R: Read>(
        &mut self,
        parent: &[Vec<u8>],
        cname: std::ffi::CString,
        entry: &mut tar::Entry<'_, R>,
        meta: Meta,
        path: &str,
    ) -> Result<(), ApplyError> {
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut data).map_err(ApplyError::Read)?;
        let pfd = self.root.dir(parent, true).map_err(io_err(path, "open parent directory"))?;
        let pfd = pfd.try_clone_to_owned().map_err(io_err(path, "open parent directory"))?;
        let job = crate::unpack_pool::Job {
            seq: self.seq,
            pfd,
            name: cname,
            parent: parent.to_vec(),
            data,
            meta,
            path: path.to_string(),
        };
        let workers = self.workers;
        let pool = self.pool.get_or_insert_with(|| crate::unpack_pool::Pool::start(workers));
        pool.submit(job, &mut self.finished)?;
        if self.absorb_finished() {
            self.barrier()?;
        }
        Ok(())
    }

    /// A directory at parent/name; an existing one stays (its children too) and
    /// gets the entry's metadata.
    fn make_dir(
        &mut self,
        parent: &[Vec<u8>],
        cname: &std::ffi::CStr,
        comps: &Components,
        meta: &Meta,
        path: &str,
    ) -> Result<(), ApplyError> {
        let pfd = self.root.dir(parent, true).map_err(io_err(path, "open parent directory"))?;
        let existing = sys::fstatat_nofollow(pfd, cname).map_err(io_err(path, "stat"))?;
        match existing {
            // An existing directory stays (its children too); metadata is updated.
            Some(st) if sys::is_dir(&st) => {}
            Some(_) => {
                self.remove_existing(parent, cname, path)?;
                let pfd = self.root.dir(parent, true).map_err(io_err(path, "open parent directory"))?;
                sys::mkdirat(pfd, cname, meta.mode & 0o777).map_err(io_err(path, "mkdir"))?;
            }
            None => sys::mkdirat(pfd, cname, meta.mode & 0o777).map_err(io_err(path, "mkdir"))?,
        }
        let pfd = self.root.dir(parent, true).map_err(io_err(path, "open parent directory"))?;
        let dfd = sys::openat(pfd, cname, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)
            .map_err(io_err(path, "open directory"))?;
        self.set_owner_mode_fd(dfd.as_fd(), meta, path)?;
        self.set_xattrs_fd(dfd.as_fd(), meta, path)?;
        self.dir_times.push((comps.clone(), meta.mtime));
        Ok(())
    }

    /// A device node or fifo at parent/name. Device nodes that need privileges are
    /// skipped with a note.
    fn make_device<R: Read>(
        &mut self,
        parent: &[Vec<u8>],
        cname: &std::ffi::CStr,
        entry: &tar::Entry<'_, R>,
        kind: tar::EntryType,
        meta: &Meta,
        path: &str,
    ) -> Result<(), ApplyError> {
        use tar::EntryType as T;
        let major = entry.header().device_major().ok().flatten().unwrap_or(0);
        let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
        let fmt = match kind {
            T::Char => libc::S_IFCHR,
            T::Block => libc::S_IFBLK,
            _ => libc::S_IFIFO,
        };
        self.remove_existing(parent, cname, path)?;
        let pfd = self.root.dir(parent, true).map_err(io_err(path, "open parent directory"))?;
        let dev = if kind == T::Fifo { 0 } else { libc::makedev(major, minor) };
        match sys::mknodat(pfd, cname, fmt | 0o600, dev) {
            Ok(()) => {}
            // Real device nodes need CAP_MKNOD in the initial namespace; a
            // rootless build cannot make them (only 0/0 whiteouts). The
            // container gets its /dev from the runtime anyway.
            Err(e) if errno(&e) == libc::EPERM => {
                self.skip(format!("{path}: device {major}:{minor} not created: {e}"));
                return Ok(());
            }
            Err(e) => return Err(io_err(path, "mknod")(e)),
        }
        self.finish_special(parent, cname, meta, path, true)
    }

    /// Remove whatever is at parent/name (recursively for a directory), without
    /// following symlinks. Missing is fine.
    fn remove_existing(&mut self, parent: &[Vec<u8>], name: &std::ffi::CStr, path: &str) -> Result<(), ApplyError> {
        // Nothing is removed while files are being created: the removed tree could
        // be where a queued file goes.
        self.barrier()?;
        let pfd = match self.root.dir(parent, true) {
            Ok(fd) => fd,
            Err(e) => return Err(io_err(path, "open parent directory")(e)),
        };
        let Some(st) = sys::fstatat_nofollow(pfd, name).map_err(io_err(path, "stat existing"))? else {
            return Ok(());
        };
        if sys::is_dir(&st) {
            sys::remove_tree(pfd, name).map_err(io_err(path, "remove existing directory"))?;
        } else {
            sys::unlinkat(pfd, name, 0).map_err(io_err(path, "remove existing file"))?;
        }
        self.root.invalidate();
        Ok(())
    }

    /// Take in finished jobs (`finished`): their notes now; failed ones and names
    /// that existed kept in `done` for the barrier. Returns whether one failed.
    fn absorb_finished(&mut self) -> bool {
        let mut failed = false;
        let mut finished = std::mem::take(&mut self.finished);
        for mut d in finished.drain(..) {
            self.skipped.extend(d.skipped.drain(..).map(|m| (d.seq, m)));
            match d.outcome {
                Ok(crate::unpack_pool::Outcome::Created) => {}
                Err(_) => {
                    failed = true;
                    self.done.push(d);
                }
                Ok(crate::unpack_pool::Outcome::Exists(_)) => self.done.push(d),
            }
        }
        self.finished = finished;
        failed
    }

    /// Directories the root made on its own (missing parents) join `names`.
    fn record_made_dirs(&mut self) {
        for (ino, name) in self.root.made.drain(..) {
            self.names.insert(name_key(ino, &name));
        }
    }

    fn skip(&mut self, msg: String) {
        self.skipped.push((self.seq, msg));
    }

    fn skip_all(&mut self, msgs: Vec<String>) {
        for m in msgs {
            self.skip(m);
        }
    }

    fn set_owner_mode_fd(&mut self, fd: BorrowedFd<'_>, meta: &Meta, path: &str) -> Result<(), ApplyError> {
        let mut notes = Vec::new();
        let r = set_owner_mode(fd, meta, path, &mut notes);
        self.skip_all(notes);
        r
    }

    fn set_xattrs_fd(&mut self, fd: BorrowedFd<'_>, meta: &Meta, path: &str) -> Result<(), ApplyError> {
        let mut notes = Vec::new();
        let r = set_xattrs(fd, meta, path, &mut notes);
        self.skip_all(notes);
        r
    }

    /// `make` at parent/name; if something is there already, remove it and `make`
    /// again. Creating first and clearing the way only on EEXIST spares most
    /// entries (new ones) a lookup, i.e. a directory search, before each create.
    fn make_replacing<T>(
        &mut self,
        parent: &[Vec<u8>],
        cname: &std::ffi::CStr,
        path: &str,
        make: impl Fn(BorrowedFd<'_>) -> io::Result<T>,
    ) -> Result<io::Result<T>, ApplyError> {
        let pfd = self.root.dir(parent, true).map_err(io_err(path, "open parent directory"))?;
        match make(pfd) {
            Err(e) if errno(&e) == libc::EEXIST => {
                self.remove_existing(parent, cname, path)?;
                let pfd = self.root.dir(parent, true).map_err(io_err(path, "open parent directory"))?;
                Ok(make(pfd))
            }
            r => Ok(r),
        }
    }

    /// A regular file at parent/name with the data from `data`, replacing whatever
    /// is there.
    fn write_file(
        &mut self,
        parent: &[Vec<u8>],
        cname: &std::ffi::CStr,
        data: &mut dyn Read,
        meta: &Meta,
        path: &str,
    ) -> Result<(), ApplyError> {
        // O_EXCL never follows a symlink at the name.
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = self
            .make_replacing(parent, cname, path, |pfd| sys::openat(pfd, cname, flags, meta.mode & 0o777))?
            .map_err(io_err(path, "create file"))?;
        let mut file = std::fs::File::from(fd);
        let mut buf = std::mem::take(&mut self.buf);
        let copied = copy_data(data, &mut file, &mut buf);
        self.buf = buf;
        copied.map_err(|e| match e {
            CopyError::Read(e) => ApplyError::Read(e),
            CopyError::Write(e) => io_err(path, "write file")(e),
        })?;
        let mut notes = Vec::new();
        let r = finish_file(file.as_fd(), meta, path, &mut notes);
        self.skip_all(notes);
        r
    }

    /// Wait for every queued file, then account for them in tar order: their
    /// notes, the first error, and files whose name turned out to exist, which
    /// are written again here as the sequential path would have (replacing).
    ///
    /// The rules that make queued files safe to create out of order: a job is a
    /// name not made before by a quick path (`names`) in a parent resolved in-root;
    /// only quick paths run while jobs are queued, and they only add new names;
    /// everything that removes, links, whiteouts or reads the lowers, and every
    /// name seen before, comes after a barrier. So a queued job can meet an
    /// existing name only if something made it outside the quick paths (an
    /// implicit parent, a copied-up directory): it then changes nothing and is
    /// redone here, after every job before it.
    fn barrier(&mut self) -> Result<(), ApplyError> {
        if let Some(pool) = self.pool.as_mut() {
            pool.drain(&mut self.finished)?;
        }
        self.absorb_finished();
        let mut done = std::mem::take(&mut self.done);
        done.sort_by_key(|d| d.seq);
        let mut redo = Vec::new();
        for d in done {
            match d.outcome {
                Ok(crate::unpack_pool::Outcome::Created) => {}
                Ok(crate::unpack_pool::Outcome::Exists(job)) => redo.push(job),
                Err(e) => return Err(e),
            }
        }
        let current = self.seq;
        for job in redo {
            self.seq = job.seq;
            let r = self.write_file(&job.parent, &job.name, &mut job.data.as_slice(), &job.meta, &job.path);
            self.seq = current;
            r?;
        }
        Ok(())
    }

    /// Ownership, mode, xattrs and mtime of a node that cannot be opened for writing
    /// (symlink, device, fifo): done by (parent fd, name) without following.
    fn finish_special(
        &mut self,
        parent: &[Vec<u8>],
        cname: &std::ffi::CStr,
        meta: &Meta,
        path: &str,
        chmod: bool,
    ) -> Result<(), ApplyError> {
        let (uid, gid) = ids(meta, path)?;
        let pfd = self.root.dir_owned(parent, false).map_err(io_err(path, "open parent directory"))?;
        let mut notes = Vec::new();
        let mut mode = meta.mode;
        if let Err(e) = sys::fchownat_nofollow(pfd.as_fd(), cname, uid, gid) {
            if chown_failed(e, meta, path, &mut notes)? {
                mode &= !0o6000;
            }
        }
        if chmod {
            sys::fchmodat(pfd.as_fd(), cname, mode).map_err(io_err(path, "chmod"))?;
        }
        let node = sys::proc_path(pfd.as_fd(), cname.to_bytes());
        let set = set_xattrs_with(meta, path, &mut notes, |c, v| xattr::lset(&node, c, v));
        self.skip_all(notes);
        set?;
        sys::utimensat_nofollow(pfd.as_fd(), cname, meta.mtime.0, meta.mtime.1).map_err(io_err(path, "set mtime"))
    }

    /// Second pass: directory mtimes, now that their children exist.
    fn finish_dir_times(&mut self) -> Result<(), ApplyError> {
        let times = std::mem::take(&mut self.dir_times);
        for (comps, (sec, nsec)) in times.into_iter().rev() {
            let path = lossy(&crate::safepath::join(&comps));
            let Some((name, parent)) = comps.split_last() else {
                sys::futimens(self.root.fd(), sec, nsec).map_err(io_err(&path, "set mtime"))?;
                continue;
            };
            // The directory may have been removed or replaced by a later entry.
            let Ok(pfd) = self.root.dir(parent, false) else { continue };
            let cname = cstr(name).map_err(io_err(&path, "name"))?;
            match sys::fstatat_nofollow(pfd, &cname) {
                Ok(Some(st)) if sys::is_dir(&st) => {}
                _ => continue,
            }
            sys::utimensat_nofollow(pfd, &cname, sec, nsec).map_err(io_err(&path, "set mtime"))?;
        }
        Ok(())
    }
}

/// Where a name lands: its parent directory's inode and the name, hashed.
fn name_key(parent_ino: u64, name: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent_ino.hash(&mut h);
    name.hash(&mut h);
    h.finish()
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copy entry data through `buf`, telling read (layer) errors from write
/// (target filesystem) errors.
fn copy_data<R: Read + ?Sized, W: Write>(r: &mut R, w: &mut W, buf: &mut [u8]) -> Result<(), CopyError> {
    loop {
        let n = match r.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        w.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
}
