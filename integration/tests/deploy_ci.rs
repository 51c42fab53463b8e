//! The CI integrations of issue 9, executed: the Tekton step script with its params,
//! results and workspaces substituted as Tekton does, the GitLab template job's script
//! with GitLab's variables, and the GitHub Action's run steps with `${{ inputs.X }}`
//! substituted and GITHUB_OUTPUT set — each as the unprivileged build user against a
//! local registry, checking what they report against the image pushed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kiln_integration::{kiln_bin, repo_root, run_with_timeout, seed_base_images, Image, Registry, RunOutput, Sandbox};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const USER: &str = "ci-user";
const PASSWORD: &str = "Ci-Pa55-word";

fn sha256_of(b: &[u8]) -> String {
    let h = Sha256::digest(b);
    format!("sha256:{}", h.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

fn yaml(rel: &str) -> Value {
    let p = repo_root().join(rel);
    let y: serde_norway::Value = serde_norway::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    serde_json::to_value(y).unwrap()
}

/// A two-stage Dockerfile: only `--target final` builds (the last stage fails), so the
/// extra args demonstrably reach kiln; build args land in /greeting and /other.
fn context(sb: &Sandbox, name: &str, base: &str) -> PathBuf {
    sb.new_context(name)
        .file(
            "Dockerfile.kiln",
            format!(
                "FROM {base} AS final\nARG GREETING=unset\nARG OTHER=unset\nRUN echo \"$GREETING\" > /greeting && echo \"$OTHER\" > /other\n\
                 FROM final AS broken\nRUN echo 'built without --target final' && false\n"
            ),
        )
        .file("README", "context\n")
        .build()
}

/// A directory owned by the build user, with `kiln` on it (for PATH).
fn bin_dir(sb: &Sandbox) -> PathBuf {
    let d = sb.new_context("bin").build();
    std::os::unix::fs::symlink(kiln_bin(), d.join("kiln")).unwrap();
    d
}

fn path_with(bin: &Path) -> String {
    format!("{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", bin.display())
}

fn run(cmd: &mut Command) -> RunOutput {
    let out = run_with_timeout(cmd, Duration::from_secs(600));
    if std::env::var_os("KILN_TEST_VERBOSE").is_some() {
        eprintln!("{out}");
    }
    out
}

fn docker_config(registry: &Registry) -> String {
    let (u, p) = registry.credentials().unwrap();
    let auth = base64(&format!("{u}:{p}"));
    format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.host())
}

fn base64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

// ---------------------------------------------------------------- Tekton

/// `$(params.X)`, `$(results.X.path)`, `$(workspaces.X.Y)` replaced as Tekton does.
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

#[test]
fn tekton_task_step_script_builds_and_reports_results() {
    let registry = Registry::start_with_auth(USER, PASSWORD);
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let source = context(&sb, "source", &base.latest);
    let dockerconfig = sb.new_context("dockerconfig").file(".dockerconfigjson", docker_config(&registry)).build();
    let results = sb.new_context("results").build();
    let bin = bin_dir(&sb);
    let image = registry.reference("tekton/app:1");

    let task = yaml("deploy/tekton/kiln-task.yaml");
    let spec = &task["spec"];
    // Params: defaults, then what the TaskRun gives.
    let mut strings: BTreeMap<String, String> = BTreeMap::new();
    let mut arrays: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in spec["params"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap().to_string();
        match &p["default"] {
            Value::String(s) => {
                strings.insert(name, s.clone());
            }
            Value::Array(a) => {
                arrays.insert(name, a.iter().map(|x| x.as_str().unwrap().to_string()).collect());
            }
            _ => {}
        }
    }
    strings.insert("IMAGE".into(), image.clone());
    strings.insert("DOCKERFILE".into(), "./Dockerfile.kiln".into());
    strings.insert("PLATFORMS".into(), "linux/amd64".into());
    arrays.insert("BUILD_ARGS".into(), vec!["GREETING=hello tekton".into(), "OTHER=two words".into()]);
    arrays.insert("EXTRA_ARGS".into(), vec!["--target".into(), "final".into()]);

    let mut vars: BTreeMap<String, String> = strings.iter().map(|(k, v)| (format!("params.{k}"), v.clone())).collect();
    for r in spec["results"].as_array().unwrap() {
        let n = r["name"].as_str().unwrap();
        vars.insert(format!("results.{n}.path"), results.join(n).display().to_string());
    }
    vars.insert("workspaces.source.path".into(), source.display().to_string());
    vars.insert("workspaces.source.bound".into(), "true".into());
    vars.insert("workspaces.dockerconfig.path".into(), dockerconfig.display().to_string());
    vars.insert("workspaces.dockerconfig.bound".into(), "true".into());

    let step = &spec["steps"][0];
    let script = tekton_subst(step["script"].as_str().unwrap(), &vars);
    let script_path = sb.path().join("tekton-step.sh");
    std::fs::write(&script_path, &script).unwrap();
    // Array params in args expand to one argument per item.
    let mut args = Vec::new();
    for a in step["args"].as_array().unwrap() {
        let a = a.as_str().unwrap();
        match a.strip_prefix("$(params.").and_then(|x| x.strip_suffix("[*])")) {
            Some(name) => args.extend(arrays[name].iter().cloned()),
            None => args.push(tekton_subst(a, &vars)),
        }
    }
    let workdir = tekton_subst(step["workingDir"].as_str().unwrap(), &vars);
    let mut cmd = sb.user_command("/bin/sh");
    cmd.arg(&script_path).args(&args).current_dir(&workdir);
    for e in step["env"].as_array().into_iter().flatten() {
        cmd.env(e["name"].as_str().unwrap(), tekton_subst(e["value"].as_str().unwrap(), &vars));
    }
    // The pod's emptyDir for KILN_ROOT is the sandbox's here.
    cmd.env("KILN_ROOT", sb.kiln_root()).env("PATH", path_with(&bin));
    let out = run(&mut cmd);
    assert!(out.status.success(), "Tekton step failed\n{out}");
    assert!(!out.combined().contains(PASSWORD));

    let digest = std::fs::read_to_string(results.join("IMAGE_DIGEST")).unwrap();
    let url = std::fs::read_to_string(results.join("IMAGE_URL")).unwrap();
    assert_eq!(url, image, "IMAGE_URL");
    assert_eq!(digest, sha256_of(&registry.manifest_raw("tekton/app", "1")), "IMAGE_DIGEST is the pushed manifest's");
    let img = Image::pull_from(&registry, "tekton/app:1");
    assert_eq!(img.manifest_digest, digest);
    assert_eq!(img.tree.node("/greeting").text(), "hello tekton\n");
    assert_eq!(img.tree.node("/other").text(), "two words\n");
    assert_eq!(img.config["architecture"], "amd64");
}

// ---------------------------------------------------------------- GitLab

/// GitLab's expansion of `$VAR` / `${VAR}` in `variables:` values.
fn gitlab_expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let braced = it.peek() == Some(&'{');
        if braced {
            it.next();
        }
        let mut name = String::new();
        while let Some(&n) = it.peek() {
            if n.is_ascii_alphanumeric() || n == '_' {
                name.push(n);
                it.next();
            } else {
                break;
            }
        }
        if braced {
            assert_eq!(it.next(), Some('}'));
        }
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(env.get(&name).map(String::as_str).unwrap_or(""));
        }
    }
    out
}

#[test]
fn gitlab_template_job_script_builds_with_ci_registry_variables() {
    let registry = Registry::start_with_auth(USER, PASSWORD);
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let project = context(&sb, "project", &base.latest);
    let bin = bin_dir(&sb);
    let sha = "0123456789abcdef0123456789abcdef01234567";

    // GitLab's predefined variables. No docker config anywhere: kiln takes CI_REGISTRY*.
    let mut env: BTreeMap<String, String> = [
        ("CI", "true"),
        ("GITLAB_CI", "true"),
        ("CI_REGISTRY", registry.host().as_str()),
        ("CI_REGISTRY_USER", USER),
        ("CI_REGISTRY_PASSWORD", PASSWORD),
        ("CI_REGISTRY_IMAGE", registry.reference("group/project").as_str()),
        ("CI_COMMIT_SHA", sha),
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_DEFAULT_BRANCH", "main"),
        ("CI_PROJECT_DIR", project.to_str().unwrap()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    let tpl = yaml("deploy/gitlab/kiln.gitlab-ci.yml");
    let job = &tpl[".kiln-build"];
    // build-image: { extends: .kiln-build, variables: {...} }
    let mut vars: BTreeMap<String, String> =
        job["variables"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect();
    vars.insert("KILN_DOCKERFILE".into(), "$CI_PROJECT_DIR/Dockerfile.kiln".into());
    vars.insert("KILN_PLATFORMS".into(), "linux/amd64".into());
    vars.insert("KILN_BUILD_ARGS".into(), "GREETING=hello gitlab\nOTHER=two words".into());
    vars.insert("KILN_EXTRA_ARGS".into(), "--target final".into());
    for (k, v) in vars {
        let x = gitlab_expand(&v, &env);
        env.insert(k, x);
    }
    let mut script = String::from("set -e\n");
    for line in job["script"].as_array().unwrap() {
        script.push_str(line.as_str().unwrap());
        script.push('\n');
    }
    let script_path = sb.path().join("gitlab-job.sh");
    std::fs::write(&script_path, &script).unwrap();
    let mut cmd = sb.user_command("/bin/sh");
    cmd.arg(&script_path).current_dir(&project).envs(&env).env("KILN_ROOT", sb.kiln_root()).env("PATH", path_with(&bin));
    let out = run(&mut cmd);
    assert!(out.status.success(), "GitLab job failed\n{out}");
    assert!(!out.combined().contains(PASSWORD));

    let dotenv = std::fs::read_to_string(project.join("kiln-image.env")).unwrap();
    let kv: BTreeMap<&str, &str> = dotenv.lines().filter_map(|l| l.split_once('=')).collect();
    let image = registry.reference(&format!("group/project:{sha}"));
    assert_eq!(kv["KILN_IMAGE"], image);
    let digest = sha256_of(&registry.manifest_raw("group/project", sha));
    assert_eq!(kv["KILN_IMAGE_DIGEST"], digest, "dotenv digest is the pushed manifest's");
    // The default branch also gets :latest.
    assert_eq!(sha256_of(&registry.manifest_raw("group/project", "latest")), digest);
    let meta: Value = serde_json::from_slice(&std::fs::read(project.join("kiln-metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["containerimage.digest"], digest);
    let img = Image::pull_from(&registry, &format!("group/project:{sha}"));
    assert_eq!(img.tree.node("/greeting").text(), "hello gitlab\n");
    assert_eq!(img.tree.node("/other").text(), "two words\n");
}

// ---------------------------------------------------------------- GitHub Action

struct ActionRun {
    out: RunOutput,
    outputs: BTreeMap<String, String>,
}

/// GITHUB_OUTPUT's two forms: `k=v` and `k<<DELIM … DELIM`.
fn parse_github_output(text: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if let Some((k, delim)) = l.split_once("<<") {
            let mut v = Vec::new();
            for x in lines.by_ref() {
                if x == delim {
                    break;
                }
                v.push(x);
            }
            m.insert(k.to_string(), v.join("\n"));
        } else if let Some((k, v)) = l.split_once('=') {
            m.insert(k.to_string(), v.to_string());
        }
    }
    m
}

/// Runs the composite action's steps as GitHub does (bash -e, env with expressions
/// substituted, GITHUB_OUTPUT per step); the action's outputs.
fn run_action(sb: &Sandbox, name: &str, workspace: &Path, bin: &Path, given: &[(&str, &str)]) -> ActionRun {
    let action = yaml("action.yml");
    let mut inputs: BTreeMap<String, String> = action["inputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["default"].as_str().unwrap_or("").to_string()))
        .collect();
    for (k, v) in given {
        assert!(inputs.contains_key(*k), "the action has no input {k}");
        inputs.insert(k.to_string(), v.to_string());
    }
    let subst = |s: &str| {
        let mut out = s.to_string();
        for (k, v) in &inputs {
            out = out.replace(&format!("${{{{ inputs.{k} }}}}"), v);
        }
        out = out.replace("${{ github.action_path }}", &repo_root().display().to_string());
        assert!(!out.contains("${{"), "unsubstituted expression in {s}");
        out
    };
    let dir = sb.new_context(&format!("gh-{name}")).build();
    let temp = dir.join("runner-temp");
    std::fs::create_dir_all(&temp).unwrap();
    let mut step_outputs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut last = None;
    for (i, step) in action["runs"]["steps"].as_array().unwrap().iter().enumerate() {
        let run_text = step["run"].as_str().unwrap();
        let script = dir.join(format!("step-{i}.sh"));
        std::fs::write(&script, subst(run_text)).unwrap();
        let output_file = dir.join(format!("output-{i}"));
        std::fs::write(&output_file, "").unwrap();
        for f in [&output_file, &temp, &dir] {
            let _ = Command::new("chown").arg(sb_owner(sb)).arg(f).status();
        }
        let mut cmd = sb.user_command("/bin/bash");
        cmd.args(["--noprofile", "--norc", "-eo", "pipefail"]).arg(&script).current_dir(workspace);
        for (k, v) in step["env"].as_object().into_iter().flatten() {
            cmd.env(k, subst(v.as_str().unwrap()));
        }
        cmd.env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", &output_file)
            .env("GITHUB_PATH", dir.join("path"))
            .env("GITHUB_ENV", dir.join("env"))
            .env("RUNNER_TEMP", &temp)
            .env("KILN_ROOT", sb.kiln_root())
            .env("PATH", path_with(bin));
        let out = run(&mut cmd);
        let ok = out.status.success();
        if let Some(id) = step["id"].as_str() {
            step_outputs.insert(id.to_string(), parse_github_output(&std::fs::read_to_string(&output_file).unwrap()));
        }
        last = Some(out);
        if !ok {
            break;
        }
    }
    let mut outputs = BTreeMap::new();
    for (k, v) in action["outputs"].as_object().unwrap() {
        let expr = v["value"].as_str().unwrap();
        let inner = expr.trim().trim_start_matches("${{").trim_end_matches("}}").trim();
        let parts: Vec<&str> = inner.split('.').collect();
        assert_eq!((parts[0], parts[2]), ("steps", "outputs"), "{expr}");
        if let Some(val) = step_outputs.get(parts[1]).and_then(|o| o.get(parts[3])) {
            outputs.insert(k.clone(), val.clone());
        }
    }
    ActionRun { out: last.unwrap(), outputs }
}

fn sb_owner(sb: &Sandbox) -> String {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(sb.path()).unwrap();
    format!("{}:{}", md.uid(), md.gid())
}

#[test]
fn github_action_run_steps_build_push_and_set_outputs() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    let sb = Sandbox::new();
    let workspace = context(&sb, "repo", &base.latest);
    let bin = bin_dir(&sb);
    let tag1 = registry.reference("gh/app:1");
    let tag2 = registry.reference("gh/app:latest");

    let r = run_action(
        &sb,
        "build",
        &workspace,
        &bin,
        &[
            ("context", "."),
            ("file", "Dockerfile.kiln"),
            ("tags", &format!("{tag1}\n{tag2}")),
            ("build-args", "GREETING=hello actions\nOTHER=two words"),
            ("platforms", "linux/amd64"),
            ("push", "true"),
            ("target", "final"),
        ],
    );
    assert!(r.out.status.success(), "action failed\n{}", r.out);
    let digest = sha256_of(&registry.manifest_raw("gh/app", "1"));
    assert_eq!(r.outputs["digest"], digest, "digest output is the pushed manifest's");
    assert_eq!(sha256_of(&registry.manifest_raw("gh/app", "latest")), digest);
    let meta: Value = serde_json::from_str(&r.outputs["metadata"]).unwrap_or_else(|e| panic!("metadata output: {e}\n{:?}", r.outputs));
    assert_eq!(meta["containerimage.digest"], digest);
    let img = Image::pull_from(&registry, "gh/app:1");
    assert_eq!(img.tree.node("/greeting").text(), "hello actions\n");
    assert_eq!(img.tree.node("/other").text(), "two words\n");

    // cache-repo: the step keys land in the cache repository; a second run of the
    // action (a fresh runner: new KILN_ROOT) takes every step from it.
    let cache = registry.reference("gh/cache");
    let r = run_action(&sb, "cache1", &workspace, &bin, &[("file", "Dockerfile.kiln"), ("target", "final"), ("cache-repo", &cache)]);
    assert!(r.out.status.success(), "{}", r.out);
    assert!(!registry.tags("gh/cache").is_empty(), "no cache images pushed\n{}", r.out);
    let first = r.outputs["digest"].clone();
    let r = run_action(&sb, "cache2", &workspace, &bin, &[("file", "Dockerfile.kiln"), ("target", "final"), ("cache-repo", &cache)]);
    assert!(r.out.status.success(), "{}", r.out);
    assert_eq!(r.outputs["digest"], first, "a cached rebuild gives the same image");

    // push=false: no push, still a digest.
    let r = run_action(&sb, "nopush", &workspace, &bin, &[("file", "Dockerfile.kiln"), ("target", "final"), ("tags", &registry.reference("gh/never:1"))]);
    assert!(r.out.status.success(), "{}", r.out);
    assert!(r.outputs["digest"].starts_with("sha256:"));
    assert!(registry.tags("gh/never").is_empty());
}
