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
    layout_with(dir, config, &[]);
}

/// A layout whose image has these uncompressed tar layers (diff_ids set from them).
fn layout_with(dir: &Path, config: &serde_json::Value, layers: &[Vec<u8>]) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = Image::digest_of(bytes);
        fs::write(blobs.join(d.trim_start_matches("sha256:")), bytes).unwrap();
        (d, bytes.len())
    };
    let mut config = config.clone();
    let mut descs = Vec::new();
    for l in layers {
        let (d, n) = put(l);
        config["rootfs"]["diff_ids"].as_array_mut().unwrap().push(d.clone().into());
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n}));
    }
    let (cd, cl) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cl}, "layers": descs});
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

/// A base layer's setuid file owned by a uid outside the build's 65536-id map
/// (70000) must not become a setuid *root* file in what kiln writes; one of a
/// mapped owner keeps its bits.
#[test]
fn an_unmappable_owner_never_becomes_setuid_root() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let tar = sb.path().join("layer.tar");
    let py = "import io, sys, tarfile\n\
              with tarfile.open(sys.argv[1], 'w', format=tarfile.PAX_FORMAT) as t:\n\
              \x20   for name, uid in (('bin', 0),):\n\
              \x20       d = tarfile.TarInfo(name); d.type = tarfile.DIRTYPE; d.mode = 0o755; t.addfile(d)\n\
              \x20   for name, uid in (('bin/su', 70000), ('bin/ok', 1000)):\n\
              \x20       f = tarfile.TarInfo(name); f.mode = 0o4755; f.uid = f.gid = uid; f.size = 3\n\
              \x20       t.addfile(f, io.BytesIO(b'su\\n'))\n";
    let st = std::process::Command::new("python3").arg("-c").arg(py).arg(&tar).status().unwrap();
    assert!(st.success());
    let base = sb.path().join("hostile-layout");
    layout_with(&base, &serde_json::json!({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}), &[fs::read(&tar).unwrap()]);
    sb.user.chown_tree(&base);
    let df = format!("FROM {}/base/busybox:latest\nCOPY --from=hostile /bin/ /hostile/\n", registry.host());
    let ctx = sb.new_context("unmapped").file("Dockerfile", df).build();
    let layout = sb.out_path("out");
    let out = sb
        .kiln()
        .build()
        .arg("--build-context")
        .arg(format!("hostile=oci-layout://{}:t", base.display()))
        .arg("--output")
        .arg(format!("type=oci,dest={}", layout.display()))
        .arg(&ctx)
        .run();
    out.assert_success();
    out.assert_output_contains("bin/su: setuid/setgid dropped");
    let image = Image::from_layout(&layout, None);
    let su = image.tree.node("/hostile/su");
    assert_eq!(su.mode & 0o6000, 0, "an unmappable owner's setuid file became setuid {}:{} (mode {:o})", su.uid, su.gid, su.mode);
    let ok = image.tree.node("/hostile/ok");
    assert_eq!((ok.mode, ok.uid, ok.gid), (0o4755, 1000, 1000), "a mapped owner keeps its setuid file");
}
