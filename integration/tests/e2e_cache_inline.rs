//! `--cache-to type=inline` (issue 17, part 2), end to end as the unprivileged user
//! against the real registry: the records of the image's own steps go into its config
//! (without the inputs that name context files or build arg values), a fresh runner
//! with `--cache-from type=registry,ref=IMAGE` takes every unchanged step from it, a
//! multi-platform index serves each platform, and an image with BuildKit's inline
//! cache (`moby.buildkit.cache.v0`) or none is a warning saying why, not an error.

use std::fs;
use std::path::Path;
use std::process::Command;

use kiln_integration::registry::seed_base_images;
use kiln_integration::{require_program, Image, Registry, RunOutput, Sandbox};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const MARK: &str = "the-run-step-ran";

fn context(sb: &Sandbox, registry: &Registry, name: &str, last: &str) -> std::path::PathBuf {
    let base = registry.reference("base/busybox:latest");
    let df = format!("FROM {base}\nCOPY a.txt /a.txt\nRUN echo {MARK} && cp /a.txt /b.txt\nENV V=1\nCOPY last.txt /last.txt\n");
    sb.new_context(name).file("Dockerfile", df).file("a.txt", "a\n").file("last.txt", last).build()
}

fn ran(out: &RunOutput) -> bool {
    out.combined().lines().any(|l| l.trim() == MARK)
}

#[test]
fn an_inline_cache_serves_a_fresh_runner_from_the_image_itself() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let a = Sandbox::new();
    let v1 = registry.reference("inline/app:1");
    a.kiln().build().args(["--cache-to", "type=inline"]).tag(&v1).push().arg(context(&a, &registry, "a", "one\n")).run().assert_success();
    let image = Image::pull_from(&registry, "inline/app:1");
    let records = image.config["kiln.cache.records"].as_object().unwrap_or_else(|| panic!("no records in {}", image.config));
    assert_eq!(records.len(), 3, "one record per COPY/RUN (config steps are part of the next key): {records:?}");
    assert!(records.values().all(|r| r.get("inputs").is_none()), "an image carries no key inputs: {records:?}");

    // A fresh runner, the last file changed: the RUN is a hit from the image's records.
    let b = Sandbox::new();
    let from = format!("type=registry,ref={v1}");
    let out = b.kiln().build().args(["--cache-from", &from, "--cache-to", "type=inline"]).tag(&registry.reference("inline/app:2")).push().arg(context(&b, &registry, "b", "two\n")).run();
    out.assert_success();
    assert!(!ran(&out), "the RUN ran although the image's inline cache has it:\n{out}");
    let two = Image::pull_from(&registry, "inline/app:2");
    assert_eq!(two.manifest["layers"][2], image.manifest["layers"][2], "the RUN layer is the cached one");
    assert_eq!(two.tree.node("/last.txt").text(), "two\n");

    // No cache in the image: a warning, and the build runs every step.
    let c = Sandbox::new();
    let plain = registry.reference("inline/plain:1");
    c.kiln().build().tag(&plain).push().arg(context(&c, &registry, "c", "x\n")).run().assert_success();
    let d = Sandbox::new();
    let out = d.kiln().build().args(["--cache-from", &format!("type=registry,ref={plain}")]).arg(context(&d, &registry, "d", "y\n")).run();
    out.assert_success();
    assert!(ran(&out) && out.combined().contains("holds no kiln cache records"), "{out}");
    let said = out.combined().lines().filter(|l| l.starts_with("warning: ignoring the cache") && l.contains("holds no kiln cache records")).count();
    assert_eq!(said, 1, "reported once, as a warning line:\n{out}");

    // BuildKit's inline cache: named, not used.
    let bk = with_buildkit_inline_cache(&registry, "inline/plain:1", "inline/buildkit:1");
    let e = Sandbox::new();
    let out = e.kiln().build().args(["--cache-from", &format!("type=registry,ref={bk}")]).arg(context(&e, &registry, "e", "z\n")).run();
    out.assert_success();
    assert!(out.combined().contains("BuildKit's inline cache (moby.buildkit.cache.v0)"), "{out}");
    // In --progress json the same notice is a warning event.
    let f = Sandbox::new();
    let out = f.kiln().build().args(["--progress", "json", "--cache-from", &format!("type=registry,ref={bk}")]).arg(context(&f, &registry, "g", "z\n")).run();
    out.assert_success();
    let events: Vec<Value> = out.stdout.lines().chain(out.stderr.lines()).filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(events.iter().any(|e| e["event"] == "warning" && e["message"].as_str().unwrap_or("").contains("moby.buildkit.cache.v0")), "{out}");
    let bad = a.kiln().build().args(["--cache-to", "type=inline", "--squash"]).arg(context(&a, &registry, "f", "q\n")).run();
    bad.assert_failure_containing("cannot be used with --squash");
}

#[test]
fn an_inline_cache_of_a_multi_platform_index_serves_each_platform() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let base = registry.reference("base/busybox:latest");
    let df = format!("FROM {base}\nCOPY a.txt /a.txt\nARG TARGETARCH\nCOPY last.txt /last-$TARGETARCH.txt\n");
    let a = Sandbox::new();
    let ctx = a.new_context("a").file("Dockerfile", &df).file("a.txt", "a\n").file("last.txt", "1\n").build();
    let v1 = registry.reference("inline/multi:1");
    a.kiln().build().args(["--platform", "linux/amd64,linux/arm64", "--cache-to", "type=inline"]).tag(&v1).push().arg(&ctx).run().assert_success();
    let b = Sandbox::new();
    let ctx = b.new_context("b").file("Dockerfile", &df).file("a.txt", "a\n").file("last.txt", "2\n").build();
    let out = b.kiln().build().args(["--platform", "linux/amd64,linux/arm64", "--progress", "plain", "--cache-from", &format!("type=registry,ref={v1}")]).arg(&ctx).run();
    out.assert_success();
    let cached = out.combined().lines().filter(|l| l.contains("COPY a.txt /a.txt") && l.contains("(cached)")).count();
    assert_eq!(cached, 2, "each platform's COPY a.txt from its own image's records:\n{out}");
}

/// `src` copied to `dst` with BuildKit's inline cache field added to its config (what
/// `docker build --build-arg BUILDKIT_INLINE_CACHE=1` pushes), through skopeo.
fn with_buildkit_inline_cache(registry: &Registry, src: &str, dst: &str) -> String {
    let skopeo = require_program("skopeo");
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("l");
    let copy = |from: String, to: String| {
        let out = Command::new(&skopeo).args(["copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false", &from, &to]).output().unwrap();
        assert!(out.status.success(), "skopeo copy {from} {to}: {}", String::from_utf8_lossy(&out.stderr));
    };
    copy(format!("docker://{}", registry.reference(src)), format!("oci:{}:img", layout.display()));
    let blob = |d: &str| layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = format!("sha256:{}", hex(&Sha256::digest(bytes)));
        fs::write(blob(&d), bytes).unwrap();
        (d, bytes.len())
    };
    let mut index: Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut manifest: Value = serde_json::from_slice(&fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap()).unwrap();
    let mut config: Value = serde_json::from_slice(&fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap()).unwrap();
    // BuildKit's field holds base64 of its cache config (layers and LLB-keyed records).
    config["moby.buildkit.cache.v0"] = Value::from("eyJsYXllcnMiOlt7ImJsb2IiOiJzaGEyNTY6MDAiLCJwYXJlbnQiOi0xfV0sInJlY29yZHMiOlt7ImRpZ2VzdCI6InNoYTI1NjoxMSJ9XX0=");
    let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = cd.into();
    manifest["config"]["size"] = cs.into();
    let (md, ms) = put(&serde_json::to_vec(&manifest).unwrap());
    index["manifests"][0]["digest"] = md.into();
    index["manifests"][0]["size"] = ms.into();
    fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let to = registry.reference(dst);
    copy(format!("oci:{}:img", layout.display()), format!("docker://{to}"));
    let _ = Path::new(&to);
    to
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
