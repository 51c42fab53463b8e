//! The unprivileged build user, per-test sandboxes and the `kiln` command.

use crate::process::{default_timeout, run_with_timeout, RunOutput};
use crate::registry::Registry;
use crate::{missing_prerequisite, paths, require_program};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Who builds: `kilntest` (or `$KILN_TEST_USER`) when the tests run as root,
/// else the current user. Either way it needs a subuid and a subgid range.
#[derive(Clone, Debug)]
pub struct BuildUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// true when commands must drop privileges (tests run as root)
    pub drop_privileges: bool,
}

fn passwd_entry(pred: impl Fn(&[&str]) -> bool) -> Option<(String, u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 7 && pred(&f) {
            Some((f[0].to_string(), f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

fn has_sub_range(file: &str, name: &str, id: u32) -> bool {
    let Ok(s) = fs::read_to_string(file) else { return false };
    s.lines().any(|l| {
        let f: Vec<&str> = l.split(':').collect();
        f.len() == 3
            && (f[0] == name || f[0] == id.to_string())
            && f[2].trim().parse::<u64>().map(|n| n >= 65536).unwrap_or(false)
    })
}

impl BuildUser {
    /// Look the user up and check every rootless prerequisite (memoized).
    #[track_caller]
    pub fn get() -> BuildUser {
        static USER: OnceLock<Result<BuildUser, String>> = OnceLock::new();
        match USER.get_or_init(Self::probe) {
            Ok(u) => u.clone(),
            Err(e) => missing_prerequisite(e),
        }
    }

    fn probe() -> Result<BuildUser, String> {
        let euid = unsafe { libc::geteuid() };
        let user = if euid == 0 {
            let name = std::env::var("KILN_TEST_USER").unwrap_or_else(|_| "kilntest".to_string());
            let (name, uid, gid) = passwd_entry(|f| f[0] == name)
                .ok_or_else(|| format!("the unprivileged test user `{name}` does not exist"))?;
            if uid == 0 {
                return Err(format!("test user `{name}` must not be uid 0"));
            }
            BuildUser { name, uid, gid, drop_privileges: true }
        } else {
            let gid = unsafe { libc::getegid() };
            let name = passwd_entry(|f| f[2] == euid.to_string())
                .map(|e| e.0)
                .unwrap_or_else(|| euid.to_string());
            BuildUser { name, uid: euid, gid, drop_privileges: false }
        };
        for f in ["/etc/subuid", "/etc/subgid"] {
            if !has_sub_range(f, &user.name, user.uid) {
                return Err(format!("no 65536-wide range for `{}` in {f}", user.name));
            }
        }
        for p in ["/usr/bin/newuidmap", "/usr/bin/newgidmap"] {
            if !Path::new(p).is_file() {
                return Err(format!("{p} (Debian package uidmap)"));
            }
        }
        if user.drop_privileges && paths::which("setpriv").is_none() {
            return Err("setpriv (util-linux)".to_string());
        }
        Ok(user)
    }

    /// A command that runs `program` as this user (via setpriv when root).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        if self.drop_privileges {
            let mut c = Command::new(paths::which("setpriv").expect("setpriv"));
            c.arg(format!("--reuid={}", self.uid))
                .arg(format!("--regid={}", self.gid))
                .arg("--init-groups")
                .arg("--")
                .arg(program);
            c.env("USER", &self.name).env("LOGNAME", &self.name);
            c
        } else {
            Command::new(program)
        }
    }

    /// chown -R (no-op unless dropping privileges).
    pub fn chown_tree(&self, root: &Path) {
        if !self.drop_privileges {
            return;
        }
        fn walk(p: &Path, uid: u32, gid: u32) {
            let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
            let r = unsafe { libc::lchown(c.as_ptr(), uid, gid) };
            assert_eq!(r, 0, "lchown {}: {}", p.display(), std::io::Error::last_os_error());
            let md = fs::symlink_metadata(p).unwrap();
            if md.is_dir() {
                for e in fs::read_dir(p).unwrap() {
                    walk(&e.unwrap().path(), uid, gid);
                }
            }
        }
        walk(root, self.uid, self.gid);
    }
}

/// A per-test directory owned by the build user, with `home/`, `kiln-root/`
/// (KILN_ROOT), `run/` (XDG_RUNTIME_DIR) and build contexts. Removed on drop
/// unless `KILN_TEST_KEEP` is set.
pub struct Sandbox {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    pub user: BuildUser,
}

impl Sandbox {
    #[track_caller]
    pub fn new() -> Sandbox {
        let user = BuildUser::get();
        let base = std::env::var_os("KILN_TEST_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("kiln-it-")
            .tempdir_in(&base)
            .unwrap_or_else(|e| panic!("temp dir in {}: {e}", base.display()));
        let path = dir.path().to_path_buf();
        for d in ["home", "kiln-root", "run", "ctx"] {
            fs::create_dir(path.join(d)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path.join("run"), fs::Permissions::from_mode(0o700)).unwrap();
        user.chown_tree(&path);
        Sandbox { dir: Some(dir), path, user }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn home(&self) -> PathBuf {
        self.path.join("home")
    }
    pub fn kiln_root(&self) -> PathBuf {
        self.path.join("kiln-root")
    }

    /// A path in the sandbox that does not exist yet (for `--output dest=`).
    pub fn out_path(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        assert!(!p.exists(), "{} already exists", p.display());
        p
    }

    /// Copy `testdata/cases/CASE` into the sandbox, with `127.0.0.1:5000` in
    /// every Dockerfile (`Dockerfile*`, `*.Dockerfile`) rewritten to the test registry's address.
    #[track_caller]
    pub fn context(&self, case: &str, registry: &Registry) -> PathBuf {
        self.context_with_host(case, &registry.host())
    }

    #[track_caller]
    pub fn context_with_host(&self, case: &str, registry_host: &str) -> PathBuf {
        let src = paths::case_dir(case);
        let mut n = 0;
        let dst = loop {
            let d = self.path.join("ctx").join(if n == 0 { case.to_string() } else { format!("{case}-{n}") });
            if !d.exists() {
                break d;
            }
            n += 1;
        };
        copy_tree(&src, &dst);
        for e in fs::read_dir(&dst).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            // `Dockerfile`, `Dockerfile.x` and `x.Dockerfile` (a `-f` target) all name the
            // base by the default registry address; their `.dockerignore` files do not.
            let is_dockerfile = name.to_ascii_lowercase().contains("dockerfile") && !name.ends_with(".dockerignore");
            if is_dockerfile && p.is_file() {
                let s = fs::read_to_string(&p).unwrap();
                fs::write(&p, s.replace("127.0.0.1:5000", registry_host)).unwrap();
            }
        }
        self.user.chown_tree(&dst);
        dst
    }

    /// Start a context from scratch: `sandbox.new_context("x").file("Dockerfile", "...").build()`.
    pub fn new_context(&self, name: &str) -> ContextBuilder<'_> {
        ContextBuilder { sandbox: self, dir: self.path.join("ctx").join(name), files: Vec::new() }
    }

    /// `program` as the build user, with HOME, XDG_RUNTIME_DIR in the sandbox
    /// and the sandbox as working directory.
    pub fn user_command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = self.user.command(program);
        c.env("HOME", self.home())
            .env("XDG_RUNTIME_DIR", self.path.join("run"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("DOCKER_CONFIG")
            .env_remove("REGISTRY_AUTH_FILE")
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .current_dir(&self.path);
        c
    }

    /// A `kiln` invocation as the build user, with KILN_ROOT in the sandbox.
    #[track_caller]
    pub fn kiln(&self) -> KilnCmd<'_> {
        let bin = kiln_bin_for(&self.user);
        let mut cmd = self.user_command(&bin);
        cmd.env("KILN_ROOT", self.kiln_root())
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1");
        if let Ok(v) = std::env::var("KILN_TEST_RUST_LOG") {
            cmd.env("RUST_LOG", v);
        }
        KilnCmd { _sandbox: self, cmd, timeout: default_timeout(), stdin: None }
    }

    /// `buildah --root … --runroot … --storage-driver vfs` as the build user,
    /// with storage in the sandbox.
    #[track_caller]
    pub fn buildah(&self) -> Command {
        require_program("buildah");
        let root = self.path.join("buildah");
        if !root.exists() {
            fs::create_dir_all(root.join("root")).unwrap();
            fs::create_dir_all(root.join("runroot")).unwrap();
            self.user.chown_tree(&root);
        }
        let mut c = self.user_command("/usr/bin/buildah");
        c.arg("--root")
            .arg(root.join("root"))
            .arg("--runroot")
            .arg(root.join("runroot"))
            .arg("--storage-driver")
            .arg("vfs");
        c
    }

    /// Keep the directory after the test (also: `KILN_TEST_KEEP=1`).
    pub fn keep(&mut self) -> PathBuf {
        if let Some(d) = self.dir.take() {
            let _ = d.keep();
        }
        self.path.clone()
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::env::var_os("KILN_TEST_KEEP").is_some() || std::thread::panicking() && std::env::var_os("KILN_TEST_KEEP_FAILED").is_some() {
            self.keep();
            eprintln!("kept sandbox {}", self.path.display());
        }
    }
}

/// The kiln binary, after checking that the build user can execute it.
#[track_caller]
fn kiln_bin_for(user: &BuildUser) -> PathBuf {
    static CHECKED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let bin = paths::kiln_bin();
    let r = CHECKED.get_or_init(|| {
        if !user.drop_privileges {
            return Ok(bin.clone());
        }
        let out = run_with_timeout(
            user.command("/usr/bin/test").arg("-x").arg(&bin),
            Duration::from_secs(30),
        );
        if out.status.success() {
            Ok(bin.clone())
        } else {
            Err(format!(
                "user `{}` cannot execute {} (a directory on the way is not o+x)",
                user.name,
                bin.display()
            ))
        }
    });
    match r {
        Ok(p) => p.clone(),
        Err(e) => missing_prerequisite(e),
    }
}

/// Files for a context made in the test; `build()` writes them and chowns.
pub struct ContextBuilder<'a> {
    sandbox: &'a Sandbox,
    dir: PathBuf,
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl ContextBuilder<'_> {
    pub fn file(mut self, path: &str, contents: impl AsRef<[u8]>) -> Self {
        self.files.push((PathBuf::from(path), contents.as_ref().to_vec()));
        self
    }
    pub fn build(self) -> PathBuf {
        fs::create_dir_all(&self.dir).unwrap();
        for (p, c) in &self.files {
            let full = self.dir.join(p);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(&full, c).unwrap();
        }
        self.sandbox.user.chown_tree(&self.dir);
        self.dir
    }
}

fn copy_tree(src: &Path, dst: &Path) {
    let md = fs::symlink_metadata(src).unwrap();
    if md.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src).unwrap(), dst).unwrap();
    } else if md.is_dir() {
        fs::create_dir_all(dst).unwrap();
        fs::set_permissions(dst, md.permissions()).unwrap();
        let mut entries: Vec<_> = fs::read_dir(src).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for e in entries {
            copy_tree(&e, &dst.join(e.file_name().unwrap()));
        }
    } else {
        fs::copy(src, dst).unwrap();
    }
}

/// A `kiln` command being built; `run()` executes it.
pub struct KilnCmd<'a> {
    _sandbox: &'a Sandbox,
    cmd: Command,
    timeout: Duration,
    stdin: Option<PathBuf>,
}

impl KilnCmd<'_> {
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }
    pub fn env(mut self, k: &str, v: impl AsRef<OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    /// Feed this file to kiln's standard input (`kiln build -`, `-f -`, `kiln load`).
    pub fn stdin_file(mut self, path: &Path) -> Self {
        self.stdin = Some(path.to_path_buf());
        self
    }

    /// `kiln build [-t TAG]… [--push] CONTEXT` helpers.
    pub fn build(self) -> Self {
        self.arg("build")
    }
    pub fn tag(self, reference: &str) -> Self {
        self.arg("-t").arg(reference)
    }
    pub fn push(self) -> Self {
        self.arg("--push")
    }
    pub fn output_oci(self, dest: &Path) -> Self {
        let mut o = OsString::from("type=oci,dest=");
        o.push(dest);
        self.arg("--output").arg(o)
    }
    pub fn build_arg(self, k: &str, v: &str) -> Self {
        self.arg("--build-arg").arg(format!("{k}={v}"))
    }

    /// The command itself, for a caller that sets its own stdio (a log file).
    pub fn into_command(self) -> Command {
        self.cmd
    }

    /// Start kiln in its own process group, stderr piped, without waiting.
    pub fn spawn(mut self) -> Spawned {
        use std::os::unix::process::CommandExt;
        self.cmd.process_group(0).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
        let child = self.cmd.spawn().expect("spawning kiln");
        Spawned { child }
    }

    /// Run it and return its output (no assertion made).
    pub fn run(mut self) -> RunOutput {
        let out = match &self.stdin {
            Some(p) => {
                let f = fs::File::open(p).unwrap_or_else(|e| panic!("stdin file {}: {e}", p.display()));
                crate::process::run_with_stdin(&mut self.cmd, self.timeout, std::process::Stdio::from(f))
            }
            None => run_with_timeout(&mut self.cmd, self.timeout),
        };
        if std::env::var_os("KILN_TEST_VERBOSE").is_some() {
            eprintln!("{out}");
        }
        out
    }
}

/// A kiln process started with [`KilnCmd::spawn`].
pub struct Spawned {
    child: std::process::Child,
}

impl Spawned {
    /// Read stderr until a line contains `needle`, then SIGKILL the whole process
    /// group (kiln, its namespaced child, RUN sandboxes). Returns whether it was seen
    /// before the process ended or `timeout` passed.
    pub fn kill_when_stderr_contains(self, needle: &str, timeout: Duration) -> bool {
        self.kill_at(needle, timeout, true)
    }

    /// As [`kill_when_stderr_contains`](Self::kill_when_stderr_contains), but SIGKILL
    /// only the kiln process the user started, as a CI system cancelling a job does:
    /// what it started must end by itself.
    pub fn kill_only_kiln_when_stderr_contains(self, needle: &str, timeout: Duration) -> bool {
        self.kill_at(needle, timeout, false)
    }

    /// SIGKILL only kiln after `delay` unless it ended before (its stderr drained
    /// meanwhile). `None` if it was killed, else how it ended and its stderr.
    pub fn kill_after(mut self, delay: Duration) -> Option<(std::process::ExitStatus, String)> {
        use std::io::Read;
        let mut stderr = self.child.stderr.take().expect("piped stderr");
        let drain = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = stderr.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        });
        let start = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some((status, drain.join().unwrap_or_default()));
            }
            if start.elapsed() >= delay {
                unsafe {
                    libc::kill(self.child.id() as i32, libc::SIGKILL);
                }
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn kill_at(mut self, needle: &str, timeout: Duration, group: bool) -> bool {
        use std::io::BufRead;
        let pgid = self.child.id() as i32;
        let stderr = self.child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let needle = needle.to_string();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains(&needle) {
                    let _ = tx.send(true);
                    return;
                }
            }
            let _ = tx.send(false);
        });
        let seen = rx.recv_timeout(timeout).unwrap_or(false);
        unsafe {
            libc::kill(if group { -pgid } else { pgid }, libc::SIGKILL);
        }
        let _ = self.child.wait();
        seen
    }
}
