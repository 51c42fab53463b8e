//! Entering the build's user and mount namespaces.
//!
//! kiln re-executes itself: the parent (the unprivileged user's process) spawns
//! `/proc/self/exe` with the same arguments; the child unshares a user and a mount
//! namespace before exec and waits on a pipe while the parent writes its id maps
//! (with newuidmap/newgidmap when a subordinate range exists). After exec the child
//! is uid 0 with full capabilities inside the namespace, so layer ownership is real
//! on disk and overlayfs can be mounted; the whole build runs there. The parent only
//! waits and passes the exit status on.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{getgid, getuid, User};

use crate::idmap::{self, MapPlan};

/// Set in the re-executed child so it knows it is already inside.
const INSIDE_ENV: &str = "_KILN_IN_USERNS";

/// Outcome of `enter`: either we are now the process that should do the work, or
/// the work was done by a child and this is its exit code.
pub enum Entered {
    Inside,
    ChildExited(i32),
}

pub fn entered_before() -> bool {
    std::env::var_os(INSIDE_ENV).is_some()
}

/// Make sure this process runs as root of a user namespace with its own mount
/// namespace, re-executing if necessary.
pub fn enter() -> Result<Entered> {
    if entered_before() {
        make_mounts_private()?;
        return Ok(Entered::Inside);
    }
    if getuid().is_root() {
        // Real root (e.g. CI, or a Kaniko-style pod): a private mount namespace is
        // enough, ownership is already real.
        unshare(CloneFlags::CLONE_NEWNS).context("unsharing the mount namespace")?;
        make_mounts_private()?;
        return Ok(Entered::Inside);
    }
    let plan = plan_for_current_user();
    if let MapPlan::SingleId { uid, .. } = &plan {
        eprintln!(
            "kiln: no subordinate id range for uid {uid} in /etc/subuid and /etc/subgid (or newuidmap missing): \
             using a single-id map; images whose files belong to other users will fail to build"
        );
    }
    let code = spawn_inside(&plan)?;
    Ok(Entered::ChildExited(code))
}

fn make_mounts_private() -> Result<()> {
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .context("making mounts private in the build's mount namespace")
}

fn plan_for_current_user() -> MapPlan {
    let uid = getuid().as_raw();
    let gid = getgid().as_raw();
    let name = User::from_uid(getuid()).ok().flatten().map(|u| u.name).unwrap_or_default();
    let subuid = std::fs::read_to_string("/etc/subuid").ok();
    let subgid = std::fs::read_to_string("/etc/subgid").ok();
    let helpers = find_in_path("newuidmap") && find_in_path("newgidmap");
    idmap::plan(uid, gid, &name, subuid.as_deref(), subgid.as_deref(), helpers)
}

fn find_in_path(cmd: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path).any(|d| d.join(cmd).is_file())
}

fn spawn_inside(plan: &MapPlan) -> Result<i32> {
    let (ready_r, ready_w) = nix::unistd::pipe().context("creating a pipe")?;
    let ready_r_fd = ready_r.as_raw_fd();
    let ready_w_fd = ready_w.as_raw_fd();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.args(std::env::args_os().skip(1)).env(INSIDE_ENV, "1");
    // SAFETY: runs in the forked child before exec; only async-signal-safe calls
    // (unshare, read, close) are made.
    unsafe {
        cmd.pre_exec(move || {
            libc::close(ready_w_fd);
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut b = [0u8; 1];
            let n = libc::read(ready_r_fd, b.as_mut_ptr().cast(), 1);
            libc::close(ready_r_fd);
            if n != 1 {
                return Err(std::io::Error::other("parent did not set up the id maps"));
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting kiln inside a user namespace")?;
    drop(ready_r);
    let pid = child.id();
    let mut ready_w = std::fs::File::from(OwnedFd::from(ready_w));
    if let Err(e) = write_maps(pid, plan) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    ready_w.write_all(b"1").context("releasing the namespaced child")?;
    drop(ready_w);
    // The child shares our terminal's process group, so Ctrl-C reaches it directly;
    // we only wait for it.
    let status = ignore_interrupts_while(|| child.wait()).context("waiting for the namespaced kiln")?;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

fn ignore_interrupts_while<T>(f: impl FnOnce() -> T) -> T {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: setting SIG_IGN/restoring the previous handler is always sound.
    let prev = unsafe { signal(Signal::SIGINT, SigHandler::SigIgn) };
    let out = f();
    if let Ok(prev) = prev {
        unsafe {
            let _ = signal(Signal::SIGINT, prev);
        }
    }
    out
}

fn write_maps(pid: u32, plan: &MapPlan) -> Result<()> {
    match plan {
        MapPlan::Subordinate { uids, gids } => {
            run_helper("newuidmap", pid, &idmap::helper_args(uids))?;
            run_helper("newgidmap", pid, &idmap::helper_args(gids))?;
        }
        MapPlan::SingleId { uid, gid } => {
            let proc = Path::new("/proc").join(pid.to_string());
            std::fs::write(proc.join("uid_map"), format!("0 {uid} 1\n")).context("writing uid_map")?;
            std::fs::write(proc.join("setgroups"), "deny").context("writing setgroups")?;
            std::fs::write(proc.join("gid_map"), format!("0 {gid} 1\n")).context("writing gid_map")?;
        }
    }
    Ok(())
}

fn run_helper(helper: &str, pid: u32, args: &[String]) -> Result<()> {
    let out = Command::new(helper)
        .arg(pid.to_string())
        .args(args)
        .output()
        .with_context(|| format!("running {helper}"))?;
    if !out.status.success() {
        bail!(
            "{helper} {pid} {} failed: {}\nCheck /etc/subuid and /etc/subgid for this user.",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
