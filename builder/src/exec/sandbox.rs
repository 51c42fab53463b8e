//! The RUN sandbox.
//!
//! A RUN step executes in a fresh process started from `/proc/self/exe __sandbox SPEC`
//! so that the namespace dance happens in a single-threaded process (the solver runs
//! on a multi-threaded runtime, where fork+unshare is unsound). That process is
//! already root of the build's user namespace; it unshares mount, pid, uts and ipc
//! namespaces (and network for `--network=none`), forks the future pid 1, builds
//! /proc, a minimal /dev, /sys and the host's /etc/hosts and /etc/resolv.conf inside
//! the step's rootfs, pivots into it, drops to the step's user and execs the command.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use serde::{Deserialize, Serialize};

use crate::exec::stdio::StepPipes;
use crate::exec::sys::{Linux, Sys};

/// Everything the sandbox needs, passed as a JSON file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    pub rootfs: PathBuf,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// `--add-host` lines for /etc/hosts.
    #[serde(default)]
    pub extra_hosts: Vec<(String, String)>,
    pub hostname: String,
    pub network_none: bool,
    /// `RUN --mount`s, secrets, heredoc scripts: mounted after /dev, parents first.
    #[serde(default)]
    pub mounts: Vec<crate::exec::sandbox::SandboxMount>,
    /// Kaniko's habitat (uid 0, no CAP_SYS_ADMIN): no namespaces, no mounts; a
    /// plain chroot with device nodes made by mknod and host files copied in.
    #[serde(default)]
    pub chroot: bool,
    /// `--shm-size`: bytes of the step's /dev/shm (default 64 MiB, as Docker).
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// `--ulimit`: (resource, soft, hard), set before the step's program starts.
    #[serde(default)]
    pub ulimits: Vec<crate::options::Ulimit>,
}

/// Files and directories the sandbox mounts over inside the rootfs. The solver makes
/// sure they exist before the step runs and keeps whatever it had to create out of
/// the layer.
pub const MOUNT_TARGETS: &[(&str, bool)] = &[
    ("proc", true),
    ("dev", true),
    ("sys", true),
    ("etc/hosts", false),
    ("etc/resolv.conf", false),
    ("etc/hostname", false),
];

/// Stubs the chroot isolation fills itself (no bind mounts there): device nodes
/// (major, minor) and files copied from the host. Removed before the diff like all
/// stubs.
pub const CHROOT_DEVICES: &[(&str, u64, u64)] =
    &[("dev/null", 1, 3), ("dev/zero", 1, 5), ("dev/full", 1, 7), ("dev/random", 1, 8), ("dev/urandom", 1, 9), ("dev/tty", 5, 0)];

/// Run `spec` in the sandbox, streaming its output to ours; returns the exit code
/// (128+signal for a killed process).
pub fn run(spec: &RunSpec, spec_path: &Path, step: usize) -> Result<i32> {
    // 0600: the spec holds the step's environment (build args, a secret's env=).
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(spec_path).context("writing the sandbox spec")?;
        std::io::Write::write_all(&mut f, &serde_json::to_vec(spec)?).context("writing the sandbox spec")?;
    }
    // /etc/hostname is bound from a generated file (as Docker does), never written
    // into the rootfs.
    let hostname_file = hostname_path(spec_path);
    std::fs::write(&hostname_file, format!("{}\n", spec.hostname)).context("writing the step's /etc/hostname")?;
    let hosts_file = hosts_path(spec_path);
    std::fs::write(&hosts_file, hosts_text(&spec.hostname, &spec.extra_hosts)).context("writing the step's /etc/hosts")?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg("__sandbox").arg(spec_path).stdin(Stdio::null());
    let me = std::process::id();
    // SAFETY: die_with_parent is async-signal-safe. The thread that spawns waits for
    // the child, so the death signal cannot fire while this kiln lives.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || super::die_with_parent(Some(me)));
    }
    let mode = crate::progress::get().mode();
    let status = if mode == crate::progress::Mode::Quiet {
        // Shown only when the step fails: quiet builds keep stderr for errors.
        let out = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output().context("starting the RUN sandbox")?;
        if !out.status.success() {
            let mut e = std::io::stderr().lock();
            let _ = std::io::Write::write_all(&mut e, &out.stdout);
            let _ = std::io::Write::write_all(&mut e, &out.stderr);
        }
        out.status
    } else if crate::progress::get().captures_run_output() {
        // Tools reading JSON get the step's output as log events, line by line.
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("starting the RUN sandbox")?;
        let forward = |r: Box<dyn std::io::Read + Send>, stream: &'static str| std::thread::spawn(move || forward_lines(r, step, stream));
        let out = forward(Box::new(child.stdout.take().expect("piped")), "stdout");
        let err = forward(Box::new(child.stderr.take().expect("piped")), "stderr");
        let status = child.wait().context("waiting for the RUN sandbox")?;
        let _ = out.join();
        let _ = err.join();
        if !status.success() {
            crate::progress::get().run_failed(step);
        }
        status
    } else {
        // A step's stdout goes to kiln's stderr, with the rest of the progress:
        // kiln's stdout is for what the user asked to be printed (`-q`'s image ID,
        // `-o -`'s tar).
        cmd.stdout(Stdio::from(std::io::stderr())).status().context("starting the RUN sandbox")?
    };
    let _ = std::fs::remove_file(spec_path);
    let _ = std::fs::remove_file(&hostname_file);
    let _ = std::fs::remove_file(&hosts_file);
    use std::os::unix::process::ExitStatusExt;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Longest piece of a step's output line held in memory: a longer line (a step
/// printing 512 MiB without a newline) is passed on in pieces of this size.
pub const MAX_LOG_LINE: usize = 64 * 1024;

/// Relays a step's output to the progress log line by line, whatever its bytes:
/// invalid UTF-8 never stops the relay (the step would block on a full pipe or get
/// EPIPE), and memory stays bounded by [`MAX_LOG_LINE`].
fn forward_lines(r: impl std::io::Read, step: usize, stream: &str) {
    use std::io::BufRead;
    let mut r = std::io::BufReader::with_capacity(MAX_LOG_LINE, r);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        match std::io::Read::take(&mut r, MAX_LOG_LINE as u64).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let complete = line.last() == Some(&b'\n');
        if complete {
            line.pop();
        }
        crate::progress::get().log_bytes(step, stream, &line, !complete);
    }
}

/// The generated /etc/hostname that goes with a spec file.
fn hostname_path(spec_path: &Path) -> PathBuf {
    spec_path.with_extension("hostname")
}

/// The generated /etc/hosts that goes with a spec file.
fn hosts_path(spec_path: &Path) -> PathBuf {
    spec_path.with_extension("hosts")
}

/// A step's /etc/hosts, as BuildKit writes it (executor/oci/hosts.go): loopback
/// names with the sandbox hostname, then `--add-host` lines.
pub fn hosts_text(hostname: &str, extra: &[(String, String)]) -> String {
    let mut s = format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (host, ip) in extra {
        s += &format!("{ip}\t{host}\n");
    }
    s
}

/// Entry point of `kiln __sandbox SPEC`. Returns the process exit code.
pub fn main(spec_path: &Path) -> i32 {
    match sandbox(spec_path) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln sandbox: {e:#}");
            125
        }
    }
}

fn sandbox(spec_path: &Path) -> Result<i32> {
    let spec: RunSpec = serde_json::from_slice(&std::fs::read(spec_path).context("reading the sandbox spec")?)
        .context("parsing the sandbox spec")?;
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if spec.network_none {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if spec.chroot {
        return chroot_sandbox(&spec, &hostname_path(spec_path));
    }
    Linux.unshare(flags).context("unsharing the step's namespaces")?;
    if spec.network_none {
        // A new network namespace starts with `lo` down; runc (and so BuildKit's
        // `--network=none`) brings it up, so a step can still serve on 127.0.0.1.
        loopback_up().context("bringing up lo in the step's network namespace")?;
    }
    let pipes = StepPipes::new(spec.uid, spec.gid)?;
    // SAFETY: this process is single-threaded (freshly exec'd, no runtime started).
    match unsafe { fork() }.context("forking the step's init")? {
        ForkResult::Parent { child } => wait_relaying(child, pipes),
        ForkResult::Child => {
            let r = pipes.attach().and_then(|()| {
                setup_rootfs(&Linux, &spec, spec_path)?;
                drop_to_user(&Linux, &spec)?;
                exec_command(&spec)
            });
            exit_child(r)
        }
    }
}

enum Never {}

/// The program of a RUN step is not there: the step exits 127, as a shell's would.
#[derive(Debug, thiserror::Error)]
#[error("{0}: executable file not found in $PATH")]
struct CommandNotFound(String);

/// The end of the step's process when it could not exec: the reason on stderr,
/// 127 for a missing program, else 125 (runc's code for its own failures).
fn exit_child(r: Result<Never>) -> ! {
    let err = match r {
        Ok(never) => match never {},
        Err(e) => e,
    };
    eprintln!("kiln sandbox: {err:#}");
    std::process::exit(if err.downcast_ref::<CommandNotFound>().is_some() { 127 } else { 125 });
}

/// `ip link set lo up` in the current network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain datagram socket, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data; the name is NUL-terminated within IFNAMSIZ.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    let r = (|| {
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write req.ifr_ifru.ifru_flags.
        if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
        if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    r
}

/// Relay the step's output while it runs; its exit code (128+signal if killed).
fn wait_relaying(child: nix::unistd::Pid, pipes: StepPipes) -> Result<i32> {
    fn code(st: WaitStatus) -> Option<i32> {
        match st {
            WaitStatus::Exited(_, code) => Some(code),
            WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
            _ => None,
        }
    }
    let mut done = None;
    pipes.relay(|| {
        if done.is_none() {
            if let Ok(st) = waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                done = code(st);
            }
        }
        done.is_some()
    });
    if let Some(c) = done {
        return Ok(c);
    }
    loop {
        match waitpid(child, None) {
            Ok(st) => {
                if let Some(c) = code(st) {
                    return Ok(c);
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("waiting for the step"),
        }
    }
}

/// Everything between the step's new namespaces and its exec: the rootfs with
/// /proc, /dev, /sys, the hosts files and the RUN mounts, pivoted into, and the
/// working directory.
fn setup_rootfs(sys: &dyn Sys, spec: &RunSpec, spec_path: &Path) -> Result<()> {
    let hostname_file = &hostname_path(spec_path);
    let root = &spec.rootfs;
    sys.mount(None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .context("making mounts private")?;
    sys.mount(Some(root), root, None, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .context("bind-mounting the rootfs")?;
    sys.mount(Some(Path::new("proc")), &root.join("proc"), Some("proc"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None)
    .context("mounting /proc")?;
    setup_dev(sys, &root.join("dev"), spec.shm_size.unwrap_or(64 << 20))?;
    // /sys: a read-only view of the host's; without it some tools misbehave. A new
    // sysfs can only be mounted with our own network namespace.
    if spec.network_none {
        let _ = sys.mount(Some(Path::new("sysfs")), &root.join("sys"), Some("sysfs"), MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None);
    } else if sys.mount(Some(Path::new("/sys")), &root.join("sys"), None, MsFlags::MS_BIND | MsFlags::MS_REC, None).is_ok() {
        let _ = sys.mount(None, &root.join("sys"), None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None);
    }
    for (f, host) in [("etc/hosts", hosts_path(spec_path)), ("etc/resolv.conf", PathBuf::from("/etc/resolv.conf"))] {
        let target = root.join(f);
        if host.exists() && target.exists() {
            sys.mount(Some(&host), &target, None, MsFlags::MS_BIND, None)
                .with_context(|| format!("binding /{f}"))?;
        }
    }
    let target = root.join("etc/hostname");
    if hostname_file.exists() && target.exists() {
        sys.mount(Some(hostname_file), &target, None, MsFlags::MS_BIND, None).context("binding /etc/hostname")?;
    }
    // Parents before children, so nested targets land inside their parent's mount.
    let mut mounts: Vec<&crate::exec::sandbox::SandboxMount> = spec.mounts.iter().collect();
    mounts.sort_by_key(|m| Path::new(&m.target).components().count());
    for m in mounts {
        apply_mount(sys, root, m)?;
    }
    let _ = sys.sethostname(&spec.hostname);

    sys.chdir(root).context("entering the rootfs")?;
    sys.pivot_root(Path::new("."), Path::new(".")).context("pivot_root into the rootfs")?;
    sys.umount_detach(Path::new(".")).context("detaching the old root")?;
    sys.chdir(Path::new("/")).context("chdir /")?;
    sys.chdir(Path::new(&spec.cwd)).with_context(|| format!("chdir to working directory {}", spec.cwd))?;

    Ok(())
}

/// Docker's default capability set (moby's oci/caps/defaults.go, BuildKit's too):
/// CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE
/// NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP, i.e. `CapBnd: 00000000a80425fb`.
pub const DEFAULT_CAPS: u64 = 0xa804_25fb;

/// Keep only Docker's default capabilities: the bounding set for everyone, and
/// permitted/effective/inheritable for root (a setuid to another user clears them).
/// Best effort where we lack CAP_SETPCAP (chroot isolation in a restricted pod).
fn drop_bounding_caps() {
    for cap in 0..64u64 {
        if DEFAULT_CAPS & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments; EINVAL past the last capability.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        }
    }
}

fn set_default_caps() -> Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut hdr = Header { version: VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: capget fills two Data records for version 3.
    if unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut Header, data.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("reading the step's capabilities");
    }
    let keep = [DEFAULT_CAPS as u32, (DEFAULT_CAPS >> 32) as u32];
    for (d, k) in data.iter_mut().zip(keep) {
        d.effective &= k;
        d.permitted &= k;
        d.inheritable &= k;
    }
    // SAFETY: as above; capset only lowers what we hold.
    if unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("lowering the step's capabilities");
    }
    Ok(())
}

fn drop_to_user(sys: &dyn Sys, spec: &RunSpec) -> Result<()> {
    drop_bounding_caps();
    set_identity(sys, spec, || std::fs::read_to_string("/proc/self/gid_map").ok())?;
    if spec.uid == 0 {
        set_default_caps()?;
    }
    Ok(())
}

/// Whether `gid` has a mapping in a user namespace's `gid_map` ("inside outside count" lines).
fn gid_mapped(gid_map: &str, gid: u32) -> bool {
    gid_map.lines().any(|l| {
        let f: Vec<u64> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        f.len() == 3 && (f[0]..f[0] + f[2]).contains(&u64::from(gid))
    })
}

/// Groups, then gid, then uid (after setuid the others can no longer change).
/// `gid_map`: this user namespace's map, read only when setgroups is refused.
fn set_identity(sys: &dyn Sys, spec: &RunSpec, gid_map: impl FnOnce() -> Option<String>) -> Result<()> {
    let groups = &spec.groups;
    if let Err(e) = sys.setgroups(groups) {
        // A single-id map denies setgroups. A group with no mapping here owns no file
        // in this namespace (layers' chowns to it failed, see the snapshotter's
        // chown_failed), so membership in it grants nothing: root's `wheel` in a
        // busybox image must not stop every RUN. Only a mapped extra group is a loss.
        let map = gid_map();
        let lost: Vec<u32> =
            groups.iter().copied().filter(|g| *g != spec.gid && map.as_deref().is_none_or(|m| gid_mapped(m, *g))).collect();
        if !lost.is_empty() {
            return Err(e).context(format!("setting supplementary groups {lost:?}"));
        }
    }
    sys.setgid(spec.gid).with_context(|| format!("setgid {}", spec.gid))?;
    sys.setuid(spec.uid).with_context(|| format!("setuid {}", spec.uid))?;
    Ok(())
}

/// Every signal back to its default action and none blocked: what a shell expects
/// of a new process. kiln's Rust runtime ignores SIGPIPE, and an ignored signal
/// stays ignored across exec (`yes | head` would never end).
fn reset_signals() -> Result<()> {
    use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
    /// The kernel's `struct sigaction` (x86_64 and arm64 alike): glibc's wrapper
    /// refuses signals 32 and 33, which it keeps for itself, so the call is made raw.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction { handler: 0, flags: 0, restorer: 0, mask: 0 };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installs SIG_DFL through the kernel's own struct; no handler of ours
        // runs afterwards. A signal the kernel refuses stays as it is.
        unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, &dfl as *const KernelSigaction, std::ptr::null_mut::<KernelSigaction>(), 8usize) };
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).context("unblocking signals")?;
    Ok(())
}

/// An environment entry exec cannot carry (a NUL byte), named.
fn check_env(env: &[String]) -> Result<()> {
    for kv in env {
        let (k, _) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        if kv.contains('\0') {
            anyhow::bail!("the step's environment variable {:?} holds a NUL byte (from the image's Env, an ENV or a build arg); a process environment cannot carry one", k.replace('\0', "\\0"));
        }
    }
    Ok(())
}

fn exec_command(spec: &RunSpec) -> Result<Never> {
    check_env(&spec.env)?;
    // execvp looks the program up in *our* PATH, so the step's environment must be
    // ours first.
    for (k, _) in std::env::vars_os() {
        std::env::remove_var(k);
    }
    for kv in &spec.env {
        if let Some((k, v)) = kv.split_once('=') {
            if !k.is_empty() {
                std::env::set_var(k, v);
            }
        }
    }
    if std::env::var_os("PATH").is_none() {
        std::env::set_var("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    }
    let argv: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .context("argument contains a NUL byte")?;
    let prog = argv.first().context("empty command")?;
    // The step gets fds 0-2 only (as under runc): nothing kiln or its caller left
    // open (a jobserver pipe, a log file) may reach it.
    for u in &spec.ulimits {
        nix::sys::resource::setrlimit(u.resource(), u.soft, u.hard).with_context(|| format!("--ulimit {}={}:{}", u.name, u.soft, u.hard))?;
    }
    reset_signals()?;
    // After the user change (which clears it): the step's init dies with its
    // sandbox, and with it every process of the step's PID namespace. Inside that
    // namespace getppid() is 0, so the parent cannot be checked here.
    super::die_with_parent(None).context("setting the step's parent-death signal")?;
    // SAFETY: marks descriptors close-on-exec; none is used after exec.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    match nix::unistd::execvp(prog, &argv) {
        Err(nix::errno::Errno::ENOENT) => Err(CommandNotFound(spec.argv[0].clone()).into()),
        Err(nix::errno::Errno::E2BIG) => {
            let bytes: usize = spec.env.iter().chain(&spec.argv).map(|s| s.len() + 1).sum();
            let biggest = spec.env.iter().max_by_key(|kv| kv.len()).map(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k)).unwrap_or("");
            Err(anyhow::anyhow!(
                "exec {}: the command line and environment ({bytes} bytes, {} variables; the largest is {biggest:?}) exceed the kernel's limit (E2BIG)",
                spec.argv[0],
                spec.env.len()
            ))
        }
        Err(e) => Err(e).with_context(|| format!("exec {}", spec.argv[0])),
        Ok(never) => match never {},
    }
}

/// A minimal /dev: a tmpfs with the host's harmless devices bound in (device nodes
/// cannot be created in a user namespace, bind mounts of them can).
fn setup_dev(sys: &dyn Sys, dev: &Path, shm_bytes: u64) -> Result<()> {
    sys.mount(Some(Path::new("tmpfs")), dev, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("mode=755,size=65536k"))
        .context("mounting a tmpfs on /dev")?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(name);
        std::fs::File::create(&target).with_context(|| format!("creating /dev/{name}"))?;
        let host = Path::new("/dev").join(name);
        sys.mount(Some(&host), &target, None, MsFlags::MS_BIND, None)
            .with_context(|| format!("binding /dev/{name}"))?;
    }
    for d in ["pts", "shm"] {
        std::fs::create_dir(dev.join(d)).with_context(|| format!("creating /dev/{d}"))?;
    }
    let shm = format!("mode=1777,size={}k", shm_bytes.div_ceil(1024));
    let _ = sys.mount(Some(Path::new("shm")), &dev.join("shm"), Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(&shm));
    let _ = sys.mount(Some(Path::new("devpts")), &dev.join("pts"), Some("devpts"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("newinstance,ptmxmode=0666,mode=620"));
    for (link, target) in [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")] {
        let _ = std::os::unix::fs::symlink(target, dev.join(link));
    }
    Ok(())
}

/// One `RUN --mount` inside the rootfs. The target exists (the solver stubbed it, or
/// it is on /dev's tmpfs) and is resolved inside the root.
fn apply_mount(sys: &dyn Sys, root: &Path, m: &SandboxMount) -> Result<()> {
    let target = crate::fsutil::resolve_in_root(root, Path::new(&m.target), true)?;
    // A target below another mount of this step (`/foo/bar/baz` inside a cache on
    // `/foo/bar`) has its stub hidden by that mount: make the mount point inside it,
    // as runc does; so is anything under the fresh /dev.
    if !target.exists() {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let is_dir = matches!(&m.kind, SandboxMountKind::Tmpfs { .. })
            || matches!(&m.kind, SandboxMountKind::Bind { source, .. } if source.is_dir());
        if is_dir {
            std::fs::create_dir(&target)?;
        } else {
            std::fs::File::create(&target)?;
        }
    }
    match &m.kind {
        SandboxMountKind::Bind { source, readonly } => {
            sys.mount(Some(source), &target, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
                .with_context(|| format!("mounting {} on {}", source.display(), m.target))?;
            if *readonly {
                sys.mount(None, &target, None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None)
                    .with_context(|| format!("making {} read-only", m.target))?;
            }
        }
        SandboxMountKind::Tmpfs { size } => {
            let opts = size.as_ref().map(|s| format!("size={s}"));
            sys.mount(Some(Path::new("tmpfs")), &target, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, opts.as_deref())
                .with_context(|| format!("mounting a tmpfs on {}", m.target))?;
        }
    }
    Ok(())
}

/// `--isolation chroot`: what a uid-0 process without CAP_SYS_ADMIN can do (the
/// default capabilities of a container). No /proc, /sys or private namespaces; the
/// host's network and hostname.
fn chroot_sandbox(spec: &RunSpec, hostname_file: &Path) -> Result<i32> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let root = &spec.rootfs;
    for (rel, major, minor) in CHROOT_DEVICES {
        let target = root.join(rel);
        // Only over the stub the solver made (an empty file), never over image content.
        if std::fs::symlink_metadata(&target).map(|m| m.is_file() && m.len() == 0).unwrap_or(false) {
            // Replacing the stub moves /dev's mtime; put it back, so the solver
            // still sees the time it left there and restores /dev (else every
            // RUN layer would carry /dev).
            let dev = target.parent().map(Path::to_path_buf).unwrap_or_default();
            let before = std::fs::symlink_metadata(&dev)?;
            std::fs::remove_file(&target)?;
            mknod(&target, SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), makedev(*major, *minor))
                .with_context(|| format!("mknod /{rel} (needs CAP_MKNOD)"))?;
            let t = |s: i64, ns: i64| nix::sys::time::TimeSpec::new(s, ns);
            use std::os::unix::fs::MetadataExt;
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &dev,
                &t(before.atime(), before.atime_nsec()),
                &t(before.mtime(), before.mtime_nsec()),
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .with_context(|| format!("restoring the time of {}", dev.display()))?;
        }
    }
    let mut filled = Vec::new();
    let hosts_file = hostname_file.with_extension("hosts");
    for (rel, host) in [("etc/hosts", hosts_file.as_path()), ("etc/resolv.conf", Path::new("/etc/resolv.conf")), ("etc/hostname", hostname_file)] {
        let target = root.join(rel);
        if std::fs::symlink_metadata(&target).map(|m| m.is_file() && m.len() == 0).unwrap_or(false) {
            if let Ok(bytes) = std::fs::read(host) {
                std::fs::write(&target, bytes)?;
                filled.push(target);
            }
        }
    }
    let pipes = StepPipes::new(spec.uid, spec.gid)?;
    // SAFETY: single-threaded process (freshly exec'd).
    match unsafe { fork() }.context("forking the step")? {
        ForkResult::Parent { child } => {
            let code = wait_relaying(child, pipes)?;
            // The copied-in files were stubs: empty them again so they are recognised
            // and removed before the diff.
            for f in &filled {
                let _ = std::fs::write(f, b"");
            }
            Ok(code)
        }
        ForkResult::Child => {
            exit_child(pipes.attach().and_then(|()| chroot_exec(&Linux, spec)))
        }
    }
}

fn chroot_exec(sys: &dyn Sys, spec: &RunSpec) -> Result<Never> {
    sys.chroot(&spec.rootfs).context("chroot into the rootfs (needs CAP_SYS_CHROOT)")?;
    sys.chdir(Path::new("/")).context("chdir /")?;
    sys.chdir(Path::new(&spec.cwd)).with_context(|| format!("chdir to working directory {}", spec.cwd))?;
    drop_to_user(sys, spec)?;
    exec_command(spec)
}

/// A mount the sandbox performs inside the rootfs before pivoting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxMount {
    /// Absolute path in the container.
    pub target: String,
    pub kind: SandboxMountKind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SandboxMountKind {
    Bind { source: PathBuf, readonly: bool },
    Tmpfs { size: Option<String> },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::sys::Recorder;

    fn spec(root: &Path) -> RunSpec {
        RunSpec {
            rootfs: root.to_path_buf(),
            argv: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec![],
            cwd: "/work".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![1000, 10],
            extra_hosts: vec![],
            hostname: "buildkitsandbox".into(),
            network_none: false,
            mounts: vec![
                // Listed child first: the parent must still be mounted first.
                SandboxMount { target: "/cache/sub".into(), kind: SandboxMountKind::Bind { source: root.join("src"), readonly: true } },
                SandboxMount { target: "/cache".into(), kind: SandboxMountKind::Tmpfs { size: Some("10m".into()) } },
            ],
            chroot: false,
            shm_size: None,
            ulimits: vec![],
        }
    }

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for dir in ["proc", "dev", "sys", "etc", "src", "work"] {
            std::fs::create_dir(d.path().join(dir)).unwrap();
        }
        for f in ["etc/hosts", "etc/resolv.conf", "etc/hostname", "spec.hostname", "spec.hosts"] {
            std::fs::write(d.path().join(f), "").unwrap();
        }
        d
    }

    #[test]
    fn rootfs_setup_makes_these_calls_in_this_order() {
        let d = rootfs();
        let r = d.path().display().to_string();
        let sys = Recorder::new();
        setup_rootfs(&sys, &spec(d.path()), &d.path().join("spec.json")).unwrap();
        let calls: Vec<String> = sys.calls().iter().map(|c| c.replace(&r, "R")).collect();
        let want = [
            "mount - / - MsFlags(MS_REC | MS_PRIVATE) -",
            "mount R R - MsFlags(MS_BIND | MS_REC) -",
            "mount proc R/proc proc MsFlags(MS_NOSUID | MS_NODEV | MS_NOEXEC) -",
            "mount tmpfs R/dev tmpfs MsFlags(MS_NOSUID | MS_NOEXEC) mode=755,size=65536k",
            "mount /dev/null R/dev/null - MsFlags(MS_BIND) -",
            "mount /dev/zero R/dev/zero - MsFlags(MS_BIND) -",
            "mount /dev/full R/dev/full - MsFlags(MS_BIND) -",
            "mount /dev/random R/dev/random - MsFlags(MS_BIND) -",
            "mount /dev/urandom R/dev/urandom - MsFlags(MS_BIND) -",
            "mount /dev/tty R/dev/tty - MsFlags(MS_BIND) -",
            "mount shm R/dev/shm tmpfs MsFlags(MS_NOSUID | MS_NODEV) mode=1777,size=65536k",
            "mount devpts R/dev/pts devpts MsFlags(MS_NOSUID | MS_NOEXEC) newinstance,ptmxmode=0666,mode=620",
            // The host's /sys, read-only (a new sysfs needs its own network namespace).
            "mount /sys R/sys - MsFlags(MS_BIND | MS_REC) -",
            "mount - R/sys - MsFlags(MS_RDONLY | MS_REMOUNT | MS_BIND) -",
            "mount R/spec.hosts R/etc/hosts - MsFlags(MS_BIND) -",
            "mount /etc/resolv.conf R/etc/resolv.conf - MsFlags(MS_BIND) -",
            "mount R/spec.hostname R/etc/hostname - MsFlags(MS_BIND) -",
            "mount tmpfs R/cache tmpfs MsFlags(MS_NOSUID | MS_NODEV) size=10m",
            "mount R/src R/cache/sub - MsFlags(MS_BIND | MS_REC) -",
            "mount - R/cache/sub - MsFlags(MS_RDONLY | MS_REMOUNT | MS_BIND) -",
            "sethostname buildkitsandbox",
            "chdir R",
            "pivot_root . .",
            "umount . detach",
            "chdir /",
            "chdir /work",
        ];
        assert_eq!(calls, want);
    }

    #[test]
    fn network_none_mounts_a_fresh_sysfs() {
        let d = rootfs();
        let sys = Recorder::new();
        let mut s = spec(d.path());
        s.network_none = true;
        setup_rootfs(&sys, &s, &d.path().join("spec.json")).unwrap();
        let sysfs: Vec<String> = sys.calls().into_iter().filter(|c| c.contains("/sys ")).collect();
        assert_eq!(sysfs.len(), 1, "{sysfs:?}");
        assert!(sysfs[0].starts_with("mount sysfs ") && sysfs[0].contains("MS_RDONLY"), "{sysfs:?}");
    }

    #[test]
    fn a_failing_mount_stops_the_setup_and_says_which() {
        let d = rootfs();
        let mut sys = Recorder::new();
        sys.fail.push(("mount proc".into(), nix::errno::Errno::EPERM));
        let err = setup_rootfs(&sys, &spec(d.path()), &d.path().join("spec.json")).unwrap_err();
        assert!(format!("{err:#}").contains("mounting /proc"), "{err:#}");
        assert!(sys.calls().last().unwrap().starts_with("mount proc"), "nothing after the failure");
    }

    #[test]
    fn identity_is_groups_then_gid_then_uid() {
        let d = rootfs();
        let sys = Recorder::new();
        set_identity(&sys, &spec(d.path()), || unreachable!("read only when setgroups fails")).unwrap();
        assert_eq!(sys.calls(), ["setgroups [1000, 10]", "setgid 1000", "setuid 1000"]);
        // A single-id map refuses setgroups: fine when no extra group is needed...
        let mut sys = Recorder::new();
        sys.fail.push(("setgroups".into(), nix::errno::Errno::EPERM));
        let mut s = spec(d.path());
        s.groups = vec![1000];
        let single = || Some("      1000       1001          1\n".to_string());
        set_identity(&sys, &s, single).unwrap();
        assert_eq!(sys.calls(), ["setgroups [1000]", "setgid 1000", "setuid 1000"]);
        // ...or when the extra ones have no mapping (nothing here can belong to them)...
        set_identity(&sys, &spec(d.path()), single).unwrap();
        // ...an error when the step needs a group that exists here, or the map is unreadable.
        let wide = || Some("0 1001 1\n1 100000 65536\n".to_string());
        let err = set_identity(&sys, &spec(d.path()), wide).unwrap_err();
        assert!(format!("{err:#}").contains("supplementary groups [10]"), "{err:#}");
        assert!(set_identity(&sys, &spec(d.path()), || None).is_err());
    }

    #[test]
    fn a_missing_program_is_exit_127_by_type() {
        let e: anyhow::Error = CommandNotFound("nope".into()).into();
        let e = e.context("while starting the step");
        assert!(e.downcast_ref::<CommandNotFound>().is_some());
        assert_eq!(format!("{}", e.root_cause()), "nope: executable file not found in $PATH");
    }
}
