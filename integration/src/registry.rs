//! A real registry per test: `/usr/bin/docker-registry serve CONFIG` on a free
//! 127.0.0.1 port, storage and log in a temp dir, killed on drop.

use crate::{http, missing_prerequisite, paths, process};
use serde_json::Value;
use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

pub struct Registry {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
    /// (user, password) when started with [`Registry::start_with_auth`]
    auth: Option<(String, String)>,
}

impl Registry {
    /// Start a fresh, empty registry. Fails the test if docker-registry is
    /// missing or does not answer `GET /v2/` with 200 within 10 s.
    #[track_caller]
    pub fn start() -> Registry {
        Self::start_inner(None)
    }

    /// A registry that requires HTTP basic auth (htpasswd, bcrypt) for
    /// everything; `GET /v2/` answers 401 without credentials.
    #[track_caller]
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Self::start_inner(Some((user.to_string(), password.to_string())))
    }

    /// `Authorization` header value for the auth registry.
    pub fn basic_auth_header(&self) -> Option<String> {
        self.auth.as_ref().map(|(u, p)| format!("Basic {}", base64(format!("{u}:{p}").as_bytes())))
    }

    /// `--creds USER:PASSWORD` for skopeo, if any.
    pub fn credentials(&self) -> Option<(String, String)> {
        self.auth.clone()
    }

    #[track_caller]
    fn start_inner(auth: Option<(String, String)>) -> Registry {
        if !std::path::Path::new(REGISTRY_BIN).is_file() {
            missing_prerequisite(&format!("{REGISTRY_BIN} (Debian package docker-registry)"));
        }
        let dir = tempfile::Builder::new()
            .prefix("kiln-registry-")
            .tempdir()
            .expect("temp dir for the registry");
        let mut auth_yaml = String::new();
        if let Some((user, password)) = &auth {
            let htpasswd = crate::require_program("htpasswd");
            let out = Command::new(htpasswd).args(["-Bbn", user, password]).output().unwrap();
            assert!(out.status.success(), "htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
            let file = dir.path().join("htpasswd");
            fs::write(&file, &out.stdout).unwrap();
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                file.display()
            );
        }
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let config = dir.path().join("config.yml");
            fs::write(
                &config,
                format!(
                    "version: 0.1\n\
                     log:\n  level: info\n  accesslog:\n    disabled: false\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
                     http:\n  addr: 127.0.0.1:{port}\n{auth_yaml}",
                    dir.path().join("storage").display()
                ),
            )
            .unwrap();
            let log_path = dir.path().join("registry.log");
            let log = fs::File::create(&log_path).unwrap();
            let child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {REGISTRY_BIN}: {e}"));
            let mut child = child;
            let host = format!("127.0.0.1:{port}");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: port taken by someone else? retry
                }
                if let Ok(r) = http::get(&host, "/v2/", &[]) {
                    if r.status == 200 || (auth.is_some() && r.status == 401) {
                        return Registry { port, child, dir, auth };
                    }
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            last_log = fs::read_to_string(&log_path).unwrap_or_default();
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry did not come up on 127.0.0.1 after 5 attempts; last log:\n{last_log}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT/REPO_AND_TAG`
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{}", self.host(), repo_tag)
    }

    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Everything the registry logged so far (access log included).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Length of the log now; pass to [`Registry::log_since`] later.
    pub fn log_mark(&self) -> usize {
        self.log().len()
    }

    pub fn log_since(&self, mark: usize) -> String {
        let l = self.log();
        l.get(mark..).unwrap_or("").to_string()
    }

    /// Access-log lines since `mark` of blob uploads that carried `digest`
    /// (the final `PUT /v2/<name>/blobs/uploads/<id>?digest=...` of a push, or
    /// a monolithic `POST ...?digest=`). Cross-repo mounts (`?mount=`) and
    /// HEAD checks are not uploads.
    pub fn blob_uploads_since(&self, mark: usize, digest: &str) -> Vec<String> {
        let enc = digest.replace(':', "%3A");
        self.log_since(mark)
            .lines()
            .filter(|l| l.contains("/blobs/uploads/"))
            .filter(|l| l.contains("\"PUT ") || l.contains("\"POST ") || l.contains("\"PATCH "))
            .filter(|l| !l.contains("mount="))
            .filter(|l| l.contains(digest) || l.contains(&enc))
            .map(str::to_string)
            .collect()
    }

    /// GET a manifest or index (raw JSON) by tag or digest.
    #[track_caller]
    pub fn manifest(&self, repo: &str, reference: &str) -> Value {
        let r = self.manifest_raw(repo, reference);
        serde_json::from_slice(&r).unwrap_or_else(|e| panic!("manifest {repo}:{reference}: {e}"))
    }

    #[track_caller]
    pub fn manifest_raw(&self, repo: &str, reference: &str) -> Vec<u8> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let auth = self.basic_auth_header().unwrap_or_default();
        let mut headers = vec![("Accept", ACCEPT_MANIFESTS)];
        if !auth.is_empty() {
            headers.push(("Authorization", auth.as_str()));
        }
        let r = http::get(&self.host(), &path, &headers)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(r.status, 200, "GET {path} on {}: {}", self.host(), r.text());
        r.body
    }

    /// GET a blob's bytes (the registry follows no redirect here: it serves them).
    #[track_caller]
    pub fn blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let auth = self.basic_auth_header().unwrap_or_default();
        let headers: Vec<(&str, &str)> = if auth.is_empty() { vec![] } else { vec![("Authorization", auth.as_str())] };
        let r = http::get(&self.host(), &path, &headers).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(r.status, 200, "GET {path} on {}: {}", self.host(), r.text());
        r.body
    }

    /// Does the repository have this blob? (HEAD /v2/REPO/blobs/DIGEST)
    pub fn has_blob(&self, repo: &str, digest: &str) -> bool {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let auth = self.basic_auth_header().unwrap_or_default();
        let headers: Vec<(&str, &str)> =
            if auth.is_empty() { vec![] } else { vec![("Authorization", auth.as_str())] };
        matches!(http::request("HEAD", &self.host(), &path, &headers), Ok(r) if r.status == 200)
    }

    /// The tags of a repository (empty if it does not exist).
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let path = format!("/v2/{repo}/tags/list");
        let auth = self.basic_auth_header().unwrap_or_default();
        let headers: Vec<(&str, &str)> =
            if auth.is_empty() { vec![] } else { vec![("Authorization", auth.as_str())] };
        match http::get(&self.host(), &path, &headers) {
            Ok(r) if r.status == 200 => {
                let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                v["tags"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("KILN_TEST_KEEP").is_some() {
            let p = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
            eprintln!("kept registry dir {}", p.display());
        }
    }
}

/// Standard alphabet, padded: what HTTP Basic auth and config.json `auth` take.
fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// What [`seed_base_images`] pushed.
pub struct BaseImages {
    /// `HOST/base/busybox:latest` (linux/amd64)
    pub latest: String,
    /// `HOST/base/busybox:arm64`
    pub arm64: String,
    /// `HOST/base/busybox:multi` (index of both)
    pub multi: String,
    /// the amd64 manifest JSON
    pub manifest: Value,
    /// its layer digests, bottom first
    pub layer_digests: Vec<String>,
}

/// Push the busybox base images into `registry` with
/// `testdata/scripts/seed-registry.sh` (builds the layouts once, as root).
#[track_caller]
pub fn seed_base_images(registry: &Registry) -> BaseImages {
    crate::require_program("skopeo");
    crate::require_program("python3");
    let script = paths::testdata_dir().join("scripts/seed-registry.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script).arg(registry.host());
    if let Some((u, p)) = registry.credentials() {
        cmd.env("KILN_SEED_CREDS", format!("{u}:{p}"));
    }
    let out = process::run_with_timeout(&mut cmd, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "seeding base images failed (run scripts/setup.sh if a tool or .deb is missing)\n{out}"
    );
    let manifest = registry.manifest("base/busybox", "latest");
    let layer_digests = manifest["layers"]
        .as_array()
        .expect("base manifest has layers")
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    BaseImages {
        latest: registry.reference("base/busybox:latest"),
        arm64: registry.reference("base/busybox:arm64"),
        multi: registry.reference("base/busybox:multi"),
        manifest,
        layer_digests,
    }
}

/// Push the busybox images and `base/debian:bookworm` (mmdebstrap minbase,
/// for `testdata/projects`) with `seed-registry.sh --debian`. The first run
/// on a machine builds the Debian layout (root, network to deb.debian.org,
/// about 2 minutes); later runs reuse it. Returns the Debian reference.
#[track_caller]
pub fn seed_debian_image(registry: &Registry) -> String {
    crate::require_program("skopeo");
    crate::require_program("python3");
    let script = paths::testdata_dir().join("scripts/seed-registry.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script).arg("--debian").arg(registry.host());
    if let Some((u, p)) = registry.credentials() {
        cmd.env("KILN_SEED_CREDS", format!("{u}:{p}"));
    }
    let out = process::run_with_timeout(&mut cmd, Duration::from_secs(900));
    assert!(
        out.status.success(),
        "seeding the Debian base image failed (mmdebstrap missing? run scripts/setup.sh; \
         the first build needs root and deb.debian.org)\n{out}"
    );
    registry.reference("base/debian:bookworm")
}
