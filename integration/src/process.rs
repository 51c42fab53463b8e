//! Running commands with a timeout and asserting on their output.

use std::fmt;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Default time limit of a harness-run command (`KILN_TEST_TIMEOUT` seconds).
pub fn default_timeout() -> Duration {
    let secs = std::env::var("KILN_TEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    Duration::from_secs(secs)
}

/// The result of a command: status, stdout, stderr, and how it was called.
pub struct RunOutput {
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: String,
    /// stdout as written (binary output such as `-o -`'s tar).
    pub stdout_bytes: Vec<u8>,
    pub stderr: String,
    pub elapsed: Duration,
    /// The most memory the command (with the children it waited for) had resident,
    /// in KiB (`wait4`'s `ru_maxrss`).
    pub peak_rss_kib: u64,
}

/// Run `cmd` (stdin null, stdout/stderr captured); kill it after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> RunOutput {
    run_with_stdin(cmd, timeout, Stdio::null())
}

/// [`run_with_timeout`] with `stdin` as the command's standard input.
pub fn run_with_stdin(cmd: &mut Command, timeout: Duration, stdin: Stdio) -> RunOutput {
    let cmdline = format!("{cmd:?}");
    let start = Instant::now();
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmdline}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let pid = child.id() as libc::pid_t;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let status = loop {
        // wait4, not try_wait: the child's own peak RSS comes with its status.
        let mut raw = 0;
        let r = unsafe { libc::wait4(pid, &mut raw, libc::WNOHANG, &mut usage) };
        let waited = match r {
            0 => Ok(None),
            r if r == pid => Ok(Some(std::os::unix::process::ExitStatusExt::from_raw(raw))),
            _ => Err(std::io::Error::last_os_error()),
        };
        match waited {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
                let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
                panic!(
                    "command timed out after {:?}: {cmdline}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
                    timeout
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for {cmdline}: {e}"),
        }
    };
    let stdout_bytes = t_out.join().unwrap_or_default();
    let stdout = String::from_utf8_lossy(&stdout_bytes).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    let peak_rss_kib = u64::try_from(usage.ru_maxrss).unwrap_or(0);
    RunOutput { cmdline, status, stdout, stdout_bytes, stderr, elapsed: start.elapsed(), peak_rss_kib }
}

impl fmt::Display for RunOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command: {}\nstatus: {} (after {:.1?})\n--- stdout\n{}\n--- stderr\n{}\n---",
            self.cmdline, self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

impl RunOutput {
    /// stdout followed by stderr.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "expected success\n{self}");
        self
    }

    #[track_caller]
    pub fn assert_failure(&self) -> &Self {
        assert!(!self.status.success(), "expected a non-zero exit\n{self}");
        assert!(
            self.status.code().is_some(),
            "expected a clean non-zero exit, not death by a signal\n{self}"
        );
        self
    }

    /// Non-zero exit and stderr contains `s`.
    #[track_caller]
    pub fn assert_failure_containing(&self, s: &str) -> &Self {
        self.assert_failure();
        assert!(self.stderr.contains(s), "expected stderr to contain {s:?}\n{self}");
        self
    }

    #[track_caller]
    pub fn assert_stderr_contains(&self, s: &str) -> &Self {
        assert!(self.stderr.contains(s), "expected stderr to contain {s:?}\n{self}");
        self
    }

    #[track_caller]
    pub fn assert_stdout_contains(&self, s: &str) -> &Self {
        assert!(self.stdout.contains(s), "expected stdout to contain {s:?}\n{self}");
        self
    }

    /// stdout or stderr contains `s` (progress may go to either).
    #[track_caller]
    pub fn assert_output_contains(&self, s: &str) -> &Self {
        assert!(self.combined().contains(s), "expected output to contain {s:?}\n{self}");
        self
    }

    /// Some single line of stderr contains every one of `parts`.
    #[track_caller]
    pub fn assert_stderr_line_with(&self, parts: &[&str]) -> &Self {
        let ok = self.stderr.lines().any(|l| parts.iter().all(|p| l.contains(p)));
        assert!(ok, "expected a stderr line containing all of {parts:?}\n{self}");
        self
    }

    /// Lines of stdout+stderr that contain `s`.
    pub fn lines_with(&self, s: &str) -> Vec<String> {
        self.combined().lines().filter(|l| l.contains(s)).map(str::to_string).collect()
    }
}
