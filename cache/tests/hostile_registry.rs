//! A registry that lies or stalls, faked by the fault proxy in front of a real
//! `docker-registry`: manifests without end or with a huge declared size, a manifest
//! or a blob dripped a byte at a time, a `Docker-Content-Digest` that is not the bytes', a huge
//! header, and redirects to another host, which must never carry credentials. Each
//! case must end quickly with an error naming what was wrong, never by reading it all.

mod common;
#[path = "../../integration/src/faultproxy.rs"]
mod faultproxy;

use std::time::{Duration, Instant};

use common::*;
use faultproxy::{Fault, FaultProxy, Rule};
use kiln_cache::auth::AuthFiles;
use kiln_cache::{parse_platform, ContentStore, Reference, Registry, RegistryOptions};

fn client(deadline: Duration, auth: Option<AuthFiles>) -> Registry {
    Registry::new(RegistryOptions { retries: 0, answer_deadline: deadline, auth_files: auth, ..Default::default() })
}

/// A pull through `proxy` of an image pushed to `reg`, with `fault` on every GET of a
/// path containing `path`: the error message, and how long it took.
async fn pull_with(reg: &TestRegistry, path: &str, fault: Fault) -> (String, Duration) {
    let t = tempfile::tempdir().unwrap();
    let store = ContentStore::open(&t.path().join("s")).unwrap();
    let img = make_image(&store, "linux/amd64", 10_000, false);
    let repo = format!("hostile/app{}", rand_suffix());
    client(Duration::from_secs(60), None).push_image(&reg.reference(&format!("{repo}:v1")), &store, &img.manifest, img.manifest_type, &img.blobs, &[]).await.unwrap();
    let proxy = FaultProxy::start(&reg.host);
    proxy.add_rule(Rule::new("GET", path, fault, 100));
    let r: Reference = format!("{}/{repo}:v1", proxy.host()).parse().unwrap();
    let dst = ContentStore::open(&t.path().join("d")).unwrap();
    let started = Instant::now();
    let err = client(Duration::from_secs(2), None).pull_image(&r, &parse_platform("linux/amd64").unwrap(), &dst).await.unwrap_err();
    assert!(proxy.injected() > 0, "no fault was injected: {:?}", proxy.log());
    (err.to_string(), started.elapsed())
}

fn rand_suffix() -> String {
    format!("{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_stalled_and_lying_manifests_are_refused() {
    let reg = TestRegistry::start();
    let manifest = "application/vnd.oci.image.manifest.v1+json".to_string();

    // Without end: stopped at the cap, not read to the end (which never comes).
    let (e, took) = pull_with(&reg, "/manifests/", Fault::Endless { content_type: manifest.clone(), declared_length: None }).await;
    assert!(e.contains("larger than 4 MiB") && e.contains("/hostile/app"), "{e}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    // A declared 5 GiB: refused before a byte of it is read.
    let (e, _) = pull_with(&reg, "/manifests/", Fault::Endless { content_type: manifest.clone(), declared_length: Some(5 << 30) }).await;
    assert!(e.contains("5368709120 bytes announced"), "{e}");
    // A byte a second: the whole answer has a deadline, although no read times out.
    let (e, took) = pull_with(&reg, "/manifests/", Fault::Drip { ms: 1000, length: 1000 }).await;
    assert!(e.contains("did not send its answer") && e.contains("within 2s"), "{e}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    // A blob dripped a byte at a time: below the rate floor over a window, stopped.
    let (e, took) = pull_with(&reg, "/blobs/", Fault::Drip { ms: 100, length: 10_000 }).await;
    assert!(e.contains("below kiln's floor"), "{e}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    // The registry names a digest that is not its bytes'.
    let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#.to_vec();
    let lie = format!("sha256:{}", "0".repeat(64));
    let headers = vec![("Content-Type".to_string(), manifest.clone()), ("Docker-Content-Digest".to_string(), lie.clone())];
    let (e, _) = pull_with(&reg, "/manifests/", Fault::Answer { status: 200, headers, body }).await;
    assert!(e.contains(&format!("the registry says the manifest is {lie}")), "{e}");
    // A header of 1 MiB: an error, not a crash.
    let headers = vec![("X-Padding".to_string(), "y".repeat(1 << 20))];
    let (e, _) = pull_with(&reg, "/manifests/", Fault::Answer { status: 200, headers, body: b"{}".to_vec() }).await;
    assert!(e.contains("/hostile/app"), "{e}");
    // A config blob that never ends is bounded by its descriptor's size.
    let (e, took) = pull_with(&reg, "/blobs/", Fault::Endless { content_type: "application/octet-stream".into(), declared_length: None }).await;
    assert!(e.contains("larger than the") && e.contains("bytes announced"), "{e}");
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_referrers_list_is_refused() {
    let reg = TestRegistry::start();
    let t = tempfile::tempdir().unwrap();
    let store = ContentStore::open(&t.path().join("s")).unwrap();
    let img = make_image(&store, "linux/amd64", 1000, false);
    client(Duration::from_secs(60), None).push_image(&reg.reference("hostile/refs:v1"), &store, &img.manifest, img.manifest_type, &img.blobs, &[]).await.unwrap();
    let proxy = FaultProxy::start(&reg.host);
    proxy.add_rule(Rule::new("GET", "/referrers/", Fault::Endless { content_type: "application/vnd.oci.image.index.v1+json".into(), declared_length: None }, 10));
    let repo: Reference = format!("{}/hostile/refs:v1", proxy.host()).parse().unwrap();
    let e = client(Duration::from_secs(5), None).referrers(&repo, &img.digest, None).await.unwrap_err().to_string();
    assert!(e.contains("larger than 4 MiB") && e.contains("referrers"), "{e}");
    // Without the API (404) and without a tag-schema index: no referrers, no error.
    assert!(client(Duration::from_secs(5), None).referrers(&reg.reference("hostile/refs:v1"), &img.digest, None).await.unwrap().is_empty());
}

/// A registry that requires credentials redirects manifest and blob GETs to another
/// host: the requests there carry no `Authorization`, while the registry got them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_another_host_carry_no_credentials() {
    let password = "s3cret-pw";
    let out = std::process::Command::new("htpasswd").args(["-Bbn", "kiln", password]).output().expect("htpasswd (apache2-utils) is missing: run scripts/setup.sh");
    let reg = TestRegistry::start_with(Some(&String::from_utf8(out.stdout).unwrap()));
    let t = tempfile::tempdir().unwrap();
    let front = FaultProxy::start(&reg.host);
    // "Another host": the same registry through a second proxy on another port.
    let other = FaultProxy::start(&reg.host);
    let cfg = t.path().join("config.json");
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("kiln:{password}"));
    std::fs::write(&cfg, format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, front.host())).unwrap();
    let files = AuthFiles { files: vec![cfg] };
    let store = ContentStore::open(&t.path().join("s")).unwrap();
    let img = make_image(&store, "linux/amd64", 1000, false);
    let r: Reference = format!("{}/private/app:v1", front.host()).parse().unwrap();
    client(Duration::from_secs(60), Some(files.clone())).push_image(&r, &store, &img.manifest, img.manifest_type, &img.blobs, &[]).await.unwrap();
    assert!(!front.authorizations().is_empty(), "the push sent no credentials: {:?}", front.log());

    let to = format!("http://{}{{path}}", other.host());
    front.add_rule(Rule::new("GET", "/manifests/", Fault::Redirect(to.clone()), 100));
    let dst = ContentStore::open(&t.path().join("d")).unwrap();
    let reader = client(Duration::from_secs(10), Some(files));
    // The other host refuses an unauthenticated read: the pull fails, naming the registry.
    let e = reader.pull_image(&r, &parse_platform("linux/amd64").unwrap(), &dst).await.unwrap_err().to_string();
    assert!(e.contains(&front.host()), "{e}");
    front.clear_rules();
    front.add_rule(Rule::new("GET", "/blobs/", Fault::Redirect(to), 100));
    let _ = reader.pull_image(&r, &parse_platform("linux/amd64").unwrap(), &dst).await;
    let log = other.log();
    assert!(log.iter().any(|l| l.contains("/manifests/")) && log.iter().any(|l| l.contains("/blobs/")), "not redirected: {log:?}");
    assert_eq!(other.authorizations(), Vec::<(String, String)>::new(), "credentials followed a redirect to another host");
}
