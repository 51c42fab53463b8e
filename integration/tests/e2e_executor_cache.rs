//! End to end: Kaniko's caching flags as a Kaniko pipeline passes them (issue 14):
//! `warmer --cache-dir --image` then `executor --cache=true --cache-dir` (base images
//! from the directory, their layers never fetched), `--cache-copy-layers` /
//! `--cache-run-layers` (what the cache repository holds), and `--skip-unused-stages`
//! with Kaniko's default of building every stage.

use std::process::Command;
use std::time::Duration;

use kiln_integration::{require_program, run_with_timeout, seed_base_images, Image, Registry, Sandbox};

/// Access-log lines of blob GETs since `mark` (layer or config downloads).
fn blob_gets(registry: &Registry, mark: usize) -> Vec<String> {
    registry.log_since(mark).lines().filter(|l| l.contains("\"GET ") && l.contains("/blobs/sha256:")).map(str::to_string).collect()
}

#[test]
fn warmer_fills_the_cache_dir_and_executor_builds_from_it_without_fetching_layers() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let cache = sb.out_path("kaniko-cache");
    let ctx = sb
        .new_context("warm")
        .file("Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN echo built > /built.txt\n")
        .file("Dockerfile.unrelated", "FROM scratch\n")
        .build();

    // Kaniko's warmer invocation, with its Dockerfile mode and build args.
    sb.kiln()
        .args(["warmer", "--cache-dir"])
        .arg(&cache)
        .arg("--dockerfile")
        .arg(ctx.join("Dockerfile"))
        .arg(format!("--build-arg=BASE={}", base.latest))
        .arg("--verbosity=info")
        .run()
        .assert_success();
    let digest = Image::digest_of(&registry.manifest_raw("base/busybox", "latest"));
    let entry = cache.join(&digest);
    assert!(entry.is_file(), "no entry {} in {:?}", entry.display(), std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>());
    let manifest = std::fs::read(cache.join(format!("{digest}.json"))).unwrap();
    assert_eq!(Image::digest_of(&manifest), digest, "the .json beside the tarball is the manifest itself");
    let names: Vec<String> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), 2, "no scratch store or temporary file left: {names:?}");
    // A docker-archive as go-containerregistry writes it: skopeo, a reader kiln did
    // not write, sees the image with the base's layers.
    // (Through a name without the `:` that skopeo would read as a tag.)
    let skopeo = require_program("skopeo");
    let plain = sb.out_path("entry.tar");
    std::fs::copy(&entry, &plain).unwrap();
    let out = run_with_timeout(Command::new(skopeo).arg("inspect").arg(format!("docker-archive:{}", plain.display())), Duration::from_secs(60));
    assert!(out.status.success(), "skopeo cannot read the entry\n{out}");
    let seen: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    // (A docker archive names layers by their uncompressed digests.)
    let diff_ids: Vec<String> = Image::pull_from(&registry, "base/busybox:latest").layers.iter().map(|l| l.diff_id.clone()).collect();
    assert_eq!(seen["Layers"], serde_json::json!(diff_ids), "{}", out.stdout);

    // Warming again: already there, nothing fetched.
    let mark = registry.log_mark();
    let again = sb.kiln().args(["warmer", "-c"]).arg(&cache).args(["-i", &base.latest]).run();
    again.assert_success();
    assert!(again.combined().contains("already in the cache"), "{again}");
    assert!(blob_gets(&registry, mark).is_empty(), "a fresh entry is not pulled again:\n{}", registry.log_since(mark));

    // The executor with --cache=true --cache-dir: the base comes from the directory.
    let dest = registry.reference("demo/warm:1");
    let mark = registry.log_mark();
    let out = sb
        .kiln()
        .arg("executor")
        .arg(format!("--context=dir://{}", ctx.display()))
        .arg(format!("--destination={dest}"))
        .arg(format!("--build-arg=BASE={}", base.latest))
        .arg("--cache=true")
        .arg(format!("--cache-dir={}", cache.display()))
        .run();
    out.assert_success();
    assert!(out.combined().contains("from the base image cache"), "{out}");
    let gets = blob_gets(&registry, mark);
    assert!(gets.is_empty(), "the base's blobs were fetched although cached:\n{}", gets.join("\n"));
    let img = Image::pull_from(&registry, "demo/warm:1");
    assert_eq!(img.tree.node("/built.txt").text(), "built\n");
    assert_eq!(img.layers.len(), base.layer_digests.len() + 1);
    for (l, d) in img.layers.iter().zip(&base.layer_digests) {
        assert_eq!(&l.digest, d, "the base layers are the registry's, byte for byte");
    }

    // An entry older than --cache-ttl is not used, and without --cache=true the
    // directory is not read (Kaniko reads --cache-dir only with --cache).
    let touch = require_program("touch");
    let old = run_with_timeout(Command::new(touch).args(["-d", "30 days ago"]).arg(&entry), Duration::from_secs(10));
    assert!(old.status.success(), "{old}");
    for extra in [vec!["--cache=true".to_string(), format!("--cache-dir={}", cache.display()), "--cache-ttl=168h".to_string()], vec![format!("--cache-dir={}", cache.display())]] {
        let sb2 = Sandbox::new();
        let mark = registry.log_mark();
        let out = sb2
            .kiln()
            .arg("executor")
            .arg(format!("--context=dir://{}", ctx.display()))
            .arg("--no-push")
            .arg(format!("--build-arg=BASE={}", base.latest))
            .args(&extra)
            .run();
        out.assert_success();
        assert!(!out.combined().contains("from the base image cache"), "{extra:?}\n{out}");
        assert!(!blob_gets(&registry, mark).is_empty(), "{extra:?}: the base was not pulled from the registry\n{out}");
    }

    // No image at all could be warmed: an error, and exit 1.
    sb.kiln().args(["warmer", "-c"]).arg(&cache).args(["-i", &registry.reference("no/such:image")]).run().assert_failure_containing("failed to warm any");
    sb.kiln().args(["warmer", "-c"]).arg(&cache).run().assert_failure_containing("--image");
}

#[test]
fn cache_copy_and_run_layers_choose_what_the_cache_repo_holds() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb
        .new_context("layers")
        .file("Dockerfile", &format!("FROM {}\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n", base.latest))
        .file("a.txt", "a\n")
        .build();
    let cases = [
        // Kaniko's defaults are run only; kiln caches COPY layers too unless told not to,
        // and with them the skeleton of the base layer the COPY ran on (`skeletons`).
        ("both", vec![], 2, 1),
        ("run", vec!["--cache-copy-layers=false"], 1, 0),
        ("none", vec!["--cache-copy-layers=false", "--cache-run-layers=false"], 0, 0),
    ];
    for (name, flags, want, want_skeletons) in cases {
        // A fresh runner each time: the steps run, and their records are stored.
        let sb = Sandbox::new();
        let repo = format!("demo/layers-{name}/cache");
        let out = sb
            .kiln()
            .arg("executor")
            .arg(format!("--context={}", ctx.display()))
            .arg("--no-push")
            .arg("--cache=true")
            .arg(format!("--cache-repo={}", registry.reference(&repo)))
            .args(&flags)
            .run();
        out.assert_success();
        // One image per step key; `pos-…` tags name the same images by step position
        // (for miss explanations), one per key too.
        let tags = registry.tags(&repo);
        let (pos, keys): (Vec<&String>, Vec<&String>) = tags.iter().partition(|t| t.starts_with("pos-"));
        let (skeletons, steps): (Vec<&String>, Vec<&String>) = keys.iter().partition(|t| {
            let manifest = registry.manifest(&repo, t);
            let config: serde_json::Value =
                serde_json::from_slice(&registry.blob(&repo, manifest["config"]["digest"].as_str().unwrap_or_default())).unwrap_or_default();
            config["history"].as_array().into_iter().flatten().any(|h| h["created_by"].as_str().is_some_and(|c| c.starts_with("kiln skeleton of ")))
        });
        assert_eq!((steps.len(), pos.len(), skeletons.len()), (want, want, want_skeletons), "{name}: {tags:?}\n{out}");
    }
}

#[test]
fn every_stage_is_built_unless_skip_unused_stages() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let df = format!("FROM {b} AS unused\nRUN echo unused stage ran; exit 3\nFROM {b} AS app\nRUN echo app > /app.txt\nFROM {b} AS later\nRUN exit 4\n", b = base.latest);
    let ctx = sb.new_context("stages").file("Dockerfile", &df).build();
    let executor = |extra: &[&str]| sb.kiln().arg("executor").arg(format!("--context={}", ctx.display())).args(["--no-push", "--target=app"]).args(extra).run();
    // Kaniko's default: every stage up to the target, so the unused one fails the build.
    let out = executor(&[]);
    out.assert_failure();
    assert!(out.combined().contains("exit code 3") || out.combined().contains("exit code: 3"), "{out}");
    assert!(!out.combined().contains("exit code 4"), "stages after the target are never built\n{out}");
    // --skip-unused-stages (and kiln build) build only what the target needs.
    executor(&["--skip-unused-stages"]).assert_success();
    executor(&["--skip-unused-stages=true"]).assert_success();
    executor(&["--skip-unused-stages=false"]).assert_failure();
    sb.kiln().build().arg("--target=app").arg(&ctx).run().assert_success();
    sb.kiln().build().arg("--target=app").arg("--all-stages").arg(&ctx).run().assert_failure();
}

#[test]
fn ignore_path_keeps_a_tree_out_of_the_layers_and_log_timestamp_dates_the_lines() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let df = format!(
        "FROM {}\nRUN mkdir -p /var/cache/build && echo scratch > /var/cache/build/f && echo kept > /kept\nRUN cat /var/cache/build/f > /seen\n",
        base.latest
    );
    let ctx = sb.new_context("ignore").file("Dockerfile", &df).build();
    let build = |name: &str, extra: &[&str]| {
        let out = sb
            .kiln()
            .arg("executor")
            .arg(format!("--context={}", ctx.display()))
            .arg(format!("--destination={}", registry.reference(&format!("demo/ignore:{name}"))))
            .args(extra)
            .run();
        out.assert_success();
        (out, Image::pull_from(&registry, &format!("demo/ignore:{name}")))
    };
    let (out, img) = build("ignored", &["--ignore-path=/var/cache/build", "--log-timestamp"]);
    img.tree.assert_absent("/var/cache/build");
    img.tree.assert_absent("/var/cache/build/f");
    assert_eq!(img.tree.node("/kept").text(), "kept\n");
    // The later step still saw the file while the build ran.
    assert_eq!(img.tree.node("/seen").text(), "scratch\n");
    let dated = out.stderr.lines().filter(|l| l.len() > 21 && l.as_bytes()[4] == b'-' && l.as_bytes()[10] == b'T' && l[..20].ends_with('Z')).count();
    assert!(dated >= 3, "--log-timestamp: progress lines start with the UTC time\n{out}");
    // Without the flag, other keys: nothing of the filtered build is reused.
    let (out, img) = build("kept", &[]);
    assert_eq!(img.tree.node("/var/cache/build/f").text(), "scratch\n", "{out}");
    assert!(!out.stderr.lines().any(|l| l.starts_with("20") && l.as_bytes().get(4) == Some(&b'-')), "no timestamps unless asked\n{out}");
    sb.kiln().build().arg("--ignore-path=relative/x").arg(&ctx).run().assert_failure_containing("--ignore-path relative/x");
}
