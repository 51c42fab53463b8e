//! End-to-end: a stage that only adds files onto a base (COPY, ADD, WORKDIR) runs on
//! the base's skeletons (issue 18 part 2: `kiln_snapshotter::skeleton`) and never
//! unpacks it, and the image is byte for byte the one the unpacking way gives
//! (`KILN_UNPACK_FREE=0`), on a real Debian base (merged /usr: `/bin -> usr/bin`,
//! `/etc/passwd` with `nobody`, `_apt`). A step that replaces a file of the base, and
//! a RUN, unpack the base when they are reached.

use kiln_integration::{registry::seed_debian_image, Image, Kind, Registry, Sandbox};

const EPOCH: &str = "1700000000";

/// Build `ctx` in a fresh sandbox; `unpack_free` false forces the unpacking way.
fn build(ctx_files: &[(&str, &str)], dockerfile: &str, unpack_free: bool) -> (Image, Sandbox) {
    let sb = Sandbox::new();
    let mut c = sb.new_context("app").file("Dockerfile", dockerfile);
    for (p, body) in ctx_files {
        c = c.file(p, body);
    }
    let ctx = c.build();
    let out = sb.out_path("oci");
    let mut cmd = sb.kiln().build().output_oci(&out).env("SOURCE_DATE_EPOCH", EPOCH).env("RUST_LOG", "kiln=debug");
    if !unpack_free {
        cmd = cmd.env("KILN_UNPACK_FREE", "0");
    }
    let run = cmd.arg(&ctx).run();
    run.assert_success();
    let img = Image::from_layout(&out, None);
    img.assert_consistent();
    (img, sb)
}

/// Base layers (by diffID) that have an unpacked snapshot in `sb`'s store.
fn unpacked_base_layers(sb: &Sandbox, base: &Image) -> Vec<String> {
    let layers = sb.kiln_root().join("snapshots/layers");
    let names: Vec<String> = std::fs::read_dir(&layers)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    base.config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().trim_start_matches("sha256:").to_string())
        .filter(|hex| names.iter().any(|n| n.starts_with(hex.as_str())))
        .collect()
}

fn skeletons(sb: &Sandbox) -> usize {
    let dir = sb.kiln_root().join("snapshots/skeletons");
    std::fs::read_dir(&dir).map(|d| d.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()).count()).unwrap_or(0)
}

fn files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("app.py", "print('hello')\n"),
        ("tool", "#!/bin/sh\necho tool\n"),
        ("hello", "#!/bin/sh\necho hello\n"),
        ("data/a.txt", "a\n"),
        ("data/sub/b.txt", "b\n"),
        ("etcfiles/myapp/app.conf", "x=1\n"),
        ("etcfiles/apt/apt.conf.d/99kiln", "APT::Install-Recommends \"false\";\n"),
        ("secret.sh", "#!/bin/sh\n"),
    ]
}

#[test]
fn copy_only_stage_is_byte_identical_without_unpacking_the_base() {
    let registry = Registry::start();
    let base_ref = seed_debian_image(&registry);
    let base = Image::pull_from(&registry, "base/debian:bookworm");
    assert!(base.layers.len() >= 1);
    let dockerfile = format!(
        "FROM {base_ref}\n\
         COPY app.py /app/\n\
         COPY tool /usr/local/bin/\n\
         COPY --chown=nobody:nogroup data/ /srv/data/\n\
         COPY etcfiles/ /etc/\n\
         COPY hello /bin/hello\n\
         WORKDIR /opt/work\n\
         USER _apt\n\
         WORKDIR /home/apt-work\n\
         WORKDIR /usr\n\
         COPY --chmod=0700 secret.sh /usr/local/sbin/\n\
         CMD [\"python3\", \"/app/app.py\"]\n"
    );
    let (unpacked, sb_a) = build(&files(), &dockerfile, false);
    let (free, sb_b) = build(&files(), &dockerfile, true);
    assert!(!unpacked_base_layers(&sb_a, &base).is_empty(), "the unpacking way unpacks the base");
    assert_eq!(unpacked_base_layers(&sb_b, &base), Vec::<String>::new(), "the base was unpacked");
    assert!(skeletons(&sb_b) >= base.layers.len(), "no skeleton per base layer");
    assert_eq!(free.manifest_digest, unpacked.manifest_digest, "images differ:\n{}\n---\n{}", free.tree.listing(), unpacked.tree.listing());

    // What the steps did, seen in the image: through the /bin symlink, owners from
    // the base's /etc/passwd, into existing and new directories.
    let t = &free.tree;
    t.assert_file("/usr/bin/hello", 0o644, 0, 0, "#!/bin/sh\necho hello\n");
    t.assert_entry("/srv/data/sub/b.txt", Kind::File, 0o644, 65534, 65534);
    t.assert_file("/etc/apt/apt.conf.d/99kiln", 0o644, 0, 0, "APT::Install-Recommends \"false\";\n");
    t.assert_entry("/usr/local/sbin/secret.sh", Kind::File, 0o700, 0, 0);
    let apt_uid = t.node("/home/apt-work").uid;
    assert_ne!(apt_uid, 0, "WORKDIR as USER _apt is owned by _apt");
    assert!(t.contains("/usr/bin/python3") || t.contains("/usr/bin/sh"), "the base is still there");
}

#[test]
fn replacing_a_file_of_the_base_unpacks_it_and_gives_the_same_image() {
    let registry = Registry::start();
    let base_ref = seed_debian_image(&registry);
    let base = Image::pull_from(&registry, "base/debian:bookworm");
    let dockerfile = format!("FROM {base_ref}\nCOPY app.py /app/\nCOPY version /etc/debian_version\n");
    let ctx = [("app.py", "print(1)\n"), ("version", "kiln\n")];
    let (unpacked, _a) = build(&ctx, &dockerfile, false);
    let (free, sb_b) = build(&ctx, &dockerfile, true);
    assert_eq!(free.manifest_digest, unpacked.manifest_digest);
    free.tree.assert_file("/etc/debian_version", 0o644, 0, 0, "kiln\n");
    assert!(!unpacked_base_layers(&sb_b, &base).is_empty(), "a file of the base was replaced on a skeleton");
}

#[test]
fn a_run_after_copy_only_steps_unpacks_when_reached() {
    let registry = Registry::start();
    let base_ref = seed_debian_image(&registry);
    let dockerfile = format!(
        "FROM {base_ref} AS files\nCOPY app.py /app/\nWORKDIR /app\n\
         FROM files\nRUN cat /app/app.py /etc/debian_version > /app/seen\n"
    );
    let ctx = [("app.py", "print(2)\n")];
    let (unpacked, _a) = build(&ctx, &dockerfile, false);
    let (free, _b) = build(&ctx, &dockerfile, true);
    assert_eq!(free.manifest_digest, unpacked.manifest_digest);
    let seen = free.tree.node("/app/seen").text();
    assert!(seen.starts_with("print(2)\n") && seen.len() > 9, "{seen:?}");
}

/// Issue 18's fresh runner: the skeletons travel in the registry cache, so a runner
/// with nothing local builds a COPY-only stage and pushes it without one byte of the
/// base: no base blob is fetched (registry access log) or stored, the push mounts
/// them, and the image is the unpacking way's. The runner that primed the cache read
/// the base as it downloaded and stored none of it either.
#[test]
fn a_fresh_runner_takes_skeletons_from_the_registry_cache_and_never_pulls_the_base() {
    let registry = Registry::start();
    let base_ref = seed_debian_image(&registry);
    let base = Image::pull_from(&registry, "base/debian:bookworm");
    let cache = registry.reference("uf/app:cache");
    let dockerfile = format!("FROM {base_ref}\nCOPY app.py /app/\nWORKDIR /app\nCOPY --chown=nobody data/ /srv/data/\n");
    let run = |version: &str, tag: &str, flags: &[String], unpack_free: bool| {
        let sb = Sandbox::new();
        let ctx = sb
            .new_context("app")
            .file("Dockerfile", &dockerfile)
            .file("app.py", format!("print({version:?})\n"))
            .file("data/d.txt", "d\n")
            .build();
        let mut cmd = sb
            .kiln()
            .build()
            .tag(&registry.reference(tag))
            .push()
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(flags);
        if !unpack_free {
            cmd = cmd.env("KILN_UNPACK_FREE", "0");
        }
        let out = cmd.arg(&ctx).run();
        out.assert_success();
        sb
    };
    let from = vec!["--cache-from".to_string(), format!("type=registry,ref={cache}")];
    let mut to = from.clone();
    to.extend(["--cache-to".to_string(), format!("type=registry,ref={cache}")]);
    // Runner A: the base is read once, as it downloads, for its skeletons, which go
    // into the cache (mode=min); it is never written to disk (the push mounts it).
    let mark = registry.log_mark();
    let a = run("v1", "uf/app:1", &to, true);
    let log = registry.log_since(mark);
    for l in &base.layers {
        let hex = l.digest.trim_start_matches("sha256:");
        assert!(log.contains(&format!("/blobs/{}", l.digest)), "runner A did not read base layer {hex}:\n{log}");
        assert!(!a.kiln_root().join("content/blobs/sha256").join(hex).exists(), "base layer {hex} written on runner A");
    }

    let mark = registry.log_mark();
    let b = run("v2", "uf/app:2", &from, true);
    let log = registry.log_since(mark);
    for l in &base.layers {
        let fetched = log.lines().any(|line| {
            (line.contains("\"GET /v2/") || line.contains("method=GET")) && line.contains(&format!("/blobs/{}", l.digest))
        });
        assert!(!fetched, "runner B fetched base layer {}:\n{log}", l.digest);
        let hex = l.digest.trim_start_matches("sha256:");
        assert!(!b.kiln_root().join("content/blobs/sha256").join(hex).exists(), "base layer {hex} written on runner B");
    }
    assert!(unpacked_base_layers(&b, &base).is_empty());

    // The same build the unpacking way, from nothing: the same image.
    let _c = run("v2", "uf/app:3", &[], false);
    let (two, three) = (Image::pull_from(&registry, "uf/app:2"), Image::pull_from(&registry, "uf/app:3"));
    assert_eq!(two.manifest_digest, three.manifest_digest);
    two.tree.assert_file("/app/app.py", 0o644, 0, 0, "print(\"v2\")\n");
    assert_eq!(two.tree.node("/srv/data/d.txt").uid, 65534, "--chown=nobody from the base's /etc/passwd");
    assert!(two.tree.contains("/etc/debian_version"), "the base layers are in the pushed image");
}

/// The base of a COPY-only stage that a later RUN builds on is read once: the
/// skeleton's read keeps the blob as it streams (`lazy::skeleton_reads_stay_remote`
/// is false with a RUN in the build), and the RUN's unpack reads it from the store.
#[test]
fn a_base_under_copy_and_then_run_is_downloaded_once() {
    let registry = Registry::start();
    let base_ref = seed_debian_image(&registry);
    let base = Image::pull_from(&registry, "base/debian:bookworm");
    let sb = Sandbox::new();
    let ctx = sb
        .new_context("app")
        .file("Dockerfile", format!("FROM {base_ref} AS files\nCOPY app.py /app/\nFROM files\nRUN cat /app/app.py > /app/seen\n"))
        .file("app.py", "print(3)\n")
        .build();
    let mark = registry.log_mark();
    sb.kiln().build().tag(&registry.reference("uf/run:1")).push().arg(&ctx).run().assert_success();
    let log = registry.log_since(mark);
    for l in &base.layers {
        let gets = log
            .lines()
            // distribution's access-log line, one per request
            .filter(|line| line.contains("\"GET /v2/") && line.contains(&format!("/blobs/{}", l.digest)))
            .count();
        assert_eq!(gets, 1, "base layer {} fetched {gets} times:\n{log}", l.digest);
    }
    Image::pull_from(&registry, "uf/run:1").tree.assert_file("/app/seen", 0o644, 0, 0, "print(3)\n");
}

