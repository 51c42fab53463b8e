//! ADD of a local archive: detection and safe extraction.
//!
//! Docker decides by content, never by name (BuildKit `isArchivePath`): the file's
//! first bytes give the compression (gzip `1f 8b 08`, bzip2 `BZh`, xz
//! `fd 37 7a 58 5a 00`, zstd `28 b5 2f fd`, else none), and the decompressed
//! stream must start with a valid tar header (Go's `tar.Reader.Next` succeeds: the
//! header checksum is right). Anything else, including a compressed file that is
//! not a tar and an empty tar, is copied as is.
//!
//! Extraction follows BuildKit's `unpack` (`chrootarchive.Untar` into the
//! destination, keeping the tar's uid/gid, modes and mtimes):
//! - entry names are cleaned; absolute names are taken relative to the destination;
//!   a name that climbs out of it (`../x`) is an error, as Docker's "breakout" check;
//! - a symlink is created with its target as written, whatever it is: BuildKit
//!   untars chrooted at the destination, where `../x` from the top cannot climb
//!   out, and every later path through a link is resolved inside the root; a
//!   hardlink to a path outside the destination is an error;
//! - existing symlinked directories along a path are resolved inside the
//!   destination (Docker runs the untar chrooted there), never on the host;
//! - an existing entry is replaced (a directory over a directory is kept);
//! - whiteout (`.wh.*`) files are ordinary files here;
//! - device nodes that the user namespace cannot create are skipped, as Docker does
//!   in a user namespace.

// Not wired into the solver yet (COPY/ADD issue); remove once it is.

use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};


/// The compression of a file, by magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// Docker's `DetectCompression`.
pub fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        Compression::Gzip
    } else if head.starts_with(b"BZh") {
        Compression::Bzip2
    } else if head.starts_with(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) {
        Compression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Wrap `r` in the decoder for `c`.
pub fn decompress<'a, R: Read + 'a>(r: R, c: Compression) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(kiln_snapshotter::gunzip::MultiGzDecoder::new(r)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
        Compression::Xz => Box::new(lzma_rust2::XzReader::new(r, true)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
    })
}

/// Is this 512-byte block a tar header Go's reader would accept?
fn is_tar_header(b: &[u8; 512]) -> bool {
    if b.iter().all(|&x| x == 0) {
        return false; // end of archive: an empty tar is not an archive for ADD
    }
    let field = &b[148..156];
    let digits: String = field
        .iter()
        .map(|&c| c as char)
        .skip_while(|c| *c == ' ' || *c == '\0')
        .take_while(|c| c.is_digit(8))
        .collect();
    let Ok(want) = u64::from_str_radix(&digits, 8) else { return false };
    // Go accepts the unsigned or the signed sum.
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &c) in b.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        unsigned += c as u64;
        signed += (c as i8) as i64;
    }
    want == unsigned || want as i64 == signed
}

/// Open `path` for ADD: `Some(tar stream)` when it is a (possibly compressed) tar
/// archive, `None` when ADD should copy the file as it is.
pub fn open_decompressed(path: &Path) -> Result<Option<Box<dyn Read>>> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut head = [0u8; 6];
    let n = read_full(&mut f, &mut head).with_context(|| format!("reading {}", path.display()))?;
    let c = detect(&head[..n]);
    let f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut r = match decompress(io::BufReader::new(f), c) {
        Ok(r) => r,
        Err(_) => return Ok(None),
    };
    let mut block = [0u8; 512];
    match read_full(&mut r, &mut block) {
        Ok(512) if is_tar_header(&block) => {}
        // Short, undecodable or not a tar: not an archive.
        _ => return Ok(None),
    }
    Ok(Some(Box::new(io::Cursor::new(block.to_vec()).chain(r))))
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// How to extract.
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Leave files owned by the extracting user when the tar's uid/gid cannot be
    /// set (a single-id user namespace), instead of failing.
    pub ignore_chown_errors: bool,
    /// `ADD --chown`: every extracted entry gets this owner instead of the tar's
    /// (BuildKit's Untar ChownOpts).
    pub owner: Option<(u32, u32)>,
}

/// What an extraction wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    pub entries: u64,
    pub skipped_devices: u64,
}

/// Unpack a tar stream into `dest` (a host directory inside the rootfs `root`).
#[cfg(test)]
pub fn extract_into(reader: impl Read, dest: &Path, root: &Path) -> Result<Extracted> {
    extract_into_with(reader, dest, root, &ExtractOptions::default())
}

/// [`extract_into`] with options.
pub fn extract_into_with(reader: impl Read, dest: &Path, root: &Path, opts: &ExtractOptions) -> Result<Extracted> {
    if !dest.starts_with(root) {
        bail!("ADD destination {} is outside the root {}", dest.display(), root.display());
    }
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut out = Extracted::default();
    let mut dir_times: Vec<(PathBuf, i64)> = Vec::new();
    let mut ar = tar::Archive::new(reader);
    for entry in ar.entries().context("reading the archive")? {
        let mut entry = entry.context("reading the archive")?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let rel = clean_inside(&raw).with_context(|| format!("invalid tar entry {name:?}: it points outside the destination"))?;
        let hdr = entry.header().clone();
        let kind = hdr.entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName | tar::EntryType::GNULongLink) {
            continue;
        }
        if rel.as_os_str().is_empty() {
            // The destination itself ("./"): only its metadata.
            if kind.is_dir() {
                apply_meta(dest, &hdr, opts, false).with_context(|| format!("tar entry {name:?}"))?;
                dir_times.push((dest.to_path_buf(), hdr.mtime().unwrap_or(0) as i64));
            }
            continue;
        }
        let host = place(dest, &rel).with_context(|| format!("tar entry {name:?}"))?;
        let existing = fs::symlink_metadata(&host).ok();
        if let Some(md) = &existing {
            if !(md.is_dir() && kind.is_dir()) {
                if md.is_dir() {
                    fs::remove_dir_all(&host)
                } else {
                    fs::remove_file(&host)
                }
                .with_context(|| format!("replacing {} for tar entry {name:?}", host.display()))?;
            }
        }
        let ctx = || format!("extracting tar entry {name:?}");
        match kind {
            tar::EntryType::Directory => {
                if existing.as_ref().is_none_or(|m| !m.is_dir()) {
                    fs::create_dir(&host).with_context(ctx)?;
                }
                apply_meta(&host, &hdr, opts, false).with_context(ctx)?;
                dir_times.push((host, hdr.mtime().unwrap_or(0) as i64));
                out.entries += 1;
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&host)
                    .with_context(ctx)?;
                io::copy(&mut entry, &mut f).with_context(ctx)?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().map(|b| b.into_owned()).unwrap_or_default();
                symlink(std::ffi::OsStr::from_bytes(&target), &host).with_context(ctx)?;
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().map(|b| b.into_owned()).unwrap_or_default();
                let trel = clean_inside(&target).ok().filter(|p| !p.as_os_str().is_empty()).with_context(|| {
                    format!("invalid tar entry {name:?}: hardlink target {:?} points outside the destination", String::from_utf8_lossy(&target))
                })?;
                let src = place(dest, &trel).with_context(ctx)?;
                fs::hard_link(&src, &host).with_context(ctx)?;
                out.entries += 1;
                continue; // metadata is the target's
            }
            tar::EntryType::Fifo | tar::EntryType::Char | tar::EntryType::Block => {
                let (sflag, dev) = match kind {
                    tar::EntryType::Fifo => (nix::sys::stat::SFlag::S_IFIFO, 0),
                    tar::EntryType::Char => (
                        nix::sys::stat::SFlag::S_IFCHR,
                        nix::sys::stat::makedev(hdr.device_major()?.unwrap_or(0) as u64, hdr.device_minor()?.unwrap_or(0) as u64),
                    ),
                    _ => (
                        nix::sys::stat::SFlag::S_IFBLK,
                        nix::sys::stat::makedev(hdr.device_major()?.unwrap_or(0) as u64, hdr.device_minor()?.unwrap_or(0) as u64),
                    ),
                };
                let perm = nix::sys::stat::Mode::from_bits_truncate(0o600);
                match nix::sys::stat::mknod(&host, sflag, perm, dev) {
                    Ok(()) => {}
                    Err(nix::errno::Errno::EPERM) if kind != tar::EntryType::Fifo => {
                        out.skipped_devices += 1;
                        continue;
                    }
                    Err(e) => return Err(e).with_context(ctx),
                }
            }
            other => {
                tracing::debug!("ADD: skipping tar entry {name:?} of type {other:?}");
                continue;
            }
        }
        let is_link = kind == tar::EntryType::Symlink;
        apply_meta(&host, &hdr, opts, is_link).with_context(ctx)?;
        out.entries += 1;
    }
    // Directory times last, deepest first: creating children changed them.
    for (dir, mtime) in dir_times.iter().rev() {
        let t = TimeSpec::new(*mtime, 0);
        utimensat(nix::fcntl::AT_FDCWD, dir.as_path(), &t, &t, UtimensatFlags::NoFollowSymlink)
            .with_context(|| format!("setting times of {}", dir.display()))?;
    }
    Ok(out)
}

/// Clean a tar name relative to the destination: `/` and `.` dropped, `..` may not
/// climb above it.
fn clean_inside(raw: &[u8]) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(std::ffi::OsStr::from_bytes(raw)).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                if !out.pop() {
                    bail!("path escapes the destination");
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The host path for `rel` under `dest`: parents resolved inside `dest` (following
/// symlinks as a chroot at `dest` would), missing parents created 0755, the last
/// component not followed.
fn place(dest: &Path, rel: &Path) -> Result<PathBuf> {
    let name = rel.file_name().context("entry without a name")?;
    let parent = crate::fsutil::mkdir_in_root(dest, rel.parent().unwrap_or(Path::new("")), 0o755, None)?;
    Ok(parent.join(name))
}

fn apply_meta(p: &Path, hdr: &tar::Header, opts: &ExtractOptions, is_link: bool) -> Result<()> {
    let (uid, gid) = opts.owner.unwrap_or((hdr.uid().unwrap_or(0) as u32, hdr.gid().unwrap_or(0) as u32));
    let r = nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        p,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    );
    if let Err(e) = r {
        if !opts.ignore_chown_errors {
            return Err(e).with_context(|| {
                format!("chown {uid}:{gid} {} (is the id mapped in the build's user namespace?)", p.display())
            });
        }
    }
    if !is_link {
        let mode = hdr.mode().unwrap_or(0o644) & 0o7777;
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", p.display()))?;
    }
    let mtime = hdr.mtime().unwrap_or(0) as i64;
    let t = TimeSpec::new(mtime, 0);
    utimensat(nix::fcntl::AT_FDCWD, p, &t, &t, UtimensatFlags::NoFollowSymlink)
        .with_context(|| format!("setting times of {}", p.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    fn me() -> (u32, u32) {
        (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw())
    }

    /// A tar built header by header, so hostile names can be written as they are.
    fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let (uid, gid) = me();
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            // Write the name bytes directly: set_path refuses `..` and absolute names.
            let nb = name.as_bytes();
            h.as_old_mut().name[..nb.len()].copy_from_slice(nb);
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(if kind.is_dir() { 0o750 } else { 0o640 });
            h.set_uid(uid as u64);
            h.set_gid(gid as u64);
            h.set_mtime(1_000_000_000);
            if !link.is_empty() {
                let lb = link.as_bytes();
                h.as_old_mut().linkname[..lb.len()].copy_from_slice(lb);
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn sample() -> Vec<u8> {
        raw_tar(&[
            ("dir/", tar::EntryType::Directory, b"", ""),
            ("dir/hello.txt", tar::EntryType::Regular, b"hello\n", ""),
            ("dir/.wh.keep", tar::EntryType::Regular, b"not a whiteout", ""),
            ("dir/link", tar::EntryType::Symlink, b"", "hello.txt"),
            ("dir/hard", tar::EntryType::Link, b"", "dir/hello.txt"),
            ("top.txt", tar::EntryType::Regular, b"top", ""),
        ])
    }

    fn compress(data: &[u8], c: Compression) -> Vec<u8> {
        match c {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Xz => {
                let mut e = lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(6)).unwrap();
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::stream::encode_all(data, 3).unwrap(),
        }
    }

    #[test]
    fn every_compression_is_detected_by_content_and_extracted() {
        for c in [Compression::None, Compression::Gzip, Compression::Bzip2, Compression::Xz, Compression::Zstd] {
            let t = tempfile::tempdir().unwrap();
            // A misleading name: detection is by content.
            let file = t.path().join("archive.txt");
            fs::write(&file, compress(&sample(), c)).unwrap();
            assert_eq!(detect(&fs::read(&file).unwrap()[..6]), c, "{c:?}");
            let reader = open_decompressed(&file).unwrap().unwrap_or_else(|| panic!("{c:?} not seen as an archive"));
            let root = t.path().join("root");
            let dest = root.join("opt/app");
            let got = extract_into(reader, &dest, &root).unwrap();
            assert_eq!(got.entries, 6, "{c:?}");
            assert_eq!(fs::read_to_string(dest.join("dir/hello.txt")).unwrap(), "hello\n");
            assert_eq!(fs::read_to_string(dest.join("dir/.wh.keep")).unwrap(), "not a whiteout");
            assert_eq!(fs::read_link(dest.join("dir/link")).unwrap(), PathBuf::from("hello.txt"));
            let md = fs::metadata(dest.join("dir/hello.txt")).unwrap();
            assert_eq!(md.mode() & 0o7777, 0o640);
            assert_eq!(md.mtime(), 1_000_000_000);
            assert_eq!(md.ino(), fs::metadata(dest.join("dir/hard")).unwrap().ino());
            let d = fs::metadata(dest.join("dir")).unwrap();
            assert_eq!((d.mode() & 0o7777, d.mtime()), (0o750, 1_000_000_000));
        }
    }

    #[test]
    fn non_archives_are_copied_as_is() {
        let t = tempfile::tempdir().unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("plain.tar.gz", b"just text, named like an archive".to_vec()),
            ("text.gz", compress(b"compressed text, not a tar", Compression::Gzip)),
            ("empty.tar", vec![0u8; 1024]),
            ("short", b"BZh".to_vec()),
            ("corrupt.xz", vec![0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1, 2, 3]),
        ];
        for (name, body) in cases {
            let p = t.path().join(name);
            fs::write(&p, body).unwrap();
            assert!(open_decompressed(&p).unwrap().is_none(), "{name}");
        }
    }

    #[test]
    fn hostile_archives_cannot_escape() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let dest = root.join("dest");
        fs::create_dir_all(&dest).unwrap();
        let outside = t.path().join("outside");
        fs::create_dir_all(&outside).unwrap();

        // `..` climbing out is an error, nothing is written outside.
        let bad = raw_tar(&[("../../outside/pwned", tar::EntryType::Regular, b"x", "")]);
        let err = format!("{:#}", extract_into(&bad[..], &dest, &root).unwrap_err());
        assert!(err.contains("outside the destination"), "{err}");
        assert!(!outside.join("pwned").exists());

        // Absolute names land inside the destination.
        let abs = raw_tar(&[("/etc/passwd", tar::EntryType::Regular, b"x", "")]);
        extract_into(&abs[..], &dest, &root).unwrap();
        assert!(dest.join("etc/passwd").exists());

        // A relative symlink climbing above the destination is made as written
        // (BuildKit untars chrooted there); writing through it stays inside.
        let link = raw_tar(&[("up", tar::EntryType::Symlink, b"", "../../outside"), ("up/pwned", tar::EntryType::Regular, b"x", "")]);
        extract_into(&link[..], &dest, &root).unwrap();
        assert_eq!(fs::read_link(dest.join("up")).unwrap(), Path::new("../../outside"));
        assert!(!outside.join("pwned").exists(), "written outside through a symlink");

        // An absolute symlink is allowed, but writing through it stays inside.
        let through = raw_tar(&[
            ("abs", tar::EntryType::Symlink, b"", "/"),
            ("abs/owned", tar::EntryType::Regular, b"x", ""),
        ]);
        extract_into(&through[..], &dest, &root).unwrap();
        assert!(dest.join("owned").exists());
        assert!(!Path::new("/owned").exists());

        // A symlink already in the rootfs pointing out is resolved inside too.
        std::os::unix::fs::symlink(&outside, dest.join("pre")).unwrap();
        let pre = raw_tar(&[("pre/pwned", tar::EntryType::Regular, b"x", "")]);
        extract_into(&pre[..], &dest, &root).unwrap();
        assert!(!outside.join("pwned").exists());

        // A hardlink to something outside is refused.
        let hard = raw_tar(&[("h", tar::EntryType::Link, b"", "../outside/x")]);
        assert!(extract_into(&hard[..], &dest, &root).is_err());

        // Existing files are replaced, also a file by a directory.
        fs::write(dest.join("x"), "old").unwrap();
        let over = raw_tar(&[("x/", tar::EntryType::Directory, b"", ""), ("x/y", tar::EntryType::Regular, b"new", "")]);
        extract_into(&over[..], &dest, &root).unwrap();
        assert_eq!(fs::read_to_string(dest.join("x/y")).unwrap(), "new");

        // A destination outside the root is refused.
        assert!(extract_into(&sample()[..], &outside, &root).is_err());
    }
}
