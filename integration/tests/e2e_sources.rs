//! End-to-end: build sources as BuildKit and Buildah take them (issue 13): CONTEXT
//! `-` (a tar on stdin, or a bare Dockerfile), a local tarball (gzip, zstd, plain),
//! an `http://` tarball or text Dockerfile, a git URL (`#ref:subdir`, submodules,
//! `BUILDKIT_CONTEXT_KEEP_GIT_DIR`), `-f -`, `-f` outside the context, and
//! `Containerfile`; bad sources name the URL, the HTTP status or the git ref.

use kiln_integration::fileserver::{FileServer, ServedFile};
use kiln_integration::gitdaemon::{git, GitDaemon};
use kiln_integration::{seed_base_images, Image, Registry, Sandbox};

/// A tar of `files` (plain; the caller compresses).
fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append_data(&mut h, name, content.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, bytes).unwrap();
    e.finish().unwrap()
}

fn write_file(sb: &Sandbox, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = sb.out_path(name);
    std::fs::write(&p, bytes).unwrap();
    sb.user.chown_tree(&p);
    p
}

#[test]
fn stdin_tarball_and_dockerfile_sources() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    let dockerfile = format!("FROM {base}\nCOPY . /ctx/\nRUN cat /ctx/a.txt\n");
    let tar = tar_of(&[("Dockerfile", &dockerfile), ("a.txt", "from the tar\n"), ("sub/b.txt", "b\n")]);

    // A tar on stdin (gzip), a local tarball (zstd and plain).
    for (name, bytes) in [("ctx.tar.gz", gzip(&tar)), ("ctx.tar.zst", zstd::encode_all(&tar[..], 3).unwrap()), ("ctx.tar", tar.clone())] {
        let file = write_file(&sb, name, &bytes);
        let layout = sb.out_path(&format!("{name}-layout"));
        let out = if name.ends_with(".gz") {
            sb.kiln().build().arg("--no-cache").output_oci(&layout).arg("-").stdin_file(&file).run()
        } else {
            sb.kiln().build().arg("--no-cache").output_oci(&layout).arg(&file).run()
        };
        out.assert_success().assert_stderr_contains("from the tar");
        let img = Image::from_layout(&layout, None);
        assert_eq!(img.tree.node("/ctx/sub/b.txt").text(), "b\n", "{name}");
        assert!(!img.tree.contains("/ctx/ctx.tar"), "{name}");
    }

    // A bare Dockerfile on stdin: an empty context.
    let df = write_file(&sb, "Dockerfile.stdin", format!("FROM {base}\nRUN echo bare-dockerfile > /x\n").as_bytes());
    let layout = sb.out_path("bare-layout");
    sb.kiln().build().output_oci(&layout).arg("-").stdin_file(&df).run().assert_success();
    assert_eq!(Image::from_layout(&layout, None).tree.node("/x").text(), "bare-dockerfile\n");

    // -f - with a directory context; -f outside the context; Containerfile.
    let ctx = sb.new_context("dir").file("a.txt", "from the dir\n").file("Containerfile", format!("FROM {base}\nCOPY a.txt /c\n")).build();
    let df = write_file(&sb, "df-stdin", format!("FROM {base}\nCOPY a.txt /from-stdin\n").as_bytes());
    let layout = sb.out_path("f-stdin");
    sb.kiln().build().args(["-f", "-"]).output_oci(&layout).arg(&ctx).stdin_file(&df).run().assert_success();
    assert_eq!(Image::from_layout(&layout, None).tree.node("/from-stdin").text(), "from the dir\n");
    let outside = write_file(&sb, "elsewhere.Dockerfile", format!("FROM {base}\nCOPY a.txt /outside\n").as_bytes());
    let layout = sb.out_path("f-outside");
    sb.kiln().build().arg("-f").arg(&outside).output_oci(&layout).arg(&ctx).run().assert_success();
    assert_eq!(Image::from_layout(&layout, None).tree.node("/outside").text(), "from the dir\n");
    let layout = sb.out_path("containerfile");
    sb.kiln().build().output_oci(&layout).arg(&ctx).run().assert_success();
    assert_eq!(Image::from_layout(&layout, None).tree.node("/c").text(), "from the dir\n");
    sb.kiln().build().args(["-f", "-", "-"]).stdin_file(&df).run().assert_failure_containing("cannot both be -");
    // Nothing is left behind in the state's temp directory.
    let left: Vec<_> = std::fs::read_dir(sb.kiln_root().join("tmp")).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("context-")).collect();
    assert!(left.is_empty(), "materialised contexts left: {left:?}");
}

#[test]
fn http_and_git_sources() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    let tar = tar_of(&[("Dockerfile", &format!("FROM {base}\nCOPY a.txt /a\n")), ("a.txt", "over http\n")]);
    let server = FileServer::start(vec![
        ServedFile { path: "/ctx.tar.gz".into(), data: gzip(&tar), last_modified: None },
        ServedFile { path: "/Dockerfile".into(), data: format!("FROM {base}\nRUN echo text > /t\n").into_bytes(), last_modified: None },
    ])
    .unwrap();
    let layout = sb.out_path("http");
    sb.kiln().build().output_oci(&layout).arg(format!("http://{}/ctx.tar.gz", server.host())).run().assert_success();
    assert_eq!(Image::from_layout(&layout, None).tree.node("/a").text(), "over http\n");
    let layout = sb.out_path("http-text");
    sb.kiln().build().output_oci(&layout).arg(format!("http://{}/Dockerfile", server.host())).run().assert_success();
    assert_eq!(Image::from_layout(&layout, None).tree.node("/t").text(), "text\n");
    // A failing URL: named without its credentials, with the status.
    sb.kiln()
        .build()
        .arg(format!("http://user:hunter2@{}/missing.tar", server.host()))
        .run()
        .assert_failure_containing(&format!("http://{}/missing.tar", server.host()))
        .assert_stderr_contains("404");
    let failed = sb.kiln().build().arg(format!("http://user:hunter2@{}/missing.tar", server.host())).run();
    assert!(!failed.combined().contains("hunter2"), "credentials shown\n{failed}");

    // Git: a submodule, a ref and a subdirectory, .git kept on request.
    let d = GitDaemon::start();
    d.work_tree("lib", &[("lib.txt", "from the submodule\n")]);
    d.publish("lib");
    let work = d.work_tree("app", &[("app/Dockerfile", &format!("FROM {base}\nCOPY . /src/\n")), ("app/main.txt", "v1\n")]);
    git(&work, &["-c", "protocol.allow=always", "submodule", "add", "-q", &d.url("lib"), "app/vendor/lib"]);
    git(&work, &["commit", "-q", "-m", "submodule"]);
    git(&work, &["tag", "v1"]);
    std::fs::write(work.join("app/main.txt"), "v2\n").unwrap();
    git(&work, &["commit", "-q", "-am", "two"]);
    d.publish("app");
    let layout = sb.out_path("git");
    sb.kiln().build().output_oci(&layout).arg(format!("{}#v1:app", d.url("app"))).run().assert_success();
    let t = Image::from_layout(&layout, None).tree;
    assert_eq!(t.node("/src/main.txt").text(), "v1\n");
    assert_eq!(t.node("/src/vendor/lib/lib.txt").text(), "from the submodule\n");
    t.assert_absent("/src/.git");
    // The whole repository at its default branch, with .git kept.
    let whole = sb.out_path("git-whole");
    let root_df = write_file(&sb, "root.Dockerfile", format!("FROM {base}\nCOPY . /r/\n").as_bytes());
    sb.kiln()
        .build()
        .arg("-f")
        .arg(&root_df)
        .build_arg("BUILDKIT_CONTEXT_KEEP_GIT_DIR", "1")
        .output_oci(&whole)
        .arg(d.url("app"))
        .run()
        .assert_success();
    let t = Image::from_layout(&whole, None).tree;
    assert_eq!(t.node("/r/app/main.txt").text(), "v2\n");
    assert!(t.contains("/r/.git/HEAD"), "BUILDKIT_CONTEXT_KEEP_GIT_DIR keeps .git");
    // A ref that does not exist is named.
    sb.kiln().build().arg(format!("{}#no-such-branch", d.url("app"))).run().assert_failure_containing("no-such-branch");
}

/// `--build-context NAME=VALUE` for FROM, COPY --from and RUN --mount from=: a
/// directory, docker-image://, oci-layout://PATH:TAG, a git URL and an http tarball;
/// a changed directory changes the build (its content is its key).
#[test]
fn named_build_contexts() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    // An OCI layout holding an image tagged `v1`.
    let lib_ctx = sb.new_context("lib").file("Dockerfile", "FROM scratch\nCOPY lib.txt /lib.txt\n").file("lib.txt", "from the layout\n").build();
    let lib_layout = sb.out_path("lib-layout");
    sb.kiln().build().args(["-t", "lib:v1"]).output_oci(&lib_layout).arg(&lib_ctx).run().assert_success();
    let assets = sb.new_context("assets").file("x.txt", "asset one\n").build();
    let d = GitDaemon::start();
    d.work_tree("src", &[("src.txt", "from git\n")]);
    d.publish("src");
    let server = FileServer::start(vec![ServedFile { path: "/t.tar.gz".into(), data: gzip(&tar_of(&[("t.txt", "from http\n")])), last_modified: None }]).unwrap();
    let ctx = sb
        .new_context("main")
        .file(
            "Dockerfile",
            "FROM mybase\nCOPY --from=assets /x.txt /x\nRUN --mount=from=assets,target=/m cat /m/x.txt > /mounted\nCOPY --from=lib /lib.txt /lib\nCOPY --from=src /src.txt /src\nCOPY --from=web /t.txt /t\n",
        )
        .build();
    let named = |sb: &Sandbox, out: &std::path::Path| {
        sb.kiln()
            .build()
            .arg("--build-context")
            .arg(format!("mybase=docker-image://{base}"))
            .arg("--build-context")
            .arg(format!("assets={}", assets.display()))
            .arg("--build-context")
            .arg(format!("lib=oci-layout://{}:v1", lib_layout.display()))
            .arg("--build-context")
            .arg(format!("src={}#main", d.url("src")))
            .arg("--build-context")
            .arg(format!("web=http://{}/t.tar.gz", server.host()))
            .output_oci(out)
            .arg(&ctx)
            .run()
    };
    let out = sb.out_path("named");
    named(&sb, &out).assert_success();
    let t = Image::from_layout(&out, None).tree;
    assert_eq!(t.node("/x").text(), "asset one\n");
    assert_eq!(t.node("/mounted").text(), "asset one\n");
    assert_eq!(t.node("/lib").text(), "from the layout\n");
    assert_eq!(t.node("/src").text(), "from git\n");
    assert_eq!(t.node("/t").text(), "from http\n");
    assert!(t.contains("/bin/busybox"), "FROM mybase is the docker-image:// base");
    // A changed file of a named directory reaches the image (no stale cache hit).
    std::fs::write(assets.join("x.txt"), "asset two\n").unwrap();
    let out2 = sb.out_path("named-2");
    named(&sb, &out2).assert_success();
    let t = Image::from_layout(&out2, None).tree;
    assert_eq!(t.node("/x").text(), "asset two\n");
    assert_eq!(t.node("/mounted").text(), "asset two\n");
    // A value that is none of the forms is named.
    sb.kiln().build().args(["--build-context", "x=/does/not/exist"]).arg(&ctx).run().assert_failure_containing("--build-context x");
}
