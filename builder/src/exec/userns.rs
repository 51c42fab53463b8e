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
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::unistd::{getgid, getuid, User};

use crate::exec::idmap::{self, MapPlan};
use crate::exec::sys::{Linux, Sys};
use crate::options::{Isolation, IsolationChoice};

/// Set in the re-executed child so it knows it is already inside.
const INSIDE_ENV: &str = "_KILN_IN_USERNS";

/// Outcome of `enter`: either we are now the process that should do the work (with
/// this isolation), or the work was done by a child and this is its exit code.
pub enum Entered {
    Inside(Isolation),
    ChildExited(i32),
}

pub fn entered_before() -> bool {
    std::env::var_os(INSIDE_ENV).is_some()
}

/// Make sure this process runs as root of a user namespace with its own mount
/// namespace, re-executing if necessary.
/// `child_env`: variables the re-executed child gets on top of this process's.
pub fn enter(choice: IsolationChoice, child_env: &[(String, String)]) -> Result<Entered> {
    if entered_before() {
        make_mounts_private(&Linux)?;
        return Ok(Entered::Inside(Isolation::Rootless));
    }
    if let Some(isolation) = isolate_in_place(&Linux, choice)? {
        return Ok(Entered::Inside(isolation));
    }
    let plan = plan_for_current_user();
    if let MapPlan::SingleId { uid, .. } = &plan {
        crate::progress::get().warn(&format!(
            "no subordinate id range for uid {uid} in /etc/subuid and /etc/subgid (or newuidmap missing): \
             using a single-id map; images whose files belong to other users will fail to build"
        ));
    }
    let code = spawn_inside(&plan, child_env)?;
    Ok(Entered::ChildExited(code))
}

/// What this process can do where it is: `Some` isolation when it needs no new
/// user namespace (chroot, or real root with a private mount namespace), `None`
/// when it must re-execute inside one.
fn isolate_in_place(sys: &dyn Sys, choice: IsolationChoice) -> Result<Option<Isolation>> {
    let root = sys.is_root();
    if choice == IsolationChoice::Chroot {
        if !root {
            bail!(
                "--isolation chroot needs uid 0 (the Kaniko-style pod); as an unprivileged user \
                 use the default rootless isolation"
            );
        }
        return Ok(Some(Isolation::Chroot));
    }
    if !root {
        return Ok(None);
    }
    // Real root (e.g. CI): a private mount namespace is enough, ownership is
    // already real. Without CAP_SYS_ADMIN (a default container, Kaniko's
    // habitat) there is none: fall back to a plain chroot.
    match sys.unshare(CloneFlags::CLONE_NEWNS) {
        Ok(()) => {
            make_mounts_private(sys)?;
            Ok(Some(Isolation::Rootless))
        }
        Err(e) if choice == IsolationChoice::Auto => {
            crate::progress::get().warn(&format!("cannot create a mount namespace ({e}): using --isolation chroot (no /proc in RUN steps)"));
            Ok(Some(Isolation::Chroot))
        }
        Err(e) => Err(e).context("unsharing the mount namespace (for --isolation chroot, run with that flag)"),
    }
}

fn make_mounts_private(sys: &dyn Sys) -> Result<()> {
    sys.mount(None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)
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

fn spawn_inside(plan: &MapPlan, child_env: &[(String, String)]) -> Result<i32> {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    // Everything the child needs is prepared before fork: after it, only
    // async-signal-safe calls. (std's Command cannot be used: spawn() waits for the
    // exec, which here must wait for the parent to write the maps.)
    let exe = CString::new("/proc/self/exe").expect("static string");
    let argv: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .context("argument contains a NUL byte")?;
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != INSIDE_ENV)
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv)
        })
        .collect::<Result<_, _>>()
        .context("environment contains a NUL byte")?;
    envp.push(CString::new(format!("{INSIDE_ENV}=1")).expect("no NUL"));
    for (k, v) in child_env {
        envp.push(CString::new(format!("{k}={v}")).context("environment contains a NUL byte")?);
    }
    // Two handshakes: the child says when it has unshared (maps can only be written
    // for a process already in its new namespace), the parent says when the maps are
    // written (the child must not exec before, or it would lose its capabilities).
    let (ready_r, ready_w) = nix::unistd::pipe().context("creating a pipe")?;
    let (unshared_r, unshared_w) = nix::unistd::pipe().context("creating a pipe")?;
    let parent = std::process::id();

    // SAFETY: kiln is single-threaded here (no runtime started yet); the child only
    // makes async-signal-safe calls before execve.
    match unsafe { fork() }.context("forking")? {
        ForkResult::Child => unsafe {
            drop(ready_w);
            drop(unshared_r);
            // Dies with the user's kiln (a cancelled CI job SIGKILLs only that one).
            if super::die_with_parent(Some(parent)).is_err() {
                libc::_exit(125);
            }
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                let msg = b"kiln: unshare(CLONE_NEWUSER) failed: user namespaces are not available here\n";
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::_exit(125);
            }
            libc::write(unshared_w.as_raw_fd(), b"1".as_ptr().cast(), 1);
            drop(unshared_w);
            let mut b = [0u8; 1];
            if libc::read(ready_r.as_raw_fd(), b.as_mut_ptr().cast(), 1) != 1 {
                libc::_exit(125);
            }
            drop(ready_r);
            let _ = nix::unistd::execve(&exe, &argv, &envp);
            let msg = b"kiln: re-executing inside the user namespace failed\n";
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(125);
        },
        ForkResult::Parent { child } => {
            drop(ready_r);
            drop(unshared_w);
            let mut unshared = std::fs::File::from(OwnedFd::from(unshared_r));
            let mut b = [0u8; 1];
            if !matches!(std::io::Read::read(&mut unshared, &mut b), Ok(1)) {
                // The child died before unsharing; it printed why.
                let _ = waitpid(child, None);
                bail!(
                    "could not create a user namespace: they are forbidden here (e.g. by the pod's seccomp \
                     profile or user.max_user_namespaces=0). Run kiln as uid 0 with --isolation chroot, \
                     or allow user namespaces"
                );
            }
            let mut ready_w = std::fs::File::from(OwnedFd::from(ready_w));
            if let Err(e) = write_maps(child.as_raw() as u32, plan) {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(e);
            }
            ready_w.write_all(b"1").context("releasing the namespaced child")?;
            drop(ready_w);
            // The child shares our terminal's process group, so Ctrl-C reaches it
            // directly; we only wait for it and pass its status on.
            ignore_interrupts_while(|| loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                    Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e).context("waiting for the namespaced kiln"),
                }
            })
        }
    }
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
            // The two helpers write different files of the child: run them at once
            // (each is a setuid exec of a few ms, paid by every build).
            let uid_args = idmap::helper_args(uids);
            let gid_args = idmap::helper_args(gids);
            let u = spawn_helper("newuidmap", pid, &uid_args)?;
            let g = spawn_helper("newgidmap", pid, &gid_args);
            let ru = finish_helper("newuidmap", pid, &uid_args, u);
            let rg = g.and_then(|g| finish_helper("newgidmap", pid, &gid_args, g));
            ru?;
            rg?;
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

fn spawn_helper(helper: &str, pid: u32, args: &[String]) -> Result<std::process::Child> {
    Command::new(helper)
        .arg(pid.to_string())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {helper}"))
}

fn finish_helper(helper: &str, pid: u32, args: &[String], child: std::process::Child) -> Result<()> {
    let out = child.wait_with_output().with_context(|| format!("running {helper}"))?;
    if !out.status.success() {
        bail!(
            "{helper} {pid} {} failed: {}\nCheck /etc/subuid and /etc/subgid for this user.",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::sys::Recorder;

    #[test]
    fn an_unprivileged_user_re_executes_in_a_new_user_namespace() {
        let mut sys = Recorder::new();
        sys.root = false;
        assert_eq!(isolate_in_place(&sys, IsolationChoice::Auto).unwrap(), None);
        assert_eq!(isolate_in_place(&sys, IsolationChoice::Rootless).unwrap(), None);
        assert!(sys.calls().is_empty());
        let err = isolate_in_place(&sys, IsolationChoice::Chroot).unwrap_err();
        assert!(err.to_string().contains("needs uid 0"), "{err}");
    }

    #[test]
    fn root_gets_a_private_mount_namespace() {
        let sys = Recorder::new();
        assert_eq!(isolate_in_place(&sys, IsolationChoice::Auto).unwrap(), Some(Isolation::Rootless));
        assert_eq!(sys.calls(), ["unshare CloneFlags(CLONE_NEWNS)", "mount - / - MsFlags(MS_REC | MS_PRIVATE) -"]);
        let sys = Recorder::new();
        assert_eq!(isolate_in_place(&sys, IsolationChoice::Chroot).unwrap(), Some(Isolation::Chroot));
        assert!(sys.calls().is_empty(), "chroot isolation makes no namespace");
    }

    #[test]
    fn root_without_cap_sys_admin_falls_back_to_chroot_only_on_auto() {
        let mut sys = Recorder::new();
        sys.fail.push(("unshare".into(), nix::errno::Errno::EPERM));
        assert_eq!(isolate_in_place(&sys, IsolationChoice::Auto).unwrap(), Some(Isolation::Chroot));
        assert_eq!(sys.calls(), ["unshare CloneFlags(CLONE_NEWNS)"]);
        let err = isolate_in_place(&sys, IsolationChoice::Rootless).unwrap_err();
        assert!(format!("{err:#}").contains("--isolation chroot"), "{err:#}");
    }
}
