//! End-to-end: kiln on a laptop (issue 13): `-t` keeps the image by name, builds
//! chain on local images without a registry (`--pull`), and the image commands
//! (`images`, `tag`, `rmi`, `inspect`, `save`, `load`, `push`, `pull`) do what
//! docker's and podman's do; `kiln prune` keeps named images and reclaims removed ones.

use std::process::Command;
use std::time::Duration;

use kiln_integration::{run_with_timeout, Image, Registry, Sandbox};
use serde_json::Value;

/// A base image made without any registry: busybox copied into scratch, a RUN.
fn base_context(sb: &Sandbox, name: &str) -> std::path::PathBuf {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed by scripts/setup.sh");
    sb.new_context(name)
        .file("busybox", busybox)
        .file(
            "Dockerfile",
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox --install -s /bin && echo hi > /hello\"]\n",
        )
        .build()
}

fn images_json(sb: &Sandbox, root: &std::path::Path) -> Vec<Value> {
    let out = sb.kiln().env("KILN_ROOT", root).args(["images", "--format", "json"]).run();
    out.assert_success();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("kiln images --format json: {e}\n{out}"))
}

fn names(images: &[Value]) -> Vec<String> {
    images.iter().map(|i| i["name"].as_str().unwrap().to_string()).collect()
}

fn chmod_executable(sb: &Sandbox, ctx: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(ctx.join("busybox"), std::fs::Permissions::from_mode(0o755)).unwrap();
    sb.user.chown_tree(ctx);
}

#[test]
fn laptop_workflow_without_a_registry() {
    let sb = Sandbox::new();
    let root = sb.kiln_root();
    let base = base_context(&sb, "base");
    chmod_executable(&sb, &base);
    sb.kiln().build().tag("myapp:dev").arg(&base).run().assert_success().assert_stderr_contains("named docker.io/library/myapp:dev");
    let imgs = images_json(&sb, &root);
    assert_eq!(names(&imgs), ["docker.io/library/myapp:dev"]);
    assert_eq!(imgs[0]["repository"], "myapp");
    assert_eq!(imgs[0]["tag"], "dev");
    assert!(imgs[0]["size"].as_u64().unwrap() > 100_000, "{imgs:?}");
    let base_digest = imgs[0]["digest"].as_str().unwrap().to_string();

    // FROM, COPY --from and RUN --mount from= a local name, with pulls forbidden.
    let app = sb
        .new_context("app")
        .file(
            "Dockerfile",
            "FROM myapp:dev\nCOPY --from=myapp:dev /hello /copied\nRUN --mount=from=docker.io/library/myapp:dev,target=/m cat /hello /m/hello > /seen\n",
        )
        .build();
    let layout = sb.out_path("app-layout");
    sb.kiln().build().args(["--pull=never", "-t", "app:1"]).output_oci(&layout).arg(&app).run().assert_success();
    let img = Image::from_layout(&layout, None);
    assert_eq!(img.tree.node("/seen").text(), "hi\nhi\n");
    assert_eq!(img.tree.node("/copied").text(), "hi\n");
    // kiln diff reads local names: the named image and its OCI layout are the same
    // image, and it differs from its base by the files the build added.
    let same = sb.kiln().arg("diff").arg("app:1").arg(&layout).run();
    assert_eq!(same.status.code(), Some(0), "{same}");
    let differ = sb.kiln().args(["diff", "myapp:dev", "app:1"]).run();
    assert_eq!(differ.status.code(), Some(1), "{differ}");
    differ.assert_stdout_contains("/seen").assert_stdout_contains("/copied");

    // An unknown image with --pull=never names it and lists what is local.
    let bad = sb.new_context("bad").file("Dockerfile", "FROM myap:dev\n").build();
    sb.kiln()
        .build()
        .arg("--pull=never")
        .arg(&bad)
        .run()
        .assert_failure_containing("docker.io/library/myap:dev")
        .assert_stderr_contains("not a local image")
        .assert_stderr_contains("docker.io/library/myapp:dev");

    // tag, images -q, inspect --format.
    sb.kiln().args(["tag", "app:1", "localhost:5000/team/app:2"]).run().assert_success();
    let imgs = images_json(&sb, &root);
    assert_eq!(names(&imgs), ["docker.io/library/app:1", "docker.io/library/myapp:dev", "localhost:5000/team/app:2"]);
    assert_eq!(imgs[0]["digest"], imgs[2]["digest"]);
    let q = sb.kiln().args(["images", "-q"]).run();
    q.assert_success();
    assert_eq!(q.stdout.lines().count(), 2, "one line per image, not per name\n{q}");
    let app_digest = imgs[0]["digest"].as_str().unwrap().to_string();
    let d = sb.kiln().args(["inspect", "app:1", "--format", "{{.Digest}}"]).run();
    d.assert_success();
    assert_eq!(d.stdout.trim(), app_digest);
    let env = sb.kiln().args(["inspect", &app_digest[7..19], "-f", ".Config.config.Env"]).run();
    env.assert_success().assert_stdout_contains("PATH=");
    let hist = sb.kiln().args(["inspect", "app:1", "-f", ".History"]).run();
    hist.assert_success().assert_stdout_contains("/seen");

    // save → skopeo reads the docker archive and the OCI archive; load into a fresh store.
    let tar = sb.out_path("app.tar");
    sb.kiln().args(["save", "app:1", "myapp:dev", "-o"]).arg(&tar).run().assert_success();
    let conv = sb.out_path("from-archive");
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet"]).arg(format!("docker-archive:{}:docker.io/library/app:1", tar.display())).arg(format!("oci:{}:img", conv.display()));
    let o = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(o.status.success(), "skopeo cannot read kiln save's archive\n{o}");
    assert_eq!(Image::from_layout(&conv, Some("img")).tree.node("/seen").text(), "hi\nhi\n");
    let oci_tar = sb.out_path("app-oci.tar");
    sb.kiln().args(["save", "--format", "oci-archive", "app:1", "-o"]).arg(&oci_tar).run().assert_success();
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--raw"]).arg(format!("oci-archive:{}", oci_tar.display()));
    let o = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(o.status.success(), "skopeo cannot read the OCI archive\n{o}");

    let root2 = sb.path().join("kiln-root-2");
    let load = sb.kiln().env("KILN_ROOT", &root2).args(["load", "-i"]).arg(&tar).run();
    load.assert_success().assert_stdout_contains("Loaded image: app:1").assert_stdout_contains("Loaded image: myapp:dev");
    let loaded = images_json(&sb, &root2);
    assert_eq!(names(&loaded), ["docker.io/library/app:1", "docker.io/library/myapp:dev"]);
    assert_eq!(loaded[0]["digest"], app_digest.as_str());
    assert_eq!(loaded[1]["digest"], base_digest.as_str());
    // The loaded base builds on (nothing else is in that store).
    let again = sb.new_context("again").file("Dockerfile", "FROM myapp:dev\nRUN cat /hello\n").build();
    sb.kiln().env("KILN_ROOT", &root2).build().arg("--pull=never").arg(&again).run().assert_success();

    // rmi: unknown names fail and say what there is; named images survive prune,
    // removed ones are reclaimed.
    sb.kiln().args(["rmi", "nope"]).run().assert_failure_containing("no local image \"nope\"").assert_stderr_contains("app:1");
    sb.kiln().args(["prune"]).run().assert_success();
    sb.kiln().args(["inspect", "app:1"]).run().assert_success();
    let layer = sb.kiln_root().join("content/blobs/sha256").join(img.manifest["layers"].as_array().unwrap().last().unwrap()["digest"].as_str().unwrap().trim_start_matches("sha256:"));
    assert!(layer.is_file(), "a named image's layer was pruned");
    let rmi = sb.kiln().args(["rmi", &app_digest[7..19]]).run();
    rmi.assert_success().assert_stdout_contains("Untagged: app:1").assert_stdout_contains("Untagged: localhost:5000/team/app:2");
    sb.kiln().args(["prune", "--all"]).run().assert_success();
    assert!(!layer.exists(), "the removed image's layer stayed after prune");
    assert_eq!(names(&images_json(&sb, &root)), ["docker.io/library/myapp:dev"]);
}

#[test]
fn push_and_pull_local_images_through_a_registry() {
    let registry = Registry::start();
    let sb = Sandbox::new();
    let base = base_context(&sb, "base");
    chmod_executable(&sb, &base);
    sb.kiln().build().tag("app:1").arg(&base).run().assert_success();
    let pushed = registry.reference("team/app:1");
    let digest_file = sb.out_path("digest");
    sb.kiln().args(["push", "app:1", &pushed, "--digest-file"]).arg(&digest_file).run().assert_success();
    let digest = std::fs::read_to_string(&digest_file).unwrap();
    let local = sb.kiln().args(["inspect", "app:1", "-f", ".Digest"]).run();
    assert_eq!(local.stdout.trim(), digest, "push must keep the local digest");
    let from_registry = Image::pull(&pushed);
    assert_eq!(from_registry.tree.node("/hello").text(), "hi\n");
    // inspect of a name that is not local asks its registry (nothing is pulled).
    let fresh = sb.path().join("kiln-root-inspect");
    let remote = sb.kiln().env("KILN_ROOT", &fresh).args(["inspect", &pushed, "-f", ".Digest"]).run();
    remote.assert_success();
    assert_eq!(remote.stdout.trim(), digest);
    assert!(images_json(&sb, &fresh).is_empty(), "inspect names nothing locally");
    // The older `docker save` format (manifest.json with layer files, as skopeo
    // writes docker-archive:) loads too.
    let legacy = sb.out_path("legacy.tar");
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--src-tls-verify=false"]).arg(format!("docker://{pushed}")).arg(format!("docker-archive:{}:legacy/app:7", legacy.display()));
    let o = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(o.status.success(), "skopeo docker-archive\n{o}");
    sb.user.chown_tree(&legacy);
    sb.kiln().env("KILN_ROOT", &fresh).args(["load", "-i"]).arg(&legacy).run().assert_success().assert_stdout_contains("Loaded image: legacy/app:7");
    let on_legacy = sb.new_context("on-legacy").file("Dockerfile", "FROM legacy/app:7\nRUN cat /hello > /again\n").build();
    let out = sb.out_path("on-legacy-out");
    sb.kiln().env("KILN_ROOT", &fresh).build().arg("--pull=never").output_oci(&out).arg(&on_legacy).run().assert_success();
    assert_eq!(Image::from_layout(&out, None).tree.node("/again").text(), "hi\n");

    // A multi-platform build is kept as an index; push it, then pull one or all platforms.
    let multi = sb.new_context("multi").file("Dockerfile", "FROM scratch\nARG TARGETARCH\nCOPY f /f-$TARGETARCH\n").file("f", "x").build();
    sb.kiln().build().args(["--platform", "linux/amd64,linux/arm64", "-t", "multi:1"]).arg(&multi).run().assert_success();
    let imgs = images_json(&sb, &sb.kiln_root());
    let m = imgs.iter().find(|i| i["name"] == "docker.io/library/multi:1").unwrap();
    assert_eq!(m["platforms"], serde_json::json!(["linux/amd64", "linux/arm64"]));
    let multi_ref = registry.reference("team/multi:1");
    sb.kiln().args(["push", "multi:1", &multi_ref]).run().assert_success();

    let root2 = sb.path().join("kiln-root-2");
    sb.kiln().env("KILN_ROOT", &root2).args(["pull", &multi_ref, "--platform", "linux/arm64"]).run().assert_success();
    let one = images_json(&sb, &root2);
    assert_eq!(one[0]["platforms"], serde_json::json!(["linux/arm64"]));
    let root3 = sb.path().join("kiln-root-3");
    sb.kiln().env("KILN_ROOT", &root3).args(["pull", &multi_ref]).run().assert_success();
    sb.kiln().env("KILN_ROOT", &root3).args(["pull", &pushed]).run().assert_success();
    let all = images_json(&sb, &root3);
    assert_eq!(all.iter().find(|i| i["name"] == multi_ref.as_str()).unwrap()["platforms"], serde_json::json!(["linux/amd64", "linux/arm64"]));
    // A build on the pulled image needs no registry.
    let on_top = sb.new_context("on-top").file("Dockerfile", format!("FROM {pushed}\nRUN cat /hello\n")).build();
    sb.kiln().env("KILN_ROOT", &root3).build().arg("--pull=never").arg(&on_top).run().assert_success();
    // --pull (always) asks the registry even though the image is local.
    drop(registry);
    sb.kiln().env("KILN_ROOT", &root3).build().arg("--pull").arg(&on_top).run().assert_failure();
    // An unknown remote image names the registry reference.
    sb.kiln().env("KILN_ROOT", &root3).args(["inspect", "127.0.0.1:1/none:1"]).run().assert_failure_containing("127.0.0.1:1/none");
}
