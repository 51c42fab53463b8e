//! ENOSPC (issue 19): the state directory on a small filesystem (a tmpfs the
//! harness mounts over the sandbox's KILN_ROOT). A RUN step, a COPY and a pull that
//! run out of space must fail naming the step and the cause, never panic, and leave
//! the store consistent: the next build on the same state directory (after
//! `kiln prune`, as a user would free space) gives the image of a clean build.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_integration::registry::seed_base_images;
use kiln_integration::{Registry, Sandbox};

/// A tmpfs of `mib` MiB over `dir`, owned by the build user; unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(sb: &Sandbox, dir: &Path, mib: u64) -> SmallFs {
        let opts = format!("size={mib}m,mode=0755,uid={},gid={}", sb.user.uid, sb.user.gid);
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &opts, "kiln-enospc"]).arg(dir).output().expect("mount");
        assert!(out.status.success(), "mounting a tmpfs (the test runs as root): {}", String::from_utf8_lossy(&out.stderr));
        SmallFs(dir.to_path_buf())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df").args(["--output=avail", "-B1"]).arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df --output=avail")
}

fn oci_digest(dir: &Path) -> String {
    let index: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"].as_str().unwrap().to_string()
}

#[test]
fn running_out_of_space_fails_clearly_and_the_next_build_is_correct() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let base = format!("{}/base/busybox:latest", registry.host());
    let small_df = format!("FROM {base}\nCOPY hello /hello\nRUN echo built > /built\n");

    // The image a clean build makes, on an ordinary filesystem.
    let clean = Sandbox::new();
    let clean_ctx = clean.new_context("small").file("Dockerfile", &small_df).file("hello", "hello\n").build();
    let reference = clean.out_path("reference");
    clean.kiln().build().env("SOURCE_DATE_EPOCH", "1700000000").arg("--output").arg(format!("type=oci,dest={}", reference.display())).arg(&clean_ctx).run().assert_success();
    let want = oci_digest(&reference);

    let sb = Sandbox::new();
    let _fs = SmallFs::mount(&sb, &sb.kiln_root(), 24);
    let small_ctx = sb.new_context("small").file("Dockerfile", &small_df).file("hello", "hello\n").build();
    let build_small = |name: &str| {
        let dest = sb.out_path(name);
        sb.kiln().build().env("SOURCE_DATE_EPOCH", "1700000000").arg("--output").arg(format!("type=oci,dest={}", dest.display())).arg(&small_ctx).run().assert_success();
        assert_eq!(oci_digest(&dest), want, "{name}: not the clean build's image");
    };

    // A pull into a filesystem with 200 KiB left: the blob is not kept half-written;
    // once space is back, the build pulls it whole.
    let filler = sb.kiln_root().join("filler");
    let avail = free_bytes(&sb.kiln_root());
    let out = Command::new("fallocate").arg("-l").arg((avail - (200 << 10)).to_string()).arg(&filler).output().unwrap();
    assert!(out.status.success(), "fallocate: {}", String::from_utf8_lossy(&out.stderr));
    let out = sb.kiln().build().arg(&small_ctx).run();
    out.assert_failure_containing("No space left on device");
    out.assert_failure_containing(&registry.host());
    assert_eq!(out.stderr.matches("No space left on device").count(), 1, "said more than once: {out}");
    assert!(!out.stderr.contains("panicked"), "{out}");
    fs::remove_file(&filler).unwrap();
    build_small("after-pull");

    // A RUN step that fills the disk: the step, its exit code and the cause are named.
    let df = format!("FROM {base}\nRUN dd if=/dev/zero of=/fill bs=1M count=64\n");
    let ctx = sb.new_context("run-fills").file("Dockerfile", df).build();
    let out = sb.kiln().build().arg(&ctx).run();
    out.assert_failure_containing("RUN dd if=/dev/zero");
    out.assert_failure_containing("No space left on device");
    assert!(!out.stderr.contains("panicked"), "{out}");
    build_small("after-run");

    // A COPY of a context file larger than the space left.
    let big = vec![7u8; 40 << 20];
    let ctx = sb.new_context("copy-fills").file("Dockerfile", format!("FROM {base}\nCOPY big /big\n")).file("big", &big).build();
    let out = sb.kiln().build().arg(&ctx).run();
    out.assert_failure_containing("COPY big /big");
    out.assert_failure_containing("No space left on device");
    assert!(!out.stderr.contains("panicked"), "{out}");
    build_small("after-copy");

    // An output directory on a full filesystem: a failure, not a layout that looks whole.
    let full = sb.path().join("full");
    fs::create_dir(&full).unwrap();
    let _out_fs = SmallFs::mount(&sb, &full, 1);
    let dest = full.join("layout");
    let out = sb.kiln().build().arg("--output").arg(format!("type=oci,dest={}", dest.display())).arg(&small_ctx).run();
    out.assert_failure_containing("No space left on device");
    assert!(!out.stderr.contains("panicked"), "{out}");
    // A reader finds no image in it: the index names nothing whose blobs are missing.
    if let Ok(bytes) = fs::read(dest.join("index.json")) {
        let index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(index["manifests"].as_array().map(Vec::len), Some(0), "a layout without its blobs names an image: {index}");
    }

    // Space freed by prune: the next build pulls and builds everything again.
    sb.kiln().arg("prune").arg("--all").run().assert_success();
    build_small("after-prune");
}
