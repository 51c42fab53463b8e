//! What the engine reads: typed, validated options and the on-disk state
//! directory. A leaf: the command line fills these (`cli/`), nothing here parses flags.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use kiln_cache::reference::Reference;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An OCI image layout directory.
    OciLayout { dest: PathBuf },
    /// A tar loadable by `docker load` / `podman load` (OCI layout + manifest.json).
    DockerArchive { dest: PathBuf },
    /// The final root filesystem, files owned by the invoking user.
    Local { dest: PathBuf },
}

/// Everything a build needs, validated.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub context: PathBuf,
    pub dockerfile: PathBuf,
    pub tags: Vec<Reference>,
    pub push: bool,
    pub outputs: Vec<Output>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub digest_file: Option<PathBuf>,
    pub metadata_file: Option<PathBuf>,
    pub iidfile: Option<PathBuf>,
    pub labels: Vec<(String, String)>,
    pub progress: crate::progress::Mode,
    pub format: crate::export::Format,
    pub isolation_choice: crate::exec::userns::IsolationChoice,
    /// Decided when entering the namespaces (`Rootless` until then).
    pub isolation: crate::exec::userns::Isolation,
    pub no_cache: bool,
    pub no_cache_filter: Vec<String>,
    pub cache_ttl: Option<std::time::Duration>,
    pub cache_repo: Option<Reference>,
    pub cache_from: Vec<Reference>,
    pub cache_to: Option<Reference>,
    pub registry: kiln_cache::RegistryOptions,
    pub secrets: Vec<crate::steps::runmounts::SecretSpec>,
    pub ssh: Vec<crate::steps::runmounts::SshSpec>,
    /// Empty: the host platform.
    pub platforms: Vec<kiln_frontend::Platform>,
    pub state_dir: PathBuf,
    pub source_date_epoch: Option<i64>,
    /// `--network none`: RUN steps without `--network` get no network.
    pub network_none: bool,
    /// `--add-host`: (host, ip) lines added to each RUN step's /etc/hosts.
    pub extra_hosts: Vec<(String, String)>,
    /// None = auto-detect.
    pub snapshotter: Option<kiln_snapshotter::SnapshotterKind>,
    pub compression: kiln_snapshotter::Compression,
    pub compression_level: Option<i32>,
}

/// `$KILN_ROOT`, else `$XDG_DATA_HOME/kiln`, else `~/.local/share/kiln`.
pub fn state_dir() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KILN_ROOT").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p).join("kiln"));
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty()).context("neither KILN_ROOT nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/share/kiln"))
}


