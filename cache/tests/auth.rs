//! Basic auth from docker's config.json against a registry that requires it.
//! Its own test binary: it sets `DOCKER_CONFIG`, which must not leak into other tests.

mod common;

use common::*;
use kiln_cache::{parse_platform, ContentStore, Registry, RegistryOptions};

fn base64(input: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(input)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_docker_config() {
    let password = "s3cret-pw";
    let out = std::process::Command::new("htpasswd")
        .args(["-Bbn", "kiln", password])
        .output()
        .expect("htpasswd (apache2-utils) is missing: run scripts/setup.sh");
    assert!(out.status.success());
    let reg = TestRegistry::start_with(Some(&String::from_utf8(out.stdout).unwrap()));
    let t = tempfile::tempdir().unwrap();
    let store = ContentStore::open(&t.path().join("s")).unwrap();
    let img = make_image(&store, "linux/amd64", 1000, false);
    let r = reg.reference("private/app:v1");

    // Without credentials: refused, and the error says where.
    let empty_cfg = t.path().join("nocreds");
    std::fs::create_dir_all(&empty_cfg).unwrap();
    std::env::set_var("DOCKER_CONFIG", &empty_cfg);
    let err = Registry::new(RegistryOptions::default())
        .push_image(&r, &store, &img.manifest, img.manifest_type, &img.blobs, &[])
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(err.to_string().contains(&format!("{}/private/app", reg.host)), "{err}");
    assert!(err.to_string().contains("docker login"), "{err}");

    // With config.json credentials: works, and the password never shows in errors.
    let cfg = t.path().join("docker");
    std::fs::create_dir_all(&cfg).unwrap();
    let auth = base64(format!("kiln:{password}").as_bytes());
    std::fs::write(
        cfg.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host),
    )
    .unwrap();
    std::env::set_var("DOCKER_CONFIG", &cfg);
    let client = Registry::new(RegistryOptions::default());
    let rep = client.push_image(&r, &store, &img.manifest, img.manifest_type, &img.blobs, &[]).await.unwrap();
    assert_eq!(rep.uploaded.len(), 2);
    let dst = ContentStore::open(&t.path().join("d")).unwrap();
    let pulled = client.pull_image(&r, &parse_platform("linux/amd64").unwrap(), &dst).await.unwrap();
    assert_eq!(pulled.manifest_bytes, img.manifest);
    let err = client
        .pull_image(&reg.reference("private/missing:x"), &parse_platform("linux/amd64").unwrap(), &dst)
        .await
        .unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(!msg.contains(password) && !msg.contains(&auth), "{msg}");
}
