//! `RUN --mount=type=ssh`: a socket of the step's own, relayed to the agent.
//!
//! BuildKit never shows a step the caller's agent socket: it serves a socket of
//! its own with the mount's `mode`, `uid` and `gid` (0600, 0, 0 by default) and
//! forwards each connection to the agent. Binding the caller's socket instead would
//! give the step the caller's permissions on it and ignore those options. The
//! relay runs on threads of the build process for as long as the step runs.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};

/// A listening relay socket; stops (and removes its socket) when dropped.
pub struct SshRelay {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SshRelay {
    /// Listen at `path` (owned `uid:gid`, mode `mode`) and forward every
    /// connection to the agent socket `agent`.
    pub fn start(path: &Path, agent: &Path, mode: u32, uid: u32, gid: u32) -> Result<SshRelay> {
        let listener = UnixListener::bind(path).with_context(|| format!("creating the ssh relay socket {}", path.display()))?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("chown {uid}:{gid} of the ssh socket (is the id mapped?)"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (agent, flag) = (agent.to_path_buf(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("ssh-relay".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = conn else { continue };
                    let agent = agent.clone();
                    let _ = std::thread::Builder::new().name("ssh-relay-conn".into()).spawn(move || forward(client, &agent));
                }
            })
            .context("starting the ssh relay")?;
        Ok(SshRelay { path: path.to_path_buf(), stop, thread: Some(thread) })
    }
}

/// Copy bytes both ways between a step's connection and a new agent connection.
fn forward(client: UnixStream, agent: &Path) {
    let Ok(upstream) = UnixStream::connect(agent) else { return };
    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else { return };
    let up = std::thread::spawn(move || {
        let mut client = client;
        let mut upstream = upstream;
        let _ = copy(&mut client, &mut upstream);
        let _ = upstream.shutdown(std::net::Shutdown::Write);
    });
    let _ = copy(&mut u2, &mut c2);
    let _ = c2.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

fn copy(from: &mut UnixStream, to: &mut UnixStream) -> std::io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
    }
}

impl Drop for SshRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_both_ways_with_the_mounts_mode() {
        let t = tempfile::tempdir().unwrap();
        let agent_path = t.path().join("agent.sock");
        // A fake agent: answers each request with its bytes reversed.
        let agent = UnixListener::bind(&agent_path).unwrap();
        std::thread::spawn(move || {
            for c in agent.incoming().flatten() {
                let mut c = c;
                let mut buf = [0u8; 5];
                if c.read_exact(&mut buf).is_ok() {
                    buf.reverse();
                    let _ = c.write_all(&buf);
                }
            }
        });
        let me = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
        let relay_path = t.path().join("relay.sock");
        let relay = SshRelay::start(&relay_path, &agent_path, 0o741, me.0, me.1).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&relay_path).unwrap().permissions().mode() & 0o7777, 0o741);
        for _ in 0..2 {
            let mut s = UnixStream::connect(&relay_path).unwrap();
            s.write_all(b"\0\0\0\x01\x0b").unwrap();
            let mut got = [0u8; 5];
            s.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"\x0b\x01\0\0\0");
        }
        drop(relay);
        assert!(!relay_path.exists(), "the socket goes with the relay");
    }
}
