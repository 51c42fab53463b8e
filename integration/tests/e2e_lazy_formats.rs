//! End-to-end: `--compression estargz` and `--compression zstd:chunked` (issue 18
//! part 3). The pushed layers carry their TOC annotations on the manifest, pass the
//! format readers (snapshotter/tests/common/lazy_read.rs, written from the eStargz
//! spec and containers/storage's format), and stay plain gzip/zstd layers: skopeo
//! copies them and Buildah pulls and unpacks them to the tree of the gzip image
//! (eStargz: plus its root-level `stargz.index.json` and landmark, which the format
//! puts in the archive). The formats have their own cache key chains: a gzip build
//! after them is the first gzip build again. `--force-compression` turns the base
//! layers into the format too; BuildKit's `--output type=image,…,compression=…`
//! spelling works.

#[path = "../../snapshotter/tests/common/lazy_read.rs"]
mod lazy_read;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use kiln_integration::{registry::seed_base_images, run_with_timeout, Image, Registry, Sandbox};
use serde_json::Value;

/// A layout of `reference` copied by skopeo: the manifest and the blob of each layer.
fn copy_with_skopeo(sb: &Sandbox, reference: &str, name: &str) -> (Value, Vec<Vec<u8>>) {
    let dir = sb.out_path(name);
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--src-tls-verify=false"]).arg(format!("docker://{reference}")).arg(format!("oci:{}:img", dir.display()));
    let o = run_with_timeout(&mut cmd, Duration::from_secs(120));
    assert!(o.status.success(), "skopeo copy {reference}\n{o}");
    let img = Image::from_layout(&dir, Some("img"));
    let blob = |d: &str| std::fs::read(dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let blobs = img.manifest["layers"].as_array().unwrap().iter().map(|l| blob(l["digest"].as_str().unwrap())).collect();
    (img.manifest, blobs)
}

fn annotations(desc: &Value) -> BTreeMap<String, String> {
    desc["annotations"].as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect()).unwrap_or_default()
}

/// The tree Buildah unpacks: pulled into its storage, then written out again.
fn buildah_tree(sb: &Sandbox, reference: &str, name: &str) -> kiln_integration::Tree {
    let o = run_with_timeout(sb.buildah().args(["pull", "--quiet", "--tls-verify=false"]).arg(format!("docker://{reference}")), Duration::from_secs(300));
    assert!(o.status.success(), "buildah pull {reference}\n{o}");
    let dir = sb.out_path(name);
    let o = run_with_timeout(sb.buildah().args(["push", "--quiet"]).arg(reference).arg(format!("oci:{}:img", dir.display())), Duration::from_secs(300));
    assert!(o.status.success(), "buildah push {reference} to a layout\n{o}");
    Image::from_layout(&dir, Some("img")).tree
}

fn build(sb: &Sandbox, ctx: &std::path::Path, reference: &str, flags: &[&str]) -> String {
    let mut cmd = sb.kiln().build().tag(reference).push().env("SOURCE_DATE_EPOCH", "1700000000");
    for f in flags {
        cmd = cmd.arg(f);
    }
    let out = cmd.arg(ctx).run();
    out.assert_success();
    out.stderr.clone()
}

fn listing_without(tree: &kiln_integration::Tree, drop: &[&str]) -> String {
    let mut t = tree.clone();
    for d in drop {
        assert!(t.0.remove(*d).is_some(), "{d} is not in the tree");
    }
    full_listing(&t)
}

/// Every path with kind, mode, owner, size, link, content digest and mtime.
fn full_listing(t: &kiln_integration::Tree) -> String {
    t.0.iter().map(|(p, n)| format!("{p} {n} {:?} mtime={}\n", n.sha256, n.mtime)).collect()
}

#[test]
fn estargz_and_zstd_chunked_push_lazy_layers_that_every_client_pulls() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let big: String = (0..600_000).map(|i| format!("{i:08}\n")).collect(); // 5.4 MB: two chunks
    let ctx = sb
        .new_context("app")
        .file("Dockerfile", &format!("FROM {}\nCOPY big.txt small.txt /app/\nRUN mkdir -p /srv && echo built > /srv/out && ln -s /app/small.txt /srv/link\n", base.latest))
        .file("big.txt", &big)
        .file("small.txt", "small\n")
        .build();
    let gzip_ref = registry.reference("lazy/app:gzip");
    build(&sb, &ctx, &gzip_ref, &[]);
    let formats = [("estargz", "containerd.io/snapshot/stargz/toc.digest"), ("zstd:chunked", "io.github.containers.zstd-chunked.manifest-checksum")];
    let gzip_tree = Image::pull_from(&registry, "lazy/app:gzip").tree;
    for (format, key) in formats {
        let tag = format.replace(':', "-");
        let reference = registry.reference(&format!("lazy/app:{tag}"));
        // Same sandbox: the gzip build's cached layers must not be taken.
        build(&sb, &ctx, &reference, &["--compression", format]);
        let (manifest, blobs) = copy_with_skopeo(&sb, &reference, &tag);
        let layers = manifest["layers"].as_array().unwrap();
        let n_base = base.layer_digests.len();
        assert_eq!(layers.len(), n_base + 2);
        for (i, (desc, blob)) in layers.iter().zip(&blobs).enumerate() {
            let a = annotations(desc);
            if i < n_base {
                assert!(!a.contains_key(key), "without --force-compression the base layer stays as it was: {desc}");
                continue;
            }
            assert!(a.contains_key(key), "{format}: layer {i} has no TOC annotation: {desc}");
            let checked = match format {
                "estargz" => lazy_read::check_estargz(blob, &a),
                _ => lazy_read::check_zstd_chunked(blob, &a),
            };
            checked.unwrap_or_else(|e| panic!("{format}: layer {i} fails the format reader: {e}"));
        }
        // Every client's view: skopeo's blobs decompressed plainly, and Buildah's unpack.
        let plain_tree = Image::pull_from(&registry, &format!("lazy/app:{tag}")).tree;
        let buildah = buildah_tree(&sb, &reference, &format!("buildah-{tag}"));
        let extra: &[&str] = if format == "estargz" { &["/stargz.index.json", "/.no.prefetch.landmark"] } else { &[] };
        assert_eq!(listing_without(&plain_tree, extra), full_listing(&gzip_tree), "{format}: the tree a plain pull unpacks");
        assert_eq!(listing_without(&buildah, extra), full_listing(&gzip_tree), "{format}: the tree Buildah unpacks");
        assert_eq!(plain_tree.node("/app/big.txt").size, big.len() as u64);
    }
    // kiln on a fresh runner unpacks an eStargz base as it was built (and as a lazy
    // pull shows it): without the format's root entries.
    let fresh = Sandbox::new();
    let ctx2 = fresh
        .new_context("on-estargz")
        .file("Dockerfile", &format!("FROM {}\nRUN test ! -e /stargz.index.json && test ! -e /.no.prefetch.landmark && test -s /app/big.txt\n", registry.reference("lazy/app:estargz")))
        .build();
    fresh.kiln().build().arg(&ctx2).run().assert_success();
    // The gzip build again: all cached, the same manifest as the first time.
    let first = registry.manifest("lazy/app", "gzip");
    let again = registry.reference("lazy/app:gzip-again");
    let err = build(&sb, &ctx, &again, &[]);
    assert_eq!(registry.manifest("lazy/app", "gzip-again"), first, "a gzip build after the lazy ones\n{err}");
}

#[test]
fn force_compression_rewrites_the_base_and_output_spelling_works() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.new_context("app").file("Dockerfile", &format!("FROM {}\nCOPY a.txt /a.txt\n", base.latest)).file("a.txt", "a\n").build();
    // BuildKit's spelling of the same build: --output type=image,…
    let reference = registry.reference("lazy/forced:1");
    let out = sb
        .kiln()
        .build()
        .arg("--output")
        .arg(format!("type=image,name={reference},push=true,compression=estargz,force-compression=true"))
        .arg(&ctx)
        .run();
    out.assert_success();
    let (manifest, blobs) = copy_with_skopeo(&sb, &reference, "forced");
    for (i, (desc, blob)) in manifest["layers"].as_array().unwrap().iter().zip(&blobs).enumerate() {
        lazy_read::check_estargz(blob, &annotations(desc)).unwrap_or_else(|e| panic!("layer {i} after --force-compression: {e}"));
    }
    let img = Image::pull_from(&registry, "lazy/forced:1");
    let base_img = Image::pull_from(&registry, "base/busybox:latest");
    img.assert_consistent();
    let mut t = img.tree.clone();
    t.0.remove("/stargz.index.json");
    t.0.remove("/.no.prefetch.landmark");
    t.0.remove("/a.txt");
    assert_eq!(full_listing(&t), full_listing(&base_img.tree), "the recompressed base is the base");
    // A rebuild takes the recompressed base from the cache: the same image.
    let again = registry.reference("lazy/forced:2");
    let out = sb.kiln().build().tag(&again).push().args(["--compression-format", "estargz", "--force-compression"]).arg(&ctx).run();
    out.assert_success();
    assert_eq!(registry.manifest("lazy/forced", "2"), registry.manifest("lazy/forced", "1"));
    // Bad spellings name themselves.
    let bad = sb.kiln().build().arg("--output").arg(format!("type=image,name={reference},compression=brotli")).arg(&ctx).run();
    bad.assert_failure();
    assert!(bad.stderr.contains("compression=brotli"), "{}", bad.stderr);
    let bad = sb.kiln().build().args(["--compression", "estargz", "--compression-level", "12"]).arg(&ctx).run();
    bad.assert_failure();
    assert!(bad.stderr.contains("estargz takes 0-9"), "{}", bad.stderr);
}

/// `--soci`: the image becomes soci-snapshotter's SOCI-enabled image (index manifest
/// v2): an index with the image manifest (annotated with the SOCI index's digest) and
/// the SOCI index manifest (annotated with the image manifest's digest) whose ztocs
/// pass the reader written from `ztoc.fbs` and `gzip_zinfo.c` against the layers
/// they describe. skopeo and Buildah still pull the image itself.
#[test]
fn soci_index_v2_lists_ztocs_that_describe_the_layers() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let big: String = (0..600_000).map(|i| format!("{i:08}\n")).collect();
    let ctx = sb
        .new_context("app")
        .file("Dockerfile", &format!("FROM {}\nCOPY big.txt /app/big.txt\nRUN echo small > /small\n", base.latest))
        .file("big.txt", &big)
        .build();
    let reference = registry.reference("soci/app:1");
    let flags = ["--soci", "--soci-span-size", "1048576", "--soci-min-layer-size", "1024", "--force-compression"];
    build(&sb, &ctx, &reference, &flags);
    let index = registry.manifest("soci/app", "1");
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json", "{index}");
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    let (image, soci) = (&entries[0], &entries[1]);
    assert_eq!(soci["artifactType"], "application/vnd.amazon.soci.index.v2+json");
    assert_eq!(soci["platform"], image["platform"]);
    assert_eq!(soci["annotations"]["com.amazon.soci.image-manifest-digest"], image["digest"]);
    let manifest = registry.manifest("soci/app", image["digest"].as_str().unwrap());
    assert_eq!(manifest["annotations"]["com.amazon.soci.index-digest"], soci["digest"]);
    let soci_m = registry.manifest("soci/app", soci["digest"].as_str().unwrap());
    assert_eq!(soci_m["config"]["mediaType"], "application/vnd.amazon.soci.index.v2+json");
    assert_eq!(registry.blob("soci/app", soci_m["config"]["digest"].as_str().unwrap()), b"{}");
    assert_eq!(soci_m["annotations"]["com.amazon.soci.build-tool-identifier"].as_str().unwrap().split(' ').next(), Some("kiln"));
    let ztocs = soci_m["layers"].as_array().unwrap();
    // Every layer of at least 1 KiB: the base's (rewritten by --force-compression to get
    // one), the COPY's; the RUN's few bytes are below the minimum.
    let image_layers = manifest["layers"].as_array().unwrap();
    let want: Vec<&Value> = image_layers.iter().filter(|l| l["size"].as_u64().unwrap() >= 1024).collect();
    assert_eq!(ztocs.len(), want.len(), "{soci_m}");
    for (z, l) in ztocs.iter().zip(want) {
        assert_eq!(z["mediaType"], "application/octet-stream");
        assert_eq!(z["annotations"]["com.amazon.soci.image-layer-digest"], l["digest"]);
        assert_eq!(z["annotations"]["com.amazon.soci.image-layer-mediaType"], l["mediaType"]);
        assert_eq!(z["annotations"]["com.amazon.soci.span-size"], "1048576");
        let blob = registry.blob("soci/app", l["digest"].as_str().unwrap());
        let ztoc = registry.blob("soci/app", z["digest"].as_str().unwrap());
        lazy_read::check_ztoc(&blob, &ztoc).unwrap_or_else(|e| panic!("ztoc of {}: {e}", l["digest"]));
    }
    // The image pulls as any image: skopeo takes the platform's image manifest, and
    // Buildah unpacks it.
    let img = Image::pull_from(&registry, "soci/app:1");
    assert_eq!(img.tree.node("/app/big.txt").size, big.len() as u64);
    assert_eq!(img.tree.node("/small").text(), "small\n");
    let tree = buildah_tree(&sb, &reference, "buildah-soci");
    assert_eq!(full_listing(&tree), full_listing(&img.tree));
    // A rebuild from the cache gives the same index (the ztocs come with the records).
    let again = registry.reference("soci/app:2");
    build(&sb, &ctx, &again, &flags);
    assert_eq!(registry.manifest("soci/app", "2"), index);
    // What it cannot do is said.
    let bad = sb.kiln().build().args(["--soci", "--compression", "zstd"]).arg(&ctx).run();
    bad.assert_failure();
    assert!(bad.stderr.contains("--soci indexes gzip layers"), "{}", bad.stderr);
}
