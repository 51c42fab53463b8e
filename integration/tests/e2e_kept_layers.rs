//! End to end: layers that never leave the machine are not compressed (issue 18
//! part 4, `builder/src/solver/leaves.rs`). A builder stage that the final stage
//! only `COPY --from`s keeps its layer as an uncompressed blob; the image built is
//! the one compressing everything gives (`KILN_COMPRESS_ALL=1`); when the kept layer
//! later comes to leave (`--target builder`), it is compressed then, to the bytes a
//! fresh build compresses; an exported cache that takes every step
//! (`--cache-to … mode=max`) gets compressed layers.

use std::path::Path;

use kiln_integration::{seed_base_images, Image, Registry, RunOutput, Sandbox};

const EPOCH: &str = "1700000000";

fn dockerfile(base: &str) -> String {
    // 4 MB of text that gzip makes a few KiB of.
    format!("FROM {base} AS builder\nRUN yes kiln-builder-output | head -c 4000000 > /big.txt\nFROM {base}\nCOPY --from=builder /big.txt /app/big.txt\n")
}

/// The digest prefix and size progress printed for the first layer made after the
/// line naming `step`.
fn layer_after(out: &RunOutput, step: &str) -> (String, u64) {
    let text = out.combined();
    let mut lines = text.lines().skip_while(|l| !l.contains(step));
    let line = lines.find(|l| l.contains(", layer ")).unwrap_or_else(|| panic!("no layer line after {step:?}\n{out}"));
    let rest = &line[line.find(", layer ").unwrap_or(0) + 8..];
    let (hex, size) = rest.split_once(" (").unwrap_or_else(|| panic!("{line}"));
    let size = size.trim_end_matches(" bytes)").parse().unwrap_or_else(|_| panic!("{line}"));
    (hex.to_string(), size)
}

/// The first bytes of the store's blob whose digest starts with `prefix`.
fn blob_head(root: &Path, prefix: &str) -> Vec<u8> {
    let dir = root.join("content/blobs/sha256");
    let e = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .unwrap_or_else(|| panic!("no blob {prefix} in {}", dir.display()));
    let bytes = std::fs::read(e.path()).unwrap();
    bytes[..bytes.len().min(512)].to_vec()
}

fn is_tar(head: &[u8]) -> bool {
    head.len() >= 262 && &head[257..262] == b"ustar"
}

fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
}

fn build(sb: &Sandbox, ctx: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> RunOutput {
    let mut k = sb.kiln().build().env("SOURCE_DATE_EPOCH", EPOCH).env("KILN_LOG", "kiln_builder::solver::leaves=debug").args(extra).arg("--output").arg(format!("type=oci,dest={}", out.display()));
    for (key, v) in env {
        k = k.env(key, v);
    }
    let run = k.arg(ctx).run();
    run.assert_success();
    run
}

#[test]
fn a_builder_stage_layer_is_kept_uncompressed_and_compressed_when_it_leaves() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.new_context("kept").file("Dockerfile", &dockerfile(&base.latest)).build();

    // The final image: every layer compressed; the builder's layer kept as a tar.
    let final_dir = sb.out_path("final");
    let out = build(&sb, &ctx, &final_dir, &[], &[]);
    let (kept, kept_size) = layer_after(&out, "RUN yes");
    assert!(kept_size >= 4_000_000, "the builder layer was compressed: {kept_size} bytes\n{out}");
    assert!(is_tar(&blob_head(&sb.kiln_root(), &kept)), "the kept blob is not a plain tar\n{out}");
    let (copied, copied_size) = layer_after(&out, "COPY --from=builder");
    assert!(copied_size < 200_000 && is_gzip(&blob_head(&sb.kiln_root(), &copied)), "{copied_size}\n{out}");
    let final_img = Image::from_layout(&final_dir, None);
    final_img.assert_consistent();
    assert!(final_img.layers.iter().all(|l| l.media_type.ends_with("tar+gzip")), "{:?}", final_img.layers);

    // Compressing every layer as it is made gives the same image.
    let all = Sandbox::new();
    let all_dir = all.out_path("final");
    let out_all = build(&all, &ctx, &all_dir, &[], &[("KILN_COMPRESS_ALL", "1")]);
    let (_, size_all) = layer_after(&out_all, "RUN yes");
    assert!(size_all < 200_000, "KILN_COMPRESS_ALL=1 kept the layer: {size_all}\n{out_all}");
    assert_eq!(Image::from_layout(&all_dir, None).manifest_digest, final_img.manifest_digest);

    // The kept layer leaves: compressed from the cache hit, to what a fresh build of
    // that target gives; the local cache then holds the compressed record.
    let builder_dir = sb.out_path("builder");
    let out2 = build(&sb, &ctx, &builder_dir, &["--target", "builder"], &[]);
    assert!(out2.combined().contains("kept layer compressed"), "{out2}");
    let builder_img = Image::from_layout(&builder_dir, None);
    builder_img.assert_consistent();
    let top = builder_img.layers.last().unwrap();
    assert!(top.media_type.ends_with("tar+gzip") && top.size < 200_000, "{top:?}");
    let fresh = Sandbox::new();
    let fresh_dir = fresh.out_path("builder");
    build(&fresh, &ctx, &fresh_dir, &["--target", "builder"], &[]);
    assert_eq!(Image::from_layout(&fresh_dir, None).manifest_digest, builder_img.manifest_digest);
    let again_dir = sb.out_path("builder-again");
    let out3 = build(&sb, &ctx, &again_dir, &["--target", "builder"], &[]);
    assert!(!out3.combined().contains("kept layer compressed"), "compressed twice\n{out3}");
    assert_eq!(Image::from_layout(&again_dir, None).manifest_digest, builder_img.manifest_digest);
}

#[test]
fn a_cache_that_takes_every_step_gets_compressed_layers() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.new_context("kept-max").file("Dockerfile", &dockerfile(&base.latest)).build();
    let cache = sb.out_path("cache");
    let to = format!("--cache-to=type=local,dest={},mode=max", cache.display());
    let dir = sb.out_path("final");
    let out = build(&sb, &ctx, &dir, &[&to], &[]);
    let (layer, size) = layer_after(&out, "RUN yes");
    assert!(size < 200_000 && is_gzip(&blob_head(&sb.kiln_root(), &layer)), "{size}\n{out}");
    // mode=min takes only the image's own steps: the builder layer is kept again.
    let sb2 = Sandbox::new();
    let to = format!("--cache-to=type=local,dest={},mode=min", sb2.out_path("cache").display());
    let dir2 = sb2.out_path("final");
    let out = build(&sb2, &ctx, &dir2, &[&to], &[]);
    let (layer, size) = layer_after(&out, "RUN yes");
    assert!(size >= 4_000_000 && is_tar(&blob_head(&sb2.kiln_root(), &layer)), "{size}\n{out}");
}
