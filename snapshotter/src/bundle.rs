//! A directory tree as a few tar+zstd bundles cut at content-defined points: the form
//! in which a cache mount travels with a registry cache (`cache-mounts=true`).
//!
//! Why bundles and not one layer: a 1 GB cargo or npm cache that gained one package
//! must not be uploaded again. The tree is walked in canonical order (names sorted
//! bytewise, a directory before its children) and cut into bundles of about
//! [`BundleOptions::target`] bytes. Whether a cut falls before an entry depends only
//! on that entry (a hash of its path weighed by its size), not on what came before,
//! so a change moves the cuts of at most the bundle it lands in: every other bundle
//! keeps its bytes and its digest, and a registry that has it is not sent it again.
//!
//! Bundles are applied in order onto an empty directory with [`crate::apply_layer_onto`]
//! (the hardened unpacker): a directory always comes in the same or an earlier bundle
//! than its children, and a last bundle of directory headers only sets their times
//! again once every child is in place (a directory whose files span bundles would
//! otherwise get the restore's time). What a bundle holds: directories, regular files (a hard link
//! becomes a copy), symlinks, with mode, numeric owner and mtime (cargo's fingerprints
//! compare mtimes); not xattrs, devices, fifos or sockets (a cache has no use for them).

use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kiln_oci::{Digest, Sha256Writer};

use crate::error::DiffError;

/// Where bundles are cut.
#[derive(Debug, Clone, Copy)]
pub struct BundleOptions {
    /// Expected size of a bundle (uncompressed).
    pub target: u64,
    /// No cut before a bundle holds this much (except for the first entry).
    pub min: u64,
    /// A cut before any entry once a bundle holds this much.
    pub max: u64,
    /// zstd level.
    pub level: i32,
}

impl Default for BundleOptions {
    fn default() -> Self {
        BundleOptions { target: 16 << 20, min: 1 << 20, max: 64 << 20, level: 3 }
    }
}

/// One written bundle: the writer it went to, its digests, what it holds.
pub struct Bundle<W> {
    pub out: W,
    /// sha256 of the tar.
    pub diff_id: Digest,
    /// sha256 of the zstd blob, and its size.
    pub digest: Digest,
    pub size: u64,
    pub entries: u64,
    /// File bytes it holds.
    pub bytes: u64,
}

/// Media type of a bundle blob.
pub const BUNDLE_MEDIA_TYPE: &str = kiln_oci::media::OCI_LAYER_ZSTD;

struct Entry {
    rel: PathBuf,
    meta: fs::Metadata,
}

/// The tree below `root` (not `root` itself) in canonical order: sorted by path
/// components, which is a depth-first walk of names sorted bytewise.
fn walk(root: &Path) -> Result<Vec<Entry>, DiffError> {
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        let abs = root.join(&dir);
        let rd = fs::read_dir(&abs).map_err(|source| DiffError::Io { path: abs.clone(), op: "read directory", source })?;
        for e in rd {
            let e = e.map_err(|source| DiffError::Io { path: abs.clone(), op: "read directory", source })?;
            let rel = dir.join(e.file_name());
            let p = root.join(&rel);
            let meta = fs::symlink_metadata(&p).map_err(|source| DiffError::Io { path: p.clone(), op: "lstat", source })?;
            if meta.is_dir() {
                dirs.push(rel.clone());
            }
            out.push(Entry { rel, meta });
        }
    }
    out.sort_by(|a, b| a.rel.components().map(|c| c.as_os_str().as_bytes()).cmp(b.rel.components().map(|c| c.as_os_str().as_bytes())));
    Ok(out)
}

/// A digest of the tree's listing (paths, types, modes, owners, sizes, mtimes and
/// ctimes): equal listings mean an unchanged tree, so bundles packed from it before
/// can be used again without reading a file.
pub fn listing_digest(root: &Path) -> Result<Digest, DiffError> {
    let mut h = Sha256Writer::new(io::sink());
    for e in walk(root)? {
        let m = &e.meta;
        let line = format!(
            "{:o} {} {} {} {}.{} {}.{} {}\0",
            m.mode(), m.uid(), m.gid(), m.len(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec(), m.ino()
        );
        h.write_all(e.rel.as_os_str().as_bytes()).and_then(|_| h.write_all(line.as_bytes())).map_err(DiffError::Write)?;
    }
    Ok(h.finish().1)
}

/// FNV-1a: stable across versions and machines (the cuts must be).
fn path_hash(p: &Path) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in p.as_os_str().as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn weight(e: &Entry) -> u64 {
    512 + if e.meta.is_file() { e.meta.len() } else { 0 }
}

/// Each byte has a 1/target chance of being a cut: an entry of `w` bytes starts a
/// bundle with probability w/target, decided by its path's hash alone.
fn cuts_before(e: &Entry, held: u64, o: &BundleOptions) -> bool {
    if held == 0 {
        return false;
    }
    if held >= o.max {
        return true;
    }
    if held < o.min {
        return false;
    }
    let w = weight(e) as u128;
    (u128::from(path_hash(&e.rel)) * u128::from(o.target)) < (w << 64)
}

type Out<W> = Sha256Writer<zstd::stream::write::Encoder<'static, Sha256Writer<W>>>;

fn start<W: Write>(out: W, level: i32) -> Result<tar::Builder<Out<W>>, DiffError> {
    let mut z = zstd::stream::write::Encoder::new(Sha256Writer::new(out), level).map_err(DiffError::Write)?;
    // At least one worker always, so the bytes do not depend on the machine's cores.
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
    z.multithread(workers as u32).map_err(DiffError::Write)?;
    let mut t = tar::Builder::new(Sha256Writer::new(z));
    t.mode(tar::HeaderMode::Complete);
    t.follow_symlinks(false);
    Ok(t)
}

fn finish<W: Write>(t: tar::Builder<Out<W>>, entries: u64, bytes: u64) -> Result<Bundle<W>, DiffError> {
    let (z, diff_id, _) = t.into_inner().map_err(DiffError::Write)?.finish();
    let (mut out, digest, size) = z.finish().map_err(DiffError::Write)?.finish();
    out.flush().map_err(DiffError::Write)?;
    Ok(Bundle { out, diff_id, digest, size, entries, bytes })
}

fn append<W: Write>(t: &mut tar::Builder<Out<W>>, root: &Path, e: &Entry) -> Result<u64, DiffError> {
    let m = &e.meta;
    let mut h = tar::Header::new_gnu();
    h.set_mode(m.mode() & 0o7777);
    h.set_uid(u64::from(m.uid()));
    h.set_gid(u64::from(m.gid()));
    h.set_mtime(m.mtime().max(0) as u64);
    let p = root.join(&e.rel);
    let ft = m.file_type();
    let werr = |source| DiffError::Io { path: p.clone(), op: "write bundle entry", source };
    if ft.is_dir() {
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        t.append_data(&mut h, &e.rel, io::empty()).map_err(werr)?;
        Ok(0)
    } else if ft.is_symlink() {
        let target = fs::read_link(&p).map_err(|source| DiffError::Io { path: p.clone(), op: "readlink", source })?;
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        t.append_link(&mut h, &e.rel, &target).map_err(werr)?;
        Ok(0)
    } else if ft.is_file() {
        let f = fs::File::open(&p).map_err(|source| DiffError::Io { path: p.clone(), op: "open", source })?;
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(m.len());
        // A file that changes size while it is read would make a corrupt tar: take
        // exactly the size the header says.
        let len = m.len();
        let mut r = io::Read::take(f, len);
        let mut buf = Vec::new();
        if len <= 1 << 20 {
            io::Read::read_to_end(&mut r, &mut buf).map_err(|source| DiffError::Io { path: p.clone(), op: "read", source })?;
            if buf.len() as u64 != len {
                return Err(DiffError::Unrepresentable { path: p.clone(), reason: "changed while it was read".into() });
            }
            t.append_data(&mut h, &e.rel, buf.as_slice()).map_err(werr)?;
        } else {
            t.append_data(&mut h, &e.rel, r).map_err(werr)?;
        }
        Ok(len)
    } else {
        debug_assert!(ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device());
        Ok(0)
    }
}

/// Writes the tree below `root` as bundles, each to a writer `new_out` gives.
pub fn pack<W: Write, F: FnMut() -> io::Result<W>>(root: &Path, opts: &BundleOptions, mut new_out: F) -> Result<Vec<Bundle<W>>, DiffError> {
    let entries = walk(root)?;
    let mut done = Vec::new();
    let mut cur: Option<(tar::Builder<Out<W>>, u64, u64, u64)> = None; // (tar, held, entries, bytes)
    for e in &entries {
        let ft = e.meta.file_type();
        if !(ft.is_dir() || ft.is_file() || ft.is_symlink()) {
            continue;
        }
        let held = cur.as_ref().map_or(0, |c| c.1);
        if cuts_before(e, held, opts) {
            if let Some((t, _, n, b)) = cur.take() {
                done.push(finish(t, n, b)?);
            }
        }
        if cur.is_none() {
            cur = Some((start(new_out().map_err(DiffError::Write)?, opts.level)?, 0, 0, 0));
        }
        let c = cur.as_mut().expect("a bundle is open");
        let n = append(&mut c.0, root, e)?;
        c.1 += weight(e);
        c.2 += 1;
        c.3 += n;
    }
    if let Some((t, _, n, b)) = cur.take() {
        done.push(finish(t, n, b)?);
    }
    // A directory whose files span bundles gets a later bundle's files after its own
    // entry set its times: a last bundle of every directory's header (no data) puts
    // them back. It changes whenever a directory does, and is small (headers only).
    if done.len() > 1 {
        let mut t = start(new_out().map_err(DiffError::Write)?, opts.level)?;
        for e in entries.iter().filter(|e| e.meta.is_dir()) {
            append(&mut t, root, e)?;
        }
        done.push(finish(t, 0, 0)?);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path, files: &[(&str, usize)]) {
        for (p, n) in files {
            let p = root.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, vec![(n % 251) as u8; *n]).unwrap();
        }
    }

    fn digests(root: &Path, o: &BundleOptions) -> Vec<Digest> {
        pack(root, o, || Ok(Vec::new())).unwrap().into_iter().map(|b| b.digest).collect()
    }

    #[test]
    fn one_new_file_changes_one_bundle_and_bundles_restore_the_tree() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let files: Vec<(String, usize)> = (0..400).map(|i| (format!("pkg{:03}/data/file{i}.bin", i % 97), 3000 + (i * 37) % 20000)).collect();
        let refs: Vec<(&str, usize)> = files.iter().map(|(p, n)| (p.as_str(), *n)).collect();
        tree(&src, &refs);
        std::os::unix::fs::symlink("pkg001/data", src.join("link")).unwrap();
        // A directory whose 800 KB of files must span bundles, dated in the past.
        let span: Vec<(String, usize)> = (0..40).map(|i| (format!("span/f{i:02}"), 20_000)).collect();
        tree(&src, &span.iter().map(|(p, n)| (p.as_str(), *n)).collect::<Vec<_>>());
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        fs::File::open(src.join("span")).unwrap().set_modified(old).unwrap();
        let o = BundleOptions { target: 256 << 10, min: 32 << 10, max: 1 << 20, level: 1 };
        let before = digests(&src, &o);
        assert!(before.len() >= 8, "a 4 MB tree in several bundles: {}", before.len());
        assert_eq!(before, digests(&src, &o), "the same tree gives the same bundles");

        tree(&src, &[("pkg050/data/new-crate.crate", 9000)]);
        let after = digests(&src, &o);
        let changed = after.iter().filter(|d| !before.contains(d)).count();
        // The bundle it lands in changes (its own cut may split that one in two), and
        // the directory bundle (its directory's mtime changed).
        assert!((1..=3).contains(&changed), "one new file changes one bundle: {before:?} {after:?}");

        // Restored in order onto an empty directory, the tree is the same.
        let out = t.path().join("out");
        fs::create_dir(&out).unwrap();
        for b in pack(&src, &o, || Ok(Vec::new())).unwrap() {
            crate::apply_layer_onto(b.out.as_slice(), kiln_oci::media::LayerCompression::Zstd, &out, &[]).unwrap();
        }
        for (p, n) in refs.iter().copied().chain([("pkg050/data/new-crate.crate", 9000)]) {
            assert_eq!(fs::read(out.join(p)).unwrap().len(), n, "{p}");
        }
        assert_eq!(fs::read_link(out.join("link")).unwrap(), Path::new("pkg001/data"));
        // Every directory's mtime, also of those whose files span bundles.
        for e in walk(&src).unwrap().iter().filter(|e| e.meta.is_dir() || e.meta.is_file()) {
            let b = fs::symlink_metadata(out.join(&e.rel)).unwrap();
            assert_eq!((e.meta.mtime(), e.meta.mode()), (b.mtime(), b.mode()), "{}", e.rel.display());
        }
    }

    #[test]
    fn a_big_file_is_a_bundle_of_its_own_and_an_empty_tree_none() {
        let t = tempfile::tempdir().unwrap();
        let o = BundleOptions { target: 64 << 10, min: 8 << 10, max: 128 << 10, level: 1 };
        assert!(pack(t.path(), &o, || Ok(Vec::new())).unwrap().is_empty());
        tree(t.path(), &[("a", 20000), ("b", 20000), ("big", 1 << 20), ("c", 100)]);
        let b = pack(t.path(), &o, || Ok(Vec::new())).unwrap();
        assert!(b.iter().any(|b| b.entries == 1 && b.bytes == 1 << 20), "{:?}", b.iter().map(|b| (b.entries, b.bytes)).collect::<Vec<_>>());
    }
}
