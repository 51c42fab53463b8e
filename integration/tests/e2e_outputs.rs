//! End-to-end: where a build goes (issue 6): `--output type=docker|local`,
//! `--iidfile`, `--label`.

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

use kiln_integration::{run_with_timeout, seed_base_images, Image, Registry, Sandbox};

#[test]
fn docker_archive_local_rootfs_iidfile_and_labels() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.context("hello", &registry);
    let tar = sb.out_path("hello.tar");
    let rootfs = sb.out_path("rootfs");
    let layout = sb.out_path("layout");
    let iid = sb.out_path("iid");
    let out = sb
        .kiln()
        .build()
        .tag("example.com/demo/hello:7")
        .arg("--output")
        .arg(format!("type=docker,dest={}", tar.display()))
        .arg("--output")
        .arg(format!("type=local,dest={}", rootfs.display()))
        .output_oci(&layout)
        .arg("--iidfile")
        .arg(&iid)
        .args(["--label", "org.opencontainers.image.source=https://example.com/kiln", "--label", "team=builders"])
        .arg(&ctx)
        .run();
    out.assert_success();

    // The OCI layout: labels in the config, iidfile = config digest (Docker's image ID).
    let img = Image::from_layout(&layout, None);
    assert_eq!(img.cfg()["Labels"]["team"], "builders");
    assert_eq!(img.cfg()["Labels"]["org.opencontainers.image.source"], "https://example.com/kiln");
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), img.manifest["config"]["digest"].as_str().unwrap());

    // The docker archive: skopeo reads it as docker-archive (manifest.json) and the
    // same tree comes out.
    let conv = sb.out_path("from-archive");
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet"]).arg(format!("docker-archive:{}", tar.display())).arg(format!("oci:{}:img", conv.display()));
    let o = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(o.status.success(), "skopeo cannot read the archive\n{o}");
    let from_archive = Image::from_layout(&conv, Some("img"));
    assert_eq!(from_archive.tree.node("/app/hello.txt").text(), "hello from kiln\n");
    assert_eq!(from_archive.tree.node("/app/built.txt").text(), "built by RUN\n");
    assert_eq!(from_archive.cfg()["Cmd"], img.cfg()["Cmd"]);
    // ...and it is an OCI layout too (as `docker save` writes since Docker 25).
    let mut cmd = Command::new("tar");
    cmd.arg("-tf").arg(&tar);
    let o = run_with_timeout(&mut cmd, Duration::from_secs(30));
    for name in ["oci-layout", "index.json", "manifest.json"] {
        assert!(o.stdout.lines().any(|l| l == name), "{name} missing from the archive\n{o}");
    }

    // The local rootfs: the files, owned by the invoking user.
    let hello = rootfs.join("app/hello.txt");
    assert_eq!(std::fs::read_to_string(&hello).unwrap(), "hello from kiln\n");
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(std::fs::metadata(&hello).unwrap().uid(), sb.user.uid, "local export must belong to the user");
    assert_eq!(std::fs::metadata(rootfs.join("app/built.txt")).unwrap().mode() & 0o777, 0o640);
}
