//! The namespace, mount and identity syscalls, behind one trait: [`Linux`] makes
//! them, [`Recorder`] (tests) writes down which calls were made, in which order,
//! with which flags, and can make a chosen call fail — so the sandbox and user
//! namespace set-up is unit-tested without privileges (as youki's `Syscall`).
//! Nothing else in the builder calls unshare, mount, umount, pivot_root, chroot,
//! sethostname, setgroups, setgid or setuid — except the child side of
//! `userns::spawn_inside`, which between fork and exec may only make
//! async-signal-safe calls (raw `libc::unshare`, no allocation). The snapshotter
//! crate's `overlay.rs` mounts and unmounts its overlays itself.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};

pub trait Sys {
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()>;
    fn mount(&self, source: Option<&Path>, target: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> nix::Result<()>;
    /// `umount2(target, MNT_DETACH)`.
    fn umount_detach(&self, target: &Path) -> nix::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()>;
    fn chroot(&self, path: &Path) -> nix::Result<()>;
    fn chdir(&self, path: &Path) -> nix::Result<()>;
    fn sethostname(&self, name: &str) -> nix::Result<()>;
    fn setgroups(&self, groups: &[u32]) -> nix::Result<()>;
    fn setgid(&self, gid: u32) -> nix::Result<()>;
    fn setuid(&self, uid: u32) -> nix::Result<()>;
    /// Whether the real uid is 0.
    fn is_root(&self) -> bool;
}

/// The real thing.
pub struct Linux;

impl Sys for Linux {
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::unshare(flags)
    }
    fn mount(&self, source: Option<&Path>, target: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> nix::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }
    fn umount_detach(&self, target: &Path) -> nix::Result<()> {
        nix::mount::umount2(target, MntFlags::MNT_DETACH)
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        nix::unistd::pivot_root(new_root, put_old)
    }
    fn chroot(&self, path: &Path) -> nix::Result<()> {
        nix::unistd::chroot(path)
    }
    fn chdir(&self, path: &Path) -> nix::Result<()> {
        nix::unistd::chdir(path)
    }
    fn sethostname(&self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }
    fn setgroups(&self, groups: &[u32]) -> nix::Result<()> {
        let g: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&g)
    }
    fn setgid(&self, gid: u32) -> nix::Result<()> {
        nix::unistd::setgid(Gid::from_raw(gid))
    }
    fn setuid(&self, uid: u32) -> nix::Result<()> {
        nix::unistd::setuid(Uid::from_raw(uid))
    }
    fn is_root(&self) -> bool {
        nix::unistd::getuid().is_root()
    }
}

/// Records calls as text (`mount proc /r/proc proc MS_NOSUID | MS_NODEV | MS_NOEXEC -`),
/// succeeding unless a call starts with one of `fail`'s prefixes.
#[cfg(test)]
pub struct Recorder {
    pub calls: std::cell::RefCell<Vec<String>>,
    pub fail: Vec<(String, nix::errno::Errno)>,
    pub root: bool,
}

#[cfg(test)]
impl Recorder {
    pub fn new() -> Self {
        Recorder { calls: Default::default(), fail: Vec::new(), root: true }
    }

    fn record(&self, call: String) -> nix::Result<()> {
        let failing = self.fail.iter().find(|(p, _)| call.starts_with(p.as_str())).map(|(_, e)| *e);
        self.calls.borrow_mut().push(call);
        failing.map_or(Ok(()), Err)
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

#[cfg(test)]
impl Sys for Recorder {
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        self.record(format!("unshare {flags:?}"))
    }
    fn mount(&self, source: Option<&Path>, target: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> nix::Result<()> {
        let s = source.map_or("-".to_string(), |p| p.display().to_string());
        self.record(format!("mount {s} {} {} {flags:?} {}", target.display(), fstype.unwrap_or("-"), data.unwrap_or("-")))
    }
    fn umount_detach(&self, target: &Path) -> nix::Result<()> {
        self.record(format!("umount {} detach", target.display()))
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        self.record(format!("pivot_root {} {}", new_root.display(), put_old.display()))
    }
    fn chroot(&self, path: &Path) -> nix::Result<()> {
        self.record(format!("chroot {}", path.display()))
    }
    fn chdir(&self, path: &Path) -> nix::Result<()> {
        self.record(format!("chdir {}", path.display()))
    }
    fn sethostname(&self, name: &str) -> nix::Result<()> {
        self.record(format!("sethostname {name}"))
    }
    fn setgroups(&self, groups: &[u32]) -> nix::Result<()> {
        self.record(format!("setgroups {groups:?}"))
    }
    fn setgid(&self, gid: u32) -> nix::Result<()> {
        self.record(format!("setgid {gid}"))
    }
    fn setuid(&self, uid: u32) -> nix::Result<()> {
        self.record(format!("setuid {uid}"))
    }
    fn is_root(&self) -> bool {
        self.root
    }
}
