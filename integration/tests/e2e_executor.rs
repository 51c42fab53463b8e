//! End-to-end: `kiln executor`, Kaniko's command line (issue 6), as a Kaniko
//! pipeline would call it.

use kiln_integration::{seed_base_images, Image, Registry, Sandbox};

#[test]
fn kaniko_flags_build_push_and_write_digest_files() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.context("hello", &registry);
    let dest = registry.reference("demo/kaniko:1");
    let dest2 = registry.reference("demo/kaniko:latest");
    let digest = sb.out_path("digest");
    let names = sb.out_path("names");
    let tar = sb.out_path("image.tar");
    let out = sb
        .kiln()
        .arg("executor")
        .arg(format!("--context=dir://{}", ctx.display()))
        .arg("--dockerfile=Dockerfile")
        .arg(format!("--destination={dest}"))
        .arg("--destination")
        .arg(&dest2)
        .arg(format!("--digest-file={}", digest.display()))
        .arg(format!("--image-name-with-digest-file={}", names.display()))
        .arg(format!("--tar-path={}", tar.display()))
        .arg("--cache=true")
        .arg("--label=built-by=kaniko-pipeline")
        .arg("--snapshot-mode=redo")
        .arg("--single-snapshot")
        .arg("--reproducible")
        .arg("--skip-tls-verify")
        .arg("--compression=zstd")
        .run();
    out.assert_success();
    let d = std::fs::read_to_string(&digest).unwrap();
    let d = d.trim();
    assert!(d.starts_with("sha256:"), "{d}");
    // Kaniko's --image-name-with-digest-file: the repository, without the tag.
    let repo = |r: &str| r.rsplit_once(':').map(|(a, _)| a.to_string()).unwrap_or_default();
    assert_eq!(std::fs::read_to_string(&names).unwrap(), format!("{}@{d}\n{}@{d}\n", repo(&dest), repo(&dest2)));
    assert!(tar.is_file(), "--tar-path wrote nothing");
    let img = Image::pull_from(&registry, "demo/kaniko:1");
    assert_eq!(img.cfg()["Labels"]["built-by"], "kaniko-pipeline");
    assert_eq!(img.layers.last().unwrap().media_type, "application/vnd.oci.image.layer.v1.tar+zstd", "--compression=zstd");
    assert_eq!(img.tree.node("/app/hello.txt").text(), "hello from kiln\n");
    // --reproducible: timestamps are the epoch.
    assert_eq!(img.config["created"], "1970-01-01T00:00:00Z");
    // --cache with no --cache-repo: Kaniko's default, <destination repo>/cache.
    assert!(!registry.tags("demo/kaniko/cache").is_empty(), "no cache images in demo/kaniko/cache\n{out}");
}

/// Without --digest-file the names file still gets the digest (through a file of the
/// build's own, removed afterwards), and --verbosity sets the log level.
#[test]
fn image_names_without_a_digest_file_and_verbosity() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = sb.context("hello", &registry);
    let dest = registry.reference("demo/kaniko-names:1");
    let names = sb.out_path("names");
    let names_tag = sb.out_path("names-tag");
    let tmp = sb.out_path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let out = sb
        .kiln()
        .env("TMPDIR", &tmp)
        .arg("executor")
        .arg(format!("--context={}", ctx.display()))
        .arg(format!("--destination={dest}"))
        .arg(format!("--image-name-with-digest-file={}", names.display()))
        .arg(format!("--image-name-tag-with-digest-file={}", names_tag.display()))
        .arg("--verbosity=debug")
        .run();
    out.assert_success();
    // As Kaniko's DoPush writes them: the repository @digest, and with the tag.
    let pushed = Image::pull_from(&registry, "demo/kaniko-names:1").manifest_digest;
    let repo = dest.trim_end_matches(":1");
    assert_eq!(std::fs::read_to_string(&names).unwrap(), format!("{repo}@{pushed}\n"));
    assert_eq!(std::fs::read_to_string(&names_tag).unwrap(), format!("{dest}@{pushed}\n"));
    assert!(out.stderr.contains("DEBUG"), "--verbosity=debug logged nothing at debug level:\n{}", out.stderr);
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

#[test]
fn executor_rejects_remote_contexts_clearly() {
    let sb = Sandbox::new();
    let out = sb.kiln().arg("executor").arg("--context=s3://bucket/ctx.tar.gz").arg("--no-push").run();
    out.assert_failure_containing("s3:// buckets cannot be reached");
}

/// Every flag of Kaniko's executor and of the active fork (testdata/kaniko/flags.txt,
/// one line each) is accepted by `kiln executor` with a value a pipeline would pass:
/// the build succeeds, or fails with the named error the list expects, never with
/// an unknown flag.
#[test]
fn every_kaniko_flag_is_accepted() {
    let sb = Sandbox::new();
    let ctx = sb.new_context("flags").file("Dockerfile", "FROM scratch AS final\nARG A\nCOPY f /f\n").file("f", "x\n").build();
    let out_dir = sb.path().join("flag-outputs");
    let list = std::fs::read_to_string(kiln_integration::repo_root().join("testdata/kaniko/flags.txt")).unwrap();
    let mut n = 0;
    for line in list.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let mut parts = line.splitn(3, ' ');
        let (flag, value, expect) = (parts.next().unwrap(), parts.next().unwrap(), parts.next());
        let dir = out_dir.join(flag);
        std::fs::create_dir_all(&dir).unwrap();
        sb.user.chown_tree(&out_dir);
        let value = value
            .replace("@CTX", &ctx.display().to_string())
            .replace("@FILE", &ctx.join("f").display().to_string())
            .replace("@OUT", &dir.display().to_string())
            .replace("@CA", "/etc/ssl/certs/ca-certificates.crt");
        let arg = if value == "-" { format!("--{flag}") } else { format!("--{flag}={value}") };
        let mut cmd = sb.kiln().arg("executor").arg("--no-push");
        if flag != "context" {
            cmd = cmd.arg(format!("--context={}", ctx.display()));
        }
        if !matches!(flag, "destination") {
            cmd = cmd.arg("--destination=127.0.0.1:1/team/app:1");
        }
        let out = cmd.arg(&arg).run();
        assert!(!out.stderr.contains("unexpected argument"), "{arg}: unknown to kiln executor\n{out}");
        match expect.and_then(|e| e.strip_prefix("error:")) {
            Some(msg) => out.assert_failure_containing(msg).assert_stderr_contains(&format!("--{flag}")),
            None => out.assert_success(),
        };
        n += 1;
    }
    assert_eq!(n, 65, "57 Kaniko flags and 8 of the fork");
    // A flag with no effect in kiln says so, once, at debug level.
    let noted = sb.kiln().args(["executor", "--no-push", "--snapshot-mode=redo", "--verbosity=debug"]).arg(format!("--context={}", ctx.display())).run();
    noted.assert_success().assert_stderr_contains("--snapshot-mode: no effect in kiln");
    assert_eq!(noted.stderr.matches("--snapshot-mode: no effect").count(), 1, "{noted}");
    // Flags with an effect visible here.
    assert!(out_dir.join("oci-layout-path/layout/index.json").is_file(), "--oci-layout-path writes a layout");
    assert!(out_dir.join("tar-path/image.tar").is_file(), "--tar-path writes the archive");
    assert!(std::fs::read_to_string(out_dir.join("digest-file/digest")).unwrap().starts_with("sha256:"));
    assert!(std::fs::read_to_string(out_dir.join("image-name-with-digest-file/names")).unwrap().starts_with("127.0.0.1:1/team/app@sha256:"));
    assert!(std::fs::read_to_string(out_dir.join("image-name-tag-with-digest-file/names-tag")).unwrap().starts_with("127.0.0.1:1/team/app:1@sha256:"));
}

/// Kaniko's git context, `git://HOST/REPO.git#refs/heads/BRANCH`, cloned over http
/// with `GIT_PULL_METHOD=http` (here from a dumb-HTTP repository), with
/// `--context-sub-path` and `--oci-layout-path`.
#[test]
fn kaniko_git_context_over_http() {
    use kiln_integration::fileserver::{FileServer, ServedFile};
    use kiln_integration::gitdaemon::git;
    let sb = Sandbox::new();
    let repo_dir = tempfile::tempdir().unwrap();
    let work = repo_dir.path().join("work");
    std::fs::create_dir_all(work.join("app")).unwrap();
    std::fs::write(work.join("app/Dockerfile"), "FROM scratch\nCOPY msg /msg\n").unwrap();
    std::fs::write(work.join("app/msg"), "from git over http\n").unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "one"]);
    git(repo_dir.path(), &["clone", "-q", "--bare", "work", "app.git"]);
    let bare = repo_dir.path().join("app.git");
    git(&bare, &["update-server-info"]);
    // Every file of the bare repository, as a dumb-HTTP server has them.
    let mut files = Vec::new();
    let mut stack = vec![bare.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(repo_dir.path()).unwrap().display().to_string();
                files.push(ServedFile { path: format!("/{rel}"), data: std::fs::read(&p).unwrap(), last_modified: None });
            }
        }
    }
    let refs = std::fs::read(bare.join("info/refs")).unwrap();
    files.push(ServedFile { path: "/app.git/info/refs?service=git-upload-pack".into(), data: refs, last_modified: None });
    let server = FileServer::start(files).unwrap();
    let layout = sb.out_path("git-layout");
    let out = sb
        .kiln()
        .env("GIT_PULL_METHOD", "http")
        .arg("executor")
        .arg(format!("--context=git://{}/app.git#refs/heads/main", server.host()))
        .arg("--context-sub-path=app")
        .arg("--no-push")
        .arg("--destination=127.0.0.1:1/team/git:1")
        .arg(format!("--oci-layout-path={}", layout.display()))
        .run();
    out.assert_success();
    assert_eq!(Image::from_layout(&layout, None).tree.node("/msg").text(), "from git over http\n");
}

/// `--context-sub-path` with contexts that exist only once fetched: a local
/// `tar://FILE.tar.gz`, `tar://stdin` and an `https://`-style URL (plain HTTP from
/// the test's file server); the Dockerfile is found in the sub-directory.
#[test]
fn context_sub_path_inside_tarball_contexts() {
    use kiln_integration::fileserver::{FileServer, ServedFile};
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let mut b = tar::Builder::new(Vec::new());
    for (name, content) in [
        ("./app/Dockerfile".to_string(), format!("FROM {}\nCOPY msg.txt /msg.txt\n", base.latest)),
        ("./app/msg.txt".to_string(), "from the sub-path\n".to_string()),
        ("./Dockerfile".to_string(), "FROM scratch\nCOPY nothing-here /\n".to_string()),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, content.as_bytes()).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &b.into_inner().unwrap()).unwrap();
    let tgz = gz.finish().unwrap();
    let file = sb.out_path("ctx.tar.gz");
    std::fs::write(&file, &tgz).unwrap();
    sb.user.chown_tree(&file);
    let server = FileServer::start(vec![ServedFile { path: "/ctx.tar.gz".into(), data: tgz, last_modified: None }]).unwrap();
    for (i, context) in [format!("tar://{}", file.display()), "tar://stdin".to_string(), format!("http://{}/ctx.tar.gz", server.host())].iter().enumerate() {
        let tag = format!("demo/subpath:{i}");
        let mut cmd = sb.kiln().arg("executor").arg(format!("--context={context}")).arg("--context-sub-path=app").arg(format!("--destination={}", registry.reference(&tag)));
        if context == "tar://stdin" {
            cmd = cmd.stdin_file(&file);
        }
        cmd.run().assert_success();
        let img = Image::pull_from(&registry, &tag);
        assert_eq!(img.tree.node("/msg.txt").text(), "from the sub-path\n", "{context}");
    }
    sb.kiln()
        .arg("executor")
        .arg(format!("--context=tar://{}", file.display()))
        .arg("--context-sub-path=nope")
        .arg("--no-push")
        .run()
        .assert_failure_containing("--context-sub-path nope: no such directory");
}
