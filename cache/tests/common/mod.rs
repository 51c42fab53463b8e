//! Shared harness for the registry integration tests: a real `docker-registry`
//! (CNCF distribution) per test, and hand-made images.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_cache::{ContentStore, Reference};
use kiln_oci::{media, Descriptor, Digest};
use oci_spec::image::{DescriptorBuilder, MediaType};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running registry; killed on drop (also when a test panics).
pub struct TestRegistry {
    child: Child,
    pub host: String,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// `htpasswd`: a bcrypt htpasswd file's content, to require Basic auth.
    pub fn start_with(htpasswd: Option<&str>) -> Self {
        Self::start_inner(htpasswd, None)
    }

    /// A registry with this `auth:` section (YAML, indented under `auth:`), which makes
    /// `GET /v2/` answer 401. `port` is fixed by the caller when the section needs it.
    pub fn start_with_auth_config(auth_yaml: &str) -> Self {
        Self::start_inner(None, Some(auth_yaml))
    }

    fn start_inner(htpasswd: Option<&str>, auth_yaml: Option<&str>) -> Self {
        Self::start_full("127.0.0.1", None, htpasswd, auth_yaml)
    }

    /// A TLS registry on `bind_ip` (not loopback, so clients use HTTPS) with this
    /// certificate and key (PEM files).
    pub fn start_tls(bind_ip: &str, cert: &Path, key: &Path) -> Self {
        Self::start_full(bind_ip, Some((cert, key)), None, None)
    }

    /// A TLS registry that requires a client certificate signed by `client_ca`
    /// (distribution's `http.tls.clientcas`).
    pub fn start_mtls(bind_ip: &str, cert: &Path, key: &Path, client_ca: &Path) -> Self {
        let yaml = format!("    clientcas:\n      - {}\n", client_ca.display());
        Self::start_full_with(bind_ip, Some((cert, key)), &yaml, None, None)
    }

    fn start_full(bind_ip: &str, tls: Option<(&Path, &Path)>, htpasswd: Option<&str>, auth_yaml: Option<&str>) -> Self {
        Self::start_full_with(bind_ip, tls, "", htpasswd, auth_yaml)
    }

    fn start_full_with(bind_ip: &str, tls: Option<(&Path, &Path)>, tls_extra: &str, htpasswd: Option<&str>, auth_yaml: Option<&str>) -> Self {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: the registry integration tests need it; run scripts/setup.sh"
        );
        let dir = tempfile::tempdir().unwrap();
        // Find a free port (tiny race with other processes; the wait below would fail
        // loudly rather than talk to a stranger, as a foreign server will not answer /v2/ 200).
        let port = TcpListener::bind(format!("{bind_ip}:0")).unwrap().local_addr().unwrap().port();
        let host = format!("{bind_ip}:{port}");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            storage.display()
        );
        if let Some(h) = htpasswd {
            let p = dir.path().join("htpasswd");
            std::fs::write(&p, h).unwrap();
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n", p.display()));
        }
        if let Some((cert, key)) = tls {
            config.push_str(&format!("  tls:\n    certificate: {}\n    key: {}\n{tls_extra}", cert.display(), key.display()));
        }
        if let Some(a) = auth_yaml {
            config.push_str(&format!("auth:\n{a}"));
        }
        // Plain HTTP to a TLS port gets Go's 400 "HTTP request to an HTTPS server".
        let want_status = if tls.is_some() {
            "400"
        } else if htpasswd.is_some() || auth_yaml.is_some() {
            "401"
        } else {
            "200"
        };
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let mut reg = TestRegistry { child, host, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if reg.v2_status() == want_status {
                break;
            }
            if let Ok(Some(status)) = reg.child.try_wait() {
                let log = std::fs::read_to_string(reg._dir.path().join("registry.log")).unwrap_or_default();
                panic!("docker-registry exited ({status}) before answering: {log}");
            }
            assert!(Instant::now() < deadline, "docker-registry on {} did not answer GET /v2/", reg.host);
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// The HTTP status of `GET /v2/`, or "" if nothing answers.
    fn v2_status(&self) -> String {
        let Ok(mut s) = TcpStream::connect(&self.host) else { return String::new() };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if write!(s, "GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.host).is_err() {
            return String::new();
        }
        let mut buf = [0u8; 32];
        let n = s.read(&mut buf).unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        head.split(' ').nth(1).unwrap_or("").to_string()
    }

    pub fn reference(&self, repo_and_tag: &str) -> Reference {
        format!("{}/{}", self.host, repo_and_tag).parse().unwrap()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pseudo-random bytes (xorshift seeded from time and a salt): layers differ per run,
/// so nothing is accidentally found in a cache.
pub fn random_bytes(len: usize, salt: u64) -> Vec<u8> {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `os/arch[/variant]` exactly as written (not normalised): what a registry may serve.
pub fn spec_platform(s: &str) -> oci_spec::image::Platform {
    let mut it = s.split('/');
    let mut b = oci_spec::image::PlatformBuilder::default()
        .os(oci_spec::image::Os::from(it.next().unwrap()))
        .architecture(oci_spec::image::Arch::from(it.next().unwrap()));
    if let Some(v) = it.next() {
        b = b.variant(v.to_string());
    }
    b.build().unwrap()
}

pub fn desc(mt: &str, d: &Digest, size: usize, platform: Option<&str>) -> Descriptor {
    let mut b = DescriptorBuilder::default()
        .media_type(MediaType::from(mt))
        .digest(oci_spec::image::Digest::try_from(d.to_string()).unwrap())
        .size(size as u64);
    if let Some(p) = platform {
        b = b.platform(spec_platform(p));
    }
    b.build().unwrap()
}

/// A hand-made single-layer image in `store`.
pub struct TestImage {
    pub manifest: Vec<u8>,
    pub manifest_type: &'static str,
    pub digest: Digest,
    pub blobs: Vec<Descriptor>,
    pub layer: Digest,
    pub config: Digest,
}

pub fn make_image(store: &ContentStore, platform: &str, layer_len: usize, docker: bool) -> TestImage {
    let (m_type, c_type, l_type) = if docker {
        (media::DOCKER_MANIFEST, media::DOCKER_CONFIG, media::DOCKER_LAYER_GZIP)
    } else {
        (media::OCI_MANIFEST, media::OCI_CONFIG, media::OCI_LAYER_GZIP)
    };
    let layer = random_bytes(layer_len, layer_len as u64 ^ platform.len() as u64);
    let layer_d = store.put(&layer).unwrap();
    let p = spec_platform(platform);
    let mut cfg = serde_json::json!({
        "architecture": p.architecture().to_string(),
        "os": p.os().to_string(),
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(b"uncompressed").to_string()]},
        "config": {"Env": ["PATH=/bin"]},
    });
    if let Some(v) = p.variant() {
        cfg["variant"] = v.clone().into();
    }
    let cfg = serde_json::to_vec(&cfg).unwrap();
    let cfg_d = store.put(&cfg).unwrap();
    let blobs = vec![desc(c_type, &cfg_d, cfg.len(), None), desc(l_type, &layer_d, layer.len(), None)];
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": m_type,
        "config": blobs[0],
        "layers": [blobs[1]],
    }))
    .unwrap();
    let digest = store.put(&manifest).unwrap();
    TestImage { manifest, manifest_type: m_type, digest, blobs, layer: layer_d, config: cfg_d }
}

pub fn sorted(mut v: Vec<Digest>) -> Vec<Digest> {
    v.sort();
    v
}

