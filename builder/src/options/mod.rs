//! What the engine reads: typed, validated options and the on-disk state
//! directory. A leaf: the command line fills these (`cli/`), nothing here parses flags.


pub mod attest;
pub mod cachespec;

/// How a cache miss is explained (`solver/explain.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExplainMode {
    /// One line per miss naming what changed (always).
    #[default]
    Summary,
    /// `--explain`: and every part of the key, before and after.
    Full,
    /// `--explain=values`: and build arg values that look like credentials are kept
    /// in the records and shown.
    Values,
}

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use kiln_oci::media;
use kiln_cache::reference::Reference;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An OCI image layout directory.
    OciLayout { dest: PathBuf },
    /// A tar loadable by `docker load` / `podman load` (OCI layout + manifest.json).
    DockerArchive { dest: PathBuf },
    /// The final root filesystem, files owned by the invoking user.
    Local { dest: PathBuf },
    /// The final root filesystem as a tar (BuildKit's `type=tar`; `-`: stdout).
    Tar { dest: PathBuf },
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
    /// `-q`: print the image ID on stdout when the build succeeds.
    pub print_id: bool,
    pub labels: Vec<(String, String)>,
    /// `--annotation`, BuildKit's syntax.
    pub annotations: Vec<Annotation>,
    pub progress: crate::progress::Mode,
    pub format: crate::options::Format,
    pub isolation_choice: crate::options::IsolationChoice,
    /// Decided when entering the namespaces (`Rootless` until then).
    pub isolation: crate::options::Isolation,
    pub no_cache: bool,
    /// `--pull`: where `FROM`, `COPY --from` and `--mount from=` images come from.
    pub pull: PullPolicy,
    /// `--build-context NAME=VALUE`, by NAME as given.
    pub named_contexts: BTreeMap<String, NamedContext>,
    pub no_cache_filter: Vec<String>,
    /// `--explain[=values]`: how much a cache miss explanation shows.
    pub explain: ExplainMode,
    pub cache_ttl: Option<std::time::Duration>,
    pub cache_repo: Option<Reference>,
    pub cache_from: Vec<cachespec::CacheImport>,
    pub cache_to: Option<cachespec::CacheExport>,
    /// `--cache-to type=inline`: the image's step records in its config.
    pub cache_inline: bool,
    pub registry: kiln_cache::RegistryOptions,
    pub secrets: Vec<crate::options::SecretSpec>,
    pub ssh: Vec<crate::options::SshSpec>,
    /// Empty: the host platform.
    pub platforms: Vec<kiln_frontend::Platform>,
    pub state_dir: PathBuf,
    pub source_date_epoch: Option<i64>,
    /// The tracing filter when `KILN_LOG` is unset.
    pub log_filter: Option<String>,
    /// `--network none`: RUN steps without `--network` get no network.
    pub network_none: bool,
    /// `--add-host`: (host, ip) lines added to each RUN step's /etc/hosts.
    pub extra_hosts: Vec<(String, String)>,
    /// `--squash`: the build's own layers merged into one (base layers kept).
    pub squash: bool,
    /// `--shm-size` in bytes.
    pub shm_size: Option<u64>,
    /// `--ulimit`s for RUN steps.
    pub ulimits: Vec<Ulimit>,
    /// None = auto-detect.
    pub snapshotter: Option<kiln_snapshotter::SnapshotterKind>,
    pub compression: kiln_snapshotter::Compression,
    pub compression_level: Option<i32>,
    /// Recompress base layers not already in `compression` (`--force-compression`).
    pub force_compression: bool,
    /// `--soci`: a SOCI index (v2) for the image.
    pub soci: Option<SociOptions>,
    /// `--base-image-cache DIR`: base images taken from a Kaniko-style cache directory
    /// (`kiln warmer`, Kaniko's warmer) before the registry's layers are fetched.
    pub base_image_cache: Option<PathBuf>,
    /// `--all-stages`: every stage up to the target is built, used or not (Kaniko's
    /// default; `kiln executor --skip-unused-stages` turns it off).
    pub all_stages: bool,
    /// Which steps the `--cache-repo` cache stores and serves.
    pub cache_repo_steps: CacheRepoSteps,
    /// `--log-timestamp`: progress lines start with the time.
    pub log_timestamp: bool,
    /// `--ignore-path`: absolute paths left out (with all below them) of every layer
    /// the build writes; steps still see them while the build runs (Kaniko's flag).
    pub ignore_paths: Vec<PathBuf>,
    /// `--sbom`, `--provenance`, `--attest`, `--attest-style`.
    pub attestations: attest::Attestations,
    /// Where the context came from when it was not a local directory (a git or
    /// http(s) URL, credentials removed): provenance's config source.
    pub context_uri: Option<String>,
    /// The commit a git context was checked out at.
    pub context_commit: Option<String>,
}

/// `--cache-repo-steps`: Kaniko's `--cache-run-layers` and `--cache-copy-layers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheRepoSteps {
    pub run: bool,
    pub copy: bool,
}

impl Default for CacheRepoSteps {
    fn default() -> Self {
        CacheRepoSteps { run: true, copy: true }
    }
}

impl CacheRepoSteps {
    /// A comma-separated list of `run`, `copy` (COPY and ADD), or `none`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = CacheRepoSteps { run: false, copy: false };
        for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match w {
                "run" => out.run = true,
                "copy" => out.copy = true,
                "none" => {}
                other => return Err(format!("{other:?}: expected run, copy or none")),
            }
        }
        Ok(out)
    }

    /// Whether the step whose history says `created_by` goes through the cache repo.
    pub fn admits(&self, created_by: &str) -> bool {
        match created_by.split_whitespace().next() {
            Some("RUN") => self.run,
            Some("COPY" | "ADD") => self.copy,
            // A base layer's skeleton serves only COPY, ADD and WORKDIR steps
            // (`solver/rootfs.rs`): stored with the COPY layers or not at all.
            Some("kiln") if created_by.starts_with("kiln skeleton ") => self.copy,
            _ => true,
        }
    }
}

impl BuildOptions {
    /// A build of `dockerfile` in `context` with what `kiln build` does when given
    /// no other flag, keeping its state in `state_dir`: for library callers and
    /// in-process tests.
    pub fn new(context: PathBuf, dockerfile: PathBuf, state_dir: PathBuf) -> Self {
        BuildOptions {
            context,
            dockerfile,
            tags: Vec::new(),
            push: false,
            outputs: Vec::new(),
            build_args: BTreeMap::new(),
            target: None,
            digest_file: None,
            metadata_file: None,
            iidfile: None,
            print_id: false,
            labels: Vec::new(),
            annotations: Vec::new(),
            progress: crate::progress::Mode::Plain,
            format: Format::Oci,
            isolation_choice: IsolationChoice::Auto,
            isolation: Isolation::Rootless,
            no_cache: false,
            pull: PullPolicy::Missing,
            named_contexts: BTreeMap::new(),
            no_cache_filter: Vec::new(),
            explain: ExplainMode::Summary,
            cache_ttl: None,
            cache_repo: None,
            cache_from: Vec::new(),
            cache_to: None,
            cache_inline: false,
            registry: kiln_cache::RegistryOptions::default(),
            secrets: Vec::new(),
            ssh: Vec::new(),
            platforms: Vec::new(),
            state_dir,
            source_date_epoch: None,
            log_filter: None,
            network_none: false,
            extra_hosts: Vec::new(),
            squash: false,
            shm_size: None,
            ulimits: Vec::new(),
            snapshotter: None,
            compression: kiln_snapshotter::Compression::default(),
            compression_level: None,
            force_compression: false,
            soci: None,
            base_image_cache: None,
            all_stages: false,
            cache_repo_steps: CacheRepoSteps::default(),
            log_timestamp: false,
            ignore_paths: Vec::new(),
            attestations: attest::Attestations::default(),
            context_uri: None,
            context_commit: None,
        }
    }
}

/// Whether a BuildKit switch given as a build arg (`BUILDKIT_CONTEXT_KEEP_GIT_DIR`,
/// `BUILDKIT_SBOM_SCAN_STAGE`, ...) is on.
pub fn build_arg_on(v: &str) -> bool {
    matches!(v, "1" | "true" | "True" | "TRUE")
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

/// How RUN steps are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Root of a user namespace (or real root) with private mount/pid/… namespaces.
    Rootless,
    /// uid 0 without CAP_SYS_ADMIN (a default container): plain chroot, no mounts.
    Chroot,
}

/// `--ulimit NAME=SOFT[:HARD]` (Docker's names; `-1` or `unlimited` for no limit).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

const ULIMITS: &[(&str, nix::sys::resource::Resource)] = {
    use nix::sys::resource::Resource::*;
    &[
        ("as", RLIMIT_AS), ("core", RLIMIT_CORE), ("cpu", RLIMIT_CPU), ("data", RLIMIT_DATA), ("fsize", RLIMIT_FSIZE),
        ("locks", RLIMIT_LOCKS), ("memlock", RLIMIT_MEMLOCK), ("msgqueue", RLIMIT_MSGQUEUE), ("nice", RLIMIT_NICE),
        ("nofile", RLIMIT_NOFILE), ("nproc", RLIMIT_NPROC), ("rss", RLIMIT_RSS), ("rtprio", RLIMIT_RTPRIO),
        ("rttime", RLIMIT_RTTIME), ("sigpending", RLIMIT_SIGPENDING), ("stack", RLIMIT_STACK),
    ]
};

impl Ulimit {
    pub fn parse(s: &str) -> std::result::Result<Ulimit, String> {
        let (name, limits) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected NAME=SOFT[:HARD]"))?;
        if !ULIMITS.iter().any(|(n, _)| *n == name) {
            let names: Vec<&str> = ULIMITS.iter().map(|(n, _)| *n).collect();
            let hint = kiln_frontend::suggest::did_you_mean(kiln_frontend::suggest::search(name, names.iter().copied(), true).as_deref());
            return Err(format!("{s:?}: unknown limit {name:?}{hint} ({})", names.join(", ")));
        }
        let value = |v: &str| -> std::result::Result<u64, String> {
            match v {
                "-1" | "unlimited" => Ok(nix::sys::resource::RLIM_INFINITY),
                _ => v.parse().map_err(|_| format!("{s:?}: {v:?} is not a number")),
            }
        };
        let (soft, hard) = match limits.split_once(':') {
            Some((a, b)) => (value(a)?, value(b)?),
            None => (value(limits)?, value(limits)?),
        };
        if soft > hard {
            return Err(format!("{s:?}: the soft limit is above the hard one"));
        }
        Ok(Ulimit { name: name.to_string(), soft, hard })
    }

    pub fn resource(&self) -> nix::sys::resource::Resource {
        ULIMITS.iter().find(|(n, _)| *n == self.name).map(|(_, r)| *r).unwrap_or(nix::sys::resource::Resource::RLIMIT_NOFILE)
    }
}

/// Docker's `--shm-size`: bytes with an optional binary unit (`64m`, `1g`, `512k`).
pub fn parse_ram(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: expected a size like 64m or 1g"))?;
    let mult: u64 = match unit.trim_end_matches('b').trim_end_matches('i') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit (b, k, m, g)")),
    };
    n.checked_mul(mult).filter(|b| *b > 0).ok_or_else(|| format!("{s:?}: out of range"))
}

/// Where an `--annotation` goes (BuildKit's types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnotationTarget {
    Manifest,
    Index,
    ManifestDescriptor,
    IndexDescriptor,
}

/// `--annotation [TYPE[,TYPE…]][\[PLATFORM\]]:KEY=VALUE` (no type: the manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    pub targets: Vec<AnnotationTarget>,
    /// Only the manifests (and their descriptors) of this platform.
    pub platform: Option<kiln_oci::Platform>,
    pub key: String,
    pub value: String,
}

impl Annotation {
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let (left, value) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected [TYPE:]KEY=VALUE"))?;
        let (spec, key) = match left.split_once(':') {
            Some((spec, key)) => (Some(spec), key),
            None => (None, left),
        };
        if key.is_empty() {
            return Err(format!("{s:?}: empty key"));
        }
        let mut targets = Vec::new();
        let mut platform = None;
        if let Some(spec) = spec {
            let (types, plat) = match spec.split_once('[') {
                Some((t, p)) => (t, Some(p.strip_suffix(']').ok_or_else(|| format!("{s:?}: unclosed [PLATFORM]"))?)),
                None => (spec, None),
            };
            if let Some(p) = plat {
                platform = Some(kiln_oci::Platform::parse(p).map_err(|e| format!("{s:?}: {e}"))?);
            }
            for t in types.split(',').filter(|t| !t.is_empty()) {
                targets.push(match t {
                    "manifest" => AnnotationTarget::Manifest,
                    "index" => AnnotationTarget::Index,
                    "manifest-descriptor" => AnnotationTarget::ManifestDescriptor,
                    "index-descriptor" => AnnotationTarget::IndexDescriptor,
                    other => return Err(format!("{s:?}: unknown annotation type {other:?} (manifest, index, manifest-descriptor, index-descriptor)")),
                });
            }
        }
        if targets.is_empty() {
            targets.push(AnnotationTarget::Manifest);
        }
        Ok(Annotation { targets, platform, key: key.to_string(), value: value.to_string() })
    }

    /// Whether it applies to `target` for the image of `platform` (`None`: the index).
    pub fn applies(&self, target: AnnotationTarget, platform: Option<&kiln_oci::Platform>) -> bool {
        self.targets.contains(&target) && match (&self.platform, platform) {
            (Some(want), Some(p)) => want.os == p.os && want.architecture == p.architecture && (want.variant.is_none() || want.variant == p.variant),
            _ => true,
        }
    }
}

/// What a `--build-context` name stands for (see `solver::named`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// `docker-image://REF`.
    Image(kiln_cache::reference::Reference),
    /// `oci-layout://PATH[:TAG|@DIGEST]`.
    Layout { path: PathBuf, select: Option<String> },
    /// A directory (git URLs and tarballs are made into one before the build).
    Dir(PathBuf),
}

impl NamedContext {
    /// Parses the VALUE of `--build-context NAME=VALUE` (already materialised).
    pub fn parse(value: &str) -> std::result::Result<Self, String> {
        if let Some(r) = value.strip_prefix("docker-image://") {
            return r.parse().map(NamedContext::Image).map_err(|e| format!("{e}"));
        }
        if let Some(rest) = value.strip_prefix("oci-layout://") {
            let (path, select) = match rest.split_once('@') {
                Some((p, d)) => (p.to_string(), Some(d.to_string())),
                None => match rest.rsplit_once(':') {
                    Some((p, t)) if !t.contains('/') && !p.is_empty() => (p.to_string(), Some(t.to_string())),
                    _ => (rest.to_string(), None),
                },
            };
            if !std::path::Path::new(&path).join("index.json").is_file() {
                return Err(format!("{path} is not an OCI layout (no index.json)"));
            }
            return Ok(NamedContext::Layout { path: PathBuf::from(path), select });
        }
        let p = PathBuf::from(value);
        if p.is_dir() {
            return p.canonicalize().map(NamedContext::Dir).map_err(|e| format!("{value}: {e}"));
        }
        Err(format!("{value:?} is not a directory, docker-image://REF, oci-layout://PATH, a git URL or an http(s) tarball"))
    }
}

/// `--pull`: whether an image the build names is looked up among the named local
/// images (`kiln images`) or in its registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// `--pull` / `--pull=always`: always from the registry (as `docker build --pull`).
    Always,
    /// The default: a local image of that name first, else the registry (as podman).
    #[default]
    Missing,
    /// Only local images; a name that is not local is an error naming it.
    Never,
}

impl std::str::FromStr for PullPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        // Buildah's spellings too: `true`/`ifnewer` ask the registry, `false` only
        // when the image is not local.
        match s {
            "always" | "true" | "ifnewer" => Ok(Self::Always),
            "missing" | "ifmissing" | "false" => Ok(Self::Missing),
            "never" => Ok(Self::Never),
            _ => Err(format!("unknown pull policy {s:?} (always, missing, never)")),
        }
    }
}

/// `--isolation`: what the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationChoice {
    #[default]
    Auto,
    Rootless,
    Chroot,
}

impl std::str::FromStr for IsolationChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "rootless" | "namespaces" => Ok(Self::Rootless),
            "chroot" => Ok(Self::Chroot),
            _ => Err(format!("unknown isolation {s:?} (auto, rootless, chroot)")),
        }
    }
}

/// `--format`: OCI media types (default) or Docker's v2 schema 2 ones, for
/// registries and tools that only read the latter. The bytes of layers and config
/// are the same; only the names differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Oci,
    Docker,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "oci" => Ok(Format::Oci),
            "docker" => Ok(Format::Docker),
            _ => Err(format!("unknown format {s:?} (oci, docker)")),
        }
    }
}

impl Format {
    pub fn manifest(self) -> &'static str {
        match self {
            Format::Oci => media::OCI_MANIFEST,
            Format::Docker => media::DOCKER_MANIFEST,
        }
    }
    pub fn config(self) -> &'static str {
        match self {
            Format::Oci => media::OCI_CONFIG,
            Format::Docker => media::DOCKER_CONFIG,
        }
    }
    pub fn index(self) -> &'static str {
        match self {
            Format::Oci => media::OCI_INDEX,
            Format::Docker => media::DOCKER_MANIFEST_LIST,
        }
    }
    pub fn layer(self, oci_type: &str) -> Result<String> {
        Ok(match (self, kiln_oci::media::layer_compression(oci_type)) {
            (Format::Oci, _) => oci_type.to_string(),
            (Format::Docker, Some(kiln_oci::media::LayerCompression::Gzip)) => media::DOCKER_LAYER_GZIP.to_string(),
            (Format::Docker, Some(kiln_oci::media::LayerCompression::None)) => "application/vnd.docker.image.rootfs.diff.tar".to_string(),
            (Format::Docker, _) => anyhow::bail!("--format docker has no media type for {oci_type} layers (use --compression gzip)"),
        })
    }
}

/// `--secret id=ID[,src=PATH|,env=VAR]` from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    pub id: String,
    pub source: SecretSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// `--ssh ID[=SOCKET]` from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSpec {
    pub id: String,
    pub socket: PathBuf,
}

/// `--soci`, `--soci-span-size`, `--soci-min-layer-size` (soci-snapshotter's
/// `soci convert --span-size`, `--min-layer-size`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SociOptions {
    pub span: u64,
    pub min_layer_size: u64,
}
