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

pub fn mount_overlay(lowers: &[PathBuf], upper: &Path, work: &Path, merged: &Path) -> Result<(), OverlayError> {
    let opts = mount_options(lowers, upper, work)?;
    mount(Some("overlay"), merged, Some("overlay"), MsFlags::empty(), Some(opts.as_str())).map_err(|source| {
        OverlayError::Mount { merged: merged.to_path_buf(), lowers: lowers.len(), source }
    })
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
