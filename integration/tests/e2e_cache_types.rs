//! The cache types and options `docker buildx build` users pass (issue 17, part 2),
//! end to end as the unprivileged user against the real registry: `mode=min` exports
//! only the built image's layers and `mode=max` every step's (a fresh runner then
//! reruns the builder stage, or not); `type=local` writes an OCI layout directory a CI
//! system keeps and a fresh runner reads; a missing local cache is a miss; an export
//! that fails is a warning unless `ignore-error=false`; options are checked first.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kiln_integration::faultproxy::{Fault, FaultProxy, Rule};
use kiln_integration::registry::seed_base_images;
use kiln_integration::{Registry, RunOutput, Sandbox};

const MARK: &str = "builder-stage-ran";

/// A builder stage whose RUN prints MARK, and a final stage that copies from it after
/// a context file (so a changed file makes the copy miss and need the builder stage).
fn two_stage(sb: &Sandbox, registry: &Registry, name: &str) -> PathBuf {
    let base = registry.reference("base/busybox:latest");
    let df = format!(
        "FROM {base} AS build\nRUN echo {MARK} && echo artifact > /artifact\nFROM {base}\nCOPY app.txt /app.txt\nCOPY --from=build /artifact /artifact\nRUN cat /artifact /app.txt > /both\n"
    );
    sb.new_context(name).file("Dockerfile", df).file("app.txt", "v1\n").build()
}

fn ran_builder_stage(out: &RunOutput) -> bool {
    out.combined().lines().any(|l| l.trim() == MARK)
}

/// The `created_by` of every record in the cache manifest `repo:tag`.
fn records(registry: &Registry, repo: &str, tag: &str) -> BTreeSet<String> {
    let m = registry.manifest(repo, tag);
    let cfg = registry.blob(repo, m["config"]["digest"].as_str().unwrap());
    let c: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
    c["kiln.cache.records"].as_object().unwrap().values().map(|r| r["created_by"].as_str().unwrap_or("").to_string()).collect()
}

#[test]
fn mode_min_exports_the_image_layers_and_mode_max_every_step() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let a = Sandbox::new();
    let ctx = two_stage(&a, &registry, "a");
    let min = format!("type=registry,ref={}", registry.reference("cache/modes:min"));
    let max = format!("type=registry,ref={},mode=max", registry.reference("cache/modes:max"));
    a.kiln().build().args(["--cache-to", &min]).arg(&ctx).run().assert_success();
    a.kiln().build().args(["--cache-to", &max]).arg(&ctx).run().assert_success();

    let in_min = records(&registry, "cache/modes", "min");
    let in_max = records(&registry, "cache/modes", "max");
    assert!(in_min.iter().any(|c| c.contains("COPY /artifact")) && in_min.iter().any(|c| c.contains("cat /artifact")), "{in_min:?}");
    assert!(!in_min.iter().any(|c| c.contains(MARK)), "mode=min exported the builder stage's step: {in_min:?}");
    assert!(in_max.iter().any(|c| c.contains(MARK)), "mode=max lacks the builder stage's step: {in_max:?}");
    assert!(in_min.is_subset(&in_max), "{in_min:?} {in_max:?}");

    // A fresh runner with one source file changed: from the min cache it must run the
    // builder stage again (its layer is not there), from the max cache it must not.
    for (cache, expect_run) in [(&min, true), (&max, false)] {
        let b = Sandbox::new();
        let ctx = two_stage(&b, &registry, "b");
        std::fs::write(ctx.join("app.txt"), "v2\n").unwrap();
        let from = cache.replace(",mode=max", "");
        let out = b.kiln().build().args(["--cache-from", &from]).arg(&ctx).run();
        out.assert_success();
        assert_eq!(ran_builder_stage(&out), expect_run, "--cache-from {from}:\n{out}");
    }
}

/// BuildKit's `type=local`: an OCI layout directory; `src` of a directory that does
/// not exist yet (a CI system's first run) is a miss.
#[test]
fn a_local_cache_directory_serves_a_fresh_runner() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let a = Sandbox::new();
    let dir = a.path().join("ci-cache");
    let dest = format!("type=local,dest={},mode=max", dir.display());
    let src = format!("type=local,src={}", dir.display());
    let first = a.kiln().build().args(["--cache-from", &src, "--cache-to", &dest]).output_oci(&a.out_path("a")).arg(two_stage(&a, &registry, "a")).run();
    first.assert_success();
    assert!(ran_builder_stage(&first));
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "latest", "{index}");
    assert!(dir.join("oci-layout").is_file());

    // A fresh runner that restored the directory (as actions/cache or GitLab cache:
    // would): nothing runs, the image is the same, and it writes a new directory.
    let b = Sandbox::new();
    let restored = b.path().join("restored");
    copy_dir(&dir, &restored);
    b.user.chown_tree(&restored);
    let dir2 = b.path().join("ci-cache-new");
    let out = b
        .kiln()
        .build()
        .args(["--cache-from", &format!("type=local,src={}", restored.display()), "--cache-to", &format!("type=local,dest={},mode=max", dir2.display())])
        .output_oci(&b.out_path("b"))
        .arg(two_stage(&b, &registry, "b"))
        .run();
    out.assert_success();
    assert!(!ran_builder_stage(&out), "the builder stage ran although the local cache had it:\n{out}");
    assert_eq!(oci_digest(&a.path().join("a")), oci_digest(&b.path().join("b")));
    // The new directory holds every blob its manifest names (layers came from the old one).
    let layout_index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir2.join("index.json")).unwrap()).unwrap();
    let md = layout_index["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir2.join("blobs/sha256").join(md)).unwrap()).unwrap();
    for l in m["layers"].as_array().unwrap().iter().chain(std::iter::once(&m["config"])) {
        let d = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
        assert!(dir2.join("blobs/sha256").join(d).is_file(), "{d} is missing from the new cache directory");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(st.success());
}

fn oci_digest(dir: &Path) -> String {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"].as_str().unwrap().to_string()
}

/// A registry that refuses the cache manifest: a warning and a built image, unless
/// `ignore-error=false`, which fails the build naming the registry.
#[test]
fn a_failed_export_warns_unless_ignore_error_is_false() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = two_stage(&sb, &registry, "refused");
    let proxy = FaultProxy::start(&registry.host());
    let body = r#"{"errors":[{"code":"DENIED","message":"cache writes are not allowed here"}]}"#;
    proxy.add_rule(Rule::new("PUT", "/manifests/", Fault::Respond(403, body.to_string()), 100));
    let to = format!("type=registry,ref={}/cache/refused:c", proxy.host());
    let out = sb.kiln().build().args(["--insecure-registry", &proxy.host(), "--cache-to", &to]).arg(&ctx).run();
    out.assert_success();
    out.assert_stderr_contains("could not write the cache");
    let out = sb.kiln().build().args(["--insecure-registry", &proxy.host(), "--cache-to", &format!("{to},ignore-error=false")]).arg(&ctx).run();
    out.assert_failure_containing("ignore-error=false");
    out.assert_failure_containing(&proxy.host());
    assert!(proxy.injected() >= 2, "{:?}", proxy.log());
}

#[test]
fn cache_options_are_checked_before_any_work() {
    let sb = Sandbox::new();
    let ctx = sb.new_context("flags").file("Dockerfile", "FROM scratch\n").build();
    let rows: &[(&str, &str, &str)] = &[
        ("--cache-to", "type=registry,ref=r.example/a:c,mdoe=max", "unknown option \"mdoe\" (did you mean mode?)"),
        ("--cache-to", "type=registyr,ref=r.example/a:c", "(did you mean registry?)"),
        ("--cache-to", "type=gha", "no GitHub Actions cache backend"),
        ("--cache-to", "type=inline,mode=max", "holds the image's own layers only (mode=min)"),
        ("--cache-to", "type=registry,ref=r.example/a:c,compression=zstd", "pass --compression zstd"),
        ("--cache-to", "type=local,dst=/c", "(did you mean dest?)"),
    ];
    for (flag, spec, want) in rows {
        let out = sb.kiln().build().arg(flag).arg(spec).arg(&ctx).run();
        out.assert_failure_containing(want);
    }
    // A local cache that does not exist yet is a miss, not an error.
    let out = sb.kiln().build().arg("--cache-from").arg("type=local,src=/nonexistent/kiln-cache").arg(&ctx).run();
    out.assert_success();
}
