//! kiln's own image (issue 9): `deploy/image/prepare-context.sh` gathers the binary,
//! its libraries, CA certificates and a non-root user; kiln builds the image (FROM
//! scratch, and the busybox `:debug` variant) into an OCI layout as the unprivileged
//! user; the result is checked file by file, then unpacked and its kiln executed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kiln_integration::{kiln_bin, repo_root, require_program, run_with_timeout, seed_base_images, Image, Kind, Registry, Sandbox};

fn prepare(sb: &Sandbox) -> PathBuf {
    let out = sb.path().join("image-ctx");
    let r = run_with_timeout(
        sb.user_command("/bin/sh").arg(repo_root().join("deploy/image/prepare-context.sh")).arg(&out).arg(kiln_bin()),
        Duration::from_secs(120),
    );
    assert!(r.status.success(), "prepare-context.sh failed\n{r}");
    out
}

fn host_version() -> String {
    let out = Command::new(kiln_bin()).arg("--version").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// umoci unpack (as root) and run `argv` chrooted in the rootfs.
fn run_in_rootfs(layout: &Path, argv: &[&str]) -> String {
    let umoci = require_program("umoci");
    let bundle = tempfile::Builder::new().prefix("kiln-image-bundle-").tempdir().unwrap();
    let b = bundle.path().join("b");
    let out = run_with_timeout(
        Command::new(umoci).arg("unpack").arg("--image").arg(format!("{}:latest", layout.display())).arg(&b),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "umoci unpack failed\n{out}");
    let rootfs = b.join("rootfs");
    let is_root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if is_root {
        let mut c = Command::new(require_program("chroot"));
        c.arg(&rootfs);
        c
    } else {
        let mut c = Command::new(require_program("unshare"));
        c.arg("-r").arg(require_program("chroot")).arg(&rootfs);
        c
    };
    cmd.args(argv).env_clear().env("PATH", "/usr/local/bin:/bin").env("HOME", "/home/kiln");
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{argv:?} in the image failed\n{out}");
    out.stdout
}

fn check_common(img: &Image) {
    let t = &img.tree;
    t.assert_entry("/usr/local/bin/kiln", Kind::File, 0o755, 0, 0);
    t.assert_entry("/home/kiln", Kind::Dir, 0o755, 1000, 1000);
    t.assert_entry("/home/kiln/.local/share/kiln", Kind::Dir, 0o755, 1000, 1000);
    t.assert_entry("/home/kiln/.docker", Kind::Dir, 0o700, 1000, 1000);
    t.assert_entry("/tmp", Kind::Dir, 0o1777, 0, 0);
    let certs = t.node("/etc/ssl/certs/ca-certificates.crt");
    assert!(certs.is_file() && certs.size > 1000, "CA bundle: {certs}");
    assert!(t.node("/etc/passwd").text().contains("kiln:x:1000:1000:"), "{}", t.node("/etc/passwd"));
    assert!(t.node("/etc/group").text().contains("kiln:x:1000:"));
    // The dynamic loader the binary asks for, and libc.
    let ldd = String::from_utf8(Command::new("ldd").arg(kiln_bin()).output().unwrap().stdout).unwrap();
    for line in ldd.lines() {
        let path = line.split_whitespace().find(|w| w.starts_with('/'));
        if let Some(p) = path {
            assert!(t.get(p).is_some_and(|n| n.is_file()), "{p} (from ldd) missing from the image");
        }
    }
    let cfg = img.cfg();
    assert_eq!(cfg["User"], "1000:1000");
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/usr/local/bin/kiln"]));
    let env = img.env();
    assert!(env.contains(&"KILN_ROOT=/home/kiln/.local/share/kiln".to_string()), "{env:?}");
    assert!(env.contains(&"HOME=/home/kiln".to_string()), "{env:?}");
    img.assert_consistent();
}

#[test]
fn kiln_image_from_scratch_and_debug_variant() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = prepare(&sb);
    let version = host_version();
    assert!(version.starts_with("kiln "), "{version}");

    // FROM scratch.
    let layout = sb.out_path("kiln-oci");
    sb.kiln().build().output_oci(&layout).arg(&ctx).timeout(Duration::from_secs(600)).run().assert_success();
    let img = Image::from_layout(&layout, Some("latest"));
    check_common(&img);
    assert!(img.tree.get("/bin/sh").is_none(), "the scratch image has no shell");
    assert_eq!(img.layers.len(), 3, "rootfs, home and WORKDIR's (empty: the directory exists) layers only");
    let out = run_in_rootfs(&layout, &["/usr/local/bin/kiln", "--version"]);
    assert_eq!(out.trim(), version);

    // :debug, from the busybox base.
    let debug = sb.out_path("kiln-debug-oci");
    sb.kiln()
        .build()
        .arg("-f")
        .arg(ctx.join("Dockerfile.debug"))
        .build_arg("BUSYBOX_IMAGE", &base.latest)
        .output_oci(&debug)
        .arg(&ctx)
        .timeout(Duration::from_secs(600))
        .run()
        .assert_success();
    let img = Image::from_layout(&debug, Some("latest"));
    check_common(&img);
    assert!(img.tree.get("/bin/sh").is_some(), "the debug image has a shell");
    let out = run_in_rootfs(&debug, &["/bin/sh", "-c", "echo shell-ok; kiln --version"]);
    assert_eq!(out.trim(), format!("shell-ok\n{version}"));
}
