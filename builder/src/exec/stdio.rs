//! A RUN step's own stdout and stderr: two pipes owned by the step's user, relayed
//! to kiln's output by the sandbox process.
//!
//! Why not hand the step kiln's own descriptors: a step would then hold whatever
//! kiln's output is (a CI log file, a terminal) and could truncate or rewrite it
//! through `/proc/self/fd/1`; and a non-root `USER` could not open `/dev/stdout`
//! or `/dev/stderr` at all (they resolve to kiln's files, owned by the invoking
//! user), which is how `nginx -t` as `www-data` fails. Docker's runtimes give the
//! process pipes chowned to its user; so do we.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result};

/// The pipes of one step: read ends stay with the sandbox, write ends become the
/// step's fd 1 and 2.
pub struct StepPipes {
    out: (OwnedFd, OwnedFd),
    err: (OwnedFd, OwnedFd),
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating the step's output pipes");
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl StepPipes {
    /// Two pipes whose write ends belong to `uid:gid`, so that the step can reopen
    /// them through `/dev/stdout` (`/proc/self/fd/1`). Where the id is not mapped
    /// (a single-id user namespace) the pipes stay ours: only root runs there.
    pub fn new(uid: u32, gid: u32) -> Result<StepPipes> {
        let p = StepPipes { out: pipe()?, err: pipe()? };
        for w in [&p.out.1, &p.err.1] {
            // SAFETY: w is an open descriptor.
            let _ = unsafe { libc::fchown(w.as_raw_fd(), uid, gid) };
        }
        Ok(p)
    }

    /// In the step (after fork): the write ends become fd 1 and 2.
    pub fn attach(&self) -> Result<()> {
        for (fd, target) in [(&self.out.1, 1), (&self.err.1, 2)] {
            // SAFETY: dup2 onto a standard descriptor; dup2 clears O_CLOEXEC on it.
            if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
                return Err(std::io::Error::last_os_error()).context("attaching the step's output pipes");
            }
        }
        Ok(())
    }

    /// In the sandbox (after fork): copy the step's output to ours until both pipes
    /// are closed, or `exited()` says the step is gone and nothing more is buffered
    /// (a daemon the step left behind may hold a write end forever).
    pub fn relay(self, mut exited: impl FnMut() -> bool) {
        let StepPipes { out: (out_r, out_w), err: (err_r, err_w) } = self;
        drop(out_w);
        drop(err_w);
        let mut open = [Some((out_r, 1)), Some((err_r, 2))];
        let mut buf = vec![0u8; 64 * 1024];
        let mut gone = false;
        while open.iter().any(Option::is_some) {
            let mut fds: Vec<libc::pollfd> = open
                .iter()
                .flatten()
                .map(|(fd, _)| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 })
                .collect();
            // SAFETY: fds is a valid array of pollfd of the given length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 200) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            if n == 0 {
                if gone {
                    return; // the step exited and nothing came for a poll period
                }
                gone = exited();
                continue;
            }
            for pfd in fds.iter().filter(|p| p.revents != 0) {
                let slot = open.iter_mut().find(|s| s.as_ref().is_some_and(|(fd, _)| fd.as_raw_fd() == pfd.fd));
                let Some(slot) = slot else { continue };
                let Some((fd, target)) = slot.as_ref() else { continue };
                // SAFETY: buf is valid for buf.len() bytes.
                let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if r <= 0 {
                    if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    *slot = None;
                    continue;
                }
                write_all(*target, &buf[..r as usize]);
            }
        }
    }
}

fn write_all(fd: RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: data is a valid slice.
        let w = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if w < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return; // our own output is gone: the step's output has nowhere to go
        }
        data = &data[w as usize..];
    }
}
