//! Path-based helpers for trees kiln itself owns (layer directories, a native
//! rootfs, a native diff): copying nodes with their metadata, whiteouts, times.
//!
//! Unlike `apply`, these never see hostile names: the paths are built from entries
//! already on disk in directories whose every component was checked to be a real
//! directory (see `merged`). Final components are still never followed.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::sys::{cstr, cvt};
use crate::xattr;

fn c(p: &Path) -> io::Result<CString> {
    cstr(p.as_os_str().as_bytes())
}

pub(crate) fn lchown(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let p = c(p)?;
    cvt(unsafe { libc::lchown(p.as_ptr(), uid, gid) }).map(drop)
}

pub(crate) fn chmod(p: &Path, mode: u32) -> io::Result<()> {
    let p = c(p)?;
    cvt(unsafe { libc::chmod(p.as_ptr(), mode) }).map(drop)
}

pub(crate) fn set_mtime(p: &Path, sec: i64, nsec: i64) -> io::Result<()> {
    let p = c(p)?;
    let t = libc::timespec { tv_sec: sec as libc::time_t, tv_nsec: nsec as _ };
    let ts = [t, t];
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) }).map(drop)
}

/// An overlay whiteout (0/0 character device) at `p`.
pub(crate) fn mkwhiteout(p: &Path) -> io::Result<()> {
    let p = c(p)?;
    cvt(unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR, 0) }).map(drop)
}

pub(crate) fn is_whiteout(md: &fs::Metadata) -> bool {
    crate::whiteout::is_overlay_whiteout(md.mode(), md.rdev())
}

/// Copy the image-relevant xattrs of `src` onto `dst` (overlay's own never).
pub(crate) fn copy_xattrs(src: &Path, dst: &Path) -> io::Result<()> {
    for (name, value) in xattr::list(src)? {
        let n = String::from_utf8_lossy(&name);
        if xattr::is_overlay_private(&n) {
            continue;
        }
        let cn = cstr(&name)?;
        match xattr::lset(dst, &cn, &value) {
            Ok(()) => {}
            Err(e) if n.starts_with("trusted.") => drop(e),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Owner, mode, xattrs (in that order: chown clears setuid and capabilities) and,
/// unless `keep_mtime_for_later` (directories whose children are still to come),
/// the mtime of `src` onto `dst`.
pub(crate) fn copy_meta(src: &Path, md: &fs::Metadata, dst: &Path, set_time: bool) -> io::Result<()> {
    lchown(dst, md.uid(), md.gid())?;
    if !md.file_type().is_symlink() {
        chmod(dst, md.mode() & 0o7777)?;
    }
    copy_xattrs(src, dst)?;
    if set_time {
        set_mtime(dst, md.mtime(), md.mtime_nsec())?;
    }
    Ok(())
}

/// Make `dst` a copy of the non-directory `src` (regular file data, symlink
/// target, device/fifo node), with metadata. `dst` must not exist.
pub(crate) fn copy_node(src: &Path, md: &fs::Metadata, dst: &Path) -> io::Result<()> {
    let ft = md.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(src)?;
        std::os::unix::fs::symlink(target, dst)?;
    } else if ft.is_file() {
        let mut from = fs::File::open(src)?;
        let mut to = fs::OpenOptions::new().write(true).create_new(true).open(dst)?;
        io::copy(&mut from, &mut to)?;
    } else {
        // device, fifo, whiteout: same node type and number
        let p = c(dst)?;
        cvt(unsafe { libc::mknod(p.as_ptr(), md.mode() & libc::S_IFMT | 0o600, md.rdev()) })?;
    }
    copy_meta(src, md, dst, true)
}

/// mkdir `dst` with the metadata of directory `src` (mtime included unless
/// `set_time` is false: the caller sets it once the children are in).
pub(crate) fn copy_dir(src: &Path, md: &fs::Metadata, dst: &Path, set_time: bool) -> io::Result<()> {
    fs::create_dir(dst)?;
    copy_meta(src, md, dst, set_time)
}

/// Remove `p` whatever it is (recursively for a directory); missing is fine.
pub(crate) fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(md) if md.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
    }
}

/// Sorted names of a directory.
pub(crate) fn names(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let mut v = fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect::<Result<Vec<_>, _>>()?;
    v.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(v)
}
