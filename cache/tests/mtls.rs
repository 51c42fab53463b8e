//! TLS against real registries: mutual TLS (a registry that requires a client
//! certificate, `--registry-client-cert`), the client identity files' checks, and
//! verification skipped per purpose (Kaniko's `--skip-tls-verify` for pushes,
//! `--skip-tls-verify-pull` for pulls) against a self-signed registry.

mod common;

use std::path::Path;

use common::*;
use kiln_cache::{parse_platform, ClientCert, ContentStore, Hosts, Leniency, Registry, RegistryOptions};

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is missing");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// In `d`: ca.pem/ca.key, the registry's leaf.pem/leaf.key for 127.0.0.1 and a
/// client's client.pem/client.key (an EC key, PKCS#8), both signed by the CA.
fn pki(d: &Path) {
    openssl(d, &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=kiln-test-ca"]);
    for (name, usage, key) in [("leaf", "serverAuth", "rsa:2048"), ("client", "clientAuth", "ec")] {
        let mut args = vec!["req", "-newkey", key, "-nodes", "-keyout"];
        let (k, csr) = (format!("{name}.key"), format!("{name}.csr"));
        args.extend([k.as_str(), "-out", csr.as_str(), "-subj"]);
        let subj = format!("/CN=kiln-test-{name}");
        args.push(&subj);
        if key == "ec" {
            args.extend(["-pkeyopt", "ec_paramgen_curve:prime256v1"]);
        }
        openssl(d, &args);
        let ext = format!("{name}.cnf");
        std::fs::write(d.join(&ext), format!("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n")).unwrap();
        let pem = format!("{name}.pem");
        openssl(d, &["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", &pem, "-days", "2", "-extfile", &ext]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_push_and_pull() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    pki(d);
    let reg = TestRegistry::start_mtls("127.0.0.1", &d.join("leaf.pem"), &d.join("leaf.key"), &d.join("ca.pem"));
    let store = ContentStore::open(&d.join("s")).unwrap();
    let img = make_image(&store, "linux/amd64", 300_000, false);
    let r = reg.reference("mtls/app:v1");
    let ca = vec![d.join("ca.pem")];

    // No client certificate: the handshake is refused, and the error names the
    // registry and the flag that gives one.
    let err = Registry::new(RegistryOptions { ca_certs: ca.clone(), retries: 0, ..Default::default() })
        .push_image(&r, &store, &img.manifest, img.manifest_type, &img.blobs, &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("{}/mtls/app", reg.host)), "{err}");
    assert!(err.contains("--registry-client-cert"), "{err}");

    // A certificate given for another registry is not presented.
    let other = ClientCert::load("registry.example:5000", &d.join("client.pem"), &d.join("client.key")).unwrap();
    let err = Registry::new(RegistryOptions { ca_certs: ca.clone(), client_certs: vec![other], retries: 0, ..Default::default() })
        .push_image(&r, &store, &img.manifest, img.manifest_type, &img.blobs, &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--registry-client-cert"), "{err}");

    // A certificate the registry does not trust: refused through the relay, named.
    openssl(d, &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "rogue.key", "-out", "rogue.pem", "-days", "2", "-subj", "/CN=rogue", "-addext", "extendedKeyUsage=clientAuth"]);
    let rogue = ClientCert::load(&reg.host, &d.join("rogue.pem"), &d.join("rogue.key")).unwrap();
    let err = Registry::new(RegistryOptions { ca_certs: ca.clone(), client_certs: vec![rogue], retries: 0, ..Default::default() })
        .push_image(&r, &store, &img.manifest, img.manifest_type, &img.blobs, &[])
        .await
        .unwrap_err()
        .to_string();
    eprintln!("{err}");
    assert!(err.contains(&format!("{}/mtls/app", reg.host)) && err.contains("--registry-client-cert"), "{err}");

    // With it: push (upload, monolithic PUT through the upload location, manifest)
    // and pull over mutual TLS.
    let cert = ClientCert::load(&reg.host, &d.join("client.pem"), &d.join("client.key")).unwrap();
    let client = Registry::new(RegistryOptions { ca_certs: ca.clone(), client_certs: vec![cert.clone()], ..Default::default() });
    let report = client.push_image(&r, &store, &img.manifest, img.manifest_type, &img.blobs, &[]).await.unwrap();
    assert_eq!(report.uploaded.len(), 2, "{report:?}");
    let dst = ContentStore::open(&d.join("d")).unwrap();
    let p = client.pull_image(&r, &parse_platform("linux/amd64").unwrap(), &dst).await.unwrap();
    assert_eq!(p.manifest_bytes, img.manifest);
    assert!(dst.has(&img.layer));
    // Pushed again: every blob is found there (HEAD through the relay).
    let again = client.push_image(&r, &store, &img.manifest, img.manifest_type, &img.blobs, &[]).await.unwrap();
    assert_eq!(again.skipped.len(), 2, "{again:?}");
    // A certificate given for the host applies to every port.
    let by_host = ClientCert::load("127.0.0.1", &d.join("client.pem"), &d.join("client.key")).unwrap();
    let client = Registry::new(RegistryOptions { ca_certs: ca, client_certs: vec![by_host], ..Default::default() });
    assert!(client.get_manifest(&r).await.unwrap().is_some());
}

#[test]
fn client_certificate_files_are_checked_and_named() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    pki(d);
    let load = |c: &str, k: &str| ClientCert::load("r:5000", &d.join(c), &d.join(k)).map(|_| ()).unwrap_err().to_string();
    let e = load("missing.pem", "client.key");
    assert!(e.contains("missing.pem") && e.contains("No such file"), "{e}");
    let e = load("client.key", "client.key");
    assert!(e.contains("client.key") && e.contains("no PEM certificate"), "{e}");
    let e = load("client.pem", "client.pem");
    assert!(e.contains("client.pem") && e.contains("no PEM private key"), "{e}");
    openssl(d, &["pkcs8", "-topk8", "-in", "client.key", "-out", "enc.key", "-passout", "pass:secret"]);
    let e = load("client.pem", "enc.key");
    assert!(e.contains("enc.key") && e.contains("encrypted"), "{e}");
    // A PKCS#1 RSA key is taken too; the Debug form never shows key material.
    openssl(d, &["rsa", "-in", "leaf.key", "-traditional", "-out", "rsa1.key"]);
    assert!(std::fs::read_to_string(d.join("rsa1.key")).unwrap().contains("BEGIN RSA PRIVATE KEY"));
    let c = ClientCert::load("r:5000", &d.join("leaf.pem"), &d.join("rsa1.key")).unwrap();
    assert!(!format!("{c:?}").contains("PRIVATE"), "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_skipped_per_purpose() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    openssl(d, &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "self.key", "-out", "self.pem", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"]);
    let reg = TestRegistry::start_tls("127.0.0.1", &d.join("self.pem"), &d.join("self.key"));
    let store = ContentStore::open(&d.join("s")).unwrap();
    let img = make_image(&store, "linux/amd64", 2000, false);
    let r = reg.reference("self/app:v1");
    let amd64 = parse_platform("linux/amd64").unwrap();
    let skip = Leniency { skip_verify: Hosts::every(), ..Default::default() };

    // Pulls skip verification: the push is still verified, and refused by the
    // self-signed certificate.
    let pulls = Registry::new(RegistryOptions { pull: skip.clone(), retries: 0, ..Default::default() });
    let err = pulls.push_image(&r, &store, &img.manifest, img.manifest_type, &img.blobs, &[]).await.unwrap_err().to_string();
    assert!(err.contains(&format!("{}/self/app", reg.host)) && err.contains("certificate"), "{err}");
    // Pushes skip it: pushed; its pull is verified and refused.
    let pushes = Registry::new(RegistryOptions { push: skip.clone(), retries: 0, ..Default::default() });
    pushes.push_image(&r, &store, &img.manifest, img.manifest_type, &img.blobs, &[]).await.unwrap();
    let dst = ContentStore::open(&d.join("d")).unwrap();
    let err = pushes.pull_image(&r, &amd64, &dst).await.unwrap_err().to_string();
    assert!(err.contains("certificate"), "{err}");
    // ... but a cache read with the push settings (Kaniko's --cache-repo) is not.
    assert!(pushes.for_destinations().get_manifest(&r).await.unwrap().is_some());
    // The pull client pulls.
    let p = pulls.pull_image(&r, &amd64, &dst).await.unwrap();
    assert_eq!(p.manifest_bytes, img.manifest);
    // Named for one registry only: another is still verified.
    let named = Leniency { skip_verify: Hosts::named(["127.0.0.1:1"]), ..Default::default() };
    let err = Registry::new(RegistryOptions { pull: named, retries: 0, ..Default::default() })
        .pull_image(&r, &amd64, &ContentStore::open(&d.join("d2")).unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&reg.host), "{err}");
}
