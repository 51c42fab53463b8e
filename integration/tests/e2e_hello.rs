//! End-to-end: `kiln build` of testdata/cases/{hello,bad-syntax,failing-run}
//! as the unprivileged user, against a real registry per test.
//!
//! Every test starts its own registry on a free port and its own sandbox
//! (HOME, KILN_ROOT), so they run in parallel safely.

use kiln_integration::{seed_base_images, Image, Kind, Registry, RunOutput, Sandbox};
use std::collections::BTreeSet;
use std::time::Duration;

const BASE_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `kiln build -t REF --push CONTEXT`, asserted to succeed and to have put
/// the tag into the registry.
#[track_caller]
fn build_push(sb: &Sandbox, registry: &Registry, ctx: &std::path::Path, reference: &str) -> RunOutput {
    let out = sb.kiln().build().tag(reference).push().arg(ctx).run();
    out.assert_success();
    let (repo_tag, tag) = reference.rsplit_once(':').unwrap();
    let repo = repo_tag.strip_prefix(&format!("{}/", registry.host())).unwrap();
    assert!(
        registry.tags(repo).iter().any(|t| t == tag),
        "kiln exited 0 but {reference} is not in the registry (tags of {repo}: {:?})\n{out}",
        registry.tags(repo)
    );
    out
}

/// Everything the hello image must be, given the base image's layers.
#[track_caller]
fn assert_hello_image(img: &Image, base_layers: &[String]) {
    img.assert_consistent();
    let n_base = base_layers.len();

    // layers: base + WORKDIR (BuildKit's mkdir layer) + COPY + RUN, the base ones untouched
    assert_eq!(
        img.layers.len(),
        n_base + 3,
        "expected {n_base} base layers + WORKDIR + COPY + RUN; manifest: {:#}",
        img.manifest
    );
    assert_eq!(&img.layer_digests()[..n_base], base_layers, "base layers must be reused as is");
    assert_eq!(
        img.config["rootfs"]["diff_ids"].as_array().map(|a| a.len()),
        Some(img.layers.len()),
        "one diff_id per layer"
    );

    // the tree
    let t = &img.tree;
    t.assert_entry("/app", Kind::Dir, 0o755, 0, 0);
    t.assert_file("/app/hello.txt", 0o644, 0, 0, "hello from kiln\n");
    t.assert_file("/app/built.txt", 0o640, 0, 0, "built by RUN\n");
    t.assert_entry("/bin/busybox", Kind::File, 0o755, 0, 0);
    t.assert_entry("/tmp", Kind::Dir, 0o1777, 0, 0);
    t.assert_entry("/home/app", Kind::Dir, 0o755, 1000, 1000);

    // no sandbox artifacts: mount stubs, /proc or /dev contents, /run
    for p in ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/run", "/.dockerenv"] {
        t.assert_absent(p);
    }
    for d in ["/proc", "/dev", "/sys"] {
        t.assert_entry(d, Kind::Dir, 0o755, 0, 0);
        assert!(t.children_of(d).is_empty(), "{d} must stay empty: {:?}", t.children_of(d));
    }
    let workdir_layer = &img.layers[n_base];
    let copy_layer = &img.layers[n_base + 1];
    let run_layer = &img.layers[n_base + 2];
    let set = |l: &kiln_integration::Layer| l.entries.iter().cloned().collect::<BTreeSet<String>>();
    assert_eq!(set(workdir_layer), ["/app"].map(String::from).into(), "WORKDIR layer");
    let copy_entries = set(copy_layer);
    let run_entries = set(run_layer);
    assert!(copy_entries.contains("/app/hello.txt"), "COPY layer: {copy_entries:?}");
    assert!(
        copy_entries.is_subset(&["/app", "/app/hello.txt"].map(String::from).into()),
        "COPY layer has more than /app and /app/hello.txt: {copy_entries:?}"
    );
    assert!(run_entries.contains("/app/built.txt"), "RUN layer: {run_entries:?}");
    assert!(
        run_entries.is_subset(&["/app", "/app/built.txt"].map(String::from).into()),
        "RUN layer has more than /app and /app/built.txt (mount stubs? /tmp? /etc?): {run_entries:?}"
    );
    for (path, node) in &t.0 {
        assert!(
            !node.xattrs.keys().any(|k| k.starts_with("user.overlay.") || k.starts_with("trusted.overlay.")),
            "{path}: overlay xattrs leaked into the image: {node}"
        );
    }

    // the config
    let env = img.env();
    assert!(env.iter().any(|e| e == "GREETING=hello world"), "Env: {env:?}");
    assert!(env.iter().any(|e| e == BASE_PATH), "Env lacks the base PATH: {env:?}");
    assert_eq!(img.cfg()["Cmd"], serde_json::json!(["cat", "/app/hello.txt"]), "Cmd");
    assert_eq!(img.cfg()["WorkingDir"], "/app", "WorkingDir");
    assert_eq!(img.config["architecture"], "amd64");
    assert_eq!(img.config["os"], "linux");
    assert!(
        img.cfg()["Labels"].get("io.buildah.version").is_none(),
        "no foreign labels: {}",
        img.cfg()
    );

    // history: base entries, then one per instruction; empty_layer for the
    // instructions that make no layer
    let history = img.history();
    let find = |needle: &str| {
        history
            .iter()
            .find(|h| h["created_by"].as_str().unwrap_or_default().contains(needle))
            .unwrap_or_else(|| panic!("no history entry with created_by containing {needle:?}: {history:#?}"))
    };
    for (instr, makes_layer) in [
        ("WORKDIR /app", true),
        ("COPY", true),
        ("echo \"built by RUN\"", true),
        ("GREETING", false),
        ("/app/hello.txt", false), // CMD ["cat", "/app/hello.txt"]
    ] {
        let h = find(instr);
        let empty = h["empty_layer"].as_bool().unwrap_or(false);
        assert_eq!(empty, !makes_layer, "history entry {h}: empty_layer should be {}", !makes_layer);
    }
    let cmd_entry = find("/app/hello.txt");
    assert!(
        cmd_entry["created_by"].as_str().unwrap().contains("CMD"),
        "CMD history entry: {cmd_entry}"
    );
    assert!(find("GREETING")["created_by"].as_str().unwrap().contains("ENV"));
}

/// (a) build + push the hello case, pull it back and check everything.
#[test]
fn hello_build_push_and_pull_back() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.context("hello", &registry);
    let reference = registry.reference("demo/hello:1");

    build_push(&sb, &registry, &ctx, &reference);

    assert_eq!(registry.tags("demo/hello"), ["1"]);
    let img = Image::pull(&reference);
    assert_hello_image(&img, &base.layer_digests);
}

/// (b) `--output type=oci,dest=DIR` without --push: a layout with the same tree.
#[test]
fn hello_output_oci_layout_has_the_same_tree() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.context("hello", &registry);
    let dest = sb.out_path("hello-oci");

    let out = sb.kiln().build().output_oci(&dest).arg(&ctx).run();
    out.assert_success();
    assert!(
        dest.join("oci-layout").is_file() && dest.join("index.json").is_file(),
        "kiln exited 0 but {} is not an OCI image layout\n{out}",
        dest.display()
    );
    assert!(
        registry.tags("demo/hello").is_empty(),
        "nothing may be pushed without --push"
    );
    let from_layout = Image::from_layout(&dest, None);
    assert_hello_image(&from_layout, &base.layer_digests);

    // and the same tree as a pushed build of the same context
    let reference = registry.reference("demo/hello:pushed");
    build_push(&sb, &registry, &ctx, &reference);
    let pushed = Image::pull(&reference);
    assert_eq!(
        from_layout.tree.listing(),
        pushed.tree.listing(),
        "--output type=oci tree differs from the pushed image's tree"
    );
    assert_eq!(from_layout.cfg(), pushed.cfg(), "config differs between layout and push");
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..12]
}

/// (c) Pushing a rebuild of the same case to a second tag uploads no base
/// blob again: the registry access log shows no blob upload carrying a base
/// layer digest during the second push (HEAD checks and `?mount=` are fine).
#[test]
fn rebuild_push_to_second_tag_does_not_reupload_base_blobs() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.context("hello", &registry);

    build_push(&sb, &registry, &ctx, &registry.reference("demo/hello:1"));
    let mark = registry.log_mark();
    build_push(&sb, &registry, &ctx, &registry.reference("demo/hello:2"));

    for d in &base.layer_digests {
        let uploads = registry.blob_uploads_since(mark, d);
        assert!(
            uploads.is_empty(),
            "base layer {d} was uploaded again by the second push:\n{}",
            uploads.join("\n")
        );
    }
    let mut tags = registry.tags("demo/hello");
    tags.sort();
    assert_eq!(tags, ["1", "2"]);
    let img = Image::pull(&registry.reference("demo/hello:2"));
    assert_hello_image(&img, &base.layer_digests);
}

/// (c') kiln's push progress names each blob with what happened to it
/// (`exists`, `mounted` or `pushed`): on the second push the base layer's
/// line must say `exists` or `mounted`, never `pushed`.
#[test]
fn rebuild_push_reports_base_layer_as_exists_or_mounted() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.context("hello", &registry);

    build_push(&sb, &registry, &ctx, &registry.reference("demo/hello:1"));
    let out = build_push(&sb, &registry, &ctx, &registry.reference("demo/hello:2"));

    for d in &base.layer_digests {
        let lines = out.lines_with(short(d));
        assert!(
            !lines.is_empty(),
            "kiln printed no line naming base layer {d} (expected e.g. `{} exists`)\n{out}",
            short(d)
        );
        assert!(
            lines.iter().any(|l| l.contains("exists") || l.contains("mounted")),
            "base layer {d}: expected `exists` or `mounted`, got {lines:?}\n{out}"
        );
        assert!(
            !lines.iter().any(|l| l.contains("pushed")),
            "base layer {d} reported as pushed again: {lines:?}"
        );
    }
}

/// (d) A syntax error: `Dockerfile:3:1: …`, the source line, a caret.
#[test]
fn bad_syntax_reports_line_and_column() {
    let sb = Sandbox::new();
    // No registry: a syntax error must be reported before any pull (port 9
    // is discard; nothing listens there).
    let ctx = sb.context_with_host("bad-syntax", "127.0.0.1:9");
    let out = sb.kiln().build().arg(&ctx).run();
    out.assert_failure_containing("Dockerfile:3:1");
    out.assert_stderr_contains("FROMM x");
    assert!(
        out.stderr.lines().any(|l| l.trim() == "^" || l.trim_start().starts_with('^')),
        "expected a caret line under the offending source line\n{out}"
    );
    assert!(!out.stderr.contains("panicked"), "kiln panicked\n{out}");
}

/// (e) A failing RUN: non-zero exit, `step 2/2`, the instruction, `exit code: 3` (BuildKit's wording).
#[test]
fn failing_run_reports_step_and_exit_code() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.context("failing-run", &registry);
    let reference = registry.reference("demo/failing:1");
    let out = sb.kiln().build().tag(&reference).push().arg(&ctx).run();
    out.assert_failure_containing("step 2/2");
    out.assert_stderr_contains("exit code: 3");
    out.assert_stderr_line_with(&["step 2/2", "RUN exit 3", "process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3"]);
    assert!(!out.stderr.contains("panicked"), "kiln panicked\n{out}");
    assert!(registry.tags("demo/failing").is_empty(), "a failed build must push nothing");
}

/// (f) kiln's image vs Buildah's for the same context, compared file by file and
/// config by config with `kiln diff`, ignoring Buildah's known artifacts.
///
/// The Buildah build that works here, rootless as kilntest (Buildah 1.28,
/// vfs storage in the sandbox; overlay would leak user.overlay.* xattrs):
///
/// ```text
/// setpriv --reuid=kilntest --regid=kilntest --init-groups -- \
///   env HOME=$SB/home XDG_RUNTIME_DIR=$SB/run \
///   buildah --root $SB/buildah/root --runroot $SB/buildah/runroot --storage-driver vfs \
///     bud --isolation chroot --layers --tls-verify=false -t localhost/hello-buildah $SB/ctx/hello
/// setpriv … buildah --root … --runroot … --storage-driver vfs \
///     push --tls-verify=false localhost/hello-buildah docker://127.0.0.1:PORT/cmp/hello:buildah
/// ```
/// ($XDG_RUNTIME_DIR must exist, mode 0700, owned by kilntest.)
#[test]
fn hello_matches_buildah() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.context("hello", &registry);

    // Buildah first: if this fails, the harness (not kiln) is at fault.
    let buildah_ref = registry.reference("cmp/hello:buildah");
    let out = kiln_integration::run_with_timeout(
        sb.buildah()
            .args(["bud", "--isolation", "chroot", "--layers", "--tls-verify=false", "-t"])
            .arg("localhost/hello-buildah")
            .arg(&ctx),
        Duration::from_secs(300),
    );
    out.assert_success();
    let out = kiln_integration::run_with_timeout(
        sb.buildah()
            .args(["push", "--tls-verify=false", "localhost/hello-buildah"])
            .arg(format!("docker://{buildah_ref}")),
        Duration::from_secs(300),
    );
    out.assert_success();
    let buildah_img = Image::pull(&buildah_ref);
    assert_eq!(buildah_img.layers.len(), base.layer_digests.len() + 2, "Buildah: base + COPY + RUN");

    let kiln_ref = registry.reference("cmp/hello:kiln");
    build_push(&sb, &registry, &ctx, &kiln_ref);

    // Buildah's known artifacts: the RUN mount targets it leaves, overlay xattrs,
    // its version label.
    let ignore = [
        "--ignore-path", "/etc/hosts", "--ignore-path", "/etc/hostname", "--ignore-path", "/etc/resolv.conf",
        "--ignore-path", "/run", "--ignore-xattr", "user.overlay.", "--ignore-label", "io.buildah.version",
    ];
    let out = sb.kiln().arg("diff").args(ignore).arg(&kiln_ref).arg(&buildah_ref).run();
    assert_eq!(out.status.code(), Some(0), "kiln's image (A) differs from Buildah's (B)\n{out}");
    // the comparison can fail: kiln's image against its own base differs
    let out = sb.kiln().arg("diff").args(ignore).arg(&kiln_ref).arg(registry.reference("base/busybox:latest")).run();
    assert_eq!(out.status.code(), Some(1), "kiln's image must differ from its base\n{out}");
    assert!(out.stdout.contains("- /app/hello.txt"), "{out}");
}
