//! End-to-end: `kiln executor`'s registry flags against real registries (issue 14):
//! mutual TLS (`--registry-client-cert`) with a registry that requires client
//! certificates, Kaniko's TLS switches per purpose against a self-signed registry,
//! `--push-ignore-immutable-tag-errors` (the fault proxy answering as ECR does) and
//! `--skip-default-registry-fallback`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_integration::faultproxy::{Fault, FaultProxy, Rule};
use kiln_integration::{Image, Registry, RunOutput, Sandbox};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(kiln_integration::require_program("openssl")).args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// In `d`: ca.pem, the registry's leaf.pem/leaf.key for 127.0.0.1 and a client's
/// client.pem/client.key signed by that CA, and a self-signed self.pem/self.key.
fn pki(d: &Path) {
    std::fs::create_dir_all(d).unwrap();
    openssl(d, &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=kiln-e2e-ca"]);
    for (name, usage) in [("leaf", "serverAuth"), ("client", "clientAuth")] {
        let (key, csr, pem, ext) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.cnf"));
        openssl(d, &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &format!("/CN=kiln-e2e-{name}")]);
        std::fs::write(d.join(&ext), format!("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n")).unwrap();
        openssl(d, &["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", &pem, "-days", "2", "-extfile", &ext]);
    }
    openssl(d, &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "self.key", "-out", "self.pem", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"]);
}

/// A docker-registry speaking TLS on 127.0.0.1 with `cert`/`key`; with `client_ca`
/// it requires a client certificate signed by it (`http.tls.clientcas`).
struct TlsRegistry {
    child: Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl TlsRegistry {
    fn start(cert: &Path, key: &Path, client_ca: Option<&Path>) -> TlsRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n  tls:\n    certificate: {}\n    key: {}\n",
            dir.path().join("storage").display(),
            cert.display(),
            key.display()
        );
        if let Some(ca) = client_ca {
            config.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting /usr/bin/docker-registry (scripts/setup.sh installs it)");
        // Plain HTTP to its TLS port gets Go's 400: it is up.
        let deadline = Instant::now() + Duration::from_secs(15);
        while kiln_integration::http::get(&host, "/v2/", &[]).map(|r| r.status).ok() != Some(400) {
            assert!(Instant::now() < deadline, "the TLS registry on {host} did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsRegistry { child, host, _dir: dir }
    }
}

impl Drop for TlsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kiln executor` in `sb` on `ctx` with `args`, registry operations tried once.
fn executor(sb: &Sandbox, ctx: &Path, args: &[String]) -> RunOutput {
    sb.kiln().arg("executor").arg(format!("--context={}", ctx.display())).arg("--push-retry=0").arg("--image-download-retry=0").args(args).run()
}

fn pki_in(sb: &Sandbox) -> PathBuf {
    let d = sb.path().join("pki");
    pki(&d);
    sb.user.chown_tree(&d);
    d
}

#[test]
fn mutual_tls_push_and_pull() {
    let sb = Sandbox::new();
    let pki = pki_in(&sb);
    let reg = TlsRegistry::start(&pki.join("leaf.pem"), &pki.join("leaf.key"), Some(&pki.join("ca.pem")));
    let host = &reg.host;
    let ca = format!("--registry-certificate={host}={}", pki.join("ca.pem").display());
    let client = format!("--registry-client-cert={host}={},{}", pki.join("client.pem").display(), pki.join("client.key").display());
    let ctx = sb.new_context("base").file("Dockerfile", "FROM scratch\nCOPY base.txt /base.txt\n").file("base.txt", "from the mTLS registry\n").build();
    let dest = format!("--destination={host}/mtls/base:1");

    // Without a client certificate the registry refuses the handshake.
    let out = executor(&sb, &ctx, &[ca.clone(), dest.clone()]);
    out.assert_failure_containing(&format!("{host}/mtls/base")).assert_stderr_contains("--registry-client-cert");
    // With Kaniko's flags: pushed.
    executor(&sb, &ctx, &[ca.clone(), client.clone(), dest]).assert_success();

    // Pulled as a base (a fresh store: nothing local), the result pushed to a
    // plain registry where it is checked.
    let plain = Registry::start();
    let sb2 = Sandbox::new();
    let app = sb2
        .new_context("app")
        .file("Dockerfile", &format!("FROM {host}/mtls/base:1\nCOPY top.txt /top.txt\n"))
        .file("top.txt", "on top\n")
        .build();
    let to_plain = format!("--destination={}", plain.reference("mtls/app:1"));
    let out = executor(&sb2, &app, &[ca.clone(), to_plain.clone()]);
    out.assert_failure_containing(&format!("{host}/mtls/base")).assert_stderr_contains("--registry-client-cert");
    executor(&sb2, &app, &[ca.clone(), client.clone(), to_plain]).assert_success();
    let img = Image::pull_from(&plain, "mtls/app:1");
    assert_eq!(img.tree.node("/base.txt").text(), "from the mTLS registry\n");
    assert_eq!(img.tree.node("/top.txt").text(), "on top\n");

    // `kiln build` takes the same flag (the CA for every registry, as its own flag).
    sb.kiln()
        .args(["build", "--push-retry=0", "--push", "-t", &format!("{host}/mtls/native:1")])
        .arg(format!("--registry-certificate={}", pki.join("ca.pem").display()))
        .arg(&client)
        .arg(&ctx)
        .run()
        .assert_success();
    // A key file that is not one is named with the flag.
    let bad = format!("--registry-client-cert={host}={},{}", pki.join("client.pem").display(), pki.join("client.pem").display());
    executor(&sb, &ctx, &[ca, bad, format!("--destination={host}/mtls/x:1")])
        .assert_failure_containing("--registry-client-cert")
        .assert_stderr_contains("client.pem: no PEM private key");
}

#[test]
fn tls_verification_skipped_per_purpose() {
    let sb = Sandbox::new();
    let pki = pki_in(&sb);
    let reg = TlsRegistry::start(&pki.join("self.pem"), &pki.join("self.key"), None);
    let host = &reg.host;
    let ctx = sb.new_context("base").file("Dockerfile", "FROM scratch\nCOPY base.txt /base.txt\n").file("base.txt", "self-signed\n").build();
    let dest = format!("--destination={host}/self/base:1");
    let flag = |f: &str| f.to_string();

    // Push: refused without --skip-tls-verify; --skip-tls-verify-pull leaves the
    // push verified, refused by the self-signed certificate.
    executor(&sb, &ctx, &[dest.clone()]).assert_failure_containing(&format!("{host}/self/base"));
    let out = executor(&sb, &ctx, &[flag("--skip-tls-verify-pull"), dest.clone()]);
    out.assert_failure_containing(&format!("{host}/self/base")).assert_stderr_contains("certificate");
    executor(&sb, &ctx, &[flag("--skip-tls-verify"), dest.clone()]).assert_success();

    // Pull of it as a base (fresh store), the result pushed to a plain registry.
    let plain = Registry::start();
    let sb2 = Sandbox::new();
    let app = sb2.new_context("app").file("Dockerfile", &format!("FROM {host}/self/base:1\nCOPY top.txt /top.txt\n")).file("top.txt", "top\n").build();
    let to_plain = format!("--destination={}", plain.reference("self/app:1"));
    executor(&sb2, &app, &[to_plain.clone()]).assert_failure_containing(&format!("{host}/self/base"));
    // --insecure-pull allows plain HTTP, not unverified TLS: refused by the certificate.
    let out = executor(&sb2, &app, &[flag("--insecure-pull"), to_plain.clone()]);
    out.assert_failure_containing(&format!("{host}/self/base")).assert_stderr_contains("certificate");
    // Verification for another registry only: still refused.
    executor(&sb2, &app, &[flag("--skip-tls-verify-registry=127.0.0.1:1"), to_plain.clone()]).assert_failure_containing(&format!("{host}/self/base"));
    executor(&sb2, &app, &[flag("--skip-tls-verify-pull"), to_plain.clone()]).assert_success();
    let img = Image::pull_from(&plain, "self/app:1");
    assert_eq!(img.tree.node("/base.txt").text(), "self-signed\n");
    // --skip-tls-verify-registry names it for both purposes.
    let both = format!("--skip-tls-verify-registry={host}");
    executor(&sb2, &app, &[both, format!("--destination={host}/self/app:2")]).assert_success();
}

#[test]
fn immutable_tag_errors_can_be_ignored() {
    let registry = Registry::start();
    let proxy = FaultProxy::start(&registry.host());
    let sb = Sandbox::new();
    let ctx = sb.new_context("app").file("Dockerfile", "FROM scratch\nCOPY f /f\n").file("f", "immutable\n").build();
    let dest = format!("--destination={}/locked/app:1", proxy.host());
    // ECR's answer to a manifest PUT on an existing immutable tag.
    let ecr = r#"{"errors":[{"code":"TAG_INVALID","message":"The image tag '1' already exists in the 'locked/app' repository and cannot be overwritten because the repository is immutable."}]}"#;
    let refuse = || Rule::new("PUT", "/v2/locked/app/manifests/", Fault::Respond(400, ecr.to_string()), 1);
    proxy.add_rule(refuse());
    executor(&sb, &ctx, &[dest.clone()])
        .assert_failure_containing(&format!("{}/locked/app", proxy.host()))
        .assert_stderr_contains("cannot be overwritten because the repository is immutable");
    proxy.add_rule(refuse());
    let digest = sb.out_path("digest");
    let out = executor(&sb, &ctx, &[dest, "--push-ignore-immutable-tag-errors".into(), format!("--digest-file={}", digest.display())]);
    out.assert_success().assert_stderr_contains("--push-ignore-immutable-tag-errors");
    assert_eq!(proxy.injected(), 2, "{:?}", proxy.log());
    // As Kaniko: the digest of the image built is written all the same.
    assert!(std::fs::read_to_string(&digest).unwrap().starts_with("sha256:"), "{out}");
}

#[test]
fn skip_default_registry_fallback() {
    let mirror = Registry::start();
    let sb = Sandbox::new();
    let ctx = sb.new_context("hub").file("Dockerfile", "FROM kiln-absent/thing:1\n").build();
    let m = format!("--registry-mirror={}", mirror.host());
    let out = executor(&sb, &ctx, &["--no-push".into(), m.clone(), "--skip-default-registry-fallback".into()]);
    out.assert_failure_containing("docker.io/kiln-absent/thing:1")
        .assert_stderr_contains(&mirror.host())
        .assert_stderr_contains("--skip-default-registry-fallback");
    // Without it the mirror's failure is followed by docker.io (unreachable here,
    // or without that image): the error is docker.io's.
    let out = executor(&sb, &ctx, &["--no-push".into(), m]);
    out.assert_failure_containing("docker.io/kiln-absent/thing");
    assert!(!out.stderr.contains("--skip-default-registry-fallback keeps"), "{out}");
    out.assert_stderr_contains(&format!("mirror {}/kiln-absent/thing failed", mirror.host()));
}
