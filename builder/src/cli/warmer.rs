//! `kiln warmer`: Kaniko's cache warmer (`/kaniko/warmer`), which fills the base-image
//! cache directory that `kiln executor --cache=true --cache-dir DIR` (and Kaniko's
//! executor) read. Kaniko's flags (cmd/warmer/cmd/root.go), with its defaults.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use clap::Args;

use super::executor::kbool;
use super::values::RegistryFlags;

#[derive(Debug, Args)]
pub struct WarmerArgs {
    /// Image to cache. Repeatable.
    #[arg(short = 'i', long = "image", value_name = "IMAGE")]
    pub images: Vec<String>,
    /// The cache directory.
    #[arg(short = 'c', long = "cache-dir", default_value = "/cache")]
    pub cache_dir: PathBuf,
    /// Write an entry again even when a fresh one is there.
    #[arg(short = 'f', long = "force", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub force: Option<bool>,
    /// An entry younger than this is fresh (default 336h, two weeks).
    #[arg(long = "cache-ttl", value_name = "DURATION")]
    pub cache_ttl: Option<String>,
    /// Cache every base image of this Dockerfile's stages.
    #[arg(short = 'd', long = "dockerfile")]
    pub dockerfile: Option<PathBuf>,
    /// Build args for the Dockerfile's FROM lines. Repeatable.
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// The platform to cache (default: this machine's).
    #[arg(long = "customPlatform", alias = "custom-platform")]
    pub custom_platform: Option<String>,
    #[arg(long = "insecure-pull", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub insecure_pull: Option<bool>,
    #[arg(long = "skip-tls-verify-pull", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub skip_tls_verify_pull: Option<bool>,
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    #[arg(long = "skip-tls-verify-registry")]
    pub skip_tls_verify_registries: Vec<String>,
    /// REGISTRY=CA-FILE. Repeatable.
    #[arg(long = "registry-certificate")]
    pub registry_certificates: Vec<String>,
    /// REGISTRY=CERT,KEY. Repeatable.
    #[arg(long = "registry-client-cert")]
    pub registry_client_certs: Vec<String>,
    /// FROM=TO[;FROM=TO]. Repeatable.
    #[arg(long = "registry-map")]
    pub registry_map: Vec<String>,
    #[arg(long = "registry-mirror")]
    pub registry_mirrors: Vec<String>,
    #[arg(long = "skip-default-registry-fallback", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub skip_default_registry_fallback: Option<bool>,
    #[arg(short = 'v', long = "verbosity")]
    pub verbosity: Option<String>,
    #[arg(long = "log-format")]
    pub log_format: Option<String>,
    #[arg(long = "log-timestamp", num_args = 0..=1, default_missing_value = "true", value_parser = kbool)]
    pub log_timestamp: Option<bool>,
    #[arg(long = "azure-container-registry-config", hide = true)]
    pub azure_container_registry_config: Option<String>,
}


impl WarmerArgs {
    /// kiln's registry flags for what the warmer was given: every registry it talks
    /// to is a pull, so Kaniko's -pull and -registry switches make the pull leniency.
    pub fn registry_flags(&self) -> Result<RegistryFlags> {
        if self.images.is_empty() && self.dockerfile.is_none() {
            bail!("kiln warmer: give at least one --image to cache or a --dockerfile to read them from");
        }
        let on = |b: Option<bool>| b.unwrap_or(false);
        let pull = super::executor::leniency(on(self.insecure_pull), &self.insecure_registries, on(self.skip_tls_verify_pull), &self.skip_tls_verify_registries);
        let mut map = Vec::new();
        for m in &self.registry_map {
            for one in m.split(';').filter(|s| !s.is_empty()) {
                if !one.contains('=') {
                    bail!("--registry-map {one:?}: expected ORIGINAL=MIRROR");
                }
                map.push(one.to_string());
            }
        }
        let certificates = self
            .registry_certificates
            .iter()
            .map(|c| match c.split_once('=') {
                Some((_, f)) if !f.is_empty() => Ok(PathBuf::from(f)),
                _ => Err(anyhow!("--registry-certificate {c:?}: expected REGISTRY=FILE")),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RegistryFlags {
            insecure_registries: self.insecure_registries.clone(),
            registry_mirrors: self.registry_mirrors.clone(),
            registry_map: map,
            registry_certificates: certificates,
            registry_client_certs: self.registry_client_certs.clone(),
            skip_default_registry_fallback: on(self.skip_default_registry_fallback),
            push_ignore_immutable_tag_errors: false,
            push_retry: 3,
            pull_leniency: pull,
            push_leniency: kiln_cache::Leniency::default(),
        })
    }
}
