//! End-to-end: `kiln executor`, Kaniko's command line (issue 6), as a Kaniko
//! pipeline would call it.

use kiln_integration::{seed_base_images, Image, Registry, Sandbox};

#[test]
fn kaniko_flags_build_push_and_write_digest_files() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.context("hello", &registry);
    let dest = registry.reference("demo/kaniko:1");
    let dest2 = registry.reference("demo/kaniko:latest");
    let digest = sb.out_path("digest");
    let names = sb.out_path("names");
    let tar = sb.out_path("image.tar");
    let out = sb
        .kiln()
        .arg("executor")
        .arg(format!("--context=dir://{}", ctx.display()))
        .arg("--dockerfile=Dockerfile")
        .arg(format!("--destination={dest}"))
        .arg("--destination")
        .arg(&dest2)
        .arg(format!("--digest-file={}", digest.display()))
        .arg(format!("--image-name-with-digest-file={}", names.display()))
        .arg(format!("--tar-path={}", tar.display()))
        .arg("--cache=true")
        .arg("--label=built-by=kaniko-pipeline")
        .arg("--snapshot-mode=redo")
        .arg("--single-snapshot")
        .arg("--reproducible")
        .arg("--skip-tls-verify")
        .arg("--compression=zstd")
        .run();
    out.assert_success();
    let d = std::fs::read_to_string(&digest).unwrap();
    let d = d.trim();
    assert!(d.starts_with("sha256:"), "{d}");
    assert_eq!(std::fs::read_to_string(&names).unwrap(), format!("{dest}@{d}\n{dest2}@{d}\n"));
    assert!(tar.is_file(), "--tar-path wrote nothing");
    let img = Image::pull_from(&registry, "demo/kaniko:1");
    assert_eq!(img.cfg()["Labels"]["built-by"], "kaniko-pipeline");
    assert_eq!(img.layers.last().unwrap().media_type, "application/vnd.oci.image.layer.v1.tar+zstd", "--compression=zstd");
    assert_eq!(img.tree.node("/app/hello.txt").text(), "hello from kiln\n");
    // --reproducible: timestamps are the epoch.
    assert_eq!(img.config["created"], "1970-01-01T00:00:00Z");
    // --cache with no --cache-repo: Kaniko's default, <destination repo>/cache.
    assert!(!registry.tags("demo/kaniko/cache").is_empty(), "no cache images in demo/kaniko/cache\n{out}");
}

/// Without --digest-file the names file still gets the digest (through a file of the
/// build's own, removed afterwards), and --verbosity sets the log level.
#[test]
fn image_names_without_a_digest_file_and_verbosity() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.context("hello", &registry);
    let dest = registry.reference("demo/kaniko-names:1");
    let names = sb.out_path("names");
    let tmp = sb.out_path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let out = sb
        .kiln()
        .env("TMPDIR", &tmp)
        .arg("executor")
        .arg(format!("--context={}", ctx.display()))
        .arg(format!("--destination={dest}"))
        .arg(format!("--image-name-with-digest-file={}", names.display()))
        .arg("--verbosity=debug")
        .run();
    out.assert_success();
    let line = std::fs::read_to_string(&names).unwrap();
    let digest = line.trim().strip_prefix(&format!("{dest}@")).unwrap_or_else(|| panic!("names file: {line:?}"));
    assert_eq!(digest, Image::pull_from(&registry, "demo/kaniko-names:1").manifest_digest, "names file digest");
    assert!(out.stderr.contains("DEBUG"), "--verbosity=debug logged nothing at debug level:\n{}", out.stderr);
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

#[test]
fn executor_rejects_remote_contexts_clearly() {
    let sb = Sandbox::new();
    let out = sb.kiln().arg("executor").arg("--context=s3://bucket/ctx.tar.gz").arg("--no-push").run();
    out.assert_failure_containing("s3:// contexts are not supported");
}
