//! Credential sources against a registry requiring Basic auth (htpasswd): docker
//! `credHelpers` and `credsStore` (a fake `docker-credential-fake` helper script),
//! `$REGISTRY_AUTH_FILE`, `${XDG_RUNTIME_DIR}/containers/auth.json`; and the password
//! appears in no error and no log line (tracing captured at TRACE level).
//! Its own test binary with a single test: it changes process-wide environment.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};

use common::*;
use kiln_cache::{parse_platform, ContentStore, Registry, RegistryOptions};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn push_ok(reg: &TestRegistry, store: &ContentStore, img: &TestImage, what: &str) {
    let repo: String = what.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_lowercase();
    let r = reg.reference(&format!("private/{repo}:v1"));
    let client = Registry::new(RegistryOptions::default());
    client
        .push_image(&r, store, &img.manifest, img.manifest_type, &img.blobs, &[])
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let t = tempfile::tempdir().unwrap();
    let dst = ContentStore::open(t.path()).unwrap();
    client
        .pull_image(&r, &parse_platform("linux/amd64").unwrap(), &dst)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

const PASSWORD: &str = "pw-Zq81-not-in-logs";

fn clear_env() {
    for k in ["DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR"] {
        std::env::remove_var(k);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_sources() {
    let capture = Capture::default();
    let c2 = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || c2.clone())
        .with_ansi(false)
        .init();

    let out = std::process::Command::new("htpasswd")
        .args(["-Bbn", "kiln", PASSWORD])
        .output()
        .expect("htpasswd (apache2-utils) is missing: run scripts/setup.sh");
    let reg = TestRegistry::start_with(Some(&String::from_utf8(out.stdout).unwrap()));
    let t = tempfile::tempdir().unwrap();
    let store = ContentStore::open(&t.path().join("s")).unwrap();
    let img = make_image(&store, "linux/amd64", 1000, false);
    let amd64 = parse_platform("linux/amd64").unwrap();
    let home = t.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::env::set_var("HOME", &home);

    // The fake helper: answers for our registry only, logs what it was asked.
    let bin = t.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let asked = t.path().join("asked");
    let helper = bin.join("docker-credential-fake");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 3\nread server\necho \"$server\" >> {asked}\n\
             if [ \"$server\" = \"{host}\" ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"kiln\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n\
             else\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
            asked = asked.display(),
            host = reg.host
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A broken helper that prints the secret and fails: its output must not leak.
    let bad = bin.join("docker-credential-broken");
    std::fs::write(&bad, format!("#!/bin/sh\necho 'oops {PASSWORD}'\nexit 2\n")).unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    std::env::set_var("PATH", path);

    let write_cfg = |name: &str, content: String| {
        let d = t.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("config.json"), content).unwrap();
        d
    };
    // 1. credHelpers for this host (another host's helper must not be asked).
    clear_env();
    let d = write_cfg(
        "helpers",
        format!(r#"{{"credHelpers":{{"{}":"fake","elsewhere.example":"broken"}}}}"#, reg.host),
    );
    std::env::set_var("DOCKER_CONFIG", &d);
    push_ok(&reg, &store, &img, "credHelpers").await;
    let asked_text = std::fs::read_to_string(&asked).unwrap();
    assert!(asked_text.lines().all(|l| l == reg.host), "{asked_text}");

    // 2. credsStore for every registry.
    clear_env();
    std::env::set_var("DOCKER_CONFIG", write_cfg("store", r#"{"credsStore":"fake","auths":{}}"#.into()));
    push_ok(&reg, &store, &img, "credsStore").await;

    // 3. $REGISTRY_AUTH_FILE (podman's auth.json), docker config empty.
    clear_env();
    std::env::set_var("DOCKER_CONFIG", write_cfg("empty", "{}".into()));
    let auth_file = t.path().join("auth.json");
    std::fs::write(&auth_file, format!(r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#, reg.host, b64(&format!("kiln:{PASSWORD}"))))
        .unwrap();
    std::env::set_var("REGISTRY_AUTH_FILE", &auth_file);
    push_ok(&reg, &store, &img, "REGISTRY_AUTH_FILE").await;

    // 4. ${XDG_RUNTIME_DIR}/containers/auth.json.
    clear_env();
    std::env::set_var("DOCKER_CONFIG", t.path().join("empty"));
    let run = t.path().join("run");
    std::fs::create_dir_all(run.join("containers")).unwrap();
    std::fs::copy(&auth_file, run.join("containers/auth.json")).unwrap();
    std::env::set_var("XDG_RUNTIME_DIR", &run);
    push_ok(&reg, &store, &img, "XDG_RUNTIME_DIR auth.json").await;

    // 5. ~/.docker/config.json (no DOCKER_CONFIG).
    clear_env();
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    std::fs::copy(&auth_file, home.join(".docker/config.json")).unwrap();
    push_ok(&reg, &store, &img, "~/.docker/config.json").await;
    std::fs::remove_file(home.join(".docker/config.json")).unwrap();

    // Failures name registry and repository, never the secret.
    let mut errors = Vec::new();
    clear_env();
    let wrong = format!("{PASSWORD}-wrong");
    std::env::set_var(
        "DOCKER_CONFIG",
        write_cfg("wrong", format!(r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#, reg.host, b64(&format!("kiln:{wrong}")))),
    );
    let r = reg.reference("private/denied:v1");
    let e = Registry::new(RegistryOptions::default())
        .push_image(&r, &store, &img.manifest, img.manifest_type, &img.blobs, &[])
        .await
        .unwrap_err();
    assert!(e.to_string().contains(&format!("{}/private/denied", reg.host)), "{e}");
    errors.push(format!("{e} {e:?}"));
    clear_env();
    std::env::set_var("DOCKER_CONFIG", write_cfg("broken", r#"{"credsStore":"broken"}"#.into()));
    let e = Registry::new(RegistryOptions::default())
        .pull_image(&r, &amd64, &store)
        .await
        .unwrap_err();
    assert!(e.to_string().contains(&format!("{}/private/denied", reg.host)), "{e}");
    errors.push(format!("{e} {e:?}"));

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).to_string();
    assert!(logs.contains("docker-credential-broken"), "the helper failure is logged");
    let basic = b64(&format!("kiln:{PASSWORD}"));
    for text in errors.iter().chain(std::iter::once(&logs)) {
        assert!(!text.contains(PASSWORD), "secret leaked: {text}");
        assert!(!text.contains(&basic), "secret leaked: {text}");
        assert!(!text.contains(&b64(&format!("kiln:{wrong}"))), "secret leaked: {text}");
    }
    eprintln!("{} bytes of trace logs checked", logs.len());
}
