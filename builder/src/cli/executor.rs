//! `kiln executor`: Kaniko's command line, mapped onto `kiln build`, so a Kaniko
//! pipeline switches by changing its image and entrypoint.
//!
//! Every flag of Kaniko v1.24 (`cmd/executor/cmd/root.go`) and of the active fork
//! (osscontainertools/kaniko) is accepted (`testdata/kaniko/flags.txt` lists them;
//! `integration/tests/e2e_executor.rs` proves it). Those that only tune Kaniko's own
//! machinery (snapshotting, its filesystem walk, its directory, retries of its
//! extraction) change nothing in kiln, which diffs exactly what a step changed in
//! its own rootfs: they are listed in [`NO_EFFECT`] and named once at
//! `--verbosity=debug`. The README's "Moving from Kaniko" table says what each does.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::cli::build::BuildArgs;

/// A Kaniko boolean: `--flag`, `--flag=true`, `--flag=false`.
pub(super) fn kbool(s: &str) -> Result<bool, String> {
    match s {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("expected true or false, got {s:?}")),
    }
}

#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// Build context: a directory, or dir://DIR.
    #[arg(short = 'c', long = "context", default_value = "/workspace/")]
    pub context: String,
    /// Dockerfile path (relative paths are tried against the context too).
    #[arg(short = 'f', long = "dockerfile", default_value = "Dockerfile")]
    pub dockerfile: PathBuf,
    /// Image to push to. Repeatable.
    #[arg(short = 'd', long = "destination")]
    pub destinations: Vec<String>,
    #[arg(long = "no-push", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub no_push: Option<bool>,
    #[arg(long = "tar-path")]
    pub tar_path: Option<PathBuf>,
    #[arg(long = "digest-file")]
    pub digest_file: Option<PathBuf>,
    #[arg(long = "image-name-with-digest-file")]
    pub image_name_with_digest_file: Option<PathBuf>,
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    #[arg(long = "label")]
    pub labels: Vec<String>,
    #[arg(long = "target")]
    pub target: Option<String>,
    #[arg(long = "cache", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub cache: Option<bool>,
    #[arg(long = "cache-repo")]
    pub cache_repo: Option<String>,
    #[arg(long = "cache-ttl")]
    pub cache_ttl: Option<String>,
    #[arg(long = "insecure", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub insecure: Option<bool>,
    #[arg(long = "skip-tls-verify", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub skip_tls_verify: Option<bool>,
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    #[arg(long = "registry-mirror")]
    pub registry_mirrors: Vec<String>,
    #[arg(long = "push-retry", default_value_t = 0)]
    pub push_retry: u32,
    /// Layer compression (Kaniko: gzip or zstd).
    #[arg(long = "compression")]
    pub compression: Option<String>,
    #[arg(long = "compression-level")]
    pub compression_level: Option<i32>,
    #[arg(long = "custom-platform")]
    pub custom_platform: Option<String>,
    #[arg(long = "reproducible", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub reproducible: Option<bool>,
    #[arg(short = 'v', long = "verbosity")]
    pub verbosity: Option<String>,
    #[arg(long = "snapshot-mode")]
    pub snapshot_mode: Option<String>,
    #[arg(long = "single-snapshot", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub single_snapshot: Option<bool>,
    #[arg(long = "use-new-run", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub use_new_run: Option<bool>,
    #[arg(long = "cleanup", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub cleanup: Option<bool>,
    #[arg(long = "compressed-caching", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub compressed_caching: Option<bool>,
    /// Also write the image as an OCI layout into this directory.
    #[arg(long = "oci-layout-path")]
    pub oci_layout_path: Option<PathBuf>,
    /// `repo:tag@digest` per destination (the names file without the tag is
    /// --image-name-with-digest-file).
    #[arg(long = "image-name-tag-with-digest-file")]
    pub image_name_tag_with_digest_file: Option<PathBuf>,
    /// FROM=TO registry rewrites for pulls; several separated by `;`. Repeatable.
    #[arg(long = "registry-map")]
    pub registry_map: Vec<String>,
    /// REGISTRY=CA-FILE: a CA certificate to trust (kiln trusts it for every registry).
    #[arg(long = "registry-certificate")]
    pub registry_certificates: Vec<String>,
    /// REGISTRY=CERT,KEY for mutual TLS.
    #[arg(long = "registry-client-cert")]
    pub registry_client_certs: Vec<String>,
    /// Registries spoken to over TLS without verification, for pulls and pushes.
    #[arg(long = "skip-tls-verify-registry")]
    pub skip_tls_verify_registries: Vec<String>,
    #[arg(long = "skip-tls-verify-pull", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub skip_tls_verify_pull: Option<bool>,
    #[arg(long = "insecure-pull", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub insecure_pull: Option<bool>,
    /// A subdirectory of the context to build in.
    #[arg(long = "context-sub-path")]
    pub context_sub_path: Option<String>,
    /// Retries of image downloads (kiln: one retry count for every registry operation).
    #[arg(long = "image-download-retry")]
    pub image_download_retry: Option<u32>,
    /// text, color or json (json: kiln's --progress json).
    #[arg(long = "log-format")]
    pub log_format: Option<String>,
    #[arg(long = "log-timestamp", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub log_timestamp: Option<bool>,
    /// The fork's: an annotation of the manifest. Repeatable.
    #[arg(long = "annotation")]
    pub annotations: Vec<String>,
    /// The fork's: a secret for RUN --mount=type=secret (id=ID,src=PATH|env=VAR). Repeatable.
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// The fork's: oci or docker media types.
    #[arg(long = "image-format")]
    pub image_format: Option<String>,
    /// The fork's: build but push nothing.
    #[arg(long = "dryrun", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub dryrun: Option<bool>,
    /// Kaniko's cloud bucket context source.
    #[arg(long = "bucket")]
    pub bucket: Option<String>,
    /// Kaniko's git options for a git context (branch=…,single-branch=…,recurse-submodules=…).
    #[arg(long = "git")]
    pub git: Vec<String>,
    #[arg(long = "skip-unused-stages", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub skip_unused_stages: Option<bool>,
    #[arg(long = "cache-dir")]
    pub cache_dir: Option<PathBuf>,
    #[arg(long = "cache-copy-layers", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub cache_copy_layers: Option<bool>,
    #[arg(long = "cache-run-layers", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub cache_run_layers: Option<bool>,
    #[arg(long = "no-push-cache", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub no_push_cache: Option<bool>,
    #[arg(long = "kaniko-dir")]
    pub kaniko_dir: Option<PathBuf>,
    #[arg(long = "force", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub force: Option<bool>,
    #[arg(long = "force-build-metadata", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub force_build_metadata: Option<bool>,
    #[arg(long = "ignore-var-run", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub ignore_var_run: Option<bool>,
    #[arg(long = "whitelist-var-run", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub whitelist_var_run: Option<bool>,
    #[arg(long = "ignore-path")]
    pub ignore_paths: Vec<String>,
    #[arg(long = "image-fs-extract-retry")]
    pub image_fs_extract_retry: Option<u32>,
    #[arg(long = "push-ignore-immutable-tag-errors", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub push_ignore_immutable_tag_errors: Option<bool>,
    #[arg(long = "skip-default-registry-fallback", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub skip_default_registry_fallback: Option<bool>,
    #[arg(long = "skip-push-permission-check", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub skip_push_permission_check: Option<bool>,
    #[arg(long = "credential-helpers")]
    pub credential_helpers: Vec<String>,
    #[arg(long = "materialize", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub materialize: Option<bool>,
    #[arg(long = "pre-cleanup", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub pre_cleanup: Option<bool>,
    #[arg(long = "preserve-context", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub preserve_context: Option<bool>,
}

/// Flags accepted for Kaniko pipelines that change nothing in kiln, and why.
pub const NO_EFFECT: &[(&str, &str)] = &[
    ("snapshot-mode", "kiln diffs exactly what a step changed (no full/redo/time scan)"),
    ("use-new-run", "kiln's RUN is always a fresh sandbox"),
    ("cleanup", "kiln never builds in the container's own filesystem"),
    ("pre-cleanup", "kiln never builds in the container's own filesystem"),
    ("compressed-caching", "kiln compresses each layer once, while writing it"),
    ("kaniko-dir", "kiln's state is $KILN_ROOT"),
    ("force", "kiln runs anywhere, no container check"),
    ("force-build-metadata", "kiln always writes history and created times"),
    ("ignore-var-run", "kiln's rootfs is its own: the container's /var/run never enters it"),
    ("whitelist-var-run", "kiln's rootfs is its own: the container's /var/run never enters it"),
    ("image-fs-extract-retry", "kiln extracts each layer once, verified by digest"),
    ("skip-push-permission-check", "kiln checks nothing before pushing"),
    ("no-push-cache", "the layer cache is pushed with the image"),
    ("materialize", "kiln always materialises the rootfs it needs"),
    ("preserve-context", "kiln never changes the context"),
    ("credential-helpers", "kiln runs the helpers docker's config.json names"),
];

/// Kaniko's git context `git://HOST/REPO[#REF][#COMMIT]` (cloned over https, or
/// http with `GIT_PULL_METHOD=http`; `--git branch=…` names the ref) as the git URL
/// `kiln build` takes (`URL.git#REF`, a commit when given: it pins the content).
fn kaniko_git_url(rest: &str, git_opts: &[String], pull_method: Option<&str>) -> Result<String> {
    let mut parts = rest.split('#');
    let repo = parts.next().unwrap_or_default();
    let mut reference = parts.next().filter(|r| !r.is_empty()).map(str::to_string);
    let commit = parts.next().filter(|c| !c.is_empty());
    for opt in git_opts.iter().flat_map(|o| o.split(',')) {
        match opt.split_once('=') {
            Some(("branch", b)) => reference = Some(b.to_string()),
            // kiln clones just what it checks out, with every submodule.
            Some(("single-branch" | "recurse-submodules" | "insecure-skip-tls", _)) => {}
            _ => bail!("--git {opt:?}: expected branch=, single-branch=, recurse-submodules= or insecure-skip-tls="),
        }
    }
    let scheme = match pull_method {
        None | Some("https") => "https",
        Some("http") => "http",
        Some(other) => bail!("GIT_PULL_METHOD={other:?}: expected https or http"),
    };
    let repo = if repo.ends_with(".git") { repo.to_string() } else { format!("{repo}.git") };
    let short = |r: &str| r.trim_start_matches("refs/heads/").trim_start_matches("refs/tags/").to_string();
    Ok(match (commit, reference) {
        (Some(c), _) => format!("{scheme}://{repo}#{c}"),
        (None, Some(r)) => format!("{scheme}://{repo}#{}", short(&r)),
        (None, None) => format!("{scheme}://{repo}"),
    })
}

/// One purpose's leniency from Kaniko's switches: plain HTTP for every registry
/// (`all_plain`) or the named ones, verification off for all (`all_skip`) or the named.
pub(super) fn leniency(all_plain: bool, plain: &[String], all_skip: bool, skip: &[String]) -> kiln_cache::Leniency {
    use kiln_cache::Hosts;
    let hosts = |all: bool, named: &[String]| if all { Hosts::every() } else { Hosts::named(named.iter().cloned()) };
    kiln_cache::Leniency { plain_http: hosts(all_plain, plain), skip_verify: hosts(all_skip, skip) }
}

/// Kaniko's default cache repository: the first destination's repository + `/cache`.
fn default_cache_repo(destination: &str) -> String {
    let no_digest = destination.split('@').next().unwrap_or(destination);
    let last = no_digest.rsplit('/').next().unwrap_or("");
    let repo = match last.rfind(':') {
        Some(i) => &no_digest[..no_digest.len() - (last.len() - i)],
        None => no_digest,
    };
    format!("{repo}/cache")
}

impl ExecutorArgs {
    /// The equivalent `kiln build` arguments, plus the image-name-with-digest file.
    pub fn into_build(self) -> Result<(BuildArgs, Vec<(PathBuf, bool)>)> {
        if let Some(b) = &self.bucket {
            bail!("--bucket {b}: cloud bucket contexts (gs://, s3://, az://) cannot be reached by kiln; give a directory, dir://, tar://, https:// or a git URL");
        }
        let mut context = match self.context.split_once("://") {
            None => PathBuf::from(&self.context),
            Some(("dir", p)) => PathBuf::from(p),
            Some(("tar", "stdin" | "/dev/stdin")) => PathBuf::from("-"),
            Some(("tar", p)) => PathBuf::from(p),
            Some(("http" | "https", _)) => PathBuf::from(&self.context),
            Some(("git", rest)) => PathBuf::from(kaniko_git_url(rest, &self.git, std::env::var("GIT_PULL_METHOD").ok().as_deref())?),
            Some((scheme @ ("gs" | "s3" | "az"), _)) => {
                bail!("--context {}: {scheme}:// buckets cannot be reached by kiln; give a directory, dir://, tar://, https:// or a git URL", self.context)
            }
            Some((scheme, _)) => bail!("--context {}: {scheme}:// contexts are not supported (dir://, tar://, https://)", self.context),
        };
        let mut fetched_sub_path = None;
        if let Some(sub) = self.context_sub_path.as_deref().filter(|s| !s.is_empty() && *s != ".") {
            let c = context.to_string_lossy().into_owned();
            context = match self.context.split_once("://").map(|(s, _)| s) {
                // kiln's git URLs name a subdirectory after the ref: `URL#REF:DIR`.
                Some("git") => PathBuf::from(match c.split_once('#') {
                    Some((url, r)) => format!("{url}#{r}:{sub}"),
                    None => format!("{c}#:{sub}"),
                }),
                // The directory inside the tarball, once it is unpacked.
                Some("tar" | "http" | "https") => {
                    fetched_sub_path = Some(PathBuf::from(sub.trim_start_matches("./")));
                    context
                }
                _ => context.join(sub),
            };
        }
        let notes: Vec<String> = NO_EFFECT
            .iter()
            .filter(|(flag, _)| self.given(flag))
            .map(|(flag, why)| format!("kiln executor --{flag}: no effect in kiln ({why})"))
            .collect();
        // A remote context exists only once fetched: its Dockerfile is found in it then.
        let remote = self.context.contains("://") && !self.context.starts_with("dir://");
        let dockerfile_in_context = remote && self.dockerfile.is_relative();
        let dockerfile = if self.dockerfile.is_absolute() || self.dockerfile.exists() || remote {
            self.dockerfile.clone()
        } else {
            context.join(&self.dockerfile)
        };
        let push = !self.no_push.unwrap_or(false) && !self.dryrun.unwrap_or(false) && !self.destinations.is_empty();
        let (pull_leniency, push_leniency) = self.leniency();
        let mut outputs = Vec::new();
        if let Some(t) = &self.tar_path {
            outputs.push(format!("type=docker,dest={}", t.display()));
        }
        if let Some(d) = &self.oci_layout_path {
            outputs.push(format!("type=oci,dest={}", d.display()));
        }
        let mut extra: Vec<(&'static str, String)> = Vec::new();
        for m in &self.registry_map {
            extra.extend(m.split(';').filter(|s| !s.is_empty()).map(|s| ("--registry-map", s.to_string())));
        }
        for c in &self.registry_certificates {
            // Kaniko's REGISTRY=FILE; kiln trusts the CA for every registry.
            let file = c.split_once('=').map(|(_, f)| f).unwrap_or(c);
            extra.push(("--registry-certificate", file.to_string()));
        }
        extra.extend(self.registry_client_certs.iter().map(|c| ("--registry-client-cert", c.clone())));
        extra.extend(self.annotations.iter().map(|a| ("--annotation", a.clone())));
        extra.extend(self.ignore_paths.iter().map(|p| ("--ignore-path", p.clone())));
        extra.extend(self.secrets.iter().map(|s| ("--secret", s.clone())));
        if let Some(f) = &self.image_format {
            extra.push(("--format", f.clone()));
        }
        match self.log_format.as_deref() {
            None | Some("text" | "color") => {}
            Some("json") => extra.push(("--progress", "json".into())),
            Some(other) => bail!("--log-format {other:?}: expected text, color or json"),
        }
        let mut switches = Vec::new();
        self.caching_flags(&mut extra, &mut switches);
        // One layer on top of the base: Buildah's --squash.
        if self.single_snapshot.unwrap_or(false) {
            switches.push("--squash");
        }
        if self.skip_default_registry_fallback.unwrap_or(false) {
            switches.push("--skip-default-registry-fallback");
        }
        if self.push_ignore_immutable_tag_errors.unwrap_or(false) {
            switches.push("--push-ignore-immutable-tag-errors");
        }
        let cache_repo = if self.cache.unwrap_or(false) {
            self.cache_repo.clone().or_else(|| self.destinations.first().map(|d| default_cache_repo(d)))
        } else {
            None
        };
        // Without --digest-file, the digest the names file needs goes through a file of
        // this process's own (the build writes it; `cmd::build` reads and removes it).
        let mut names: Vec<(PathBuf, bool)> = Vec::new();
        names.extend(self.image_name_with_digest_file.iter().map(|f| (f.clone(), false)));
        names.extend(self.image_name_tag_with_digest_file.iter().map(|f| (f.clone(), true)));
        if !names.is_empty() && self.destinations.is_empty() {
            bail!("--image-name-with-digest-file and --image-name-tag-with-digest-file need a --destination");
        }
        let digest_file = self.digest_file.clone().or_else(|| {
            (!names.is_empty()).then(|| std::env::temp_dir().join(format!("kiln-digest-{}-{}", std::process::id(), crate::fsutil::next_id())))
        });
        let args = BuildArgs::for_executor(crate::cli::build::ExecutorMapping {
            context,
            dockerfile,
            tags: self.destinations.clone(),
            push,
            outputs,
            build_args: self.build_args,
            labels: self.labels,
            target: self.target,
            insecure_registries: Vec::new(),
            registry_mirrors: self.registry_mirrors,
            push_retry: match (self.push_retry, self.image_download_retry) {
                (0, None) => 3,
                (p, d) => p.max(d.unwrap_or(0)),
            },
            cache_repo,
            cache_ttl: self.cache_ttl,
            digest_file,
            platforms: self.custom_platform.into_iter().collect(),
            compression: self.compression,
            compression_level: self.compression_level,
            // Kaniko's --reproducible strips timestamps: the epoch, as SOURCE_DATE_EPOCH=0.
            reproducible: self.reproducible.unwrap_or(false),
            verbosity: self.verbosity.clone(),
            extra,
            switches,
        });
        let mut args = args;
        args.notes = notes;
        args.dockerfile_in_context = dockerfile_in_context;
        args.context_sub_path = fetched_sub_path;
        (args.registry.pull_leniency, args.registry.push_leniency) = (pull_leniency, push_leniency);
        Ok((args, names))
    }

    /// The `kiln build` flags for Kaniko's stage, caching and log flags.
    fn caching_flags(&self, extra: &mut Vec<(&'static str, String)>, switches: &mut Vec<&'static str>) {
        if self.log_timestamp.unwrap_or(false) {
            switches.push("--log-timestamp");
        }
        // Kaniko builds every stage up to the target unless told to skip unused ones.
        if !self.skip_unused_stages.unwrap_or(false) {
            switches.push("--all-stages");
        }
        if self.cache.unwrap_or(false) {
            // Kaniko reads base images from --cache-dir (default /cache) only with --cache.
            let dir = self.cache_dir.clone().unwrap_or_else(|| PathBuf::from("/cache"));
            extra.push(("--base-image-cache", dir.to_string_lossy().into_owned()));
            // kiln caches COPY layers unless told not to (see KNOWN_DIFFERENCES.md).
            let steps: Vec<&str> = [("run", self.cache_run_layers.unwrap_or(true)), ("copy", self.cache_copy_layers.unwrap_or(true))]
                .iter()
                .filter(|(_, on)| *on)
                .map(|(k, _)| *k)
                .collect();
            extra.push(("--cache-repo-steps", if steps.is_empty() { "none".into() } else { steps.join(",") }));
        }
    }

    /// Kaniko's TLS switches as (pull, push) leniencies. `--insecure` and
    /// `--skip-tls-verify` are for pushes (`pkg/executor/push.go`), the -pull forms
    /// for pulls (`pkg/image/remote/remote.go`), the -registry forms for both; Kaniko's
    /// one transport (`pkg/util/transport_util.go` MakeTransport) makes
    /// `--skip-tls-verify` skip verification for pulls too.
    fn leniency(&self) -> (kiln_cache::Leniency, kiln_cache::Leniency) {
        let on = |b: Option<bool>| b.unwrap_or(false);
        let pull = leniency(on(self.insecure_pull), &self.insecure_registries, on(self.skip_tls_verify_pull) || on(self.skip_tls_verify), &self.skip_tls_verify_registries);
        let push = leniency(on(self.insecure), &self.insecure_registries, on(self.skip_tls_verify), &self.skip_tls_verify_registries);
        (pull, push)
    }

    /// Whether the no-effect flag `name` was given (for the debug note).
    fn given(&self, name: &str) -> bool {
        match name {
            "snapshot-mode" => self.snapshot_mode.is_some(),
            "use-new-run" => self.use_new_run.is_some(),
            "cleanup" => self.cleanup.is_some(),
            "pre-cleanup" => self.pre_cleanup.is_some(),
            "compressed-caching" => self.compressed_caching.is_some(),
            "kaniko-dir" => self.kaniko_dir.is_some(),
            "force" => self.force.is_some(),
            "force-build-metadata" => self.force_build_metadata.is_some(),
            "ignore-var-run" => self.ignore_var_run.is_some(),
            "whitelist-var-run" => self.whitelist_var_run.is_some(),
            "image-fs-extract-retry" => self.image_fs_extract_retry.is_some(),
            "skip-push-permission-check" => self.skip_push_permission_check.is_some(),
            "no-push-cache" => self.no_push_cache.is_some(),
            "materialize" => self.materialize.is_some(),
            "preserve-context" => self.preserve_context.is_some(),
            "credential-helpers" => !self.credential_helpers.is_empty(),
            _ => false,
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_contexts_as_kaniko_writes_them() {
        assert_eq!(kaniko_git_url("github.com/o/r.git#refs/heads/main", &[], None).unwrap(), "https://github.com/o/r.git#main");
        assert_eq!(kaniko_git_url("github.com/o/r#refs/tags/v1", &[], Some("http")).unwrap(), "http://github.com/o/r.git#v1");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(kaniko_git_url(&format!("h/r.git#refs/heads/x#{commit}"), &[], None).unwrap(), format!("https://h/r.git#{commit}"));
        assert_eq!(kaniko_git_url("h/r.git", &["branch=dev,single-branch=true".into()], None).unwrap(), "https://h/r.git#dev");
        assert!(kaniko_git_url("h/r.git", &["depth=1".into()], None).unwrap_err().to_string().contains("--git"));
        assert!(kaniko_git_url("h/r.git", &[], Some("ssh")).is_err());
    }

    #[test]
    fn cache_repo_defaults_like_kaniko() {
        assert_eq!(default_cache_repo("reg:5000/team/app:1.2"), "reg:5000/team/app/cache");
        assert_eq!(default_cache_repo("reg:5000/team/app"), "reg:5000/team/app/cache");
        assert_eq!(default_cache_repo("reg/app@sha256:abc"), "reg/app/cache");
    }

    #[test]
    fn tls_switches_per_purpose_as_kaniko() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            e: ExecutorArgs,
        }
        let lenient = |args: &[&str]| {
            let (pull, push) = T::try_parse_from(["executor"].iter().chain(args)).unwrap().e.leniency();
            let reg = "reg.example:5000";
            [pull.plain_http.contains(reg), pull.skip_verify.contains(reg), push.plain_http.contains(reg), push.skip_verify.contains(reg)]
        };
        assert_eq!(lenient(&[]), [false; 4]);
        assert_eq!(lenient(&["--insecure"]), [false, false, true, false]);
        assert_eq!(lenient(&["--insecure-pull"]), [true, false, false, false]);
        assert_eq!(lenient(&["--skip-tls-verify"]), [false, true, false, true]);
        assert_eq!(lenient(&["--skip-tls-verify-pull"]), [false, true, false, false]);
        assert_eq!(lenient(&["--insecure-registry", "reg.example:5000"]), [true, false, true, false]);
        assert_eq!(lenient(&["--skip-tls-verify-registry", "reg.example"]), [false, true, false, true]);
        assert_eq!(lenient(&["--skip-tls-verify-registry", "other:5000"]), [false; 4]);
    }
}
