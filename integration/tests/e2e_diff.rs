//! End-to-end: `kiln diff A B` on images built by `kiln build` as the unprivileged
//! user: the same build read from an OCI layout, an OCI archive, a docker archive
//! (kiln's, gzipped, and skopeo's classic `docker save` form) and the registry is
//! identical (exit 0); builds differing in a file's content, mode, owner, a
//! symlink target, a removed file (whiteout), an Env and a label differ (exit 1)
//! with one line each; the ignore options make them equal; `--format json`;
//! an index compared for `--platform`; exit 2 for a missing image or bad usage.

use std::time::Duration;

use kiln_integration::{run_with_timeout, seed_base_images, Registry, RunOutput, Sandbox};
use serde_json::Value;
use sha2::{Digest, Sha256};

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn sha256(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    format!("sha256:{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// `kiln diff ARGS…` as the build user.
fn diff(sb: &Sandbox, args: &[&str]) -> RunOutput {
    sb.kiln().arg("diff").args(args).timeout(Duration::from_secs(120)).run()
}

#[track_caller]
fn assert_code(out: &RunOutput, code: i32) {
    assert_eq!(out.status.code(), Some(code), "expected exit {code}\n{out}");
    assert!(!out.stderr.contains("panicked"), "kiln panicked\n{out}");
}

/// The difference lines of a text diff (without the summary line).
fn lines(out: &RunOutput) -> Vec<String> {
    let mut l: Vec<String> = out.stdout.lines().map(str::to_string).collect();
    l.pop();
    l
}

#[test]
fn the_same_build_in_every_form_is_identical() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.context("hello", &registry);
    let reference = registry.reference("diff/hello:1");
    let layout = sb.out_path("layout");
    let oci_tar = sb.out_path("hello-oci.tar");
    let docker_tar = sb.out_path("hello-docker.tar");
    let out = sb
        .kiln()
        .build()
        .tag(&reference)
        .push()
        .output_oci(&layout)
        .arg("--output")
        .arg(format!("type=oci,dest={}", oci_tar.display()))
        .arg("--output")
        .arg(format!("type=docker,dest={}", docker_tar.display()))
        .arg(&ctx)
        .run();
    out.assert_success();

    // skopeo's classic docker-archive (manifest.json only) and a gzipped archive.
    let classic = sb.out_path("classic.tar");
    let mut cmd = sb.user_command("skopeo");
    cmd.args(["copy", "--quiet"]).arg(format!("oci:{}:1", layout.display())).arg(format!("docker-archive:{}:{reference}", classic.display()));
    let o = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(o.status.success(), "skopeo cannot write a docker archive\n{o}");
    let gz = sb.path().join("hello-docker.tar.gz");
    let mut cmd = sb.user_command("sh");
    cmd.arg("-c").arg(format!("gzip -c {} > {}", docker_tar.display(), gz.display()));
    assert!(run_with_timeout(&mut cmd, Duration::from_secs(60)).status.success());

    let layout_s = layout.display().to_string();
    let pairs = [
        (layout_s.clone(), reference.clone()),
        (format!("oci-layout://{}:1", layout.display()), format!("docker-image://{reference}")),
        (oci_tar.display().to_string(), docker_tar.display().to_string()),
        (gz.display().to_string(), layout_s.clone()),
        (classic.display().to_string(), reference.clone()),
    ];
    for (a, b) in &pairs {
        let out = diff(&sb, &[a, b]);
        assert_code(&out, 0);
        assert_eq!(out.stdout.trim(), format!("identical: {a} and {b}"), "{out}");
    }
    // --history: the same build has the same history too.
    assert_code(&diff(&sb, &["--history", &layout_s, &reference]), 0);

    // The comparison can fail: the build differs from its base image.
    let base = registry.reference("base/busybox:latest");
    let out = diff(&sb, &[&base, &reference]);
    assert_code(&out, 1);
    assert!(out.stdout.lines().any(|l| l.starts_with("+ /app/hello.txt (file, 0644, 0:0, ")), "{out}");
    assert!(out.stdout.lines().any(|l| l.starts_with("+ config Env: ") || l.starts_with("~ config Env: ")), "{out}");
}

fn context(sb: &Sandbox, name: &str, base: &str, content: &str, second_run: &str, tag: &str) -> std::path::PathBuf {
    let dockerfile = format!(
        "FROM {base}\n\
         COPY content.txt /data/content.txt\n\
         RUN echo keep > /data/gone && ln -s /data/target-a /data/link && echo m > /data/mode && chmod 644 /data/mode && echo o > /data/owner\n\
         {second_run}\
         ENV MODE={tag}\n\
         LABEL team={tag} same=1\n"
    );
    sb.new_context(name).file("Dockerfile", dockerfile).file("content.txt", content).build()
}

#[test]
fn differences_are_reported_one_line_each_and_can_be_ignored() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    let a_ctx = context(&sb, "a", &base, "content-a\n", "", "a");
    let b_ctx = context(
        &sb,
        "b",
        &base,
        "content-b\n",
        "RUN rm /data/gone && ln -sfn /data/target-b /data/link && chmod 755 /data/mode && chown 1000:1000 /data/owner\n",
        "b",
    );
    let a = sb.out_path("a-layout");
    sb.kiln().build().output_oci(&a).arg(&a_ctx).run().assert_success();
    let b_ref = registry.reference("diff/b:1");
    sb.kiln().build().tag(&b_ref).push().arg(&b_ctx).run().assert_success();
    let a = a.display().to_string();

    let out = diff(&sb, &[&a, &b_ref]);
    assert_code(&out, 1);
    let expected = [
        format!("~ /data/content.txt: content {} → {}", sha256(b"content-a\n"), sha256(b"content-b\n")),
        "- /data/gone (file, 0644, 0:0, 5 bytes)".to_string(),
        "~ /data/link: target /data/target-a → /data/target-b".into(),
        "~ /data/mode: mode 0644 → 0755".into(),
        "~ /data/owner: owner 0:0 → 1000:1000".into(),
        format!(r#"~ config Env: ["{PATH_ENV}","MODE=a"] → ["{PATH_ENV}","MODE=b"]"#),
        r#"~ config Labels[team]: "a" → "b""#.into(),
    ];
    assert_eq!(lines(&out), expected, "{out}");
    assert_eq!(
        out.stdout.lines().last(),
        Some(format!("7 differences between {a} and {b_ref}: 0 added, 1 removed, 6 changed").as_str()),
        "{out}"
    );

    // Ignoring some of it leaves the rest; ignoring all of it makes them equal.
    let out = diff(&sb, &["--ignore-label", "team", "--ignore-path", "/data/content.txt", "--ignore-path", "data/l*", &a, &b_ref]);
    assert_code(&out, 1);
    assert_eq!(lines(&out), [expected[1].as_str(), &expected[3], &expected[4], &expected[5]], "{out}");
    let out = diff(&sb, &["--ignore-label", "team", "--ignore-path", "data", "--ignore-config", "Env", &a, &b_ref]);
    assert_code(&out, 0);
    assert!(out.stdout.starts_with("identical: "), "{out}");

    // JSON: the same differences, parsed.
    let out = diff(&sb, &["--format", "json", &a, &b_ref]);
    assert_code(&out, 1);
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON: {e}\n{out}"));
    assert_eq!((v["same"].as_bool(), v["a"].as_str(), v["b"].as_str()), (Some(false), Some(a.as_str()), Some(b_ref.as_str())));
    let d = v["differences"].as_array().unwrap();
    assert_eq!(d.len(), 7, "{v:#}");
    let find = |k: &str, x: &str| d.iter().find(|e| e[k] == x).unwrap_or_else(|| panic!("no {k} {x} in {v:#}"));
    let gone = find("path", "/data/gone");
    assert_eq!((gone["kind"].as_str(), gone["what"].as_str()), (Some("removed"), Some("entry")));
    assert_eq!(gone["a"]["digest"], sha256(b"keep\n"));
    let owner = find("path", "/data/owner");
    assert_eq!((owner["what"].as_str(), owner["a"].as_str(), owner["b"].as_str()), (Some("owner"), Some("0:0"), Some("1000:1000")));
    let label = find("field", "Labels");
    assert_eq!((label["key"].as_str(), label["kind"].as_str(), label["a"].as_str(), label["b"].as_str()), (Some("team"), Some("changed"), Some("a"), Some("b")));
    let out = diff(&sb, &["--format", "json", &a, &a]);
    assert_code(&out, 0);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!((v["same"].as_bool(), v["differences"].as_array().map(Vec::len)), (Some(true), Some(0)));
}

#[test]
fn an_index_is_compared_for_the_platform() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let out = diff(&sb, &["--platform", "linux/arm64", &base.multi, &base.arm64]);
    assert_code(&out, 0);
    let out = diff(&sb, &[&base.multi, &base.latest]);
    assert_code(&out, 0);
    let out = diff(&sb, &["--platform", "linux/arm64", &base.multi, &base.latest]);
    assert_code(&out, 1);
    assert!(out.stdout.contains(r#"~ config architecture: "arm64" → "amd64""#), "{out}");
    let out = diff(&sb, &["--platform", "linux/s390x", &base.multi, &base.latest]);
    assert_code(&out, 2);
    out.assert_stderr_contains(&format!("image A ({})", base.multi));
}

#[test]
fn errors_exit_2_and_name_the_image() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let missing = registry.reference("diff/missing:1");
    let out = diff(&sb, &[&base.latest, &missing]);
    assert_code(&out, 2);
    out.assert_stderr_contains(&format!("image B ({missing})"));
    let no_file = sb.path().join("no-such-layout").display().to_string();
    let out = diff(&sb, &[&no_file, &base.latest]);
    assert_code(&out, 2);
    out.assert_stderr_contains(&format!("image A ({no_file})"));
    let out = diff(&sb, &["--ignore-config", "Nope", &base.latest, &base.latest]);
    assert_code(&out, 2);
    out.assert_stderr_contains("--ignore-config \"Nope\"");
    assert_code(&diff(&sb, &["--bogus", &base.latest, &base.latest]), 2);
    assert_code(&diff(&sb, &[&base.latest]), 2);
    assert_code(&diff(&sb, &["--format", "yaml", &base.latest, &base.latest]), 2);
}
