//! Resolving layer entry names inside the target directory, never outside it.
//!
//! Two layers of defence:
//! 1. Names are normalised lexically first ([`normalize`]): a leading `/` is dropped
//!    (as Docker does), `.` and empty components vanish, and a `..` that would climb
//!    above the root is rejected outright rather than clamped, so a hostile layer
//!    gets a clear error instead of a silently relocated file.
//! 2. Parent directories are opened with openat2(`RESOLVE_IN_ROOT`), so a symlink
//!    planted by an earlier entry (`a -> /etc`, `a -> ../../..`) is resolved as if the
//!    target were `/`: it can only ever land inside the target. The final component
//!    is never resolved at all: callers operate on (parent fd, name) with no-follow
//!    calls.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use crate::sys;

/// A normalised relative path: components without `/`, `.` or `..`; empty = the root.
pub(crate) type Components = Vec<Vec<u8>>;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NormalizeError {
    /// `..` would leave the root.
    Escapes,
    /// NUL byte in the name.
    Nul,
}

/// Lexically normalise a tar entry name (see the module docs).
pub(crate) fn normalize(name: &[u8]) -> Result<Components, NormalizeError> {
    if name.contains(&0) {
        return Err(NormalizeError::Nul);
    }
    let mut out: Components = Vec::new();
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(NormalizeError::Escapes);
                }
            }
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

pub(crate) fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

/// The target directory of an unpack, with a one-entry cache of the last parent
/// directory resolved (tar entries come grouped by directory, so this saves most
/// openat2 calls).
pub(crate) struct Root {
    fd: OwnedFd,
    /// The last directory resolved: its path, fd, and inode number once asked for.
    cache: Option<(Vec<u8>, OwnedFd, Option<u64>)>,
    /// Directories made for missing parents, as (parent inode, name); the unpack
    /// drains this to know every name it made.
    pub(crate) made: Vec<(u64, Vec<u8>)>,
}

impl Root {
    pub(crate) fn open(path: &Path) -> io::Result<Root> {
        use std::os::unix::ffi::OsStrExt;
        let c = sys::cstr(path.as_os_str().as_bytes())?;
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        let fd = sys::cvt(fd)?;
        Ok(Root { fd: unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }, cache: None, made: Vec::new() })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Forget the cached parent. Called whenever anything is removed or replaced,
    /// since that may change what a cached path resolves to.
    pub(crate) fn invalidate(&mut self) {
        self.cache = None;
    }

    fn open_in_root(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        let c = if rel.is_empty() { c".".to_owned() } else { sys::cstr(rel)? };
        sys::openat2_in_root(self.fd.as_fd(), &c, libc::O_PATH | libc::O_DIRECTORY)
    }

    /// Open the directory `comps` (resolved inside the root) as an O_PATH fd,
    /// creating missing directories (mode 0755, owned by us = root in the user
    /// namespace) when `create` is set.
    pub(crate) fn dir(&mut self, comps: &[Vec<u8>], create: bool) -> io::Result<BorrowedFd<'_>> {
        self.dir_id(comps, create, false).map(|(fd, _)| fd)
    }

    /// Like [`Root::dir`], also giving the directory's inode number when `want_ino`
    /// (0 otherwise): with the name, it identifies where an entry lands whatever
    /// path (through in-root symlinks) led there.
    pub(crate) fn dir_id(&mut self, comps: &[Vec<u8>], create: bool, want_ino: bool) -> io::Result<(BorrowedFd<'_>, u64)> {
        let rel = join(comps);
        let hit = matches!(&self.cache, Some((p, _, _)) if *p == rel);
        if !hit {
            let fd = self.resolve_dir(comps, create)?;
            self.cache = Some((rel, fd, None));
        }
        let Some((_, fd, ino)) = self.cache.as_mut() else {
            return Err(io::Error::other("directory cache is empty"));
        };
        if want_ino && ino.is_none() {
            *ino = Some(sys::fstat(fd.as_fd())?.st_ino);
        }
        let ino = ino.unwrap_or(0);
        match &self.cache {
            Some((_, fd, _)) => Ok((fd.as_fd(), ino)),
            None => Err(io::Error::other("directory cache is empty")),
        }
    }

    /// Like [`Root::dir`] but returns an owned fd and bypasses the cache (for when two
    /// directories are needed at once, e.g. hardlinks).
    pub(crate) fn dir_owned(&mut self, comps: &[Vec<u8>], create: bool) -> io::Result<OwnedFd> {
        self.resolve_dir(comps, create)
    }

    fn resolve_dir(&mut self, comps: &[Vec<u8>], create: bool) -> io::Result<OwnedFd> {
        match self.open_in_root(&join(comps)) {
            Ok(fd) => return Ok(fd),
            Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        // Something is missing: walk prefix by prefix, creating what is absent. Each
        // prefix is still resolved with RESOLVE_IN_ROOT, so a symlinked component
        // leads inside the root, and the new directory is made in the resolved parent.
        let mut cur = self.open_in_root(b"")?;
        for i in 0..comps.len() {
            match self.open_in_root(&join(&comps[..=i])) {
                Ok(fd) => cur = fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let name = sys::cstr(&comps[i])?;
                    match sys::mkdirat(cur.as_fd(), &name, 0o755) {
                        Ok(()) => {}
                        // A dangling symlink sits there: we do not create its target
                        // (it may be in a lower layer); refuse instead.
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                            return Err(io::Error::new(
                                io::ErrorKind::NotFound,
                                format!(
                                    "parent component {:?} is a dangling symlink",
                                    String::from_utf8_lossy(&join(&comps[..=i]))
                                ),
                            ))
                        }
                        Err(e) => return Err(e),
                    }
                    // mkdir is subject to the umask; make the mode exactly 0755.
                    sys::fchmodat(cur.as_fd(), &name, 0o755)?;
                    self.made.push((sys::fstat(cur.as_fd())?.st_ino, comps[i].clone()));
                    cur = sys::openat(cur.as_fd(), &name, libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Result<Vec<String>, NormalizeError> {
        normalize(s.as_bytes()).map(|v| v.into_iter().map(|c| String::from_utf8(c).unwrap()).collect())
    }

    #[test]
    fn normalizes() {
        assert_eq!(n("a/b/c").unwrap(), ["a", "b", "c"]);
        assert_eq!(n("/a//./b/").unwrap(), ["a", "b"]);
        assert_eq!(n("./").unwrap(), Vec::<String>::new());
        assert_eq!(n("a/../b").unwrap(), ["b"]);
        assert_eq!(n("..").unwrap_err(), NormalizeError::Escapes);
        assert_eq!(n("a/../../b").unwrap_err(), NormalizeError::Escapes);
        assert_eq!(n("/../etc").unwrap_err(), NormalizeError::Escapes);
        assert_eq!(n("..foo/x").unwrap(), ["..foo", "x"]);
    }
}
