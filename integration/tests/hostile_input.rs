//! Hostile and broken input (issue 19), end to end as the unprivileged build user:
//! each case failed before its fix (a panic, a silent exit 125, memory without
//! bound, a step with an inherited ignored SIGPIPE) and must now give a clear
//! error naming what is wrong, or the behaviour a shell expects.

use std::fs;
use std::path::Path;
use std::time::Duration;

use kiln_integration::registry::seed_base_images;
use kiln_integration::{Image, Registry, Sandbox};

/// A one-platform OCI layout (tag `t`) whose image has no layers and this config.
fn layout_with_config(dir: &Path, config: &serde_json::Value) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = Image::digest_of(bytes);
        fs::write(blobs.join(d.trim_start_matches("sha256:")), bytes).unwrap();
        (d, bytes.len())
    };
    let (cd, cl) = put(&serde_json::to_vec(config).unwrap());
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cl}, "layers": []});
    let (md, ml) = put(&serde_json::to_vec(&manifest).unwrap());
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": ml, "annotations": {"org.opencontainers.image.ref.name": "t"}}]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn run_steps_start_with_default_signal_dispositions() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let df = format!(
        "FROM {}/base/busybox:latest\nRUN grep -E '^Sig(Ign|Blk)' /proc/self/status > /sig && yes | head -n 3 > /yes\n",
        registry.host()
    );
    let ctx = sb.new_context("signals").file("Dockerfile", df).build();
    let out = sb.out_path("out");
    sb.kiln().build().arg("--output").arg(format!("type=local,dest={}", out.display())).arg(&ctx).timeout(Duration::from_secs(120)).run().assert_success();
    let sig = fs::read_to_string(out.join("sig")).unwrap();
    // Rust ignores SIGPIPE in kiln itself; an ignored signal survives exec.
    assert!(sig.contains("SigIgn:\t0000000000000000") && sig.contains("SigBlk:\t0000000000000000"), "{sig}");
    assert_eq!(fs::read_to_string(out.join("yes")).unwrap(), "y\ny\ny\n");
}

#[test]
fn an_env_value_with_a_nul_byte_is_named_not_a_panic() {
    let sb = Sandbox::new();
    let base = sb.path().join("nul-layout");
    layout_with_config(&base, &serde_json::json!({"architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin", "BAD=a\u{0}b"]}, "rootfs": {"type": "layers", "diff_ids": []}}));
    sb.user.chown_tree(&base);
    let ctx = sb.new_context("nul").file("Dockerfile", "FROM base\nRUN [\"/bin/true\"]\n").build();
    let out = sb.kiln().build().arg("--build-context").arg(format!("base=oci-layout://{}:t", base.display())).arg(&ctx).run();
    out.assert_failure_containing("environment variable \"BAD\" holds a NUL byte");
    assert!(!out.combined().contains("panicked"), "{out}");
}

#[test]
fn an_environment_too_big_for_exec_is_explained() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let df = format!("FROM {}/base/busybox:latest\nENV HUGE={}\nRUN true\n", registry.host(), "x".repeat(200_000));
    let ctx = sb.new_context("e2big").file("Dockerfile", df).build();
    let out = sb.kiln().build().arg(&ctx).run();
    out.assert_failure_containing("the largest is \"HUGE\") exceed the kernel's limit (E2BIG)");
    out.assert_failure_containing("RUN true");
}

#[test]
fn build_files_that_are_devices_or_not_utf8_are_refused() {
    let sb = Sandbox::new();
    let ctx = sb.new_context("files").file("Dockerfile", "FROM scratch\n").build();
    let out = sb.kiln().build().arg("-f").arg("/dev/zero").arg(&ctx).timeout(Duration::from_secs(60)).run();
    out.assert_failure_containing("Dockerfile /dev/zero: is a device, not a regular file");
    let plan = sb.kiln().arg("plan").arg("-f").arg("/dev/zero").arg(&ctx).timeout(Duration::from_secs(60)).run();
    plan.assert_failure_containing("is a device");

    let linked = sb.new_context("ignore-link").file("Dockerfile", "FROM scratch\nCOPY . /\n").build();
    std::os::unix::fs::symlink("/dev/urandom", linked.join(".dockerignore")).unwrap();
    let out = sb.kiln().build().arg(&linked).timeout(Duration::from_secs(60)).run();
    out.assert_failure_containing(".dockerignore");
    out.assert_failure_containing("is a device, not a regular file");

    let bad = sb.new_context("utf8").file("Dockerfile", b"FROM scratch\nLABEL a=\"x\xffy\"\n".as_slice()).build();
    let out = sb.kiln().build().arg(&bad).run();
    out.assert_failure_containing("Dockerfile:2:11: invalid UTF-8");
}
