//! Cache mounts that travel with the registry cache (issue 17, part 1), end to end as
//! the unprivileged user against the real registry: `--cache-to …,cache-mounts=true`
//! exports what `RUN --mount=type=cache` holds; a fresh runner (an empty KILN_ROOT)
//! with `--cache-from` finds it again in the step that has to run, and only then; a
//! build that uses it not carries it on; a cache that gained one file uploads one
//! bundle, not the whole cache; `cache-mounts-max-size` keeps a big mount local.

use std::collections::BTreeSet;
use std::path::PathBuf;

use kiln_integration::registry::seed_base_images;
use kiln_integration::{Registry, Sandbox};
use serde_json::Value;

/// A step that adds `seen-<rev>` to the cache and lists the cache into the image.
fn context(sb: &Sandbox, registry: &Registry, name: &str, rev: &str) -> PathBuf {
    let base = registry.reference("base/busybox:latest");
    let df = format!(
        "FROM {base}\nCOPY rev.txt /rev.txt\nRUN --mount=type=cache,target=/cache sh -c 'cp /rev.txt /cache/seen-$(cat /rev.txt) && ls /cache > /listing'\n"
    );
    sb.new_context(name).file("Dockerfile", df).file("rev.txt", rev).build()
}

/// The `kiln.cache.mounts` of the cache manifest `repo:tag`.
fn mounts(registry: &Registry, repo: &str, tag: &str) -> Value {
    let m = registry.manifest(repo, tag);
    let c: Value = serde_json::from_slice(&registry.blob(repo, m["config"]["digest"].as_str().unwrap())).unwrap();
    c["kiln.cache.mounts"].clone()
}

fn bundles(m: &Value) -> BTreeSet<String> {
    m["bundles"].as_array().unwrap().iter().map(|b| b["digest"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_cache_mount_comes_back_on_a_fresh_runner_only_when_a_step_needs_it() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let cache = registry.reference("cache/mounts:c");
    let to = format!("type=registry,ref={cache},mode=max,cache-mounts=true");
    let from = format!("type=registry,ref={cache}");

    let a = Sandbox::new();
    let out = a.kiln().build().args(["--cache-to", &to]).arg(context(&a, &registry, "a", "v1")).run();
    out.assert_success();
    let m = mounts(&registry, "cache/mounts", "c");
    assert_eq!(m["/cache"]["id"], "/cache", "{m}");
    assert!(!bundles(&m["/cache"]).is_empty(), "{m}");
    let layers: BTreeSet<String> =
        registry.manifest("cache/mounts", "c")["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();
    assert!(bundles(&m["/cache"]).is_subset(&layers), "the bundles are layers of the cache manifest (kept by registry GC)");

    // A fresh runner whose source changed: the RUN misses, and its cache holds what
    // the first runner's step left.
    let b = Sandbox::new();
    let dest = b.out_path("rootfs");
    let out = b.kiln().build().args(["--cache-from", &from, "--cache-to", &to, "-o"]).arg(format!("type=local,dest={}", dest.display())).arg(context(&b, &registry, "b", "v2")).run();
    out.assert_success();
    assert!(out.combined().contains("restored cache mount \"/cache\""), "{out}");
    let listing = std::fs::read_to_string(dest.join("listing")).unwrap();
    assert_eq!(listing.split_whitespace().collect::<Vec<_>>(), ["seen-v1", "seen-v2"], "the step saw the restored cache:\n{out}");
    let m2 = mounts(&registry, "cache/mounts", "c");
    assert_ne!(bundles(&m2["/cache"]), bundles(&m["/cache"]), "the export carries what the second step added");

    // Everything a hit: nothing to restore, and the export (to another tag) still
    // carries the mount it did not use.
    let c = Sandbox::new();
    let other = format!("type=registry,ref={},mode=max,cache-mounts=true", registry.reference("cache/mounts:carried"));
    let mark = registry.log_mark();
    let out = c.kiln().build().args(["--cache-from", &from, "--cache-to", &other]).arg(context(&c, &registry, "c", "v2")).run();
    out.assert_success();
    assert!(!out.combined().contains("restored cache mount"), "a build of hits restored a cache mount:\n{out}");
    let log = registry.log_since(mark);
    for d in bundles(&m2["/cache"]) {
        assert!(!log.lines().any(|l| l.contains("\"GET ") && l.contains(&d)), "bundle {d} downloaded by a build of hits:\n{log}");
    }
    assert_eq!(bundles(&mounts(&registry, "cache/mounts", "carried")["/cache"]), bundles(&m2["/cache"]), "an unused mount is carried on");

    // cache-mounts=false on the import: the step runs with an empty cache.
    let d = Sandbox::new();
    let dest = d.out_path("rootfs");
    let off = format!("{from},cache-mounts=false");
    d.kiln().build().args(["--cache-from", &off, "-o"]).arg(format!("type=local,dest={}", dest.display())).arg(context(&d, &registry, "d", "v3")).run().assert_success();
    assert_eq!(std::fs::read_to_string(dest.join("listing")).unwrap().trim(), "seen-v3");

    // Without cache-mounts=true nothing of the mounts is exported.
    let e = Sandbox::new();
    let plain = format!("type=registry,ref={},mode=max", registry.reference("cache/mounts:plain"));
    e.kiln().build().args(["--cache-to", &plain]).arg(context(&e, &registry, "e", "v1")).run().assert_success();
    assert!(mounts(&registry, "cache/mounts", "plain").is_null());
}

/// 40 files of 256 KiB random bytes in the cache; the next build adds one: its export
/// uploads at most three bundles (the one the file lands in, split at most once,
/// and the directory headers), and the others are not sent again.
#[test]
fn one_new_file_in_a_big_cache_uploads_one_bundle_and_max_size_keeps_a_mount_local() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let base = registry.reference("base/busybox:latest");
    let cache = registry.reference("cache/delta:c");
    let to = format!("type=registry,ref={cache},mode=max,cache-mounts=true");
    let df = format!(
        "FROM {base}\nCOPY n.txt /n.txt\nRUN --mount=type=cache,id=blobs,target=/c sh -c 'for i in $(seq 1 $(cat /n.txt)); do test -f /c/f$i || head -c 262144 /dev/urandom > /c/f$i; done'\n"
    );
    let a = Sandbox::new();
    let ctx = a.new_context("a").file("Dockerfile", &df).file("n.txt", "40").build();
    a.kiln().build().args(["--cache-to", &to]).arg(&ctx).run().assert_success();
    let first = bundles(&mounts(&registry, "cache/delta", "c")["blobs"]);

    let b = Sandbox::new();
    let ctx = b.new_context("b").file("Dockerfile", &df).file("n.txt", "41").build();
    let mark = registry.log_mark();
    let out = b.kiln().build().args(["--cache-from", &format!("type=registry,ref={cache}"), "--cache-to", &to]).arg(&ctx).run();
    out.assert_success();
    let m = mounts(&registry, "cache/delta", "c");
    let second = bundles(&m["blobs"]);
    assert_eq!(m["blobs"]["entries"], 41, "{m}");
    let new: Vec<&String> = second.difference(&first).collect();
    // The bundle the file lands in (split at most once by its own cut) and the last
    // bundle of directory headers.
    assert!(!new.is_empty() && new.len() <= 3, "{} of {} bundles changed for one new file: {new:?}", new.len(), second.len());
    for d in second.intersection(&first) {
        assert!(registry.blob_uploads_since(mark, d).is_empty(), "unchanged bundle {d} uploaded again");
    }
    for d in &new {
        assert_eq!(registry.blob_uploads_since(mark, d).len(), 1, "new bundle {d} not uploaded once");
    }

    // cache-mounts-max-size below the mount's 10 MiB: it is not exported, and says so.
    let c = Sandbox::new();
    let ctx = c.new_context("c").file("Dockerfile", &df).file("n.txt", "42").build();
    let small = format!("type=registry,ref={},mode=max,cache-mounts=true,cache-mounts-max-size=1MiB", registry.reference("cache/delta:small"));
    let out = c.kiln().build().args(["--cache-to", &small]).arg(&ctx).run();
    out.assert_success();
    assert!(out.combined().contains("more than cache-mounts-max-size"), "{out}");
    assert!(mounts(&registry, "cache/delta", "small").is_null());
}

/// A secret mounted inside a cache mount's target, or read by the step, is never in
/// what the cache exports (the secret is a separate mount: the cache only holds the
/// empty mount point the sandbox made for it).
#[test]
fn a_secret_mounted_in_a_cache_mount_never_travels() {
    const SECRET: &str = "s3cr3t-value-5f2a91-never-in-a-bundle";
    let registry = Registry::start();
    seed_base_images(&registry);
    let base = registry.reference("base/busybox:latest");
    let cache = registry.reference("cache/secret:c");
    let df = format!(
        "FROM {base}\nRUN --mount=type=cache,id=c,target=/cache --mount=type=secret,id=tok,target=/cache/token sh -c 'test -s /cache/token && touch /cache/other'\n"
    );
    let a = Sandbox::new();
    let ctx = a.new_context("a").file("Dockerfile", &df).build();
    let secret = a.path().join("tok");
    std::fs::write(&secret, SECRET).unwrap();
    a.user.chown_tree(a.path());
    a.kiln()
        .build()
        .args(["--secret", &format!("id=tok,src={}", secret.display())])
        .args(["--cache-to", &format!("type=registry,ref={cache},mode=max,cache-mounts=true")])
        .arg(&ctx)
        .run()
        .assert_success();
    let m = mounts(&registry, "cache/secret", "c");
    assert!(!bundles(&m["c"]).is_empty(), "{m}");
    for d in bundles(&m["c"]) {
        let blob = registry.blob("cache/secret", &d);
        let tar = zstd::decode_all(blob.as_slice()).unwrap();
        assert!(!tar.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "bundle {d} holds the secret");
        assert!(tar.windows(5).any(|w| w == b"other"), "bundle {d} lacks what the step wrote");
    }
}

/// The same through `type=local` (the directory a CI system's own cache keeps).
#[test]
fn a_local_cache_directory_carries_cache_mounts() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let a = Sandbox::new();
    let dir = a.path().join("ci-cache");
    a.kiln()
        .build()
        .args(["--cache-to", &format!("type=local,dest={},mode=max,cache-mounts=true", dir.display())])
        .arg(context(&a, &registry, "a", "v1"))
        .run()
        .assert_success();
    // The CI system restores the directory on another machine (here: another sandbox).
    let b = Sandbox::new();
    let moved = b.path().join("ci-cache");
    assert!(std::process::Command::new("cp").arg("-a").arg(&dir).arg(&moved).status().unwrap().success());
    b.user.chown_tree(&moved);
    let dest = b.out_path("rootfs");
    let out = b
        .kiln()
        .build()
        .args(["--cache-from", &format!("type=local,src={}", moved.display()), "-o"])
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(context(&b, &registry, "b", "v2"))
        .run();
    out.assert_success();
    let listing = std::fs::read_to_string(dest.join("listing")).unwrap();
    assert_eq!(listing.split_whitespace().collect::<Vec<_>>(), ["seen-v1", "seen-v2"], "{out}");
}

/// A bundle that arrives corrupted (one flipped byte, through the fault proxy) is
/// reported and not trusted: the step runs with an empty cache, nothing half-restored
/// stays behind, and the build succeeds.
#[test]
fn a_corrupted_bundle_is_reported_and_the_step_starts_empty() {
    use kiln_integration::faultproxy::{Fault, FaultProxy, Rule};
    let registry = Registry::start();
    seed_base_images(&registry);
    let proxy = FaultProxy::start(&registry.host());
    let cache = format!("{}/cache/corrupt:c", proxy.host());
    let a = Sandbox::new();
    a.kiln()
        .build()
        .args(["--insecure-registry", &proxy.host(), "--cache-to", &format!("type=registry,ref={cache},mode=max,cache-mounts=true")])
        .arg(context(&a, &registry, "a", "v1"))
        .run()
        .assert_success();
    let m = mounts(&registry, "cache/corrupt", "c");
    for d in bundles(&m["/cache"]) {
        proxy.add_rule(Rule::new("GET", &format!("/blobs/{d}"), Fault::CorruptResponseBody(40), 100));
    }
    let b = Sandbox::new();
    let dest = b.out_path("rootfs");
    let out = b
        .kiln()
        .build()
        .args(["--insecure-registry", &proxy.host(), "--cache-from", &format!("type=registry,ref={cache}"), "-o"])
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(context(&b, &registry, "b", "v2"))
        .run();
    out.assert_success();
    assert!(proxy.injected() >= 1, "{:?}", proxy.log());
    assert!(out.combined().contains("cache mount \"/cache\" was not restored"), "{out}");
    assert_eq!(std::fs::read_to_string(dest.join("listing")).unwrap().trim(), "seen-v2", "the step saw a corrupted cache:\n{out}");
    let left: Vec<String> = walk_names(&b.kiln_root().join("cache-mounts"));
    assert!(!left.iter().any(|n| n.starts_with("data.restore-")), "a half-restored cache stayed: {left:?}");
}

fn walk_names(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.file_name().to_string_lossy().into_owned());
        if e.path().is_dir() && !e.path().ends_with("data") {
            out.extend(walk_names(&e.path()));
        }
    }
    out
}
