//! End-to-end: where a build goes (issue 6): `--output type=docker|local`,
//! `--iidfile`, `--label`.

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

use kiln_integration::{run_with_timeout, seed_base_images, Image, Registry, Sandbox};

#[test]
fn docker_archive_local_rootfs_iidfile_and_labels() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.context("hello", &registry);
    let tar = sb.out_path("hello.tar");
    let rootfs = sb.out_path("rootfs");
    let layout = sb.out_path("layout");
    let iid = sb.out_path("iid");
    let out = sb
        .kiln()
        .build()
        .tag("example.com/demo/hello:7")
        .arg("--output")
        .arg(format!("type=docker,dest={}", tar.display()))
        .arg("--output")
        .arg(format!("type=local,dest={}", rootfs.display()))
        .output_oci(&layout)
        .arg("--iidfile")
        .arg(&iid)
        .args(["--label", "org.opencontainers.image.source=https://example.com/kiln", "--label", "team=builders"])
        .arg(&ctx)
        .run();
    out.assert_success();

    // The OCI layout: labels in the config, iidfile = config digest (Docker's image ID).
    let img = Image::from_layout(&layout, None);
    assert_eq!(img.cfg()["Labels"]["team"], "builders");
    assert_eq!(img.cfg()["Labels"]["org.opencontainers.image.source"], "https://example.com/kiln");
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), img.manifest["config"]["digest"].as_str().unwrap());

    // The docker archive: skopeo reads it as docker-archive (manifest.json) and the
    // same tree comes out.
    let conv = sb.out_path("from-archive");
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet"]).arg(format!("docker-archive:{}", tar.display())).arg(format!("oci:{}:img", conv.display()));
    let o = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(o.status.success(), "skopeo cannot read the archive\n{o}");
    let from_archive = Image::from_layout(&conv, Some("img"));
    assert_eq!(from_archive.tree.node("/app/hello.txt").text(), "hello from kiln\n");
    assert_eq!(from_archive.tree.node("/app/built.txt").text(), "built by RUN\n");
    assert_eq!(from_archive.cfg()["Cmd"], img.cfg()["Cmd"]);
    // ...and it is an OCI layout too (as `docker save` writes since Docker 25).
    let mut cmd = Command::new("tar");
    cmd.arg("-tf").arg(&tar);
    let o = run_with_timeout(&mut cmd, Duration::from_secs(30));
    for name in ["oci-layout", "index.json", "manifest.json"] {
        assert!(o.stdout.lines().any(|l| l == name), "{name} missing from the archive\n{o}");
    }

    // The local rootfs: the files, owned by the invoking user.
    let hello = rootfs.join("app/hello.txt");
    assert_eq!(std::fs::read_to_string(&hello).unwrap(), "hello from kiln\n");
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(std::fs::metadata(&hello).unwrap().uid(), sb.user.uid, "local export must belong to the user");
    assert_eq!(std::fs::metadata(rootfs.join("app/built.txt")).unwrap().mode() & 0o777, 0o640);
}

#[test]
fn json_progress_events() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    let ctx = sb
        .new_context("json")
        .file("Dockerfile", format!("FROM {base}\nCOPY f /f\nRUN echo to-stdout && echo to-stderr >&2\nENV A=1\n"))
        .file("f", "x")
        .build();
    let out = sb.kiln().build().args(["--progress", "json"]).arg(&ctx).run();
    out.assert_success();
    let events: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event: {l:?}: {e}\n{out}")))
        .collect();
    let of = |kind: &str| events.iter().filter(|e| e["event"] == kind).collect::<Vec<_>>();
    let steps = of("step");
    assert!(steps.iter().any(|e| e["state"] == "running" && e["instruction"] == "RUN echo to-stdout && echo to-stderr >&2" && e["step"] == 3 && e["total"] == 4));
    let done: Vec<_> = steps.iter().filter(|e| e["state"] == "done").collect();
    assert_eq!(done.len(), 2, "COPY and RUN finish with a layer: {done:?}");
    assert!(done.iter().all(|e| e["layer"]["digest"].as_str().unwrap().starts_with("sha256:") && e["duration_ms"].is_u64()));
    let logs = of("log");
    assert!(logs.iter().any(|e| e["stream"] == "stdout" && e["data"] == "to-stdout" && e["step"] == 3), "{logs:?}");
    assert!(logs.iter().any(|e| e["stream"] == "stderr" && e["data"] == "to-stderr"), "{logs:?}");
    let fin = of("done");
    assert_eq!(fin.len(), 1);
    assert!(fin[0]["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(fin[0]["steps_run"], 2);

    // A failure is an event too, with the step and exit code.
    let ctx = sb.new_context("jsonfail").file("Dockerfile", format!("FROM {base}\nRUN exit 4\n")).build();
    let out = sb.kiln().build().args(["--progress", "json"]).arg(&ctx).run();
    assert!(!out.status.success());
    let err = out.stderr.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find(|e| e["event"] == "error").unwrap_or_else(|| panic!("{out}"));
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("step 2/2") && msg.contains("exit code: 4"), "{msg}");
    assert_eq!((err["step"].as_u64(), err["exit_code"].as_i64()), (Some(2), Some(4)), "{err}");
}

#[test]
fn docker_format_oci_tar_and_no_push() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.context("hello", &registry);
    // --format docker: Docker v2 schema 2 media types in the registry.
    let out = sb.kiln().build().args(["--format", "docker"]).tag(&registry.reference("demo/fmt:docker")).push().arg(&ctx).run();
    out.assert_success();
    let m = registry.manifest("demo/fmt", "docker");
    assert_eq!(m["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(m["config"]["mediaType"], "application/vnd.docker.container.image.v1+json");
    assert!(m["layers"].as_array().unwrap().iter().all(|l| l["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"), "{m:#}");
    let img = Image::pull_from(&registry, "demo/fmt:docker");
    assert_eq!(img.tree.node("/app/hello.txt").text(), "hello from kiln\n");

    // type=oci with a .tar destination: an OCI layout archive skopeo reads.
    let tar = sb.out_path("image-oci.tar");
    sb.kiln().build().arg("--output").arg(format!("type=oci,dest={}", tar.display())).arg(&ctx).run().assert_success();
    let conv = sb.out_path("from-oci-archive");
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet"]).arg(format!("oci-archive:{}", tar.display())).arg(format!("oci:{}:img", conv.display()));
    let o = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(o.status.success(), "skopeo cannot read the OCI archive\n{o}");
    assert_eq!(Image::from_layout(&conv, Some("img")).tree.node("/app/built.txt").text(), "built by RUN\n");

    // --no-push wins over --push.
    sb.kiln().build().tag(&registry.reference("demo/fmt:never")).push().arg("--no-push").arg(&ctx).run().assert_success();
    assert!(!registry.tags("demo/fmt").contains(&"never".to_string()));
}

/// BuildKit's testCopySocket and its local exporter's hard links (issue 12): a
/// socket in the context becomes an empty regular file, a fifo stays a fifo, and
/// names of one file stay one file, in the image and in `-o type=local`.
#[test]
fn sockets_fifos_and_hardlinks_in_copies_and_local_output() {
    use kiln_integration::Kind;
    let sb = Sandbox::new();
    let ctx = sb
        .new_context("special")
        .file("Dockerfile", "FROM scratch\nCOPY . /\n")
        .file("a", "shared\n")
        .build();
    std::fs::hard_link(ctx.join("a"), ctx.join("b")).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(ctx.join("socket.sock")).unwrap();
    let st = std::process::Command::new("mkfifo").arg("-m").arg("0640").arg(ctx.join("pipe")).status().unwrap();
    assert!(st.success(), "mkfifo");
    sb.user.chown_tree(&ctx);
    let layout = sb.out_path("layout");
    let rootfs = sb.out_path("rootfs");
    let out = sb.kiln().build().output_oci(&layout).arg("--output").arg(format!("type=local,dest={}", rootfs.display())).arg(&ctx).run();
    out.assert_success();

    let img = Image::from_layout(&layout, None);
    let t = &img.tree;
    let sock = t.node("/socket.sock");
    assert!(matches!(sock.kind, Kind::File) && sock.size == 0, "socket → empty file: {sock}");
    assert!(matches!(t.node("/pipe").kind, Kind::Fifo), "{}", t.node("/pipe"));
    let (a, b) = (t.node("/a"), t.node("/b"));
    assert!(matches!(a.kind, Kind::Hardlink(_)) || matches!(b.kind, Kind::Hardlink(_)), "one file, two names: {a} / {b}");

    let md = |p: &str| std::fs::symlink_metadata(rootfs.join(p)).unwrap();
    assert!(md("socket.sock").file_type().is_file() && md("socket.sock").len() == 0);
    use std::os::unix::fs::FileTypeExt;
    assert!(md("pipe").file_type().is_fifo());
    assert_eq!(md("a").ino(), md("b").ino(), "hard links stay hard links in the local output");
    assert_eq!(std::fs::read_to_string(rootfs.join("b")).unwrap(), "shared\n");
}

/// `-q` prints only the image ID on stdout (RUN output and progress hidden);
/// `-o -` and `type=tar,dest=` write the rootfs as a tar (BuildKit's tar exporter),
/// one directory per platform when there are several; a bare `-o DIR` is
/// `type=local`; the metadata file has BuildKit's config digest key.
#[test]
fn quiet_builds_and_rootfs_tar_outputs() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    let ctx = sb
        .new_context("tar")
        .file("Dockerfile", format!("FROM {base}\nCOPY f /app/f\nRUN echo run-output && ln /app/f /app/g && chown 123:45 /app/f\n"))
        .file("f", "content\n")
        .build();
    let iid = sb.out_path("iid");
    let meta = sb.out_path("meta.json");
    let q = sb.kiln().build().arg("-q").arg("--iidfile").arg(&iid).arg("--metadata-file").arg(&meta).arg(&ctx).run();
    q.assert_success();
    let id = std::fs::read_to_string(&iid).unwrap();
    assert_eq!(q.stdout, format!("{id}\n"), "-q prints the image ID alone\n{q}");
    assert!(!q.combined().contains("run-output"), "-q hides RUN output\n{q}");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(m["containerimage.config.digest"], id.as_str());

    // -o -: a tar on stdout, nothing else there (RUN output goes to stderr).
    let cmd = sb.kiln().build().arg("--no-cache").args(["-o", "-"]).arg(&ctx).run();
    cmd.assert_success();
    let bytes = cmd.stdout_bytes.clone();
    let mut names = std::collections::BTreeMap::new();
    let mut a = tar::Archive::new(&bytes[..]);
    for e in a.entries().expect("stdout is a tar") {
        let e = e.expect("tar entry");
        let h = e.header();
        names.insert(e.path().unwrap().display().to_string(), (h.entry_type(), h.uid().unwrap(), h.gid().unwrap(), e.link_name().unwrap().map(|l| l.display().to_string())));
    }
    assert_eq!(names["app/f"], (tar::EntryType::Regular, 123, 45, None));
    assert_eq!(names["app/g"].0, tar::EntryType::Link, "hard links stay links: {:?}", names["app/g"]);
    assert!(names.contains_key("bin/busybox"));
    assert!(cmd.stderr.contains("run-output"), "RUN output is on stderr\n{}", cmd.stderr);

    // type=tar,dest=FILE with two platforms: a directory per platform.
    let multi = sb.new_context("multi").file("Dockerfile", "FROM scratch\nARG TARGETARCH\nCOPY f /f-$TARGETARCH\n").file("f", "x").build();
    let file = sb.out_path("rootfs.tar");
    sb.kiln().build().args(["--platform", "linux/amd64,linux/arm64", "--output"]).arg(format!("type=tar,dest={}", file.display())).arg(&multi).run().assert_success();
    let mut list = Command::new("tar");
    list.arg("-tf").arg(&file);
    let o = run_with_timeout(&mut list, Duration::from_secs(30));
    let entries: Vec<&str> = o.stdout.lines().map(|l| l.trim_end_matches('/')).collect();
    assert_eq!(entries, ["linux_amd64", "linux_amd64/f-amd64", "linux_arm64", "linux_arm64/f-arm64"], "{o}");

    // A bare -o DIR is type=local.
    let dir = sb.out_path("bare");
    sb.kiln().build().arg("-o").arg(&dir).arg(&multi).run().assert_success();
    assert!(dir.join(format!("f-{}", std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"))).is_file());
    // Two writers of stdout are refused before any work.
    sb.kiln().build().args(["-q", "-o", "-"]).arg(&multi).run().assert_failure_containing("stdout");
}

/// `--annotation` with BuildKit's syntax: the manifest by default, `index:`,
/// `manifest-descriptor:` and `manifest[PLATFORM]:` where they say.
#[test]
fn annotations_where_buildkit_puts_them() {
    let sb = Sandbox::new();
    let ctx = sb.new_context("ann").file("Dockerfile", "FROM scratch\nCOPY f /f\n").file("f", "x").build();
    let read = |dir: &std::path::Path, digest: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))).unwrap()).unwrap()
    };
    let top = |dir: &std::path::Path| -> String {
        let idx: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        idx["manifests"][0]["digest"].as_str().unwrap().to_string()
    };
    let one = sb.out_path("one");
    sb.kiln().build().args(["--annotation", "org.opencontainers.image.source=https://example.com/r", "--annotation", "index:only=index"]).output_oci(&one).arg(&ctx).run().assert_success().assert_stderr_contains("only");
    let m = read(&one, &top(&one));
    assert_eq!(m["annotations"], serde_json::json!({"org.opencontainers.image.source": "https://example.com/r"}));

    let multi = sb.out_path("multi");
    sb.kiln()
        .build()
        .args(["--platform", "linux/amd64,linux/arm64"])
        .args(["--annotation", "index:team=builders", "--annotation", "manifest-descriptor:d=desc", "--annotation", "manifest[linux/arm64]:arch=arm", "--annotation", "all=manifests"])
        .output_oci(&multi)
        .arg(&ctx)
        .run()
        .assert_success();
    let index = read(&multi, &top(&multi));
    assert_eq!(index["annotations"], serde_json::json!({"team": "builders"}));
    for entry in index["manifests"].as_array().unwrap() {
        assert_eq!(entry["annotations"]["d"], "desc", "{entry}");
        let m = read(&multi, entry["digest"].as_str().unwrap());
        let arch = entry["platform"]["architecture"].as_str().unwrap();
        let mut want = serde_json::json!({"all": "manifests"});
        if arch == "arm64" {
            want["arch"] = "arm".into();
        }
        assert_eq!(m["annotations"], want, "{arch}");
    }
    sb.kiln().build().args(["--annotation", "weird:k=v"]).arg(&ctx).run().assert_failure_containing("unknown annotation type");
}

/// `--squash` (Buildah's): the build's layers become one on top of the base's,
/// and the image's files are exactly those of the unsquashed build (deletions of
/// base files, a base directory removed and made again, files replaced) — checked
/// with `kiln diff`.
#[test]
fn squash_keeps_the_base_and_the_same_tree() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    let ctx = sb
        .new_context("squash")
        .file(
            "Dockerfile",
            format!(
                "FROM {base}\nRUN mkdir -p /a && echo 1 > /a/f && echo keep > /k\nRUN rm -rf /a && mkdir /a && echo 2 > /a/g\nRUN rm -f /bin/ls && rm -rf /home && mkdir /home && echo only > /home/only\nCOPY x /x\n"
            ),
        )
        .file("x", "x\n")
        .build();
    let plain = sb.out_path("plain");
    let squashed = sb.out_path("squashed");
    sb.kiln().build().output_oci(&plain).arg(&ctx).run().assert_success();
    sb.kiln().build().arg("--squash").output_oci(&squashed).arg(&ctx).run().assert_success().assert_stderr_contains("squashed 4 layers into one");
    let (p, s) = (Image::from_layout(&plain, None), Image::from_layout(&squashed, None));
    let base_layers = Image::pull(&base).manifest["layers"].as_array().unwrap().len();
    assert_eq!(s.manifest["layers"].as_array().unwrap().len(), base_layers + 1);
    assert_eq!(p.manifest["layers"].as_array().unwrap().len(), base_layers + 4);
    assert_eq!(s.manifest["layers"][0], p.manifest["layers"][0], "the base layer is kept as it is");
    let non_empty = s.config["history"].as_array().unwrap().iter().filter(|h| !h["empty_layer"].as_bool().unwrap_or(false)).count();
    assert_eq!(non_empty, base_layers + 1, "history pairs with the layers");
    s.tree.assert_absent("/bin/ls");
    s.tree.assert_absent("/a/f");
    s.tree.assert_absent("/home/app");
    assert_eq!(s.tree.node("/home/only").text(), "only\n");
    assert_eq!(s.tree.node("/a/g").text(), "2\n");
    let d = sb.kiln().arg("diff").arg(&plain).arg(&squashed).run();
    assert_eq!(d.status.code(), Some(0), "the squashed image has the same files and config\n{d}");
}

/// `--progress tty` on a terminal (a pty made by `script`): a live view in which
/// finished steps scroll up with a check mark and their time, output of a running
/// RUN shows under it, pulled bytes are counted, and a failed RUN is marked with its
/// whole output before the error.
#[test]
fn tty_progress_on_a_terminal() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    let ctx = sb
        .new_context("tty")
        .file(
            "Dockerfile",
            format!("FROM {base} AS a\nRUN for i in 1 2 3; do echo line-a-$i; sleep 0.2; done\nFROM {base} AS b\nRUN echo line-b\nFROM {base}\nCOPY --from=a /etc /a\nCOPY --from=b /etc /b\nRUN echo first-of-failure && echo second-of-failure && exit 3\n"),
        )
        .build();
    let kiln = kiln_integration::kiln_bin();
    let inner = format!("KILN_ROOT={} {} build --progress tty {}", sb.kiln_root().display(), kiln.display(), ctx.display());
    let mut cmd = sb.user_command("script");
    cmd.args(["-qfec", &inner, "/dev/null"]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(120));
    // What the terminal shows, without colours and cursor movements.
    let mut text = String::new();
    let mut chars = out.stdout.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                while let Some(&n) = chars.peek() {
                    chars.next();
                    if n.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if c != '\r' {
            text.push(c);
        }
    }
    assert!(text.contains("✔ [a 2/2] RUN for i in 1 2 3"), "finished steps get a check mark\n{text}");
    assert!(text.contains("✔ [b 2/2] RUN echo line-b"), "{text}");
    assert!(text.contains("│ line-a-2"), "RUN output shows under its running step\n{text}");
    assert!(text.contains("✗ [stage-2 4/4] RUN echo first-of-failure"), "the failed step is marked\n{text}");
    let failed_at = text.find("✗ [stage-2 4/4]").unwrap();
    assert!(text[failed_at..].contains("│ first-of-failure") && text[failed_at..].contains("│ second-of-failure"), "its whole output follows\n{text}");
    assert!(text.contains("exit code: 3"), "{text}");
    assert!(text.contains("⇣ pulled "), "registry bytes are shown while the build runs\n{text}");
    assert!(text.contains("✎ layers written "), "layer bytes too\n{text}");
}
