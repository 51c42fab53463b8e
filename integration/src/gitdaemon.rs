//! Git repositories served by `git daemon` on loopback (`git://127.0.0.1:PORT/NAME.git`),
//! for ADD of git URLs and git build contexts. Killed on drop.

use std::path::{Path, PathBuf};

pub struct GitDaemon {
    child: std::process::Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `git ARGS` in `dir` with a fixed identity; panics on failure.
pub fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git is installed by scripts/setup.sh");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl GitDaemon {
    /// A daemon serving the bare repositories later made with [`GitDaemon::repo`].
    pub fn start() -> GitDaemon {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("git")
            .args(["daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", dir.path().display()))
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("git daemon");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        GitDaemon { child, port, dir }
    }

    /// `git://127.0.0.1:PORT/NAME.git`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}.git", self.port)
    }

    /// A work tree for a new repository `name`; publish it with [`GitDaemon::publish`].
    pub fn work_tree(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let work = self.dir.path().join("work").join(name);
        for (p, content) in files {
            let f = work.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, content).unwrap();
        }
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", "one"]);
        work
    }

    /// Makes (or refreshes) the served bare repository `name` from its work tree.
    pub fn publish(&self, name: &str) {
        let bare = self.dir.path().join(format!("{name}.git"));
        let work = self.dir.path().join("work").join(name);
        if bare.exists() {
            std::fs::remove_dir_all(&bare).unwrap();
        }
        git(self.dir.path(), &["clone", "-q", "--bare", &work.display().to_string(), &bare.display().to_string()]);
    }
}
