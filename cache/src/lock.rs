//! The content-store lock: `flock(2)` on `ROOT/lock`.
//!
//! Protocol (see also ARCHITECTURE.md):
//! - Every [`ContentStore`](crate::store::ContentStore) handle holds a **shared** lock for
//!   its whole lifetime (all clones share one lock). Builds only ever *add* content, and
//!   additions are safe among themselves: blobs enter by atomic rename of verified temp
//!   files with unique names; small index files are replaced by rename.
//! - Garbage collection (`ContentStore::prune`) converts the handle's lock to
//!   **exclusive** for the duration of the sweep, so it runs only when no other
//!   process has the store open, and no build can start (open) while it runs. That is
//!   what makes it safe to delete blobs that are not yet referenced by anything (a
//!   build's freshly committed layer, its ingest temp files).
//! - `flock` locks belong to an open file description and vanish when the process
//!   dies, so a killed build never leaves the store locked.
//! - Within one process, open the store once and clone the handle: a second `open` of
//!   the same root takes a second shared lock, which would make a `prune` on either
//!   handle wait for the other forever.
//! - Read-modify-write of `index.json` is serialised by a second, short exclusive
//!   `flock` on `ROOT/index.lock` (see `ContentStore::set_ref`).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// An open lock file with an `flock` held on it (released on drop).
#[derive(Debug)]
pub struct LockFile {
    file: File,
}

impl LockFile {
    /// Opens (creating) `path` and locks it, waiting if needed. When it has to wait,
    /// `on_wait` is called once first (to tell the user why nothing happens).
    pub fn acquire(path: &Path, mode: LockMode, on_wait: impl FnOnce()) -> Result<Self, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StoreError::io("opening lock file", path, e))?;
        let l = LockFile { file };
        if !l.lock(mode, false, path)? {
            on_wait();
            l.lock(mode, true, path)?;
        }
        Ok(l)
    }

    /// Converts the held lock (not atomic: flock releases, then waits).
    pub fn convert(&self, mode: LockMode, path: &Path) -> Result<(), StoreError> {
        self.lock(mode, true, path).map(|_| ())
    }

    /// Tries to convert without waiting; false if another holder prevents it.
    pub fn try_convert(&self, mode: LockMode, path: &Path) -> Result<bool, StoreError> {
        self.lock(mode, false, path)
    }

    fn lock(&self, mode: LockMode, wait: bool, path: &Path) -> Result<bool, StoreError> {
        let mut op = match mode {
            LockMode::Shared => libc::LOCK_SH,
            LockMode::Exclusive => libc::LOCK_EX,
        };
        if !wait {
            op |= libc::LOCK_NB;
        }
        loop {
            // SAFETY: flock on a file descriptor we own.
            let r = unsafe { libc::flock(self.file.as_raw_fd(), op) };
            if r == 0 {
                return Ok(true);
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) if !wait => return Ok(false),
                _ => return Err(StoreError::io("locking", path, e)),
            }
        }
    }
}
