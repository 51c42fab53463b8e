//! End-to-end: the layer cache through `kiln build` (issue 5): local warm
//! rebuilds, a "second machine" (fresh KILN_ROOT) served by `--cache-repo` or
//! `--cache-from/--cache-to`, concurrent builds sharing a store, and a build killed
//! with SIGKILL mid-push followed by a correct rebuild.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_integration::{seed_base_images, Image, Registry, RunOutput, Sandbox};

const MARK: &str = "RUN-STEP-EXECUTED";

fn app_context(sb: &Sandbox, registry: &Registry, name: &str) -> PathBuf {
    let base = registry.reference("base/busybox:latest");
    sb.new_context(name)
        .file(
            "Dockerfile",
            format!(
                "FROM {base}\nWORKDIR /app\nCOPY app.txt ./\nRUN echo {MARK} && echo built > /app/built.txt\nENV MODE=prod\nRUN echo {MARK} && cat /app/app.txt /app/built.txt > /app/both.txt\nCMD [\"cat\", \"/app/both.txt\"]\n"
            ),
        )
        .file("app.txt", "version 1\n")
        .build()
}

fn digest_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

fn runs(out: &RunOutput) -> usize {
    out.stdout.matches(MARK).count() + out.stderr.lines().filter(|l| l.trim() == MARK).count()
}

#[test]
fn local_warm_rebuild_runs_nothing_and_gives_the_same_digest() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = app_context(&sb, &registry, "warm");
    let (d1, d2, d3) = (sb.out_path("d1"), sb.out_path("d2"), sb.out_path("d3"));
    let first = sb.kiln().build().arg("--digest-file").arg(&d1).arg(&ctx).run();
    first.assert_success();
    assert_eq!(runs(&first), 2, "cold build runs both RUN steps\n{first}");

    let second = sb.kiln().build().arg("--digest-file").arg(&d2).arg(&ctx).run();
    second.assert_success();
    assert_eq!(runs(&second), 0, "warm build must run no RUN step\n{second}");
    assert_eq!(second.lines_with("(cached)").len(), 4, "WORKDIR, COPY and both RUNs cached\n{second}");
    assert_eq!(digest_of(&d1), digest_of(&d2), "a warm rebuild gives the same image");

    // A context change misses the COPY and everything after it.
    std::fs::write(ctx.join("app.txt"), "version 2\n").unwrap();
    let third = sb.kiln().build().arg("--digest-file").arg(&d3).arg(&ctx).run();
    third.assert_success();
    assert_eq!(runs(&third), 2, "{third}");
    assert_ne!(digest_of(&d1), digest_of(&d3));

    // --no-cache runs everything again.
    let fourth = sb.kiln().build().arg("--no-cache").arg(&ctx).run();
    fourth.assert_success();
    assert_eq!(runs(&fourth), 2, "{fourth}");
}

#[test]
fn second_machine_with_cache_repo_runs_nothing() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let cache_repo = registry.reference("cache/app");
    let machine_a = Sandbox::new();
    let ctx = app_context(&machine_a, &registry, "a");
    let da = machine_a.out_path("digest");
    let out = machine_a
        .kiln()
        .build()
        .args(["--cache-repo", &cache_repo])
        .tag(&registry.reference("demo/app:a"))
        .push()
        .arg("--digest-file")
        .arg(&da)
        .arg(&ctx)
        .run();
    out.assert_success();
    assert_eq!(runs(&out), 2);

    // A second machine: nothing shared but the registry.
    let machine_b = Sandbox::new();
    let ctx_b = app_context(&machine_b, &registry, "b");
    let db = machine_b.out_path("digest");
    let mark = registry.log_mark();
    let out = machine_b
        .kiln()
        .build()
        .args(["--cache-repo", &cache_repo])
        .tag(&registry.reference("demo/app:b"))
        .push()
        .arg("--digest-file")
        .arg(&db)
        .arg(&ctx_b)
        .run();
    out.assert_success();
    assert_eq!(runs(&out), 0, "the second machine must run no RUN step\n{out}");
    assert_eq!(digest_of(&da), digest_of(&db), "same manifest digest on both machines");
    // Cached layers were mounted or skipped, never uploaded again.
    let img = Image::pull_from(&registry, "demo/app:b");
    for l in img.layer_digests() {
        let uploads = registry.blob_uploads_since(mark, &l);
        assert!(uploads.is_empty(), "layer {l} was uploaded again: {uploads:?}");
    }
    assert_eq!(img.tree.node("/app/both.txt").text(), "version 1\nbuilt\n");
}

#[test]
fn second_machine_with_cache_to_and_cache_from() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let cache_ref = format!("type=registry,ref={}", registry.reference("cache/buildkit-style:main"));
    let a = Sandbox::new();
    let out = a.kiln().build().args(["--cache-to", &cache_ref]).arg(app_context(&a, &registry, "a")).run();
    out.assert_success();
    let b = Sandbox::new();
    let layout = b.out_path("layout");
    let out = b.kiln().build().args(["--cache-from", &cache_ref]).output_oci(&layout).arg(app_context(&b, &registry, "b")).run();
    out.assert_success();
    assert_eq!(runs(&out), 0, "{out}");
    // The layout needs the layers themselves: they were fetched from the cache.
    let img = Image::from_layout(&layout, None);
    assert_eq!(img.tree.node("/app/both.txt").text(), "version 1\nbuilt\n");
}

#[test]
fn concurrent_builds_share_a_store() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = app_context(&sb, &registry, "shared");
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let cmd = sb.kiln().build().tag(&registry.reference(&format!("demo/concurrent:{i}"))).push().arg(&ctx);
                scope.spawn(move || cmd.run())
            })
            .collect();
        for h in handles {
            h.join().unwrap().assert_success();
        }
    });
    // Each build is complete and correct (their `created` times may differ).
    for i in 0..3 {
        let img = Image::pull_from(&registry, &format!("demo/concurrent:{i}"));
        img.assert_consistent();
        assert_eq!(img.tree.node("/app/both.txt").text(), "version 1\nbuilt\n");
    }
}

#[test]
fn sigkill_mid_push_then_rebuild_is_correct() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = app_context(&sb, &registry, "killed");
    let reference = registry.reference("demo/killed:1");
    // Kill the whole process tree as soon as the push starts.
    let child = sb.kiln().build().tag(&reference).push().arg(&ctx).spawn();
    let killed = child.kill_when_stderr_contains("image sha256:", Duration::from_secs(120));
    assert!(killed, "the build never reached its push");
    let out = sb.kiln().build().tag(&reference).push().arg(&ctx).run();
    out.assert_success();
    let img = Image::pull_from(&registry, "demo/killed:1");
    img.assert_consistent();
    assert_eq!(img.tree.node("/app/both.txt").text(), "version 1\nbuilt\n");
}

#[test]
fn df_and_prune_all_empty_the_state_and_a_rebuild_still_works() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = app_context(&sb, &registry, "prune");
    sb.kiln().build().arg(&ctx).run().assert_success();
    let df = sb.kiln().arg("df").run();
    df.assert_success();
    let layers_line = df.stdout.lines().find(|l| l.starts_with("unpacked layers")).unwrap_or_else(|| panic!("{df}"));
    assert!(!layers_line.contains(" 0 "), "layers were unpacked: {layers_line}");
    let cache_line = df.stdout.lines().find(|l| l.starts_with("layer cache")).unwrap();
    assert!(cache_line.split_whitespace().nth(2) == Some("4"), "4 cache records (WORKDIR, COPY, 2 RUN): {cache_line}");

    let out = sb.kiln().args(["prune", "--all"]).run();
    out.assert_success();
    out.assert_stdout_contains("cache records");
    let df = sb.kiln().arg("df").run();
    let layers_line = df.stdout.lines().find(|l| l.starts_with("unpacked layers")).unwrap();
    assert_eq!(layers_line.split_whitespace().nth(2), Some("0"), "{df}");
    let cache_line = df.stdout.lines().find(|l| l.starts_with("layer cache")).unwrap();
    assert_eq!(cache_line.split_whitespace().nth(2), Some("0"), "{df}");

    // Nothing cached any more: the rebuild runs its steps and still succeeds.
    let out = sb.kiln().build().arg(&ctx).run();
    out.assert_success();
    assert_eq!(runs(&out), 2, "{out}");
}

#[test]
fn cached_layers_pushed_to_another_registry_are_fetched_first() {
    let cache_registry = Registry::start();
    seed_base_images(&cache_registry);
    let target = Registry::start();
    seed_base_images(&target);
    let cache_repo = cache_registry.reference("cache/app");
    let a = Sandbox::new();
    a.kiln().build().args(["--cache-repo", &cache_repo]).arg(app_context(&a, &cache_registry, "a")).run().assert_success();
    // A second machine: its layers are lazy hits in a registry the target cannot
    // mount from, so the push must download them first.
    let b = Sandbox::new();
    let ctx = b
        .new_context("b")
        .file("Dockerfile", std::fs::read_to_string(app_context(&b, &cache_registry, "tmp").join("Dockerfile")).unwrap())
        .file("app.txt", "version 1\n")
        .build();
    let out = b.kiln().build().args(["--cache-repo", &cache_repo]).tag(&target.reference("demo/app:1")).push().arg(&ctx).run();
    out.assert_success();
    assert_eq!(runs(&out), 0, "{out}");
    let img = Image::pull_from(&target, "demo/app:1");
    assert_eq!(img.tree.node("/app/both.txt").text(), "version 1\nbuilt\n");
}
