//! End-to-end: what the snapshotter puts into layers, through `kiln build` as the
//! unprivileged user, for `--snapshotter overlay` and `--snapshotter native` and the
//! layer compressions: whiteouts (a base file removed), opaque directories (a
//! directory removed and made again), hardlinks (a chown of one name seen on all),
//! ownership and mode bits (setuid/setgid), no mount stubs; and reproducibility
//! (`SOURCE_DATE_EPOCH`: same manifest digest twice, and overlay = native).

use kiln_integration::{seed_base_images, Image, Kind, Registry, Sandbox};

const RUN1: &str = "RUN mkdir -p /data/sub && echo one > /data/one && echo two > /data/sub/two \
    && echo linked > /data/a && ln /data/a /data/b && echo s > /data/suid && chmod 4755 /data/suid";
const RUN2: &str = "RUN rm /usr/bin/wget /etc/group && rm -r /usr/sbin && mkdir /usr/sbin \
    && echo new > /usr/sbin/new && rm -r /data/sub && chown 1000:1000 /data/a && chmod 2750 /data/one \
    && echo fresh > /tmp/f && chown 1000:1000 /tmp/f && chmod 0600 /tmp/f";

fn dockerfile(registry: &Registry) -> String {
    format!("FROM {}/base/busybox:latest\n{RUN1}\n{RUN2}\n", registry.host())
}

/// Build the case with the given flags into an OCI layout and read it back.
#[track_caller]
fn build(sb: &Sandbox, registry: &Registry, name: &str, flags: &[&str], epoch: Option<&str>) -> Image {
    let ctx = sb.new_context(name).file("Dockerfile", dockerfile(registry)).build();
    let dest = sb.out_path(&format!("{name}-oci"));
    let mut cmd = sb.kiln().build().args(flags).output_oci(&dest).arg(&ctx);
    if let Some(e) = epoch {
        cmd = cmd.env("SOURCE_DATE_EPOCH", e);
    }
    let out = cmd.run();
    out.assert_success();
    assert!(!out.stderr.contains("native snapshotter") || flags.contains(&"native"), "unexpected fallback\n{out}");
    Image::from_layout(&dest, None)
}

#[track_caller]
fn check_image(img: &Image, n_base: usize, media_type: &str) {
    img.assert_consistent();
    assert_eq!(img.layers.len(), n_base + 2, "base + 2 RUN layers: {:#}", img.manifest);
    for l in &img.layers[n_base..] {
        assert_eq!(l.media_type, media_type, "layer {}", l.digest);
    }
    let t = &img.tree;
    // whiteouts of base files
    t.assert_absent("/usr/bin/wget");
    t.assert_absent("/etc/group");
    t.assert_entry("/etc/passwd", Kind::File, 0o644, 0, 0);
    // a directory removed and made again: opaque, only the new child
    t.assert_entry("/usr/sbin", Kind::Dir, 0o755, 0, 0);
    assert_eq!(t.children_of("/usr/sbin"), ["/usr/sbin/new"], "{}", t.listing_without_applets());
    t.assert_file("/usr/sbin/new", 0o644, 0, 0, "new\n");
    t.assert_absent("/data/sub");
    t.assert_absent("/data/sub/two");
    // ownership and mode bits
    t.assert_file("/data/suid", 0o4755, 0, 0, "s\n");
    t.assert_file("/data/one", 0o2750, 0, 0, "one\n");
    t.assert_file("/tmp/f", 0o600, 1000, 1000, "fresh\n");
    t.assert_entry("/tmp", Kind::Dir, 0o1777, 0, 0);
    // the chown of /data/a (made in the RUN before) shows on /data/b too, and they
    // stay one file
    let a = t.node("/data/a");
    let b = t.node("/data/b");
    assert_eq!((a.uid, a.gid, b.uid, b.gid), (1000, 1000, 1000, 1000), "a: {a}\nb: {b}");
    assert_eq!(a.text(), "linked\n");
    assert_eq!(b.text(), "linked\n");
    assert!(
        matches!(&b.kind, Kind::Hardlink(x) if x == "/data/a") || matches!(&a.kind, Kind::Hardlink(x) if x == "/data/b"),
        "/data/a and /data/b must stay hardlinked: a {a}, b {b}"
    );
    let last = &img.layers[n_base + 1].entries;
    for e in ["/etc/.wh.group", "/usr/bin/.wh.wget", "/usr/sbin/.wh..wh..opq", "/data/.wh.sub"] {
        assert!(last.contains(&e.to_string()), "last layer lacks {e}: {last:#?}");
    }
    // no mount stubs, no overlay bookkeeping
    for p in ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run"] {
        t.assert_absent(p);
    }
    for l in &img.layers[n_base..] {
        assert!(
            !l.entries.iter().any(|e| e.starts_with("/proc/") || e.starts_with("/dev/") || e.starts_with("/sys/")),
            "mount stub content in {}: {:#?}",
            l.digest,
            l.entries
        );
    }
    for (path, node) in &t.0 {
        assert!(!node.xattrs.keys().any(|k| k.contains("overlay.")), "{path}: overlay xattr leaked: {node}");
    }
}

fn case(flags: &[&str], media_type: &str) {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let img = build(&sb, &registry, "fs", flags, None);
    check_image(&img, base.layer_digests.len(), media_type);
}

#[test]
fn overlay_gzip() {
    case(&["--snapshotter", "overlay"], "application/vnd.oci.image.layer.v1.tar+gzip");
}

#[test]
fn native_gzip() {
    case(&["--snapshotter", "native"], "application/vnd.oci.image.layer.v1.tar+gzip");
}

#[test]
fn overlay_zstd() {
    case(&["--snapshotter", "overlay", "--compression", "zstd", "--compression-level", "9"], "application/vnd.oci.image.layer.v1.tar+zstd");
}

#[test]
fn native_zstd() {
    case(&["--snapshotter", "native", "--compression", "zstd"], "application/vnd.oci.image.layer.v1.tar+zstd");
}

#[test]
fn native_uncompressed() {
    case(&["--snapshotter", "native", "--compression", "none"], "application/vnd.oci.image.layer.v1.tar");
}

#[test]
fn auto_uses_overlay_here_and_pushes_zstd() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.new_context("auto").file("Dockerfile", dockerfile(&registry)).build();
    let reference = registry.reference("demo/snap:zstd");
    let out = sb.kiln().build().args(["--compression", "zstd"]).tag(&reference).push().arg(&ctx).run();
    out.assert_success();
    assert!(!out.stderr.contains("native snapshotter"), "overlay works here; no fallback expected\n{out}");
    let img = Image::pull(&reference);
    check_image(&img, base.layer_digests.len(), "application/vnd.oci.image.layer.v1.tar+zstd");
}

#[test]
fn bad_flags_are_named() {
    let sb = Sandbox::new();
    let ctx = sb.new_context("flags").file("Dockerfile", "FROM scratch\n").build();
    let out = sb.kiln().build().args(["--snapshotter", "btrfs"]).arg(&ctx).run();
    out.assert_failure_containing("--snapshotter");
    let out = sb.kiln().build().args(["--compression", "lz4"]).arg(&ctx).run();
    out.assert_failure_containing("--compression");
    let out = sb.kiln().build().args(["--compression", "gzip", "--compression-level", "12"]).arg(&ctx).run();
    out.assert_failure_containing("--compression-level");
}

/// Same Dockerfile, SOURCE_DATE_EPOCH set: the same manifest digest twice (fresh
/// state each time), and the same with the native snapshotter as with overlay.
#[test]
fn source_date_epoch_builds_are_bit_identical_across_runs_and_snapshotters() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let epoch = Some("1700000000");
    let digest = |snap: &str, n: usize| {
        let sb = Sandbox::new(); // fresh KILN_ROOT: nothing cached
        let img = build(&sb, &registry, &format!("repro-{snap}-{n}"), &["--snapshotter", snap], epoch);
        check_image(&img, base.layer_digests.len(), "application/vnd.oci.image.layer.v1.tar+gzip");
        assert_eq!(img.config["created"], "2023-11-14T22:13:20Z", "created comes from SOURCE_DATE_EPOCH");
        (img.manifest_digest.clone(), img.layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>())
    };
    let o1 = digest("overlay", 1);
    let o2 = digest("overlay", 2);
    assert_eq!(o1, o2, "two overlay builds differ");
    let n1 = digest("native", 1);
    assert_eq!(o1, n1, "native and overlay builds differ");
}

/// /etc/hostname is a mount target like /etc/hosts: the step reads the generated
/// file, and neither it nor the stub reaches the layer (both snapshotters).
#[test]
fn etc_hostname_is_bound_and_left_out() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    for snap in ["overlay", "native"] {
        let df = format!(
            "FROM {}/base/busybox:latest\nRUN cat /etc/hostname > /hn && hostname > /hn2 && cat /etc/hosts > /h\n",
            registry.host()
        );
        let ctx = sb.new_context(&format!("hn-{snap}")).file("Dockerfile", df).build();
        let dest = sb.out_path(&format!("hn-{snap}-oci"));
        let out = sb.kiln().build().args(["--snapshotter", snap]).output_oci(&dest).arg(&ctx).run();
        out.assert_success();
        let img = Image::from_layout(&dest, None);
        let t = &img.tree;
        // BuildKit's sandbox hostname and /etc/hosts (executor/oci/hosts.go)
        t.assert_file("/hn", 0o644, 0, 0, "buildkitsandbox\n");
        t.assert_file("/hn2", 0o644, 0, 0, "buildkitsandbox\n");
        t.assert_file("/h", 0o644, 0, 0, "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        for p in ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"] {
            t.assert_absent(p);
        }
        let last = &img.layers.last().unwrap().entries;
        assert!(last.iter().all(|e| ["/hn", "/hn2", "/h"].contains(&e.as_str())), "{snap}: RUN layer has more than /hn, /hn2, /h: {last:?}");
    }
}
