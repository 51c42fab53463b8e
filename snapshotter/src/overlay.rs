//! Mounting a step's rootfs with overlayfs.
//!
//! Only this module knows overlayfs. It is called inside the build's user namespace,
//! so the mount uses `userxattr`: whiteouts are 0/0 character devices and opaque
//! directories carry `user.overlay.opaque`, exactly the format `apply` writes and
//! `diff` reads, so an upperdir can later serve as a lowerdir unchanged.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("path {0:?} cannot be used in an overlay mount option (contains ',' or ':' or is not UTF-8)")]
    BadPath(PathBuf),
    #[error("mounting overlayfs on {merged:?} ({lowers} lower layers): {source}")]
    Mount { merged: PathBuf, lowers: usize, source: nix::Error },
    #[error("unmounting {0:?}: {1}")]
    Unmount(PathBuf, nix::Error),
}

fn opt_path(p: &Path) -> Result<&str, OverlayError> {
    let s = p.to_str().ok_or_else(|| OverlayError::BadPath(p.to_path_buf()))?;
    if s.contains(',') || s.contains(':') {
        return Err(OverlayError::BadPath(p.to_path_buf()));
    }
    Ok(s)
}

/// Build the option string. `lowers` are in image order (bottom first); overlayfs
/// wants the top-most first.
pub fn mount_options(lowers: &[PathBuf], upper: &Path, work: &Path) -> Result<String, OverlayError> {
    let mut lower = Vec::with_capacity(lowers.len());
    for l in lowers.iter().rev() {
        lower.push(opt_path(l)?);
    }
    Ok(format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        lower.join(":"),
        opt_path(upper)?,
        opt_path(work)?
    ))
}

/// Whether `volatile` is accepted here (Linux 5.10+); cleared at the first EINVAL.
///
/// Why volatile: unmounting an overlay syncs its whole upper filesystem
/// (`ovl_sync_fs`), so every step's unmount waited for the writeback of everything
/// written before it, e.g. all files of the base layers just unpacked (~0.2 s for
/// 10k files, measured). A step's upperdir needs no durability of its own: the
/// layer made from it goes to the content store, which syncs what it keeps, and
/// an upperdir of a build that crashed is never reused (each step has a fresh one).
static VOLATILE_OK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

fn volatile_ok() -> bool {
    VOLATILE_OK.load(std::sync::atomic::Ordering::Relaxed)
}

fn no_volatile() {
    VOLATILE_OK.store(false, std::sync::atomic::Ordering::Relaxed);
}

pub fn mount_overlay(lowers: &[PathBuf], upper: &Path, work: &Path, merged: &Path) -> Result<(), OverlayError> {
    let opts = mount_options(lowers, upper, work)?;
    let legacy = |o: &str| mount(Some("overlay"), merged, Some("overlay"), MsFlags::empty(), Some(o));
    let r = if volatile_ok() {
        match legacy(&format!("{opts},volatile")) {
            Err(nix::Error::EINVAL) => {
                no_volatile();
                legacy(&opts)
            }
            r => r,
        }
    } else {
        legacy(&opts)
    };
    r.map_err(|source| OverlayError::Mount { merged: merged.to_path_buf(), lowers: lowers.len(), source })
}

/// Longest option string the legacy mount(2) call takes (one page, minus slack).
pub const MAX_OPTIONS: usize = 4000;
/// Most lower layers overlayfs stacks (OVL_MAX_STACK).
pub const MAX_LOWERS: usize = 500;

/// Mount, choosing the API: the legacy option string when it fits in a page,
/// otherwise the new mount API with one `lowerdir+` per layer (Linux 6.8+), which
/// has no length limit. Callers keep `lowers.len() <= MAX_LOWERS` (flatten first).
pub fn mount_overlay_any(lowers: &[PathBuf], upper: &Path, work: &Path, merged: &Path) -> Result<(), OverlayError> {
    match mount_options(lowers, upper, work) {
        Ok(o) if o.len() <= MAX_OPTIONS => mount_overlay(lowers, upper, work, merged),
        _ => mount_overlay_fsconfig(lowers, upper, work, merged),
    }
}

fn fsconfig_str(fd: i32, key: &std::ffi::CStr, value: Option<&Path>) -> Result<(), nix::Error> {
    use std::os::unix::ffi::OsStrExt;
    const FSCONFIG_SET_FLAG: libc::c_uint = 0;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    let r = match value {
        Some(v) => {
            let c = std::ffi::CString::new(v.as_os_str().as_bytes()).map_err(|_| nix::Error::EINVAL)?;
            // SAFETY: valid fd and NUL-terminated strings.
            unsafe { libc::syscall(libc::SYS_fsconfig, fd, FSCONFIG_SET_STRING, key.as_ptr(), c.as_ptr(), 0) }
        }
        None => unsafe { libc::syscall(libc::SYS_fsconfig, fd, FSCONFIG_SET_FLAG, key.as_ptr(), std::ptr::null::<u8>(), 0) },
    };
    if r < 0 {
        Err(nix::Error::last())
    } else {
        Ok(())
    }
}

/// The new mount API: fsopen("overlay"), one `lowerdir+` per layer (top first,
/// like the option string), then fsmount + move_mount.
pub fn mount_overlay_fsconfig(lowers: &[PathBuf], upper: &Path, work: &Path, merged: &Path) -> Result<(), OverlayError> {
    use std::os::fd::{FromRawFd, OwnedFd, AsRawFd};
    let err = |source| OverlayError::Mount { merged: merged.to_path_buf(), lowers: lowers.len(), source };
    // SAFETY: plain syscalls with valid strings; fds are owned right away.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), 1 /* FSOPEN_CLOEXEC */) };
    if fs < 0 {
        return Err(err(nix::Error::last()));
    }
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    let fd = fs.as_raw_fd();
    for l in lowers.iter().rev() {
        fsconfig_str(fd, c"lowerdir+", Some(l)).map_err(err)?;
    }
    fsconfig_str(fd, c"upperdir", Some(upper)).map_err(err)?;
    fsconfig_str(fd, c"workdir", Some(work)).map_err(err)?;
    fsconfig_str(fd, c"userxattr", None).map_err(err)?;
    if volatile_ok() && fsconfig_str(fd, c"volatile", None).is_err() {
        no_volatile();
    }
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    if unsafe { libc::syscall(libc::SYS_fsconfig, fd, FSCONFIG_CMD_CREATE, std::ptr::null::<u8>(), std::ptr::null::<u8>(), 0) } < 0 {
        return Err(err(nix::Error::last()));
    }
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fd, 1 /* FSMOUNT_CLOEXEC */, 0) };
    if m < 0 {
        return Err(err(nix::Error::last()));
    }
    let m = unsafe { OwnedFd::from_raw_fd(m as i32) };
    use std::os::unix::ffi::OsStrExt;
    let target = std::ffi::CString::new(merged.as_os_str().as_bytes()).map_err(|_| err(nix::Error::EINVAL))?;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let r = unsafe {
        libc::syscall(libc::SYS_move_mount, m.as_raw_fd(), c"".as_ptr(), libc::AT_FDCWD, target.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH)
    };
    if r < 0 {
        return Err(err(nix::Error::last()));
    }
    Ok(())
}

pub fn unmount(merged: &Path) -> Result<(), OverlayError> {
    umount2(merged, MntFlags::MNT_DETACH).map_err(|e| OverlayError::Unmount(merged.to_path_buf(), e))
}

/// Whether an upperdir directory is marked opaque (hides everything below it).
pub fn is_opaque(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    let mut buf = [0u8; 4];
    for name in [c"user.overlay.opaque", c"trusted.overlay.opaque"] {
        // SAFETY: valid NUL-terminated strings and a buffer of the given length.
        let n = unsafe { libc::lgetxattr(c.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 && buf[0] == b'y' {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_put_top_layer_first() {
        let lowers = vec![PathBuf::from("/s/base"), PathBuf::from("/s/mid"), PathBuf::from("/s/top")];
        let o = mount_options(&lowers, Path::new("/t/u"), Path::new("/t/w")).unwrap();
        assert_eq!(o, "lowerdir=/s/top:/s/mid:/s/base,upperdir=/t/u,workdir=/t/w,userxattr");
        assert!(mount_options(&[PathBuf::from("/a,b")], Path::new("/u"), Path::new("/w")).is_err());
    }
}
