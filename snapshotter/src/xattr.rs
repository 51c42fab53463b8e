//! Extended attributes: which ones travel in layers, and the raw calls.
//!
//! Overlay's own bookkeeping (`user.overlay.*` in a rootless mount with `userxattr`,
//! `trusted.overlay.*` in a privileged one) must never be written into a layer, and
//! must never be taken from one either: a hostile layer could otherwise plant
//! `user.overlay.redirect`/`opaque`/`metacopy` and steer how overlay merges our
//! lowerdirs. Opaqueness travels only as the `.wh..wh..opq` tar entry.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::sys::cstr;

/// The opaque-directory marker kiln writes (rootless overlay with `userxattr`).
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";
/// The marker a privileged overlay mount would write; we honour it when diffing.
pub const TRUSTED_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Overlay-private attributes: never written to a layer, never applied from one.
pub fn is_overlay_private(name: &str) -> bool {
    name.starts_with("user.overlay.") || name.starts_with("trusted.overlay.")
}

pub(crate) fn fset(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    let r = unsafe { libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    crate::sys::cvt(r).map(drop)
}

/// lsetxattr: does not follow a symlink in the final component.
pub(crate) fn lset(path: &Path, name: &CStr, value: &[u8]) -> io::Result<()> {
    let p = cstr(path.as_os_str().as_bytes())?;
    let r = unsafe { libc::lsetxattr(p.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    crate::sys::cvt(r).map(drop)
}

/// All xattrs of `path` (not following a final symlink), as (name, value), sorted by
/// name so that layers are deterministic.
pub(crate) fn list(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let p = cstr(path.as_os_str().as_bytes())?;
    let names = loop {
        let n = unsafe { libc::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            // Filesystems without xattr support simply have none.
            if e.raw_os_error() == Some(libc::ENOTSUP) {
                return Ok(Vec::new());
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n as usize];
        let m = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if m < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew in between: retry
            }
            return Err(e);
        }
        buf.truncate(m as usize);
        break buf;
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = cstr(name)?;
        if let Some(v) = get(&p, &cname)? {
            out.push((name.to_vec(), v));
        }
    }
    out.sort();
    Ok(out)
}

/// lgetxattr of one attribute; None if it vanished meanwhile.
fn get(path: &CStr, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    loop {
        let n = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENODATA) {
                return Ok(None);
            }
            return Err(e);
        }
        let mut buf = vec![0u8; n as usize];
        let m = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if m < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(m as usize);
        return Ok(Some(buf));
    }
}

/// Read one xattr of `path` without following a final symlink.
pub fn lget(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let p = cstr(path.as_os_str().as_bytes())?;
    let n = cstr(name.as_bytes())?;
    match get(&p, &n) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(None),
        r => r,
    }
}
