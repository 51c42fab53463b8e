//! `kiln index create` (issue 9): per-architecture images built separately, pushed to
//! different repositories, stitched into one multi-platform index in a third.

use kiln_integration::{seed_base_images, Image, Registry, Sandbox};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

fn sha256_of(b: &[u8]) -> String {
    let h = Sha256::digest(b);
    format!("sha256:{}", h.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// Builds `ctx` for one platform and pushes it to `reference`; the manifest digest.
fn build_one(sb: &Sandbox, ctx: &std::path::Path, platform: &str, reference: &str) -> String {
    let df = sb.out_path(&format!("digest-{}.txt", platform.replace('/', "-")));
    sb.kiln()
        .build()
        .args(["--platform", platform])
        .tag(reference)
        .push()
        .arg("--digest-file")
        .arg(&df)
        .arg(ctx)
        .run()
        .assert_success();
    std::fs::read_to_string(&df).unwrap().trim().to_string()
}

#[test]
fn index_create_stitches_two_single_platform_images_from_other_repos() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb
        .new_context("app")
        .file("Dockerfile", format!("FROM {}\nCOPY hello.txt /hello.txt\n", base.multi))
        .file("hello.txt", "hello from one of two nodes\n")
        .build();

    let amd = registry.reference("nodes/app-amd64:1");
    let arm = registry.reference("nodes/app-arm64:1");
    let amd_digest = build_one(&sb, &ctx, "linux/amd64", &amd);
    let arm_digest = build_one(&sb, &ctx, "linux/arm64", &arm);
    assert_ne!(amd_digest, arm_digest);

    let target = registry.reference("release/app:1");
    let digest_file = sb.out_path("index-digest.txt");
    let mark = registry.log_mark();
    let out = sb
        .kiln()
        .args(["index", "create", &target, "--from", &amd, "--from", &arm, "--digest-file"])
        .arg(&digest_file)
        .run();
    out.assert_success();
    let printed = out.stdout.trim().to_string();
    let raw = registry.manifest_raw("release/app", "1");
    assert_eq!(printed, sha256_of(&raw), "printed digest is the pushed index's\n{out}");
    assert_eq!(std::fs::read_to_string(&digest_file).unwrap().trim(), printed);

    let index: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index:#}");
    for (arch, digest) in [("amd64", &amd_digest), ("arm64", &arm_digest)] {
        let e = entries
            .iter()
            .find(|e| e["platform"]["architecture"] == arch)
            .unwrap_or_else(|| panic!("no {arch} entry in {index:#}"));
        assert_eq!(e["platform"]["os"], "linux");
        assert_eq!(e["digest"].as_str().unwrap(), digest.as_str(), "{arch} entry names the built manifest");
        // The platform manifest exists in the index's own repository (copied by digest).
        let m = registry.manifest_raw("release/app", digest);
        assert_eq!(sha256_of(&m), *digest);
        assert_eq!(e["size"].as_u64().unwrap(), m.len() as u64);
        let mv: Value = serde_json::from_slice(&m).unwrap();
        for l in mv["layers"].as_array().unwrap().iter().chain([&mv["config"]]) {
            let d = l["digest"].as_str().unwrap();
            assert!(registry.has_blob("release/app", d), "{d} mounted into release/app");
            assert!(registry.blob_uploads_since(mark, d).is_empty(), "{d} was uploaded, not mounted");
        }
        // Each platform pulls back with its architecture; the variant comes from the config.
        let img = Image::pull_platform(&target, Some(arch));
        assert_eq!(img.manifest_digest, *digest);
        assert_eq!(img.config["architecture"], arch);
        assert_eq!(e["platform"]["variant"], img.config["variant"], "variant from the config");
        assert_eq!(img.tree.node("/hello.txt").text(), "hello from one of two nodes\n");
    }

    // An index as a source contributes its platform manifests: the same index again.
    let again = registry.reference("release/app:again");
    let out = sb.kiln().args(["index", "create", &again, "--from", &target]).run();
    out.assert_success();
    assert_eq!(out.stdout.trim(), printed, "re-indexing an index gives the same bytes\n{out}");

    // Two images of one platform cannot share an index.
    let out = sb.kiln().args(["index", "create", &registry.reference("release/app:bad"), "--from", &amd, "--from", &base.latest]).run();
    out.assert_failure_containing("linux/amd64");
    assert!(registry.tags("release/app").iter().all(|t| t != "bad"));
}

#[test]
fn index_create_names_a_missing_source() {
    let registry = Registry::start();
    let sb = Sandbox::new();
    let missing = registry.reference("nowhere/app:1");
    let out = sb.kiln().args(["index", "create", &registry.reference("x/y:1"), "--from", &missing]).run();
    out.assert_failure_containing("nowhere/app");
}

#[test]
fn index_create_copies_platform_manifests_from_another_registry() {
    let src = Registry::start();
    let base = seed_base_images(&src);
    let dst = Registry::start();
    let sb = Sandbox::new();
    let ctx = sb
        .new_context("app")
        .file("Dockerfile", format!("FROM {}\nCOPY hello.txt /hello.txt\n", base.multi))
        .file("hello.txt", "across registries\n")
        .build();
    let amd = src.reference("nodes/app:amd64");
    let arm = src.reference("nodes/app:arm64");
    let amd_digest = build_one(&sb, &ctx, "linux/amd64", &amd);
    let arm_digest = build_one(&sb, &ctx, "linux/arm64", &arm);

    let target = dst.reference("mirror/app:1");
    let out = sb.kiln().args(["index", "create", &target, "--from", &amd, "--from", &arm]).run();
    out.assert_success();
    let raw = dst.manifest_raw("mirror/app", "1");
    assert_eq!(out.stdout.trim(), sha256_of(&raw));
    let index: Value = serde_json::from_slice(&raw).unwrap();
    let mut digests: Vec<&str> = index["manifests"].as_array().unwrap().iter().map(|e| e["digest"].as_str().unwrap()).collect();
    digests.sort();
    let mut want = vec![amd_digest.as_str(), arm_digest.as_str()];
    want.sort();
    assert_eq!(digests, want);
    for arch in ["amd64", "arm64"] {
        let img = Image::pull_platform(&target, Some(arch));
        assert_eq!(img.config["architecture"], arch);
        assert_eq!(img.tree.node("/hello.txt").text(), "across registries\n");
    }
}
