//! `kiln executor`: Kaniko's command line, mapped onto `kiln build`, so a Kaniko
//! pipeline switches by changing its image and entrypoint.
//!
//! Flags that only tune Kaniko's own snapshotting (`--snapshot-mode`,
//! `--single-snapshot`, `--use-new-run`, `--cleanup`, `--compressed-caching`) are
//! accepted and have no effect: kiln always diffs exactly what a step changed.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::cli::build::BuildArgs;

/// A Kaniko boolean: `--flag`, `--flag=true`, `--flag=false`.
fn kbool(s: &str) -> Result<bool, String> {
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
}

/// The registry host of a reference (`host[:port]/repo:tag`), if it names one.
fn host_of(reference: &str) -> Option<String> {
    let first = reference.split('/').next()?;
    (reference.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost")).then(|| first.to_string())
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
    pub fn into_build(self) -> Result<(BuildArgs, Option<PathBuf>)> {
        let context = match self.context.split_once("://") {
            None => PathBuf::from(&self.context),
            Some(("dir", p)) => PathBuf::from(p),
            Some((scheme, _)) => bail!("--context {}: {scheme}:// contexts are not supported (use a directory)", self.context),
        };
        let dockerfile = if self.dockerfile.is_absolute() || self.dockerfile.exists() {
            self.dockerfile.clone()
        } else {
            context.join(&self.dockerfile)
        };
        let push = !self.no_push.unwrap_or(false) && !self.destinations.is_empty();
        let mut insecure = self.insecure_registries.clone();
        if self.insecure.unwrap_or(false) || self.skip_tls_verify.unwrap_or(false) {
            insecure.extend(self.destinations.iter().filter_map(|d| host_of(d)));
        }
        let mut outputs = Vec::new();
        if let Some(t) = &self.tar_path {
            outputs.push(format!("type=docker,dest={}", t.display()));
        }
        let cache_repo = if self.cache.unwrap_or(false) {
            self.cache_repo.clone().or_else(|| self.destinations.first().map(|d| default_cache_repo(d)))
        } else {
            None
        };
        // Without --digest-file, the digest the names file needs goes through a file of
        // this process's own (the build writes it; `cmd::build` reads and removes it).
        let digest_file = self.digest_file.clone().or_else(|| {
            self.image_name_with_digest_file
                .as_ref()
                .map(|_| std::env::temp_dir().join(format!("kiln-digest-{}-{}", std::process::id(), crate::fsutil::next_id())))
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
            insecure_registries: insecure,
            registry_mirrors: self.registry_mirrors,
            push_retry: if self.push_retry == 0 { 3 } else { self.push_retry },
            cache_repo,
            cache_ttl: self.cache_ttl,
            digest_file,
            platforms: self.custom_platform.into_iter().collect(),
            compression: self.compression,
            compression_level: self.compression_level,
            // Kaniko's --reproducible strips timestamps: the epoch, as SOURCE_DATE_EPOCH=0.
            reproducible: self.reproducible.unwrap_or(false),
            verbosity: self.verbosity.clone(),
        });
        Ok((args, self.image_name_with_digest_file))
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_repo_defaults_like_kaniko() {
        assert_eq!(default_cache_repo("reg:5000/team/app:1.2"), "reg:5000/team/app/cache");
        assert_eq!(default_cache_repo("reg:5000/team/app"), "reg:5000/team/app/cache");
        assert_eq!(default_cache_repo("reg/app@sha256:abc"), "reg/app/cache");
        assert_eq!(host_of("reg:5000/a/b:1"), Some("reg:5000".into()));
        assert_eq!(host_of("busybox"), None);
    }
}
