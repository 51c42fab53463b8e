//! Why a step missed the cache (issue 17, part 3), end to end as the unprivileged user:
//! each rebuild changes one input and the miss line must name that input — a context
//! file by path, a build arg by name (with its values, or without them when the name
//! looks like a credential, whose value must not be in any record either), the
//! instruction, the base image — in plain and JSON progress, against the local cache
//! and against a registry cache on a fresh runner.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_integration::registry::seed_base_images;
use kiln_integration::{Registry, RunOutput, Sandbox};

fn context(sb: &Sandbox, registry: &Registry, name: &str, run: &str) -> PathBuf {
    let base = registry.reference("base/busybox:latest");
    let df = format!("FROM {base}\nARG VERSION\nARG NPM_TOKEN\nCOPY app/ /app/\nRUN {run}\n");
    sb.new_context(name).file("Dockerfile", df).file("app/a.txt", "a\n").file("app/b.txt", "b\n").build()
}

fn misses(out: &RunOutput) -> Vec<String> {
    out.stderr.lines().chain(out.stdout.lines()).filter(|l| l.starts_with("cache miss:")).map(str::to_string).collect()
}

/// The `inputs` of every cache record in the sandbox's store, as JSON text.
fn record_inputs(sb: &Sandbox) -> Vec<String> {
    let content = sb.kiln_root().join("content");
    let mut out = Vec::new();
    for e in fs::read_dir(content.join("cache/keys")).unwrap().flatten() {
        let Ok(d) = fs::read_to_string(e.path()) else { continue };
        let Some(hex) = d.trim().strip_prefix("sha256:") else { continue };
        let rec: serde_json::Value = serde_json::from_slice(&fs::read(content.join("blobs/sha256").join(hex)).unwrap()).unwrap();
        out.push(rec["inputs"].to_string());
    }
    assert!(!out.is_empty(), "no cache records in {}", content.display());
    out
}

fn build(sb: &Sandbox, ctx: &Path, args: &[&str]) -> RunOutput {
    let out = sb.kiln().build().args(["--progress", "plain"]).args(args).arg(ctx).run();
    out.assert_success();
    out
}

#[test]
fn each_miss_names_the_input_that_changed() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = context(&sb, &registry, "explain", "echo $VERSION $NPM_TOKEN > /out");
    let args = |v: &str, t: &str| vec!["--build-arg".to_string(), format!("VERSION={v}"), "--build-arg".to_string(), format!("NPM_TOKEN={t}")];
    let a = |v: &str, t: &str| args(v, t);
    let run = |v: &[String]| build(&sb, &ctx, &v.iter().map(String::as_str).collect::<Vec<_>>());

    let first = run(&a("1", "tok-one-secret"));
    assert!(misses(&first).is_empty(), "a first build has nothing to explain:\n{first}");
    // Nothing changed: no miss, nothing explained.
    let same = run(&a("1", "tok-one-secret"));
    assert!(misses(&same).is_empty(), "{same}");

    // A context file: named by path, on the COPY; the RUN after it follows.
    fs::write(ctx.join("app/b.txt"), "b2\n").unwrap();
    let out = run(&a("1", "tok-one-secret"));
    let m = misses(&out);
    assert!(m.iter().any(|l| l.contains("COPY app/ /app/") && l.contains("context file app/b.txt")), "{m:?}\n{out}");
    assert!(m.iter().any(|l| l.contains("RUN echo") && l.contains("an earlier step of the stage changed")), "{m:?}");
    assert!(!m.iter().any(|l| l.contains("app/a.txt")), "an unchanged file was named: {m:?}");

    // A build arg: by name, with both values, on every step whose key it is in (the
    // ARG steps are links of kiln's key chain, so the COPY after them misses too).
    let out = run(&a("2", "tok-one-secret"));
    let m = misses(&out);
    assert_eq!(m.len(), 2, "{m:?}");
    assert!(m.iter().all(|l| l.contains("build arg VERSION changed: 1 → 2")), "{m:?}");

    // A credential-like arg: by name, never its values (in the line or any record).
    let out = run(&a("2", "tok-two-secret"));
    let m = misses(&out);
    assert!(m.iter().any(|l| l.contains("COPY app/ /app/") && l.contains("build arg NPM_TOKEN changed (value not shown)")), "{m:?}");
    assert!(!out.combined().contains("tok-one-secret"), "{out}");
    // (The history line of a RUN shows build args, as Docker's and BuildKit's do; what
    // kiln adds to explain misses must not.)
    for inputs in record_inputs(&sb) {
        assert!(!inputs.contains("tok-one-secret") && !inputs.contains("tok-two-secret"), "a credential-like value in a record's inputs: {inputs}");
    }

    // The instruction.
    fs::write(ctx.join("Dockerfile"), fs::read_to_string(ctx.join("Dockerfile")).unwrap().replace("> /out", "> /out2")).unwrap();
    let out = run(&a("2", "tok-two-secret"));
    let m = misses(&out);
    assert!(m.len() == 1 && m[0].contains("the instruction changed"), "{m:?}");

    // --explain: every part, the changed ones marked; JSON: a cache_miss event.
    fs::write(ctx.join("app/a.txt"), "a2\n").unwrap();
    let out = build(&sb, &ctx, &["--explain", "--build-arg", "VERSION=2", "--build-arg", "NPM_TOKEN=tok-two-secret"]);
    assert!(out.combined().contains("* context app/"), "{out}");
    fs::write(ctx.join("app/a.txt"), "a3\n").unwrap();
    let out = sb.kiln().build().args(["--progress", "json", "--build-arg", "VERSION=2", "--build-arg", "NPM_TOKEN=tok-two-secret"]).arg(&ctx).run();
    out.assert_success();
    let events: Vec<serde_json::Value> = out.stdout.lines().chain(out.stderr.lines()).filter_map(|l| serde_json::from_str(l).ok()).collect();
    let miss = events.iter().find(|e| e["event"] == "cache_miss").unwrap_or_else(|| panic!("no cache_miss event:\n{out}"));
    assert_eq!(miss["changes"][0]["input"], "context", "{miss}");
    assert_eq!(miss["changes"][0]["name"], "app/a.txt", "{miss}");
}

/// A fresh runner with `--cache-from`: the miss is explained against the record in
/// the registry cache (nothing is local).
#[test]
fn a_fresh_runner_explains_misses_against_the_registry_cache() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let cache = format!("type=registry,ref={},mode=max", registry.reference("cache/explain:main"));
    let a = Sandbox::new();
    let ctx_a = context(&a, &registry, "a", "cat /app/a.txt > /out");
    build(&a, &ctx_a, &["--cache-to", &cache, "--build-arg", "VERSION=1"]);
    let b = Sandbox::new();
    let ctx_b = context(&b, &registry, "b", "cat /app/a.txt > /out");
    fs::write(ctx_b.join("app/a.txt"), "changed on the branch\n").unwrap();
    let from = cache.replace(",mode=max", "");
    let out = build(&b, &ctx_b, &["--cache-from", &from, "--build-arg", "VERSION=1"]);
    let m = misses(&out);
    assert!(m.iter().any(|l| l.contains("COPY app/ /app/") && l.contains("context file app/a.txt")), "{m:?}\n{out}");
}

/// The same against a Kaniko-style `--cache-repo`: the record is found by the tag
/// naming the step's position.
#[test]
fn a_fresh_runner_explains_misses_against_the_cache_repo() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let repo = registry.reference("cache/explain-repo");
    let a = Sandbox::new();
    let ctx_a = context(&a, &registry, "a", "cat /app/a.txt > /out");
    build(&a, &ctx_a, &["--cache-repo", &repo, "--build-arg", "VERSION=1"]);
    let b = Sandbox::new();
    let ctx_b = context(&b, &registry, "b", "cat /app/a.txt > /out");
    fs::write(ctx_b.join("app/a.txt"), "changed on the branch\n").unwrap();
    let out = build(&b, &ctx_b, &["--cache-repo", &repo, "--build-arg", "VERSION=1"]);
    let m = misses(&out);
    assert!(m.iter().any(|l| l.contains("COPY app/ /app/") && l.contains("context file app/a.txt")), "{m:?}\n{out}");
    let c = Sandbox::new();
    let ctx_c = context(&c, &registry, "c", "cat /app/a.txt > /out");
    let out = build(&c, &ctx_c, &["--cache-repo", &repo, "--build-arg", "VERSION=2"]);
    let m = misses(&out);
    assert!(m.iter().any(|l| l.contains("build arg VERSION changed: 1 → 2")), "{m:?}\n{out}");
}

/// The base image tag now names another image: the first step says so, with both digests.
#[test]
fn a_moved_base_tag_is_named_with_both_digests() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base_ref = registry.reference("explain/base:1");
    let push_base = |content: &str| {
        let df = format!("FROM {}\nRUN echo {content} > /base.txt\n", registry.reference("base/busybox:latest"));
        let ctx = sb.new_context(&format!("base-{content}")).file("Dockerfile", df).build();
        sb.kiln().build().tag(&base_ref).push().arg(&ctx).run().assert_success();
        kiln_integration::Image::digest_of(&registry.manifest_raw("explain/base", "1"))
    };
    let first = push_base("one");
    let app = sb.new_context("app").file("Dockerfile", format!("FROM {base_ref}\nCOPY a.txt /a.txt\n")).file("a.txt", "a\n").build();
    build(&sb, &app, &["--pull=always"]);
    let second = push_base("two");
    assert_ne!(first, second);
    let out = build(&sb, &app, &["--pull=always"]);
    let m = misses(&out);
    assert!(m.len() == 1 && m[0].contains("COPY a.txt /a.txt") && m[0].contains("the base changed"), "{m:?}\n{out}");
    assert!(m[0].contains(first.trim_start_matches("sha256:")) && m[0].contains(second.trim_start_matches("sha256:")), "{m:?}");
}
