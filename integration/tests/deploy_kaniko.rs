//! kiln as a Kaniko image (issue 14): `deploy/image/Dockerfile.kaniko`'s two targets,
//! built by kiln from `prepare-context.sh`'s context, unpacked with umoci and run
//! inside their rootfs as a pod would (bubblewrap: a mount namespace whose root is the
//! rootfs, the host's network for the local registry). Two pipelines written for
//! Kaniko run unchanged but for the image name: GitLab's documented kaniko job
//! (`testdata/kaniko/gitlab-ci.yml`) in `:kaniko-debug`, and the Tekton catalog's kaniko
//! task (`testdata/kaniko/tekton-kaniko.yaml`) in `:kaniko`. Each runs twice: as uid 0
//! without CAP_SYS_ADMIN (Kaniko's usual pod: kiln falls back to chroot isolation) and
//! as uid 1000 in a user namespace (kiln makes its own, with a single-id map: the
//! image has no newuidmap). The pushed image is pulled back and checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kiln_integration::{kiln_bin, repo_root, require_program, run_with_timeout, seed_base_images, Image, Kind, Registry, RunOutput, Sandbox};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

const USER: &str = "ci-user";
const PASSWORD: &str = "Ci-Pa55-word";

fn sha256_of(b: &[u8]) -> String {
    let h = Sha256::digest(b);
    format!("sha256:{}", h.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

fn base64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn yaml(rel: &str) -> Value {
    let p = repo_root().join(rel);
    let y: serde_norway::Value = serde_norway::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    serde_json::to_value(y).unwrap()
}

fn docker_config(registry: &Registry) -> String {
    let (u, p) = registry.credentials().unwrap();
    format!(r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#, registry.host(), base64(&format!("{u}:{p}")))
}

// ---------------------------------------------------------------- the images

/// `Dockerfile.kaniko --target TARGET` built by kiln into an OCI layout (tag latest).
fn build_target(sb: &Sandbox, registry: &Registry, busybox: &str, target: &str) -> PathBuf {
    let ctx = sb.path().join("image-ctx");
    if !ctx.exists() {
        let r = run_with_timeout(
            sb.user_command("/bin/sh").arg(repo_root().join("deploy/image/prepare-context.sh")).arg(&ctx).arg(kiln_bin()),
            Duration::from_secs(120),
        );
        assert!(r.status.success(), "prepare-context.sh failed\n{r}");
    }
    let layout = sb.out_path(&format!("{target}-oci"));
    sb.kiln()
        .build()
        .arg("-f")
        .arg(ctx.join("Dockerfile.kaniko"))
        .args(["--target", target])
        .build_arg("BUSYBOX_IMAGE", busybox)
        .env("KILN_AUTH", docker_config(registry))
        .output_oci(&layout)
        .arg(&ctx)
        .timeout(Duration::from_secs(600))
        .run()
        .assert_success();
    layout
}

/// Kaniko's layout and defaults (its deploy/Dockerfile), as the image has them.
fn check_kaniko_image(img: &Image, debug: bool) {
    let t = &img.tree;
    t.assert_entry("/kaniko", Kind::Dir, 0o777, 0, 0);
    t.assert_entry("/kaniko/.docker", Kind::Dir, 0o777, 0, 0);
    t.assert_entry("/kaniko/executor", Kind::File, 0o755, 0, 0);
    let kiln = t.assert_entry("/usr/local/bin/kiln", Kind::Symlink, 0o777, 0, 0);
    assert_eq!(kiln.link.as_deref(), Some("/kaniko/executor"));
    let certs = t.node("/kaniko/ssl/certs/ca-certificates.crt");
    assert!(certs.is_file() && certs.size > 1000, "CA bundle: {certs}");
    t.assert_entry("/workspace", Kind::Dir, 0o755, 0, 0);
    t.assert_entry("/tmp", Kind::Dir, 0o1777, 0, 0);
    assert_eq!(t.node("/etc/nsswitch.conf").text(), "hosts: files dns\n");
    let cfg = img.cfg();
    assert_eq!(cfg["Entrypoint"], json!(["/kaniko/executor"]));
    assert_eq!(cfg["WorkingDir"], "/workspace");
    assert_eq!(cfg["User"], "0:0");
    let env = img.env();
    let path = if debug { "PATH=/usr/local/bin:/kaniko:/busybox" } else { "PATH=/usr/local/bin:/kaniko" };
    for e in ["HOME=/root", "USER=root", path, "SSL_CERT_DIR=/kaniko/ssl/certs", "DOCKER_CONFIG=/kaniko/.docker/", "KILN_ROOT=/kaniko/kiln"] {
        assert!(env.contains(&e.to_string()), "{e} missing from {env:?}");
    }
    if debug {
        assert!(t.node("/busybox/busybox").is_file());
        for applet in ["sh", "base64", "tr", "mkdir"] {
            assert!(t.node(&format!("/busybox/{applet}")).is_file(), "/busybox/{applet}: {}", t.node(&format!("/busybox/{applet}")));
        }
        assert_eq!(t.node("/bin/sh").link.as_deref(), Some("/busybox/sh"));
    } else {
        assert!(t.get("/busybox").is_none() && t.get("/bin/sh").is_none(), "the plain image has no shell");
    }
    img.assert_consistent();
}

// ---------------------------------------------------------------- the pod

#[derive(Clone, Copy, Debug, PartialEq)]
enum Pod {
    /// uid 0 with the default capabilities but CAP_SYS_ADMIN: Kaniko's pod.
    RootWithoutSysAdmin,
    /// uid/gid 1000 in a user namespace (the build user outside).
    Unprivileged,
}

impl Pod {
    fn name(self) -> &'static str {
        match self {
            Pod::RootWithoutSysAdmin => "root",
            Pod::Unprivileged => "uid1000",
        }
    }
}

/// The image's rootfs, unpacked for one run (a run writes into it, as into a
/// container's writable layer).
fn unpack(sb: &Sandbox, layout: &Path, name: &str) -> PathBuf {
    let bundle = sb.path().join(format!("bundle-{name}"));
    let out = run_with_timeout(
        Command::new(require_program("umoci")).arg("unpack").arg("--image").arg(format!("{}:latest", layout.display())).arg(&bundle),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "umoci unpack failed\n{out}");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o755)).unwrap();
    bundle.join("rootfs")
}

/// A mount of the pod: host path, path in the container, read-only.
struct Mount<'a>(&'a Path, &'a str, bool);

/// `argv` run in `rootfs` as `pod`, with exactly `env`, in `cwd`, `mounts` bound.
fn run_in_pod(sb: &Sandbox, pod: Pod, rootfs: &Path, mounts: &[Mount], cwd: &str, env: &BTreeMap<String, String>, argv: &[String]) -> RunOutput {
    // The runtime makes mount points (a rootfs owned by root is not writable by
    // the unprivileged bwrap).
    for d in ["proc", "dev"].iter().copied().chain(mounts.iter().map(|m| &m.1[1..])) {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    for f in ["etc/hosts", "etc/resolv.conf"] {
        std::fs::write(rootfs.join(f), "").unwrap();
    }
    let bwrap = require_program("bwrap");
    let mut cmd = match pod {
        Pod::RootWithoutSysAdmin => Command::new(&bwrap),
        Pod::Unprivileged => sb.user_command(&bwrap),
    };
    cmd.env_clear().envs(env);
    cmd.arg("--bind").arg(rootfs).arg("/");
    cmd.args(["--proc", "/proc", "--dev", "/dev", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]);
    cmd.args(["--ro-bind", "/etc/hosts", "/etc/hosts", "--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]);
    for Mount(host, target, ro) in mounts {
        cmd.arg(if *ro { "--ro-bind" } else { "--bind" }).arg(host).arg(target);
    }
    match pod {
        Pod::RootWithoutSysAdmin => cmd.args(["--uid", "0", "--gid", "0", "--cap-drop", "CAP_SYS_ADMIN"]),
        Pod::Unprivileged => cmd.args(["--unshare-user", "--uid", "1000", "--gid", "1000"]),
    };
    cmd.args(["--chdir", cwd, "--"]).args(argv);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(600));
    if std::env::var_os("KILN_TEST_VERBOSE").is_some() {
        eprintln!("{out}");
    }
    out
}

/// The image config's Env as a map (a container's environment before the pod adds to it).
fn image_env(img: &Image) -> BTreeMap<String, String> {
    img.env().iter().filter_map(|e| e.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// What kiln says about its isolation in each pod, and that its state went to KILN_ROOT.
fn check_kiln_ran_as(pod: Pod, out: &RunOutput, rootfs: &Path, build_uid: u32) {
    match pod {
        Pod::RootWithoutSysAdmin => assert!(out.stderr.contains("using --isolation chroot"), "no chroot fallback\n{out}"),
        Pod::Unprivileged => assert!(out.stderr.contains("using a single-id map"), "no single-id user namespace\n{out}"),
    }
    use std::os::unix::fs::MetadataExt;
    let state = std::fs::metadata(rootfs.join("kaniko/kiln/content")).unwrap_or_else(|e| panic!("no store in KILN_ROOT: {e}\n{out}"));
    let owner = if pod == Pod::Unprivileged { build_uid } else { 0 };
    assert_eq!(state.uid(), owner, "KILN_ROOT's owner");
}

/// The project both pipelines build: a COPY, a RUN and an ENV, and a build arg
/// when the pipeline passes one.
fn project(sb: &Sandbox, name: &str, base: &str) -> PathBuf {
    sb.new_context(name)
        .file(
            "Dockerfile",
            format!(
                "FROM {base}\nARG GREETING=unset\nENV BUILT_BY=kaniko-pipeline\nCOPY hello.txt /hello.txt\n\
                 RUN echo \"$GREETING from $(cat /hello.txt)\" > /built && id -u > /built-uid\n"
            ),
        )
        .file("hello.txt", "the project\n")
        .build()
}

fn check_pushed(registry: &Registry, repo_tag: &str, greeting: &str) -> Image {
    let img = Image::pull_from(registry, repo_tag);
    assert_eq!(img.tree.node("/hello.txt").text(), "the project\n");
    assert_eq!(img.tree.node("/built").text(), format!("{greeting} from the project\n"));
    assert_eq!(img.tree.node("/built-uid").text(), "0\n", "RUN ran as the image's root");
    assert!(img.env().contains(&"BUILT_BY=kaniko-pipeline".to_string()), "{:?}", img.env());
    assert_eq!(img.config["architecture"], "amd64");
    img
}

// ---------------------------------------------------------------- GitLab

#[test]
fn gitlab_documented_kaniko_job_runs_in_the_kaniko_debug_image() {
    let registry = Registry::start_with_auth(USER, PASSWORD);
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let layout = build_target(&sb, &registry, &base.latest, "kaniko-debug");
    let img = Image::from_layout(&layout, Some("latest"));
    check_kaniko_image(&img, true);

    let doc = yaml("testdata/kaniko/gitlab-ci.yml");
    let job = &doc["build"];
    // The only change a user makes is this name; `entrypoint: [""]` means the runner
    // starts the image's shell (its detection finds /busybox/sh) on the script.
    assert_eq!(job["image"]["name"], "gcr.io/kaniko-project/executor:debug");
    assert_eq!(job["image"]["entrypoint"], json!([""]));
    assert_eq!(job["rules"][0]["if"], "$CI_COMMIT_TAG", "the job runs for tags: CI_COMMIT_TAG is set below");
    let mut script = String::from("set -e\n");
    for line in job["script"].as_array().unwrap() {
        script.push_str(line.as_str().unwrap());
        script.push('\n');
    }

    for pod in [Pod::RootWithoutSysAdmin, Pod::Unprivileged] {
        let tag = format!("v1.0.0-{}", pod.name());
        let project_dir = project(&sb, &format!("project-{}", pod.name()), &base.latest);
        let rootfs = unpack(&sb, &layout, &format!("gitlab-{}", pod.name()));
        // The image's environment, then GitLab's predefined variables.
        let mut env = image_env(&img);
        for (k, v) in [
            ("CI", "true"),
            ("GITLAB_CI", "true"),
            ("CI_PROJECT_DIR", "/builds/group/project"),
            ("CI_REGISTRY", registry.host().as_str()),
            ("CI_REGISTRY_USER", USER),
            ("CI_REGISTRY_PASSWORD", PASSWORD),
            ("CI_REGISTRY_IMAGE", registry.reference("group/project").as_str()),
            ("CI_COMMIT_TAG", tag.as_str()),
        ] {
            env.insert(k.to_string(), v.to_string());
        }
        let argv = ["/busybox/sh".to_string(), "-c".to_string(), script.clone()];
        let mounts = [Mount(&project_dir, "/builds/group/project", false)];
        let out = run_in_pod(&sb, pod, &rootfs, &mounts, "/builds/group/project", &env, &argv);
        assert!(out.status.success(), "GitLab job in the {pod:?} pod failed\n{out}");
        assert!(!out.combined().contains(PASSWORD), "a credential was printed\n{out}");
        check_kiln_ran_as(pod, &out, &rootfs, sb.user.uid);
        let written: Value = serde_json::from_slice(&std::fs::read(rootfs.join("kaniko/.docker/config.json")).unwrap()).unwrap();
        assert_eq!(written["auths"][registry.host()]["auth"], base64(&format!("{USER}:{PASSWORD}")), "the job's config.json");
        check_pushed(&registry, &format!("group/project:{tag}"), "unset");
    }
}

// ---------------------------------------------------------------- Tekton

/// `$(params.X)`, `$(results.X.path)`, `$(workspaces.X.path)` replaced as Tekton does.
fn tekton_subst(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("$({k})"), v);
    }
    for prefix in ["$(params.", "$(results.", "$(workspaces.", "$(context."] {
        assert!(!out.contains(prefix), "unsubstituted {prefix}…) in:\n{out}");
    }
    out
}

/// A step's args with array params expanded to one argument per item (`$(params.X)`
/// alone, or `$(params.X[*])`), the rest substituted.
fn tekton_args(step: &Value, arrays: &BTreeMap<String, Vec<String>>, vars: &BTreeMap<String, String>) -> Vec<String> {
    let mut args = Vec::new();
    for a in step["args"].as_array().unwrap() {
        let a = a.as_str().unwrap();
        let name = a.strip_prefix("$(params.").and_then(|x| x.strip_suffix(")")).map(|x| x.trim_end_matches("[*]"));
        match name.and_then(|n| arrays.get(n)) {
            Some(items) => args.extend(items.iter().cloned()),
            None => args.push(tekton_subst(a, vars)),
        }
    }
    args
}

#[test]
fn tekton_catalog_kaniko_task_runs_in_the_kaniko_image() {
    let registry = Registry::start_with_auth(USER, PASSWORD);
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let layout = build_target(&sb, &registry, &base.latest, "kaniko");
    let img = Image::from_layout(&layout, Some("latest"));
    check_kaniko_image(&img, false);

    let task = yaml("testdata/kaniko/tekton-kaniko.yaml");
    let spec = &task["spec"];
    let build_step = &spec["steps"][0];
    assert_eq!(build_step["name"], "build-and-push");
    assert_eq!(build_step["image"], "$(params.BUILDER_IMAGE)", "the image is the one thing the TaskRun changes");
    assert!(build_step.get("command").is_none() && build_step.get("script").is_none(), "the step runs the image's ENTRYPOINT");
    let url_step = &spec["steps"][1];
    assert_eq!(url_step["name"], "write-url");
    let dockerconfig_ws = spec["workspaces"].as_array().unwrap().iter().find(|w| w["name"] == "dockerconfig").unwrap();
    assert_eq!(dockerconfig_ws["mountPath"], "/kaniko/.docker");
    let entrypoint: Vec<String> = img.cfg()["Entrypoint"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();

    let dockerconfig = sb.new_context("dockerconfig").file("config.json", docker_config(&registry)).build();
    for pod in [Pod::RootWithoutSysAdmin, Pod::Unprivileged] {
        let image = registry.reference(&format!("tekton/app:{}", pod.name()));
        let source = project(&sb, &format!("source-{}", pod.name()), &base.latest);
        let results = sb.new_context(&format!("results-{}", pod.name())).build();
        let rootfs = unpack(&sb, &layout, &format!("tekton-{}", pod.name()));

        // Params: the task's defaults, then the TaskRun's (as the catalog's own test
        // run passes --skip-tls-verify).
        let mut strings: BTreeMap<String, String> = BTreeMap::new();
        for p in spec["params"].as_array().unwrap() {
            if let Some(d) = p["default"].as_str() {
                strings.insert(p["name"].as_str().unwrap().to_string(), d.to_string());
            }
        }
        strings.insert("IMAGE".into(), image.clone());
        strings.insert("BUILDER_IMAGE".into(), format!("registry.example.com/kiln:kaniko-{}", pod.name()));
        let arrays: BTreeMap<String, Vec<String>> =
            [("EXTRA_ARGS".to_string(), vec!["--build-arg=GREETING=hello tekton".to_string(), "--skip-tls-verify".to_string()])].into();
        // Workspaces and results where Tekton mounts them.
        let mut vars: BTreeMap<String, String> = strings.iter().map(|(k, v)| (format!("params.{k}"), v.clone())).collect();
        vars.insert("workspaces.source.path".into(), "/workspace/source".into());
        vars.insert("workspaces.dockerconfig.path".into(), "/kaniko/.docker".into());
        for r in spec["results"].as_array().unwrap() {
            let n = r["name"].as_str().unwrap();
            vars.insert(format!("results.{n}.path"), format!("/tekton/results/{n}"));
        }

        let mut argv = entrypoint.clone();
        argv.extend(tekton_args(build_step, &arrays, &vars));
        let workdir = tekton_subst(build_step["workingDir"].as_str().unwrap(), &vars);
        let mut env = image_env(&img);
        for e in build_step["env"].as_array().into_iter().flatten() {
            env.insert(e["name"].as_str().unwrap().to_string(), tekton_subst(e["value"].as_str().unwrap(), &vars));
        }
        let mounts = [
            Mount(&source, "/workspace/source", false),
            Mount(&dockerconfig, "/kaniko/.docker", true),
            Mount(&results, "/tekton/results", false),
        ];
        let out = run_in_pod(&sb, pod, &rootfs, &mounts, &workdir, &env, &argv);
        assert!(out.status.success(), "build-and-push in the {pod:?} pod failed\n{out}");
        assert!(!out.combined().contains(PASSWORD), "a credential was printed\n{out}");
        check_kiln_ran_as(pod, &out, &rootfs, sb.user.uid);

        // write-url runs in its own (bash) image with the same results volume.
        let script = tekton_subst(url_step["script"].as_str().unwrap(), &vars).replace("/tekton/results/", &format!("{}/", results.display()));
        let r = run_with_timeout(Command::new("/bin/bash").arg("-c").arg(&script), Duration::from_secs(30));
        assert!(r.status.success(), "write-url failed\n{r}");

        let digest = std::fs::read_to_string(results.join("IMAGE_DIGEST")).unwrap();
        assert_eq!(digest, sha256_of(&registry.manifest_raw("tekton/app", pod.name())), "IMAGE_DIGEST is the pushed manifest's");
        assert_eq!(std::fs::read_to_string(results.join("IMAGE_URL")).unwrap(), image, "IMAGE_URL");
        let pushed = check_pushed(&registry, &format!("tekton/app:{}", pod.name()), "hello tekton");
        assert_eq!(pushed.manifest_digest, digest);
    }
}
