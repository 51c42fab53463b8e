//! Pull/push against a real registry: Debian's `docker-registry` (CNCF distribution),
//! started per test on a free loopback port and killed when the test ends.

mod common;

use common::*;
use kiln_cache::{parse_platform, ContentStore, Registry, RegistryError, RegistryOptions};
use kiln_oci::media;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_pull_mount_and_skip() {
    let reg = TestRegistry::start();
    let t = tempfile::tempdir().unwrap();
    let src = ContentStore::open(&t.path().join("src")).unwrap();
    // > 1 MiB so the streamed upload spans several body chunks.
    let img = make_image(&src, "linux/amd64", 3 * 1024 * 1024 + 17, false);
    let client = Registry::new(RegistryOptions::default());
    let one = reg.reference("a/one:v1");
    let all = sorted(vec![img.config.clone(), img.layer.clone()]);

    // First push uploads everything.
    let rep = client.push_image(&one, &src, &img.manifest, img.manifest_type, &img.blobs, &[]).await.unwrap();
    assert_eq!(rep.manifest_digest, img.digest);
    assert_eq!(sorted(rep.uploaded.clone()), all, "{rep:?}");
    assert!(rep.mounted.is_empty() && rep.skipped.is_empty(), "{rep:?}");

    // Pull back into a second store: identical bytes.
    let dst = ContentStore::open(&t.path().join("dst")).unwrap();
    let amd64 = parse_platform("linux/amd64").unwrap();
    let pulled = client.pull_image(&one, &amd64, &dst).await.unwrap();
    assert_eq!(pulled.manifest_digest, img.digest);
    assert_eq!(pulled.manifest_bytes, img.manifest);
    assert_eq!(pulled.config_digest, img.config);
    assert_eq!(pulled.config.architecture, "amd64");
    assert_eq!(pulled.layers.len(), 1);
    for d in [&img.digest, &img.config, &img.layer] {
        assert_eq!(dst.read(d).unwrap(), src.read(d).unwrap(), "{d}");
    }
    // Pulling again is a no-op on blobs and gives the same answer.
    let again = client.pull_image(&one, &amd64, &dst).await.unwrap();
    assert_eq!(again.manifest_digest, img.digest);
    // By digest too.
    let by_digest = client.pull_image(&one.with_digest(img.digest.clone()), &amd64, &dst).await.unwrap();
    assert_eq!(by_digest.manifest_bytes, img.manifest);

    // Same image to a/two, mounting from a/one: nothing uploaded.
    let two = reg.reference("a/two:v1");
    let rep = client
        .push_image(&two, &src, &img.manifest, img.manifest_type, &img.blobs, &[reg.reference("a/one")])
        .await
        .unwrap();
    assert!(rep.uploaded.is_empty(), "{rep:?}");
    eprintln!("push to a/two: {rep:?}");
    let mut got = rep.mounted.clone();
    got.extend(rep.skipped.clone());
    assert_eq!(sorted(got), all, "{rep:?}");
    let pulled2 = client.pull_image(&two, &amd64, &ContentStore::open(&t.path().join("dst2")).unwrap()).await.unwrap();
    assert_eq!(pulled2.manifest_digest, img.digest);

    // Pushing to a/one again: everything is already there.
    let rep = client.push_image(&one, &src, &img.manifest, img.manifest_type, &img.blobs, &[]).await.unwrap();
    assert_eq!(sorted(rep.skipped.clone()), all, "{rep:?}");
    assert!(rep.uploaded.is_empty() && rep.mounted.is_empty(), "{rep:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_missing_tag_names_the_registry() {
    let reg = TestRegistry::start();
    let t = tempfile::tempdir().unwrap();
    let store = ContentStore::open(t.path()).unwrap();
    let client = Registry::new(RegistryOptions::default());
    let r = reg.reference("a/none:nope");
    let err = client.pull_image(&r, &parse_platform("linux/amd64").unwrap(), &store).await.unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains(&format!("{}/a/none", reg.host)), "{msg}");
    assert!(msg.contains("pulling manifest"), "{msg}");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_of_missing_blob_names_blob_and_repo() {
    let reg = TestRegistry::start();
    let t = tempfile::tempdir().unwrap();
    let store = ContentStore::open(t.path()).unwrap();
    let img = make_image(&store, "linux/amd64", 100, false);
    let other = ContentStore::open(&t.path().join("empty")).unwrap();
    let client = Registry::new(RegistryOptions::default());
    let r = reg.reference("demo/hello:v1");
    let err = client.push_image(&r, &other, &img.manifest, img.manifest_type, &img.blobs, &[]).await.unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains("pushing blob sha256:"), "{msg}");
    assert!(msg.contains(&format!("to {}/demo/hello", reg.host)), "{msg}");
}

/// Pushes two single-platform images by digest and an index under `tag`.
async fn push_multi(
    client: &Registry,
    reg: &TestRegistry,
    store: &ContentStore,
    tag: &str,
    docker: bool,
) -> (TestImage, TestImage) {
    let amd = make_image(store, "linux/amd64", 2000, docker);
    let arm = make_image(store, "linux/arm64/v8", 3000, docker);
    let r = reg.reference(tag);
    for img in [&amd, &arm] {
        client
            .push_image(&r.with_digest(img.digest.clone()), store, &img.manifest, img.manifest_type, &img.blobs, &[])
            .await
            .unwrap();
    }
    let index_type = if docker { media::DOCKER_MANIFEST_LIST } else { media::OCI_INDEX };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": index_type,
        "manifests": [
            desc(amd.manifest_type, &amd.digest, amd.manifest.len(), Some("linux/amd64")),
            desc(arm.manifest_type, &arm.digest, arm.manifest.len(), Some("linux/arm64/v8")),
        ],
    }))
    .unwrap();
    store.put(&index).unwrap();
    client.push_image(&r, store, &index, index_type, &[], &[]).await.unwrap();
    (amd, arm)
}

async fn check_index_pull(docker: bool) {
    let reg = TestRegistry::start();
    let t = tempfile::tempdir().unwrap();
    let src = ContentStore::open(&t.path().join("src")).unwrap();
    let client = Registry::new(RegistryOptions::default());
    let (amd, arm) = push_multi(&client, &reg, &src, "multi/img:latest", docker).await;
    let r = reg.reference("multi/img");

    let dst = ContentStore::open(&t.path().join("dst")).unwrap();
    // arm64 without a variant matches the arm64/v8 entry.
    let p = client.pull_image(&r, &parse_platform("linux/arm64").unwrap(), &dst).await.unwrap();
    assert_eq!(p.manifest_digest, arm.digest);
    assert_eq!(p.config.architecture, "arm64");
    assert_eq!(dst.read(&arm.layer).unwrap(), src.read(&arm.layer).unwrap());
    assert!(!dst.has(&amd.layer), "the other platform's layer must not be pulled");

    let p = client.pull_image(&r, &parse_platform("linux/amd64").unwrap(), &dst).await.unwrap();
    assert_eq!(p.manifest_digest, amd.digest);
    assert_eq!(p.config.architecture, "amd64");

    let err = client.pull_image(&r, &parse_platform("linux/s390x").unwrap(), &dst).await.unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(err, RegistryError::NoMatchingPlatform { .. }), "{msg}");
    assert!(msg.contains("linux/s390x") && msg.contains("linux/arm64/v8"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_from_oci_index_picks_platform() {
    check_index_pull(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_from_docker_manifest_list_picks_platform() {
    check_index_pull(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_registry_is_retried_then_named() {
    // A port nothing listens on: connection refused, which is transient → 3 attempts.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let r: kiln_cache::Reference = format!("127.0.0.1:{port}/x/y:z").parse().unwrap();
    let t = tempfile::tempdir().unwrap();
    let store = ContentStore::open(t.path()).unwrap();
    let start = std::time::Instant::now();
    let err = Registry::new(RegistryOptions::default())
        .pull_image(&r, &parse_platform("linux/amd64").unwrap(), &store)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}/x/y")), "{msg}");
    // Backoff 200ms + 400ms between the three attempts.
    assert!(start.elapsed() >= std::time::Duration::from_millis(600), "{:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_and_registry_map() {
    let mirror = TestRegistry::start();
    let real = TestRegistry::start();
    let t = tempfile::tempdir().unwrap();
    let src = ContentStore::open(&t.path().join("src")).unwrap();
    let img = make_image(&src, "linux/amd64", 5000, false);
    let plain = Registry::new(RegistryOptions::default());
    // The mirror serves docker.io's library/busybox under a prefix.
    plain
        .push_image(&mirror.reference("hub/library/busybox:1.36"), &src, &img.manifest, img.manifest_type, &img.blobs, &[])
        .await
        .unwrap();
    let amd64 = parse_platform("linux/amd64").unwrap();

    // A dead mirror first, then the live one: the pull falls through to it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = Registry::new(RegistryOptions {
        mirrors: vec![format!("127.0.0.1:{dead}"), format!("{}/hub", mirror.host)],
        retries: 0,
        ..Default::default()
    });
    let hub: kiln_cache::Reference = "busybox:1.36".parse().unwrap();
    let sources: Vec<String> = client.pull_sources(&hub).iter().map(|r| r.to_string()).collect();
    assert_eq!(
        sources,
        vec![
            format!("127.0.0.1:{dead}/library/busybox:1.36"),
            format!("{}/hub/library/busybox:1.36", mirror.host),
            "docker.io/library/busybox:1.36".to_string()
        ]
    );
    let dst = ContentStore::open(&t.path().join("dst")).unwrap();
    let p = client.pull_image(&hub, &amd64, &dst).await.unwrap();
    assert_eq!(p.manifest_digest, img.digest);
    // Non-docker.io names are not mirrored.
    let other: kiln_cache::Reference = "quay.io/x/y:1".parse().unwrap();
    assert_eq!(client.pull_sources(&other), vec![other.clone()]);

    // --registry-map: a prefix of registry/repository is rewritten, without fallback.
    plain
        .push_image(&real.reference("mapped/team/app:v2"), &src, &img.manifest, img.manifest_type, &img.blobs, &[])
        .await
        .unwrap();
    let client = Registry::new(RegistryOptions {
        registry_map: vec![
            ("corp.example/team".into(), format!("{}/mapped/team", real.host)),
            ("gcr.example".into(), format!("{}/gcr", real.host)),
        ],
        ..Default::default()
    });
    let r: kiln_cache::Reference = "corp.example/team/app:v2".parse().unwrap();
    assert_eq!(client.pull_sources(&r), vec![real.reference("mapped/team/app:v2")]);
    let r2: kiln_cache::Reference = "gcr.example/proj/img@sha256:0000000000000000000000000000000000000000000000000000000000000000".parse().unwrap();
    assert_eq!(client.pull_sources(&r2)[0].to_string(), format!("{}/gcr/proj/img@{}", real.host, r2.digest().unwrap()));
    // Prefix matches only at a `/` boundary.
    let r3: kiln_cache::Reference = "corp.example/teamster/app:v2".parse().unwrap();
    assert_eq!(client.pull_sources(&r3), vec![r3.clone()]);
    let dst2 = ContentStore::open(&t.path().join("dst2")).unwrap();
    let p = client.pull_image(&r, &amd64, &dst2).await.unwrap();
    assert_eq!(p.manifest_digest, img.digest);
}

/// Kaniko's --skip-default-registry-fallback: an image no mirror has is an error
/// naming it and the mirrors, not a pull from docker.io (which is tried without it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_default_registry_fallback() {
    let mirror = TestRegistry::start();
    let t = tempfile::tempdir().unwrap();
    let dst = ContentStore::open(t.path()).unwrap();
    let amd64 = parse_platform("linux/amd64").unwrap();
    let hub: kiln_cache::Reference = "kiln-absent/thing:1".parse().unwrap();
    let opts = |skip| RegistryOptions { mirrors: vec![mirror.host.clone()], skip_default_fallback: skip, retries: 0, ..Default::default() };
    let err = Registry::new(opts(true)).pull_image(&hub, &amd64, &dst).await.unwrap_err();
    assert!(matches!(err, kiln_cache::RegistryError::NotOnMirrors { .. }), "{err:?}");
    let e = err.to_string();
    assert!(e.contains("docker.io/kiln-absent/thing:1") && e.contains(&mirror.host) && e.contains("--skip-default-registry-fallback"), "{e}");
    // Without it, docker.io is tried last (and unreachable from the test machine).
    let e = Registry::new(opts(false)).pull_image(&hub, &amd64, &dst).await.unwrap_err().to_string();
    assert!(e.contains("docker.io/kiln-absent/thing") && !e.contains(&mirror.host), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_ca_certificate_is_named() {
    let t = tempfile::tempdir().unwrap();
    let store = ContentStore::open(t.path()).unwrap();
    let missing = t.path().join("no-such-ca.pem");
    let client = Registry::new(RegistryOptions { ca_certs: vec![missing.clone()], ..Default::default() });
    let r: kiln_cache::Reference = "registry.example:5000/a/b:c".parse().unwrap();
    let err = client.pull_image(&r, &parse_platform("linux/amd64").unwrap(), &store).await.unwrap_err().to_string();
    assert!(err.contains("no-such-ca.pem") && err.contains("registry.example:5000"), "{err}");
}

/// This machine's first non-loopback IPv4 address (clients use HTTPS for it).
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is missing");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_registry_with_registry_certificate() {
    // Loopback only (tests never send traffic elsewhere): a loopback registry that
    // speaks TLS is verified like any other, unless named with --insecure-registry.
    let ip = "127.0.0.1".to_string();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    openssl(d, &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=kiln-test-ca"]);
    openssl(d, &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", &format!("/CN={ip}")]);
    std::fs::write(
        d.join("ext.cnf"),
        format!("subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    openssl(d, &["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "ext.cnf"]);
    let reg = TestRegistry::start_tls(&ip, &d.join("leaf.pem"), &d.join("leaf.key"));

    let store = ContentStore::open(&d.join("s")).unwrap();
    let img = make_image(&store, "linux/amd64", 2000, false);
    let r = reg.reference("tls/app:v1");

    // Unknown CA: refused, and the error names the registry.
    let err = Registry::new(RegistryOptions { retries: 0, ..Default::default() })
        .push_image(&r, &store, &img.manifest, img.manifest_type, &img.blobs, &[])
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(err.to_string().contains(&format!("{}/tls/app", reg.host)), "{err}");
    assert!(err.to_string().contains("--registry-certificate"), "{err}");

    // With --registry-certificate: push and pull over TLS.
    let client = Registry::new(RegistryOptions { ca_certs: vec![d.join("ca.pem")], ..Default::default() });
    client.push_image(&r, &store, &img.manifest, img.manifest_type, &img.blobs, &[]).await.unwrap();
    let dst = ContentStore::open(&d.join("d")).unwrap();
    let p = client.pull_image(&r, &parse_platform("linux/amd64").unwrap(), &dst).await.unwrap();
    assert_eq!(p.manifest_bytes, img.manifest);

    // --insecure-registry: TLS without verification (no CA given), as Docker does.
    let insecure = Registry::new(RegistryOptions { insecure: vec![reg.host.clone()], ..Default::default() });
    let dst2 = ContentStore::open(&d.join("d2")).unwrap();
    let p = insecure.pull_image(&r, &parse_platform("linux/amd64").unwrap(), &dst2).await.unwrap();
    assert_eq!(p.manifest_bytes, img.manifest);
}
