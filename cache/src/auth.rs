//! Registry credentials, found the way docker and podman find them.
//!
//! Files, first one that has credentials for the registry wins:
//! 1. `$REGISTRY_AUTH_FILE`, or else `${XDG_RUNTIME_DIR}/containers/auth.json`
//!    (podman/buildah/skopeo);
//! 2. `$DOCKER_CONFIG/config.json`, or else `~/.docker/config.json`.
//!
//! In each file (same format for both): `credHelpers[host]` names a helper for that
//! registry; else `credsStore` a helper for all; else `auths[key]` has `auth`
//! (base64 `user:password`) or `username`/`password`. Keys may be written `host`,
//! `https://host`, `https://host/v1/` or `host/namespace`; they match on the host.
//! Docker Hub is found under `https://index.docker.io/v1/`, `index.docker.io`,
//! `docker.io` and `registry-1.docker.io`. A helper is `docker-credential-NAME get`
//! on `$PATH`, given the server on stdin, answering `{"Username","Secret"}`.
//!
//! An identity token (`auths[key].identitytoken`, or a helper answering with the user
//! name `<token>`) is an OAuth2 refresh token: it comes back as [`Credentials`] with
//! the user name [`IDENTITY_TOKEN_USER`], and the registry client exchanges it for
//! access tokens (`oauth.rs`).
//!
//! Credentials never leave this module except inside `RegistryAuth` (whose `Debug`
//! hides the password) and are never formatted: errors name the file or helper,
//! never what they hold.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use oci_client::secrets::RegistryAuth;

use crate::reference::DOCKER_HUB;

/// The user name that marks the password as an identity (OAuth2 refresh) token, as
/// docker's credential helpers do.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

const HUB_KEYS: &[&str] = &["index.docker.io", "docker.io", "registry-1.docker.io"];
const HUB_SERVER: &str = "https://index.docker.io/v1/";

/// A user name and password (or token used as password). `Debug` does not show the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

/// The credential files to consult, in order.
#[derive(Clone, Debug, Default)]
pub struct AuthFiles {
    pub files: Vec<PathBuf>,
}

impl AuthFiles {
    /// From the environment (module docs).
    pub fn from_env() -> Self {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let mut files = Vec::new();
        if let Some(f) = env("REGISTRY_AUTH_FILE") {
            files.push(f);
        } else if let Some(run) = env("XDG_RUNTIME_DIR") {
            files.push(run.join("containers").join("auth.json"));
        }
        if let Some(d) = env("DOCKER_CONFIG") {
            files.push(d.join("config.json"));
        } else if let Some(h) = env("HOME") {
            files.push(h.join(".docker").join("config.json"));
        }
        AuthFiles { files }
    }

    /// The transport's credentials for `registry` (anonymous without any).
    pub fn registry_auth(&self, registry: &str) -> RegistryAuth {
        match self.lookup(registry) {
            Some(c) => RegistryAuth::Basic(c.username, c.password),
            None => RegistryAuth::Anonymous,
        }
    }

    /// Credentials for `registry` (`host[:port]` as in a reference), if any file has
    /// some. Unreadable files and failing helpers are logged (without what they
    /// hold) and skipped.
    pub fn lookup(&self, registry: &str) -> Option<Credentials> {
        for f in &self.files {
            match lookup_in_file(f, registry) {
                Ok(Some(c)) => {
                    tracing::debug!("using credentials for {registry} from {}", f.display());
                    return Some(c);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("{}: {e}", f.display()),
            }
        }
        None
    }
}

/// The host part of a config key: `https://host/v1/` → `host`.
fn key_host(key: &str) -> &str {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

fn host_matches(key: &str, registry: &str) -> bool {
    let h = key_host(key);
    if registry == DOCKER_HUB {
        HUB_KEYS.contains(&h)
    } else {
        h == registry
    }
}

pub(crate) fn lookup_in_file(path: &Path, registry: &str) -> Result<Option<Credentials>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("not valid JSON (line {}): ignored", e.line()))?;
    let server = if registry == DOCKER_HUB { HUB_SERVER } else { registry };

    if let Some(helpers) = v["credHelpers"].as_object() {
        for (k, name) in helpers {
            if host_matches(k, registry) {
                if let Some(name) = name.as_str() {
                    return run_helper(name, server);
                }
            }
        }
    }
    if let Some(name) = v["credsStore"].as_str().filter(|s| !s.is_empty()) {
        if let Some(c) = run_helper(name, server)? {
            return Ok(Some(c));
        }
    }
    let Some(auths) = v["auths"].as_object() else { return Ok(None) };
    // An exact key first (`host`), then any key on the same host.
    let mut keys: Vec<&String> = auths.keys().filter(|k| host_matches(k, registry)).collect();
    keys.sort_by_key(|k| (k.as_str() != registry, k.len()));
    for k in keys {
        let e = &auths[k];
        // As docker: an identity token wins over `auth` (ACR stores both, with an
        // all-zero user and an empty password in `auth`).
        if let Some(t) = e["identitytoken"].as_str().filter(|t| !t.is_empty()) {
            return Ok(Some(Credentials { username: IDENTITY_TOKEN_USER.to_string(), password: t.to_string() }));
        }
        if let Some(a) = e["auth"].as_str().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(a.trim())
                .map_err(|_| format!("auths[{k:?}].auth is not valid base64"))?;
            let s = String::from_utf8(decoded).map_err(|_| format!("auths[{k:?}].auth is not UTF-8"))?;
            let (u, p) = s.split_once(':').ok_or_else(|| format!("auths[{k:?}].auth is not user:password"))?;
            return Ok(Some(Credentials { username: u.to_string(), password: p.to_string() }));
        }
        if let (Some(u), Some(p)) = (e["username"].as_str(), e["password"].as_str()) {
            return Ok(Some(Credentials { username: u.to_string(), password: p.to_string() }));
        }
    }
    Ok(None)
}

/// How long a credential helper may take. Docker waits forever; in CI a helper that
/// waits for a desktop keyring prompt would hang the job until the CI's own limit.
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `docker-credential-NAME get` with `server` on stdin.
fn run_helper(name: &str, server: &str) -> Result<Option<Credentials>, String> {
    if name.contains('/') || name.is_empty() {
        return Err(format!("invalid credential helper name {name:?}"));
    }
    run_helper_program(&format!("docker-credential-{name}"), server, HELPER_TIMEOUT)
}

fn run_helper_program(prog: &str, server: &str, timeout: std::time::Duration) -> Result<Option<Credentials>, String> {
    let mut child = Command::new(prog)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running credential helper {prog}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    // Waited for on a thread, so that a helper that never answers can be killed.
    // Until that thread reaps it, the helper's pid cannot be reused.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(r) => r.map_err(|e| format!("running credential helper {prog}: {e}"))?,
        Err(_) => {
            // SAFETY: plain kill(2) of our own child, not yet reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = rx.recv_timeout(std::time::Duration::from_secs(5));
            return Err(format!(
                "credential helper {prog} did not answer for {server} within {} s (killed)",
                timeout.as_secs()
            ));
        }
    };
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("credentials not found") {
            return Ok(None);
        }
        // Its output is not shown: a confused helper might print a secret.
        return Err(format!("credential helper {prog} failed for {server} ({})", out.status));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|_| format!("credential helper {prog} answered something that is not JSON"))?;
    let (Some(u), Some(p)) = (v["Username"].as_str(), v["Secret"].as_str()) else {
        return Err(format!("credential helper {prog} answered without Username/Secret"));
    };
    Ok(Some(Credentials { username: u.to_string(), password: p.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_helper_that_never_answers_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("docker-credential-stuck");
        let pidfile = dir.path().join("pid");
        std::fs::write(&prog, format!("#!/bin/sh\necho $$ > {}\nexec sleep 600\n", pidfile.display())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = run_helper_program(prog.to_str().unwrap(), "reg.example", std::time::Duration::from_secs(2))
            .unwrap_err();
        assert!(e.contains("did not answer for reg.example"), "{e}");
        // The helper was killed and reaped, not left running.
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        assert!(!Path::new("/proc").join(pid.trim()).exists(), "helper {} still exists", pid.trim());
    }

    fn files(dir: &Path, content: &str) -> AuthFiles {
        let p = dir.join("config.json");
        std::fs::write(&p, content).unwrap();
        AuthFiles { files: vec![p] }
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn auths_forms() {
        let t = tempfile::tempdir().unwrap();
        let f = files(
            t.path(),
            &format!(
                r#"{{"auths":{{
                "https://index.docker.io/v1/":{{"auth":"{}"}},
                "reg.example:5000":{{"auth":"{}"}},
                "https://other.example":{{"username":"o","password":"op"}},
                "podman.example/ns/repo":{{"auth":"{}"}}
            }}}}"#,
                b64("hub:hubpw"),
                b64("u:p:with:colons"),
                b64("pu:pp")
            ),
        );
        let c = |r| f.lookup(r).map(|c| (c.username, c.password));
        assert_eq!(c("docker.io"), Some(("hub".into(), "hubpw".into())));
        assert_eq!(c("reg.example:5000"), Some(("u".into(), "p:with:colons".into())));
        assert_eq!(c("reg.example"), None);
        assert_eq!(c("other.example"), Some(("o".into(), "op".into())));
        assert_eq!(c("podman.example"), Some(("pu".into(), "pp".into())));
        assert_eq!(c("nowhere.example"), None);
    }

    #[test]
    fn identity_token_wins_over_auth() {
        let t = tempfile::tempdir().unwrap();
        let zero = b64("00000000-0000-0000-0000-000000000000:");
        let f = files(t.path(), &format!(r#"{{"auths":{{"acr.example":{{"auth":"{zero}","identitytoken":"rt-1"}}}}}}"#));
        let c = f.lookup("acr.example").unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), (IDENTITY_TOKEN_USER, "rt-1"));
        assert!(!format!("{c:?}").contains("rt-1"));
    }

    #[test]
    fn first_file_wins_and_bad_files_are_skipped() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a.json");
        let b = t.path().join("b.json");
        let bad = t.path().join("bad.json");
        std::fs::write(&a, format!(r#"{{"auths":{{"r.example":{{"auth":"{}"}}}}}}"#, b64("a:1"))).unwrap();
        std::fs::write(&b, format!(r#"{{"auths":{{"r.example":{{"auth":"{}"}}}}}}"#, b64("b:2"))).unwrap();
        std::fs::write(&bad, "{not json").unwrap();
        let f = AuthFiles { files: vec![t.path().join("missing.json"), bad, a, b] };
        assert_eq!(f.lookup("r.example").unwrap().username, "a");
    }

    #[test]
    fn debug_hides_password() {
        let c = Credentials { username: "me".into(), password: "hunter2".into() };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
