//! SLSA provenance v1 (`https://slsa.dev/provenance/v1`) of one platform's image, as
//! an in-toto statement v1 whose subject is that platform manifest.
//!
//! Shaped as BuildKit's v1 provenance (`solver/llbsolver/provenance/types`):
//! `buildDefinition.externalParameters` holds what the user asked for (the config
//! source: context and Dockerfile; in max mode the request's build args, target,
//! secret and ssh *ids*), `resolvedDependencies` every image read by digest and
//! the git context by commit, `runDetails` the builder and the times. Values of
//! `--secret` never reach it: only ids are known here. Build-arg values whose names
//! look like credentials are masked, since a CI job's `--build-arg TOKEN=...` is the
//! common leak BuildKit's `SecretsUsedInArgOrEnv` check warns about.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::options::attest::ProvenanceMode;

pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// What a kiln build is, for `buildDefinition.buildType`.
pub const BUILD_TYPE: &str = "https://github.com/kiln-build/kiln/blob/main/docs/provenance.md#dockerfile-v1";
/// kiln's builder id unless `builder-id=` says otherwise.
pub fn default_builder_id() -> String {
    format!("https://github.com/kiln-build/kiln@v{}", env!("CARGO_PKG_VERSION"))
}

/// An image the build read (a base, `COPY --from`, `--mount from=`), by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    /// `pkg:docker/NAME@TAG?platform=...`
    pub uri: String,
    /// `sha256:...`
    pub digest: String,
}

/// What the solver knows about the build, for every platform's statement.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub started: i64,
    pub finished: i64,
    /// The Dockerfile's path as given relative to the context when inside it.
    pub dockerfile_path: String,
    /// `sha256:...` of the Dockerfile's bytes.
    pub dockerfile_digest: String,
    /// A git or http(s) context's URL (without credentials); none for a directory.
    pub context_uri: Option<String>,
    /// The context's commit (a git context, or a directory that is a git work tree).
    pub context_commit: Option<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub secret_ids: Vec<String>,
    pub ssh_ids: Vec<String>,
    pub builder_platform: String,
    /// SOURCE_DATE_EPOCH was set: timestamps inside the image are fixed.
    pub reproducible: bool,
    /// No RUN step had network access.
    pub hermetic: bool,
    pub no_cache: bool,
    pub invocation_id: String,
}

/// An image as BuildKit names it in provenance (subjects and materials alike).
pub fn subject_name(image: &str, platform: &str) -> String {
    let (name, tag) = split_tag(image);
    format!("pkg:docker/{name}@{tag}?platform={}", platform.replace('/', "%2F"))
}

/// `NAME[:TAG]` → (NAME, TAG or latest); a `:` in the registry's port is not a tag.
fn split_tag(image: &str) -> (&str, &str) {
    let image = image.split('@').next().unwrap_or(image);
    match image.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (image, "latest"),
    }
}

fn looks_like_credential(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL", "APIKEY", "API_KEY", "PRIVATE_KEY", "AUTH"].iter().any(|w| n.contains(w))
}

fn digest_map(d: &str) -> Value {
    match d.split_once(':') {
        Some((alg, hex)) => json!({ alg: hex }),
        None => json!({"sha1": d}),
    }
}

/// The statement's bytes (serde_json's sorted keys: the same facts give the same bytes).
pub fn statement(
    mode: ProvenanceMode,
    builder_id: &str,
    subject: (&str, &str),
    platform: &str,
    materials: &[Material],
    facts: &Facts,
) -> Vec<u8> {
    let (subject_name, subject_digest) = subject;
    let mut config_source = json!({"path": facts.dockerfile_path, "digest": digest_map(&facts.dockerfile_digest)});
    if let Some(u) = &facts.context_uri {
        config_source["uri"] = json!(u);
    }
    let mut external = json!({"configSource": config_source, "request": {"frontend": "dockerfile.v0"}});
    let mut args = serde_json::Map::new();
    args.insert("platform".into(), json!(platform));
    if mode == ProvenanceMode::Max {
        for (k, v) in &facts.build_args {
            let shown = if looks_like_credential(k) { "****".to_string() } else { v.clone() };
            args.insert(format!("build-arg:{k}"), json!(shown));
        }
        if let Some(t) = &facts.target {
            args.insert("target".into(), json!(t));
        }
        if !facts.secret_ids.is_empty() {
            external["request"]["secrets"] = json!(facts.secret_ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>());
        }
        if !facts.ssh_ids.is_empty() {
            external["request"]["ssh"] = json!(facts.ssh_ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>());
        }
    }
    external["request"]["args"] = Value::Object(args);

    let mut deps: Vec<Value> = materials.iter().map(|m| json!({"uri": m.uri, "digest": digest_map(&m.digest)})).collect();
    if let (Some(u), Some(c)) = (&facts.context_uri, &facts.context_commit) {
        deps.push(json!({"uri": u, "digest": {"sha1": c}}));
    } else if let Some(c) = &facts.context_commit {
        deps.push(json!({"uri": "git+file://context", "digest": {"sha1": c}}));
    }
    let predicate = json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": external,
            "internalParameters": {"builderPlatform": facts.builder_platform, "noCache": facts.no_cache},
            "resolvedDependencies": deps,
        },
        "runDetails": {
            "builder": {"id": builder_id, "version": {"kiln": env!("CARGO_PKG_VERSION")}},
            "metadata": {
                "invocationID": facts.invocation_id,
                "startedOn": crate::timefmt::rfc3339(facts.started),
                "finishedOn": crate::timefmt::rfc3339(facts.finished),
                "kiln_reproducible": facts.reproducible,
                "kiln_hermetic": facts.hermetic,
                "kiln_completeness": {"request": mode == ProvenanceMode::Max, "resolvedDependencies": true},
                "kiln_mode": if mode == ProvenanceMode::Max { "max" } else { "min" },
            },
        },
    });
    let statement = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": digest_map(subject_digest)}],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    });
    serde_json::to_vec(&statement).unwrap_or_default()
}

/// The commit of a directory context that is a git work tree (`.git/HEAD`, a ref
/// file or `packed-refs`), read without running git.
pub fn work_tree_commit(context: &std::path::Path) -> Option<String> {
    let git = context.join(".git");
    let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim();
    let commit = match head.strip_prefix("ref: ") {
        None => head.to_string(),
        Some(r) => match std::fs::read_to_string(git.join(r)) {
            Ok(c) => c.trim().to_string(),
            Err(_) => {
                let packed = std::fs::read_to_string(git.join("packed-refs")).ok()?;
                packed.lines().find_map(|l| l.strip_suffix(r).map(|c| c.trim().to_string()))?
            }
        },
    };
    crate::steps::fetch::is_commit(&commit).then_some(commit)
}

/// The `origin` remote's URL of a directory context that is a git work tree
/// (buildx's `vcs:source`), without credentials.
pub fn work_tree_origin(context: &std::path::Path) -> Option<String> {
    let config = std::fs::read_to_string(context.join(".git/config")).ok()?;
    let mut in_origin = false;
    for line in config.lines().map(str::trim) {
        if line.starts_with('[') {
            in_origin = line == "[remote \"origin\"]";
        } else if in_origin {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == "url" {
                    return Some(crate::steps::fetch::redact_url(v.trim()));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            started: 1_700_000_000,
            finished: 1_700_000_060,
            dockerfile_path: "Dockerfile".into(),
            dockerfile_digest: format!("sha256:{}", "ab".repeat(32)),
            build_args: [("VERSION".to_string(), "1.2".to_string()), ("NPM_TOKEN".to_string(), "s3cr3t-value".to_string())].into(),
            target: Some("app".into()),
            secret_ids: vec!["npmrc".into()],
            builder_platform: "linux/amd64".into(),
            invocation_id: "i-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn min_and_max_modes() {
        let m = [Material { uri: subject_name("127.0.0.1:5000/base/debian:bookworm", "linux/amd64"), digest: format!("sha256:{}", "cd".repeat(32)) }];
        let subject = ("pkg:docker/r/app@1?platform=linux%2Famd64", "sha256:0123");
        let min: Value = serde_json::from_slice(&statement(ProvenanceMode::Min, "b", subject, "linux/amd64", &m, &facts())).unwrap();
        let max: Value = serde_json::from_slice(&statement(ProvenanceMode::Max, "b", subject, "linux/amd64", &m, &facts())).unwrap();
        assert_eq!(min["_type"], STATEMENT_TYPE);
        assert_eq!(min["predicateType"], PREDICATE_TYPE);
        assert_eq!(min["subject"][0]["digest"]["sha256"], "0123");
        let dep = &min["predicate"]["buildDefinition"]["resolvedDependencies"][0];
        assert_eq!(dep["uri"], "pkg:docker/127.0.0.1:5000/base/debian@bookworm?platform=linux%2Famd64");
        assert_eq!(dep["digest"]["sha256"], "cd".repeat(32));
        assert_eq!(min["predicate"]["buildDefinition"]["externalParameters"]["configSource"]["digest"]["sha256"], "ab".repeat(32));
        let min_args = &min["predicate"]["buildDefinition"]["externalParameters"]["request"]["args"];
        assert!(min_args.get("build-arg:VERSION").is_none(), "min mode has no build args");
        let max_req = &max["predicate"]["buildDefinition"]["externalParameters"]["request"];
        assert_eq!(max_req["args"]["build-arg:VERSION"], "1.2");
        assert_eq!(max_req["args"]["target"], "app");
        assert_eq!(max_req["secrets"][0]["id"], "npmrc");
        let text = String::from_utf8(statement(ProvenanceMode::Max, "b", subject, "linux/amd64", &m, &facts())).unwrap();
        assert!(!text.contains("s3cr3t-value"), "a credential-like build arg is masked: {text}");
        assert_eq!(max_req["args"]["build-arg:NPM_TOKEN"], "****");
    }

    #[test]
    fn names_as_buildkit() {
        assert_eq!(subject_name("reg:5000/a/b:1", "linux/arm64/v8"), "pkg:docker/reg:5000/a/b@1?platform=linux%2Farm64%2Fv8");
        assert_eq!(subject_name("reg:5000/a/b", "linux/amd64"), "pkg:docker/reg:5000/a/b@latest?platform=linux%2Famd64");
    }

    #[test]
    fn work_tree_commit_from_refs_and_packed_refs() {
        let d = tempfile::tempdir().unwrap();
        let git = d.path().join(".git");
        std::fs::create_dir_all(git.join("refs/heads")).unwrap();
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        let c = "a".repeat(40);
        std::fs::write(git.join("packed-refs"), format!("# pack-refs\n{c} refs/heads/main\n")).unwrap();
        assert_eq!(work_tree_commit(d.path()), Some(c.clone()));
        let c2 = "b".repeat(40);
        std::fs::write(git.join("refs/heads/main"), format!("{c2}\n")).unwrap();
        assert_eq!(work_tree_commit(d.path()), Some(c2));
        assert_eq!(work_tree_commit(&d.path().join("nope")), None);
        std::fs::write(git.join("config"), "[core]\n\tbare = false\n[remote \"origin\"]\n\turl = https://bot:tok@git.example/app.git\n").unwrap();
        assert_eq!(work_tree_origin(d.path()).as_deref(), Some("https://git.example/app.git"));
    }
}
