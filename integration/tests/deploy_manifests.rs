//! The deploy manifests (issue 9), parsed and checked structurally: Kubernetes Jobs,
//! the Tekton Task, the GitLab CI template and the GitHub Action. Every `kiln build`
//! flag they pass must exist in `kiln build --help`, or be on the short list of flags
//! that other issues add (and say so in the file).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use kiln_integration::{kiln_bin, repo_root};
use serde_json::Value;

/// Flags the manifests use that kiln does not have yet, with the issue that adds them.
const PENDING: &[(&str, &str)] = &[];

fn read(rel: &str) -> String {
    let p = repo_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every document of a YAML file, as JSON values.
fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    let mut docs = Vec::new();
    let mut cur = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line.trim_end() == "---" {
            if cur.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')) {
                let y: serde_norway::Value = serde_norway::from_str(&cur).unwrap_or_else(|e| panic!("{rel}: {e}"));
                docs.push(serde_json::to_value(y).unwrap());
            }
            cur.clear();
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    docs
}

fn kiln_build_flags() -> BTreeSet<String> {
    let out = Command::new(kiln_bin()).args(["build", "--help"]).output().expect("kiln build --help");
    flags_in(&String::from_utf8_lossy(&out.stdout))
}

fn flags_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || c == '=' || c == '(' || c == ',' || c == '"' || c == '\'' || c == '[' || c == ']')
        .filter(|w| w.len() > 2 && w.starts_with("--") && w[2..].chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .map(str::to_string)
        .collect()
}

/// Checks `used` flags against kiln; a pending one must be named as pending in `file`.
fn check_flags(file: &str, used: &BTreeSet<String>) {
    let have = kiln_build_flags();
    let text = read(file);
    for f in used {
        if have.contains(f) {
            continue;
        }
        match PENDING.iter().find(|(p, _)| p == f) {
            Some((_, issue)) => {
                assert!(text.contains("PENDING"), "{file} uses {f} (pending: {issue}) without saying it is pending");
                eprintln!("note: {file} uses {f}, which kiln does not have yet ({issue})");
            }
            None => panic!("{file} passes {f} to kiln build, which `kiln build --help` does not list"),
        }
    }
}

fn job_container(job: &Value) -> &Value {
    let cs = job["spec"]["template"]["spec"]["containers"].as_array().expect("containers");
    assert_eq!(cs.len(), 1);
    &cs[0]
}

fn kiln_args(container: &Value) -> BTreeSet<String> {
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args[0], "build", "{args:?}");
    args.iter().filter(|a| a.starts_with("--")).map(|a| a.split('=').next().unwrap().to_string()).collect()
}

#[test]
fn kubernetes_rootless_jobs() {
    let docs = yaml_docs("deploy/kubernetes/job-rootless.yaml");
    let jobs: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Job").collect();
    assert_eq!(jobs.len(), 2, "a host-users Job and a hostUsers: false Job");
    assert!(docs.iter().any(|d| d["kind"] == "ConfigMap"));
    let mut userns = 0;
    for job in jobs {
        assert_eq!(job["apiVersion"], "batch/v1");
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], 1000);
        if pod["hostUsers"] == false {
            userns += 1;
        } else {
            assert!(pod["hostUsers"].is_null() || pod["hostUsers"] == true);
        }
        let c = job_container(job);
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true);
        assert_eq!(sc["runAsUser"], 1000);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["seccompProfile"]["type"], "Unconfined");
        assert_eq!(sc["appArmorProfile"]["type"], "Unconfined");
        assert_eq!(sc["procMount"], "Unmasked");
        assert!(sc["privileged"].is_null() || sc["privileged"] == false);
        assert!(sc["capabilities"]["add"].is_null(), "no capabilities added");
        // KILN_ROOT on an emptyDir, the docker config secret at ~/.docker.
        let kiln_root = c["env"].as_array().unwrap().iter().find(|e| e["name"] == "KILN_ROOT").expect("KILN_ROOT")["value"].clone();
        let mounts = c["volumeMounts"].as_array().unwrap();
        let vols = pod["volumes"].as_array().unwrap();
        let vol_of = |path: &str| {
            let m = mounts.iter().find(|m| m["mountPath"] == path).unwrap_or_else(|| panic!("nothing mounted at {path}"));
            vols.iter().find(|v| v["name"] == m["name"]).unwrap().clone()
        };
        assert!(vol_of(kiln_root.as_str().unwrap())["emptyDir"].is_object());
        let secret = vol_of("/home/kiln/.docker");
        assert!(secret["secret"]["secretName"].is_string());
        assert_eq!(secret["secret"]["items"][0]["key"], ".dockerconfigjson");
        assert_eq!(secret["secret"]["items"][0]["path"], "config.json");
        check_flags("deploy/kubernetes/job-rootless.yaml", &kiln_args(c));
    }
    assert_eq!(userns, 1, "one Job with hostUsers: false");
}

#[test]
fn kubernetes_chroot_job() {
    let docs = yaml_docs("deploy/kubernetes/job-chroot.yaml");
    let job = docs.iter().find(|d| d["kind"] == "Job").expect("a Job");
    let pod = &job["spec"]["template"]["spec"];
    let c = job_container(job);
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(pod["securityContext"]["runAsUser"], 0);
    assert!(sc["privileged"].is_null() || sc["privileged"] == false);
    assert!(sc["capabilities"]["add"].as_array().is_none_or(|a| a.is_empty()), "no capabilities added");
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let i = args.iter().position(|a| *a == "--isolation").expect("--isolation");
    assert_eq!(args[i + 1], "chroot");
    check_flags("deploy/kubernetes/job-chroot.yaml", &kiln_args(c));
    if !kiln_build_flags().contains("--isolation") {
        assert!(read("deploy/kubernetes/job-chroot.yaml").contains("issue 6"));
    }
    let readme = read("deploy/kubernetes/README.md");
    for w in ["job-rootless.yaml", "job-chroot.yaml", "hostUsers", "procMount", "seccompProfile", "appArmorProfile"] {
        assert!(readme.contains(w), "deploy/kubernetes/README.md does not mention {w}");
    }
}

#[test]
fn tekton_task() {
    let docs = yaml_docs("deploy/tekton/kiln-task.yaml");
    assert_eq!(docs.len(), 1);
    let t = &docs[0];
    assert_eq!(t["apiVersion"], "tekton.dev/v1");
    assert_eq!(t["kind"], "Task");
    let spec = &t["spec"];
    let params: Vec<(&str, &str)> = spec["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["type"].as_str().unwrap_or("string")))
        .collect();
    for (name, ty) in [
        ("IMAGE", "string"),
        ("DOCKERFILE", "string"),
        ("CONTEXT", "string"),
        ("BUILD_ARGS", "array"),
        ("PLATFORMS", "string"),
        ("EXTRA_ARGS", "array"),
    ] {
        assert!(params.contains(&(name, ty)), "param {name} of type {ty} in {params:?}");
    }
    let ws: Vec<&str> = spec["workspaces"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(ws, ["source", "dockerconfig"]);
    let results: BTreeSet<&str> = spec["results"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(results, BTreeSet::from(["IMAGE_DIGEST", "IMAGE_URL"]), "Tekton Chains type hinting");
    let steps = spec["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1);
    let step = &steps[0];
    let script = step["script"].as_str().unwrap();
    assert!(script.starts_with("#!/bin/sh"));
    // Tekton rejects array params in scripts: they come as args.
    assert!(!script.contains("[*]"), "array params cannot be used in a script");
    let args: Vec<&str> = step["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args, ["$(params.BUILD_ARGS[*])", "--", "$(params.EXTRA_ARGS[*])"]);
    // Every $(params.X) referenced is declared.
    let whole = serde_json::to_string(step).unwrap();
    for part in whole.split("$(params.").skip(1) {
        let name: String = part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        assert!(params.iter().any(|(n, _)| *n == name), "undeclared param {name}");
    }
    for r in ["$(results.IMAGE_DIGEST.path)", "$(results.IMAGE_URL.path)", "$(workspaces.dockerconfig.bound)"] {
        assert!(script.contains(r), "script does not use {r}");
    }
    let sc = &step["securityContext"];
    assert_eq!(sc["runAsUser"], 1000);
    assert_eq!(sc["seccompProfile"]["type"], "Unconfined");
    assert_eq!(sc["procMount"], "Unmasked");
    check_flags("deploy/tekton/kiln-task.yaml", &flags_in(script));
}

#[test]
fn gitlab_template() {
    let docs = yaml_docs("deploy/gitlab/kiln.gitlab-ci.yml");
    assert_eq!(docs.len(), 1);
    let job = &docs[0][".kiln-build"];
    assert!(job.is_object(), "a hidden template job .kiln-build");
    assert_eq!(job["image"]["entrypoint"], serde_json::json!([""]), "kiln's ENTRYPOINT must be cleared for a job script");
    let vars = job["variables"].as_object().unwrap();
    assert!(vars["KILN_IMAGE"].as_str().unwrap().contains("$CI_REGISTRY_IMAGE"));
    assert!(vars["KILN_IMAGE"].as_str().unwrap().contains("$CI_COMMIT_SHA"));
    let script: Vec<&str> = job["script"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(script.iter().any(|l| l.starts_with("kiln build")));
    assert_eq!(job["artifacts"]["reports"]["dotenv"], "kiln-image.env");
    let text: String = script.join("\n");
    check_flags("deploy/gitlab/kiln.gitlab-ci.yml", &flags_in(&text));
}

#[test]
fn github_action() {
    let docs = yaml_docs("action.yml");
    assert_eq!(docs.len(), 1);
    let a = &docs[0];
    assert_eq!(a["runs"]["using"], "composite");
    let inputs = a["inputs"].as_object().unwrap();
    for i in ["context", "file", "tags", "build-args", "platforms", "push", "cache-repo", "target"] {
        assert!(inputs.contains_key(i), "input {i}");
        assert!(inputs[i]["description"].is_string());
    }
    assert!(inputs["cache-repo"]["description"].as_str().unwrap().contains("--cache-repo"));
    let outputs = a["outputs"].as_object().unwrap();
    for o in ["digest", "metadata"] {
        assert!(outputs[o]["value"].as_str().unwrap().contains("steps.build.outputs."), "output {o}");
    }
    let steps = a["runs"]["steps"].as_array().unwrap();
    assert!(steps.iter().any(|s| s["id"] == "build"));
    let mut flags = BTreeSet::new();
    for s in steps {
        let run = s["run"].as_str().expect("run steps only");
        assert_eq!(s["shell"], "bash", "composite run steps need a shell");
        // Inputs reach scripts through env, never spliced into the script text.
        assert!(!run.contains("${{"), "expression in a run script: {run}");
        for part in run.split("args+=(").skip(1) {
            flags.extend(flags_in(part.split(')').next().unwrap()));
        }
    }
    check_flags("action.yml", &flags);
}

#[test]
fn image_files_exist() {
    for f in ["deploy/image/Dockerfile", "deploy/image/Dockerfile.debug", "deploy/image/prepare-context.sh"] {
        assert!(Path::new(&repo_root().join(f)).is_file(), "{f}");
    }
    assert!(read("deploy/image/Dockerfile").contains("FROM scratch"));
    let readme = read("README.md");
    assert!(readme.contains("## CI and Kubernetes"));
    for w in ["kiln index create", "deploy/tekton/kiln-task.yaml", "deploy/gitlab/kiln.gitlab-ci.yml", "action.yml", "deploy/kubernetes", "CI_REGISTRY", "KILN_AUTH"] {
        assert!(readme.contains(w), "README does not show {w}");
    }
}
