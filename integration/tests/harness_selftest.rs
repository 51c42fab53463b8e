//! The harness's own pieces, without kiln: registry, seeding, image reader,
//! sandbox/user plumbing. These must pass on a machine set up by
//! scripts/setup.sh even before kiln can build anything.

use kiln_integration::{seed_base_images, Image, Kind, Registry, Sandbox};

#[test]
fn registry_seed_and_read_back_base_image() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    assert_eq!(base.layer_digests.len(), 1, "busybox base has one layer");

    let img = Image::pull(&base.latest);
    img.assert_consistent();
    assert_eq!(img.layer_digests(), base.layer_digests, "pulled layers = registry manifest layers");
    let tree = &img.tree;
    tree.assert_entry("/bin/busybox", Kind::File, 0o755, 0, 0);
    assert!(tree.node("/bin/busybox").size > 500_000, "busybox is the real binary");
    let sh = tree.assert_entry("/bin/sh", Kind::Symlink, 0o777, 0, 0);
    assert_eq!(sh.link.as_deref(), Some("/bin/busybox"));
    tree.assert_entry("/tmp", Kind::Dir, 0o1777, 0, 0);
    tree.assert_entry("/root", Kind::Dir, 0o700, 0, 0);
    tree.assert_entry("/home/app", Kind::Dir, 0o755, 1000, 1000);
    for d in ["/dev", "/proc", "/sys"] {
        tree.assert_entry(d, Kind::Dir, 0o755, 0, 0);
        assert!(tree.children_of(d).is_empty(), "{d} is empty in the base");
    }
    let passwd = tree.node("/etc/passwd").text();
    for u in ["root:x:0:0:", "app:x:1000:1000:", "nobody:x:65534:65534:"] {
        assert!(passwd.contains(u), "/etc/passwd lacks {u}: {passwd}");
    }
    assert!(tree.node("/etc/group").text().contains("app:x:1000:"));

    assert_eq!(img.config["architecture"], "amd64");
    assert_eq!(img.config["os"], "linux");
    assert_eq!(
        img.env(),
        ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    );
    assert_eq!(img.cfg()["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(img.history().len(), 1);

    // arm64 tag
    let arm = Image::pull_platform(&base.arm64, Some("arm64"));
    assert_eq!(arm.config["architecture"], "arm64");
    arm.tree.assert_entry("/bin/busybox", Kind::File, 0o755, 0, 0);
    assert_ne!(
        arm.tree.node("/bin/busybox").sha256,
        tree.node("/bin/busybox").sha256,
        "arm64 busybox differs from amd64"
    );

    // multi: an OCI index with amd64 and arm64 manifests, the same as the tags
    let idx = registry.manifest("base/busybox", "multi");
    assert_eq!(idx["mediaType"], "application/vnd.oci.image.index.v1+json", "{idx}");
    let ms = idx["manifests"].as_array().unwrap();
    let arch_of = |a: &str| {
        ms.iter()
            .find(|m| m["platform"]["architecture"] == a && m["platform"]["os"] == "linux")
            .unwrap_or_else(|| panic!("no linux/{a} in {idx}"))["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(ms.len(), 2);
    assert_eq!(arch_of("amd64"), img.manifest_digest);
    assert_eq!(arch_of("arm64"), arm.manifest_digest);
    // registry has every blob of the arm64 image in the repository
    for d in arm.layer_digests() {
        assert!(registry.has_blob("base/busybox", &d), "{d} missing");
    }
}

#[test]
fn seeding_is_idempotent_and_registries_are_independent() {
    let r1 = Registry::start();
    let r2 = Registry::start();
    assert_ne!(r1.port(), r2.port());
    let b1 = seed_base_images(&r1);
    let again = seed_base_images(&r1);
    let b2 = seed_base_images(&r2);
    let raw = |r: &Registry, t: &str| r.manifest_raw("base/busybox", t);
    assert_eq!(b1.manifest, again.manifest);
    assert_eq!(raw(&r1, "latest"), raw(&r2, "latest"), "same bytes in both registries");
    assert_eq!(raw(&r1, "multi"), raw(&r2, "multi"));
    assert_eq!(b1.layer_digests, b2.layer_digests);
    assert_eq!(r1.tags("base/busybox").len(), 3, "{:?}", r1.tags("base/busybox"));
    assert!(r1.tags("nothing/here").is_empty());
}

#[test]
fn sandbox_runs_commands_as_the_build_user() {
    let sb = Sandbox::new();
    let registry_host = "127.0.0.1:45678";
    let ctx = sb.context_with_host("hello", registry_host);
    let df = std::fs::read_to_string(ctx.join("Dockerfile")).unwrap();
    assert!(df.starts_with(&format!("FROM {registry_host}/base/busybox:latest\n")), "{df}");
    assert!(!df.contains("127.0.0.1:5000"));

    let out = kiln_integration::run_with_timeout(
        sb.user_command("/bin/sh").arg("-c").arg(
            "id -u; echo $HOME; cat \"$1/hello.txt\"; touch \"$HOME/w\" && echo writable",
        ).arg("sh").arg(&ctx),
        std::time::Duration::from_secs(30),
    );
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], sb.user.uid.to_string(), "{out}");
    assert_eq!(lines[1], sb.home().to_str().unwrap());
    assert_eq!(lines[2], "hello from kiln");
    assert_eq!(lines[3], "writable");

    // a user namespace with the subuid range works for this user (newuidmap)
    let out = kiln_integration::run_with_timeout(
        sb.user_command("/usr/bin/unshare")
            .args(["--user", "--map-root-user", "--map-auto", "cat", "/proc/self/uid_map"]),
        std::time::Duration::from_secs(30),
    );
    out.assert_success();
    let maps: Vec<Vec<u64>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().map(|n| n.parse().unwrap()).collect())
        .collect();
    assert_eq!(maps[0], [0, sb.user.uid as u64, 1], "{out}");
    assert!(maps.iter().any(|m| m[0] == 1 && m[2] >= 65535), "subuid range not mapped\n{out}");

    let ctx2 = sb
        .new_context("inline")
        .file("Dockerfile", "FROM scratch\nCOPY a /a\n")
        .file("a", "x")
        .build();
    assert!(ctx2.join("a").is_file());
}

#[test]
fn make_busybox_image_is_reproducible() {
    // Two builds of the same package and SOURCE_DATE_EPOCH: identical bytes.
    let script = kiln_integration::repo_root().join("testdata/scripts/make-busybox-image.sh");
    let dir = tempfile::tempdir().unwrap();
    let mut digests = Vec::new();
    for n in ["one", "two"] {
        let out_dir = dir.path().join(n);
        let out = kiln_integration::run_with_timeout(
            std::process::Command::new("bash").arg(&script).arg("amd64").arg(&out_dir),
            std::time::Duration::from_secs(120),
        );
        out.assert_success();
        digests.push(std::fs::read(out_dir.join("index.json")).unwrap());
        let img = Image::from_layout(&out_dir, Some("latest"));
        img.assert_consistent();
        img.tree.assert_entry("/bin/busybox", Kind::File, 0o755, 0, 0);
    }
    assert_eq!(digests[0], digests[1], "index.json (hence manifest digest) differs between builds");
}

#[test]
fn registry_with_basic_auth() {
    let registry = Registry::start_with_auth("kiln", "s3cret-pass");
    let anon = kiln_integration::http::get(&registry.host(), "/v2/", &[]).unwrap();
    assert_eq!(anon.status, 401);
    let auth = registry.basic_auth_header().unwrap();
    assert_eq!(auth, "Basic a2lsbjpzM2NyZXQtcGFzcw==");
    let ok = kiln_integration::http::get(&registry.host(), "/v2/", &[("Authorization", &auth)]).unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(registry.tags("base/busybox").is_empty());
    let base = seed_base_images(&registry);
    assert_eq!(registry.tags("base/busybox").len(), 3);
    let img = Image::pull_from(&registry, "base/busybox:latest");
    assert_eq!(img.layer_digests(), base.layer_digests);
}

/// No file of a copied case may still name the default registry address: a case
/// must build against the test's own registry, never one that happens to run on
/// 127.0.0.1:5000 on a developer's machine (CI once failed on a `-f x.Dockerfile`
/// that the rewrite missed). expect.json is rewritten when loaded instead.
#[test]
fn copied_cases_name_only_the_test_registry() {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                walk(&p, out);
            } else if md.is_file() && p.file_name().is_some_and(|n| n != "expect.json") {
                out.push(p);
            }
        }
    }
    let sb = Sandbox::new();
    let mut stale = Vec::new();
    let names = kiln_integration::cases::all_case_names();
    assert!(names.len() > 50, "{names:?}");
    for case in names {
        let ctx = sb.context_with_host(&case, "127.0.0.1:45678");
        let mut files = Vec::new();
        walk(&ctx, &mut files);
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            if bytes.windows(14).any(|w| w == b"127.0.0.1:5000") {
                stale.push(f.display().to_string());
            }
        }
    }
    assert!(stale.is_empty(), "still naming 127.0.0.1:5000 after the rewrite: {stale:#?}");
}
