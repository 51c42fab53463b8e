//! End-to-end: multi-platform builds (issue 7) as the unprivileged user.
//!
//! The base `base/busybox:multi` is an index of amd64 and arm64 busybox images
//! built from Debian's busybox-static; arm64 RUN steps execute under
//! qemu-user-static registered in binfmt_misc with the F flag (scripts/setup.sh).

use kiln_integration::{seed_base_images, Image, Registry, Sandbox};
use serde_json::Value;

fn platforms_of(index: &Value) -> Vec<String> {
    let mut v: Vec<String> = index["manifests"]
        .as_array()
        .expect("an index has manifests")
        .iter()
        .map(|m| format!("{}/{}", m["platform"]["os"].as_str().unwrap(), m["platform"]["architecture"].as_str().unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn two_platform_build_pushes_an_index_with_native_and_emulated_runs() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.context("multiarch", &registry);
    let reference = registry.reference("demo/multi:1");
    let digest_file = sb.out_path("digest.txt");
    let metadata_file = sb.out_path("metadata.json");
    let out = sb
        .kiln()
        .build()
        .args(["--platform", "linux/amd64,linux/arm64"])
        .tag(&reference)
        .push()
        .arg("--digest-file")
        .arg(&digest_file)
        .arg("--metadata-file")
        .arg(&metadata_file)
        .arg(&ctx)
        .run();
    out.assert_success();

    // The tag is an OCI index with one manifest per platform.
    let index = registry.manifest("demo/multi", "1");
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json", "{index:#}");
    assert_eq!(platforms_of(&index), ["linux/amd64", "linux/arm64"]);
    let index_digest = format!("sha256:{}", sha256_hex(&registry.manifest_raw("demo/multi", "1")));
    assert_eq!(std::fs::read_to_string(&digest_file).unwrap().trim(), index_digest, "--digest-file");
    let meta: Value = serde_json::from_slice(&std::fs::read(&metadata_file).unwrap()).unwrap();
    assert_eq!(meta["containerimage.digest"], index_digest.as_str(), "{meta:#}");
    for m in index["manifests"].as_array().unwrap() {
        let p = format!("{}/{}", m["platform"]["os"].as_str().unwrap(), m["platform"]["architecture"].as_str().unwrap());
        assert_eq!(meta["kiln.platforms"][&p], m["digest"], "metadata for {p}: {meta:#}");
        // Each platform manifest was pushed before the index.
        assert_eq!(registry.manifest("demo/multi", m["digest"].as_str().unwrap())["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    }

    let amd = Image::pull_platform(&reference, Some("amd64"));
    let arm = Image::pull_platform(&reference, Some("arm64"));
    amd.assert_consistent();
    arm.assert_consistent();
    assert_eq!(amd.config["architecture"], "amd64");
    assert_eq!(arm.config["architecture"], "arm64");
    let (ta, tr) = (&amd.tree, &arm.tree);
    // RUN in the arm64 image ran as aarch64 (under QEMU), in the amd64 one natively.
    assert_eq!(tr.node("/info/run-arch.txt").text(), "aarch64\n");
    assert_eq!(ta.node("/info/run-arch.txt").text(), "x86_64\n");
    assert_eq!(tr.node("/info/targetarch.txt").text(), "arm64\n");
    assert_eq!(ta.node("/info/targetarch.txt").text(), "amd64\n");
    // Each built from its own base variant.
    assert_ne!(ta.node("/bin/busybox").sha256, tr.node("/bin/busybox").sha256, "arm64 image must carry the arm64 busybox");
    // The builder stage ran once, on the build platform, for both targets.
    assert_eq!(ta.node("/info/builder-arch.txt").text(), "x86_64\n");
    assert_eq!(tr.node("/info/builder-arch.txt").text(), "x86_64\n");
    assert_eq!(ta.node("/info/stamp").text(), tr.node("/info/stamp").text(), "the builder stage ran twice");
    let builder_runs = out.lines_with("RUN uname -m > /builder-arch.txt").len();
    assert_eq!(builder_runs, 1, "builder RUN step announced {builder_runs} times\n{out}");
    // Same COPY --from content, owned as in the builder stage.
    ta.assert_entry("/info/stamp", kiln_integration::Kind::File, 0o644, 0, 0);
}

#[test]
fn multi_platform_oci_layout_output() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.context("multiarch", &registry);
    let dest = sb.out_path("layout");
    let out = sb.kiln().build().args(["--platform", "linux/arm64,linux/amd64"]).output_oci(&dest).arg(&ctx).run();
    out.assert_success();
    let arm = Image::from_layout_platform(&dest, None, "arm64");
    assert_eq!(arm.config["architecture"], "arm64");
    assert_eq!(arm.tree.node("/info/run-arch.txt").text(), "aarch64\n");
    let amd = Image::from_layout_platform(&dest, None, "amd64");
    assert_eq!(amd.tree.node("/info/run-arch.txt").text(), "x86_64\n");
}

/// A platform whose emulator is not registered on this machine.
fn unregistered_platform() -> &'static str {
    for (qemu, platform) in [("qemu-s390x", "linux/s390x"), ("qemu-riscv64", "linux/riscv64"), ("qemu-ppc64le", "linux/ppc64le")] {
        if !std::path::Path::new("/proc/sys/fs/binfmt_misc").join(qemu).exists() {
            return platform;
        }
    }
    panic!("every candidate emulator is registered in binfmt_misc; this test needs one that is not (s390x, riscv64 or ppc64le)");
}

#[test]
fn missing_emulator_is_a_clear_error_before_any_work() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.context("foreign-run", &registry);
    let platform = unregistered_platform();
    let out = sb.kiln().build().args(["--platform", platform]).arg(&ctx).run();
    out.assert_failure_containing(&format!("cannot run RUN steps for platform {platform}"));
    out.assert_stderr_contains("kiln binfmt --install");
    assert!(!out.stderr.contains("panicked"), "{out}");
}

#[test]
fn bad_platform_is_rejected() {
    let sb = Sandbox::new();
    let ctx = sb.new_context("p").file("Dockerfile", "FROM scratch\n").build();
    let out = sb.kiln().build().args(["--platform", "linux/sparc"]).arg(&ctx).run();
    out.assert_failure_containing("unknown architecture \"sparc\"");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(bytes))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn binfmt_lists_emulators_and_install_needs_root() {
    let sb = Sandbox::new();
    let out = sb.kiln().arg("binfmt").run();
    out.assert_success();
    // setup.sh registers qemu-aarch64 with the F flag.
    let arm = out.stdout.lines().find(|l| l.starts_with("linux/arm64")).unwrap_or_else(|| panic!("no linux/arm64 line\n{out}"));
    assert!(arm.contains("emulated (qemu-aarch64"), "{arm}");
    let native = out.stdout.lines().find(|l| l.starts_with("linux/amd64")).unwrap();
    assert!(native.contains("native"), "{native}");
    // The build user is unprivileged: registering is refused with a clear message.
    let out = sb.kiln().args(["binfmt", "--install", "s390x"]).run();
    out.assert_failure_containing("must run as root");
}

/// `kiln binfmt --install` really registers an emulator with the F flag: run it as
/// root of a fresh user namespace with its own binfmt_misc instance (kernel ≥ 6.7),
/// so the host's registrations are not touched.
#[test]
fn binfmt_install_registers_with_fix_binary_flag() {
    let sb = Sandbox::new();
    let kiln = kiln_integration::kiln_bin();
    let script = format!(
        "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && {k} binfmt --install s390x && \
         cat /proc/sys/fs/binfmt_misc/qemu-s390x && {k} binfmt",
        k = kiln.display()
    );
    let mut cmd = sb.user_command("unshare");
    cmd.args(["-Urm", "sh", "-c", &script]);
    let out = kiln_integration::run_with_timeout(&mut cmd, std::time::Duration::from_secs(60));
    assert!(out.status.success(), "{out}");
    out.assert_stdout_contains("s390x: registered qemu-s390x");
    let flags = out.stdout.lines().find(|l| l.starts_with("flags:")).unwrap_or_else(|| panic!("no flags line\n{out}"));
    assert!(flags.contains('F'), "{flags}");
    let line = out.stdout.lines().find(|l| l.starts_with("linux/s390x")).unwrap();
    assert!(line.contains("emulated (qemu-s390x"), "{line}");
}
