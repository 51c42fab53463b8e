//! End-to-end: `--isolation chroot`, Kaniko's habitat (issue 6): kiln as uid 0 in
//! a container without CAP_SYS_ADMIN — no user or mount namespaces, no overlay.
//! Simulated by dropping CAP_SYS_ADMIN from the bounding set with setpriv.

use std::process::Command;
use std::time::Duration;

use kiln_integration::{kiln_bin, run_with_timeout, seed_base_images, Image, Kind, Registry, Sandbox};

fn as_root_without_sys_admin(sb: &Sandbox, args: &[&str]) -> kiln_integration::RunOutput {
    let root = sb.path().join("root-state");
    let mut cmd = Command::new("setpriv");
    cmd.args(["--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--"])
        .arg(kiln_bin())
        .args(args)
        .env("KILN_ROOT", &root)
        .env("HOME", sb.path());
    run_with_timeout(&mut cmd, Duration::from_secs(300))
}

#[test]
fn auto_detects_chroot_isolation_without_cap_sys_admin() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test simulates a uid-0 pod: run the suite as root (scripts/test.sh does)");
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    let ctx = sb
        .new_context("chroot")
        .file(
            "Dockerfile",
            format!(
                "FROM {base}\nWORKDIR /app\nCOPY hello.txt ./\nRUN echo \"built by RUN\" > /app/built.txt && chmod 0640 /app/built.txt && echo quiet > /dev/null\nUSER app\nRUN id -u > /tmp/uid && touch /home/app/mine\n"
            ),
        )
        .file("hello.txt", "hello from kiln\n")
        .build();
    let layout = sb.out_path("layout");
    let out = as_root_without_sys_admin(&sb, &["build", "--output", &format!("type=oci,dest={}", layout.display()), ctx.to_str().unwrap()]);
    assert!(out.status.success(), "{out}");
    assert!(out.stderr.contains("using --isolation chroot"), "the fallback must be announced\n{out}");
    let img = Image::from_layout(&layout, None);
    let t = &img.tree;
    t.assert_file("/app/hello.txt", 0o644, 0, 0, "hello from kiln\n");
    t.assert_file("/app/built.txt", 0o640, 0, 0, "built by RUN\n");
    t.assert_file("/tmp/uid", 0o644, 1000, 1000, "1000\n");
    t.assert_entry("/home/app/mine", Kind::File, 0o644, 1000, 1000);
    // The device nodes and host files the chroot needed never reach a layer.
    for p in ["/dev/null", "/dev/zero", "/dev/tty", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname"] {
        t.assert_absent(p);
    }
    assert!(t.children_of("/dev").is_empty(), "{:?}", t.children_of("/dev"));
}

#[test]
fn explicit_chroot_isolation_needs_uid_0_and_runs_mounts() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.context("hello", &registry);
    let out = sb.kiln().build().args(["--isolation", "chroot"]).arg(&ctx).run();
    out.assert_failure_containing("--isolation chroot needs uid 0");

    let base = registry.reference("base/busybox:latest");
    let ctx = sb.new_context("m").file("Dockerfile", format!("FROM {base}\nRUN --mount=type=tmpfs,target=/t touch /t/x\n")).build();
    let out = as_root_without_sys_admin(&sb, &["build", "--isolation", "chroot", ctx.to_str().unwrap()]);
    assert!(out.status.success(), "RUN --mount works under --isolation chroot\n{out}");
    // What still needs a namespace says so.
    let ctx = sb.new_context("n").file("Dockerfile", format!("FROM {base}\nRUN --network=none true\n")).build();
    let out = as_root_without_sys_admin(&sb, &["build", "--isolation", "chroot", ctx.to_str().unwrap()]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("RUN --network=none needs a network namespace"), "{out}");
}
