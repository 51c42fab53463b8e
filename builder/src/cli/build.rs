//! `kiln build` flags and their validation into `BuildOptions`.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser};
use kiln_cache::reference::Reference;

use crate::cli::values::{parse_build_args, parse_output};
use crate::cli::{Cli, CommandKind};
use crate::options::{state_dir, BuildOptions, Output};

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name (and optionally tag) of the image, e.g. registry:5000/app:1. Repeatable.
    #[arg(short = 't', long = "tag", value_name = "REF")]
    pub tags: Vec<String>,
    /// Push the image to the registry of each tag.
    #[arg(long)]
    pub push: bool,
    /// Do not build; print what the Dockerfile offers: targets (the stages and their
    /// descriptions) or outline (the build args, secrets and ssh a target uses).
    #[arg(long = "call", value_name = "targets|outline")]
    pub call: Option<String>,
    /// Only print the image ID (on stdout); no progress.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Write the result somewhere: type=oci,dest=DIR|FILE.tar (an OCI layout),
    /// type=docker,dest=FILE.tar, type=local,dest=DIR (the rootfs), type=tar,dest=FILE
    /// (the rootfs as a tar); `dest=-` and a bare `-o -` write to stdout.
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    #[command(flatten)]
    pub dockerfile: crate::cli::dockerfile::DockerfileFlag,
    #[command(flatten)]
    pub stage: crate::cli::dockerfile::StageFlags,
    #[command(flatten)]
    pub registry: crate::cli::values::RegistryFlags,
    /// SOURCE_DATE_EPOCH when the environment has none (`kiln executor --reproducible`).
    #[arg(skip)]
    pub epoch_default: Option<String>,
    /// The log filter when `KILN_LOG` is unset (`kiln executor --verbosity`).
    #[arg(skip)]
    pub log_filter: Option<String>,
    /// Debug-level notes to log once logging is set up (`kiln executor`'s
    /// no-effect flags).
    #[arg(skip)]
    pub notes: Vec<String>,
    /// A relative `-f` names a file in the (fetched) context, as Kaniko's
    /// `--dockerfile` does with a remote context.
    #[arg(skip)]
    pub dockerfile_in_context: bool,
    /// Kaniko's `--context-sub-path` for a context that exists only once fetched (a
    /// tarball, stdin, an https URL): the build's context is this directory in it.
    #[arg(skip)]
    pub context_sub_path: Option<PathBuf>,
    /// Media types of the image: oci (default) or docker (v2 schema 2).
    #[arg(long = "format", value_name = "oci|docker", default_value = "oci")]
    pub format: String,
    /// Do not push, even with --push (for scripts that add --push by default).
    #[arg(long = "no-push")]
    pub no_push: bool,
    /// Progress output: auto (tty on a terminal, else plain), plain, tty, or json
    /// (one event per line on stderr, RUN output included as log events).
    #[arg(long = "progress", value_name = "auto|plain|tty|json", default_value = "auto")]
    pub progress: String,
    /// How RUN steps are isolated: auto (namespaces if possible, else chroot when
    /// running as uid 0), rootless, or chroot (Kaniko-style pods: uid 0, no added
    /// capabilities).
    #[arg(long = "isolation", value_name = "auto|rootless|chroot", default_value = "auto")]
    pub isolation: String,
    /// Do not use cached layers (the cache is still updated).
    #[arg(long)]
    pub no_cache: bool,
    /// Where images named by FROM, COPY --from and --mount from= come from: missing
    /// (default: a local image of that name, else the registry), always (`--pull`
    /// alone: the registry), never (local images only).
    #[arg(long, value_name = "always|missing|never", num_args = 0..=1, require_equals = true, default_value = "missing", default_missing_value = "always")]
    pub pull: String,
    /// NAME=VALUE: what `FROM NAME`, `COPY --from=NAME` and `--mount from=NAME` read:
    /// a directory, docker-image://REF, oci-layout://PATH[:TAG|@DIGEST], a git URL
    /// or an http(s) tarball. Repeatable.
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// Annotation of the manifest (default) or, with a type prefix, of the index or
    /// descriptors: `[TYPE[,TYPE]][[PLATFORM]]:KEY=VALUE` (BuildKit's syntax). Repeatable.
    #[arg(long = "annotation", value_name = "[TYPE:]KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Merge the layers this build makes into one, keeping the base image's layers
    /// (Buildah's --squash).
    #[arg(long)]
    pub squash: bool,
    /// Attach an SBOM of each platform's image (`--sbom` = `--attest type=sbom`):
    /// true, false, or options such as format=cyclonedx,scan-context=true.
    #[arg(long, value_name = "true|false|OPTIONS", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub sbom: Option<String>,
    /// Attach SLSA v1 provenance (`--provenance` = `--attest type=provenance`):
    /// true (mode=min), false, mode=min|max[,builder-id=URI].
    #[arg(long, value_name = "true|false|mode=min|max", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub provenance: Option<String>,
    /// An attestation to attach: type=sbom[,format=spdx|cyclonedx][,scan-context=true]
    /// [,scan-stage=true][,ignore-error=true] or type=provenance[,mode=min|max]. Repeatable.
    #[arg(long = "attest", value_name = "type=sbom|provenance[,OPTION=VALUE...]")]
    pub attest: Vec<String>,
    /// Where attestations go: referrers (OCI 1.1 artifacts whose subject is the image;
    /// the index is unchanged) or buildkit (manifests inside the index, unknown/unknown).
    #[arg(long = "attest-style", value_name = "referrers|buildkit")]
    pub attest_style: Option<String>,
    /// Size of /dev/shm in RUN steps (e.g. 64m, 1g; default 64m).
    #[arg(long = "shm-size", value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// Resource limit for RUN steps: NAME=SOFT[:HARD] (e.g. nofile=1024:2048). Repeatable.
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
    /// Do not use cached layers for these stages. Repeatable.
    #[arg(long = "no-cache-filter", value_name = "STAGE")]
    pub no_cache_filter: Vec<String>,
    /// Cached layers older than this are not used (e.g. 168h, 7d).
    #[arg(long = "cache-ttl", value_name = "DURATION")]
    pub cache_ttl: Option<String>,
    /// Kaniko-style registry layer cache: one small image per step, in this repository.
    #[arg(long = "cache-repo", value_name = "REPO")]
    pub cache_repo: Option<String>,
    /// Which steps --cache-repo stores and serves: run, copy (COPY and ADD), both
    /// (default) or none. Kaniko's --cache-run-layers / --cache-copy-layers.
    #[arg(long = "cache-repo-steps", value_name = "run,copy|none", default_value = "run,copy")]
    pub cache_repo_steps: String,
    /// Base images from this directory of image tarballs (written by `kiln warmer` or
    /// Kaniko's warmer, named by manifest digest) instead of fetching their layers;
    /// entries older than --cache-ttl (default two weeks) are not used.
    #[arg(long = "base-image-cache", value_name = "DIR")]
    pub base_image_cache: Option<PathBuf>,
    /// Build every stage up to the target, even those it does not use (Kaniko's
    /// default); normally only the stages the target needs are built.
    #[arg(long = "all-stages")]
    pub all_stages: bool,
    /// Start each progress line with the UTC time (plain progress; Kaniko's --log-timestamp).
    #[arg(long = "log-timestamp")]
    pub log_timestamp: bool,
    /// Leave this absolute path (and everything below it) out of every layer the build
    /// writes; RUN steps still see it during the build (Kaniko's --ignore-path). Repeatable.
    #[arg(long = "ignore-path", value_name = "PATH")]
    pub ignore_paths: Vec<PathBuf>,
    /// Explain every cache miss in full (each part of the step's key, before and
    /// after); `--explain=values` also keeps and shows build arg values that look like
    /// credentials. Without it, each miss still gets one line naming what changed.
    #[arg(long = "explain", value_name = "values", num_args = 0..=1, default_missing_value = "full")]
    pub explain: Option<String>,
    /// BuildKit-style cache to read: type=registry,ref=REF or type=local,src=DIR[,tag=T]. Repeatable.
    #[arg(long = "cache-from", value_name = "type=registry,ref=REF")]
    pub cache_from: Vec<String>,
    /// BuildKit-style cache to write: type=registry,ref=REF or type=local,dest=DIR, with
    /// mode=min (the image's layers, the default) or mode=max (every step), ignore-error=.
    #[arg(long = "cache-to", value_name = "type=registry,ref=REF")]
    pub cache_to: Option<String>,
    /// Write the image ID (the config digest; the index digest for several platforms).
    #[arg(long = "iidfile", value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Set a label on the final image, KEY=VALUE. Repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// A secret for `RUN --mount=type=secret`: id=ID,src=PATH or id=ID,env=VAR. Repeatable.
    #[arg(long = "secret", value_name = "id=ID,src=PATH|env=VAR")]
    pub secrets: Vec<String>,
    /// An SSH agent socket for `RUN --mount=type=ssh`: default[=SOCKET] or ID=SOCKET. Repeatable.
    #[arg(long = "ssh", value_name = "ID[=SOCKET]")]
    pub ssh: Vec<String>,
    /// Target platform(s), comma-separated: linux/amd64,linux/arm64 (default: the host's).
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT],...")]
    pub platforms: Vec<String>,
    /// Write build metadata (digest, per-platform digests, names) as JSON to this file.
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Write the image digest (the index digest for several platforms) to this file.
    #[arg(long = "digest-file", value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
    /// Docker-style config.json with registry credentials, merged over the usual
    /// ones (also: KILN_AUTH=FILE or inline JSON; GitLab's CI_REGISTRY* variables).
    #[arg(long = "authfile", value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// How step rootfs are made: overlay (overlayfs in the user namespace), native
    /// (a copied rootfs and a walk-and-compare diff), or auto (overlay if it mounts).
    #[arg(long, value_name = "overlay|native|auto", default_value = "auto")]
    pub snapshotter: String,
    /// Compression of the layers kiln writes: gzip (default), zstd, none, or the
    /// lazily pullable estargz and zstd:chunked (plain gzip/zstd layers with a TOC).
    /// Also `--compression-format` (Buildah, Podman) or `--output
    /// type=image,compression=…` (BuildKit).
    #[arg(long, visible_alias = "compression-format", value_name = "gzip|zstd|estargz|zstd:chunked|none")]
    pub compression: Option<String>,
    /// Compression level (gzip and estargz 0-9, default 6; zstd and zstd:chunked
    /// 1-22, default 3).
    #[arg(long = "compression-level", value_name = "N", allow_negative_numbers = true)]
    pub compression_level: Option<i32>,
    /// Also recompress the base image's layers that are not already in the
    /// `--compression` format (BuildKit's `force-compression=true`, Buildah's
    /// `--force-compression`), e.g. to make a whole image eStargz.
    #[arg(long = "force-compression")]
    pub force_compression: bool,
    /// Write a SOCI index (v2, soci-snapshotter's "SOCI-enabled image"): the image
    /// becomes an index with the image manifest and a SOCI index manifest listing a
    /// ztoc (TOC + gzip access points) per gzip layer of at least
    /// --soci-min-layer-size that kiln wrote (all layers with --force-compression).
    #[arg(long = "soci")]
    pub soci: bool,
    /// Uncompressed bytes between the access points of a ztoc (default 4 MiB).
    #[arg(long = "soci-span-size", value_name = "BYTES")]
    pub soci_span_size: Option<u64>,
    /// Layers smaller than this (compressed) get no ztoc (default 10 MiB).
    #[arg(long = "soci-min-layer-size", value_name = "BYTES")]
    pub soci_min_layer_size: Option<u64>,
    /// Network of RUN steps without their own `--network`: default (the host's
    /// network: rootless kiln has no bridge), host, or none.
    #[arg(long = "network", value_name = "default|none|host", default_value = "default")]
    pub network: String,
    /// An extra line in the /etc/hosts of RUN steps: HOST:IP. Repeatable.
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,
    /// Build context directory.
    pub context: PathBuf,
}

/// How the build writes layers (`BuildArgs::layer_format`).
struct LayerFormat {
    compression: kiln_snapshotter::Compression,
    compression_level: Option<i32>,
    force_compression: bool,
    soci: Option<crate::options::SociOptions>,
    format: String,
}

/// What `kiln executor` sets; everything else keeps `kiln build`'s defaults.
pub struct ExecutorMapping {
    pub context: PathBuf,
    pub dockerfile: PathBuf,
    pub tags: Vec<String>,
    pub push: bool,
    pub outputs: Vec<String>,
    pub build_args: Vec<String>,
    pub labels: Vec<String>,
    pub target: Option<String>,
    pub insecure_registries: Vec<String>,
    pub registry_mirrors: Vec<String>,
    pub push_retry: u32,
    pub cache_repo: Option<String>,
    pub cache_ttl: Option<String>,
    pub digest_file: Option<PathBuf>,
    pub platforms: Vec<String>,
    pub compression: Option<String>,
    pub compression_level: Option<i32>,
    /// Kaniko's `--reproducible`: SOURCE_DATE_EPOCH=0 unless the environment sets one.
    pub reproducible: bool,
    /// Kaniko's `--verbosity`: the log filter unless `KILN_LOG` sets one.
    pub verbosity: Option<String>,
    /// Further `kiln build` flags with their values (`--annotation`, `--secret`, ...).
    pub extra: Vec<(&'static str, String)>,
    /// Further `kiln build` switches (`--squash`).
    pub switches: Vec<&'static str>,
}

/// An `--ignore-path`: absolute, below `/`, without `..` (`.` parts dropped).
fn parse_ignore_path(p: &std::path::Path) -> Result<PathBuf> {
    let clean: PathBuf = p.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect();
    if !clean.is_absolute() || clean.components().any(|c| matches!(c, std::path::Component::ParentDir)) || clean == std::path::Path::new("/") {
        bail!("--ignore-path {}: expected an absolute path below / without `..`", p.display());
    }
    Ok(clean)
}

impl BuildArgs {
    /// `kiln build` arguments from `kiln executor`'s (Kaniko's) flags: parsed through
    /// clap so defaults stay defined in one place.
    pub fn for_executor(m: ExecutorMapping) -> BuildArgs {
        let mut argv: Vec<std::ffi::OsString> = vec!["kiln".into(), "build".into()];
        let mut push = |flag: &str, v: &std::ffi::OsStr| {
            argv.push(flag.into());
            argv.push(v.to_os_string());
        };
        push("-f", m.dockerfile.as_os_str());
        for t in &m.tags {
            push("-t", t.as_ref());
        }
        for o in &m.outputs {
            push("--output", o.as_ref());
        }
        for a in &m.build_args {
            push("--build-arg", a.as_ref());
        }
        for l in &m.labels {
            push("--label", l.as_ref());
        }
        if let Some(t) = &m.target {
            push("--target", t.as_ref());
        }
        for i in &m.insecure_registries {
            push("--insecure-registry", i.as_ref());
        }
        for r in &m.registry_mirrors {
            push("--registry-mirror", r.as_ref());
        }
        push("--push-retry", m.push_retry.to_string().as_ref());
        if let Some(c) = &m.cache_repo {
            push("--cache-repo", c.as_ref());
        }
        if let Some(c) = &m.cache_ttl {
            push("--cache-ttl", c.as_ref());
        }
        if let Some(d) = &m.digest_file {
            push("--digest-file", d.as_os_str());
        }
        for p in &m.platforms {
            push("--platform", p.as_ref());
        }
        if let Some(c) = &m.compression {
            push("--compression", c.as_ref());
        }
        if let Some(l) = m.compression_level {
            push("--compression-level", l.to_string().as_ref());
        }
        for (flag, v) in &m.extra {
            push(flag, v.as_ref());
        }
        for s in &m.switches {
            argv.push((*s).into());
        }
        if m.push {
            argv.push("--push".into());
        }
        argv.push(m.context.into_os_string());
        match Cli::try_parse_from(argv) {
            Ok(Cli { command: CommandKind::Build(mut b) }) => {
                b.epoch_default = m.reproducible.then(|| "0".to_string());
                b.log_filter = m.verbosity;
                b
            }
            Ok(_) => unreachable!("built a build command line"),
            Err(e) => e.exit(),
        }
    }

    /// `--cache-from`, `--cache-to` (its compression must be the build's: the cache
    /// holds the layers the build made) and `--explain`.
    fn cache_options(&self) -> Result<(Vec<crate::options::cachespec::CacheImport>, Option<crate::options::cachespec::CacheTo>, crate::options::ExplainMode)> {
        use crate::options::cachespec::{parse_cache_from, parse_cache_target, CacheTo};
        let from = self.cache_from.iter().map(|c| parse_cache_from(c).map_err(|e| anyhow!("{e}"))).collect::<Result<_>>()?;
        let target = self.cache_to.as_deref().map(parse_cache_target).transpose().map_err(|e| anyhow!("{e}"))?;
        if target == Some(CacheTo::Inline) && self.squash {
            bail!("--cache-to type=inline cannot be used with --squash: the records name the layers --squash merges away");
        }
        let to = match &target {
            Some(CacheTo::Export(e)) => Some(e),
            _ => None,
        };
        if let Some(c) = to.as_ref().and_then(|t| t.compression.as_deref()) {
            let own = self.compression.as_deref().unwrap_or("gzip");
            if c.parse::<kiln_snapshotter::Compression>().ok() != own.parse::<kiln_snapshotter::Compression>().ok() {
                bail!("--cache-to compression={c}: the cache holds the layers this build makes, compressed with --compression {own}; pass --compression {c} to build with it");
            }
        }
        let explain = match self.explain.as_deref() {
            None => crate::options::ExplainMode::Summary,
            Some("full") => crate::options::ExplainMode::Full,
            Some("values") => crate::options::ExplainMode::Values,
            Some(other) => bail!("--explain={other}: expected --explain or --explain=values"),
        };
        Ok((from, target, explain))
    }

    /// Where the image goes: `-t`, `--push`, `--output`s, with BuildKit's `--output
    /// type=image|registry` taken apart into names, push and layer options.
    fn destinations(&self) -> Result<(Vec<Reference>, Vec<Output>, crate::cli::values::ImageOutput, bool)> {
        let tags = self
            .tags
            .iter()
            .map(|t| t.parse::<Reference>().map_err(|e| anyhow!("-t {t}: {e}")))
            .collect::<Result<Vec<_>>>()?;
        let mut image = crate::cli::values::ImageOutput::default();
        let mut outputs = Vec::new();
        for o in &self.outputs {
            if !image.take(o)? {
                outputs.push(parse_output(o)?);
            }
        }
        let mut tags = tags;
        for n in &image.names {
            tags.push(n.parse::<Reference>().map_err(|e| anyhow!("--output name={n}: {e}"))?);
        }
        let push = (self.push || image.push) && !self.no_push;
        if push && tags.is_empty() {
            bail!("--push needs at least one -t REF (or --output type=image,name=REF,push=true) to push to");
        }
        Ok((tags, outputs, image, push))
    }

    /// How layers are written: `--compression`, `--compression-level`,
    /// `--force-compression`, `--soci` and `--format`, merged with what an `--output
    /// type=image` says, each checked against the others.
    fn layer_format(&self, image: &crate::cli::values::ImageOutput) -> Result<LayerFormat> {
        let compression_name = match (&self.compression, &image.compression) {
            (Some(a), Some(b)) if a.parse::<kiln_snapshotter::Compression>().ok() != b.parse::<kiln_snapshotter::Compression>().ok() => {
                bail!("--compression {a} and --output compression={b} disagree; give one")
            }
            (Some(a), _) => a.clone(),
            (None, Some(b)) => b.clone(),
            (None, None) => "gzip".to_string(),
        };
        let compression: kiln_snapshotter::Compression = compression_name.parse().map_err(|e| anyhow!("--compression: {e}"))?;
        let compression_level = self.compression_level.or(image.compression_level);
        let format = match (image.oci_mediatypes, self.format.as_str()) {
            (Some(false), "oci") => "docker".to_string(),
            _ => self.format.clone(),
        };
        let compression_level = {
            use kiln_snapshotter::Compression as C;
            match (compression, compression_level) {
                (C::Gzip | C::Estargz, Some(l)) if !(0..=9).contains(&l) => bail!("--compression-level {l}: {} takes 0-9", compression.name()),
                (C::Zstd | C::ZstdChunked, Some(l)) if !(-7..=22).contains(&l) => {
                    bail!("--compression-level {l}: {} takes 1-22 (or -7..-1 for fast modes)", compression.name())
                }
                (C::None, Some(_)) => bail!("--compression-level: nothing to set with --compression none"),
                (_, l) => l,
            }
        };
        let soci = match (self.soci, compression, format.as_str()) {
            (false, _, _) => {
                if self.soci_span_size.is_some() || self.soci_min_layer_size.is_some() {
                    bail!("--soci-span-size and --soci-min-layer-size need --soci");
                }
                None
            }
            (true, kiln_snapshotter::Compression::Gzip, "oci") => Some(crate::options::SociOptions {
                span: match self.soci_span_size {
                    Some(0) => bail!("--soci-span-size 0: expected a number of bytes > 0"),
                    Some(s) => s,
                    None => kiln_snapshotter::lazy::soci::DEFAULT_SPAN,
                },
                min_layer_size: self.soci_min_layer_size.unwrap_or(kiln_snapshotter::lazy::soci::DEFAULT_MIN_LAYER_SIZE),
            }),
            (true, kiln_snapshotter::Compression::Gzip, _) => bail!("--soci: a SOCI index is an OCI artifact; it needs --format oci"),
            (true, c, _) => bail!("--soci indexes gzip layers; --compression {} has none (use --compression gzip)", c.name()),
            };
        Ok(LayerFormat { compression, compression_level, force_compression: self.force_compression || image.force_compression, soci, format })
    }

    pub fn validate(self) -> Result<BuildOptions> {
        let (cache_from, cache_to, explain) = self.cache_options()?;
        if !self.context.is_dir() {
            bail!("build context {:?} is not a directory", self.context);
        }
        let context = self.context.canonicalize().with_context(|| format!("resolving context {:?}", self.context))?;
        let dockerfile = self.dockerfile.path(&context);
        let (tags, outputs, image, push) = self.destinations()?;
        let layers = self.layer_format(&image)?;
        let to_stdout = outputs
            .iter()
            .filter(|o| match o {
                Output::OciLayout { dest } | Output::DockerArchive { dest } | Output::Tar { dest } | Output::Local { dest } => dest.as_os_str() == "-",
            })
            .count();
        if to_stdout > 1 || (to_stdout == 1 && self.quiet) {
            bail!("only one of -q and the --output with dest=- can write to stdout");
        }
        if outputs.iter().any(|o| matches!(o, Output::Local { dest } if dest.as_os_str() == "-")) {
            bail!("--output type=local needs a directory, not -; use type=tar,dest=- for a tar on stdout");
        }
        let build_args = parse_build_args(&self.stage.build_args)?;
        let mut platforms = Vec::new();
        for p in &self.platforms {
            for q in kiln_oci::Platform::parse_list(p).with_context(|| format!("--platform {p}"))? {
                if !platforms.contains(&q) {
                    platforms.push(q);
                }
            }
        }
        // The environment's SOURCE_DATE_EPOCH; `--build-arg SOURCE_DATE_EPOCH=` (what
        // buildx passes) and a global ARG default are the frontend's to resolve and
        // validate (a number, `context` or a stage name), and win over it.
        let epoch_text = std::env::var("SOURCE_DATE_EPOCH").ok().or(self.epoch_default);
        let source_date_epoch = match epoch_text {
            // BuildKit's `context`: the epoch of a Git or HTTP context; a local
            // context has none, so the build has no epoch.
            Some(v) if v == "context" => None,
            Some(v) if !v.is_empty() => Some(
                v.parse::<i64>()
                    .map_err(|_| anyhow!("invalid SOURCE_DATE_EPOCH {v:?}: expected a number of seconds since 1970"))?,
            ),
            _ => None,
        };
        let network_none = match self.network.as_str() {
            "default" | "host" => false,
            "none" => true,
            n => bail!("--network {n:?}: expected default, none or host"),
        };
        let extra_hosts = self
            .add_hosts
            .iter()
            .map(|h| match h.split_once([':', '=']) {
                // RUN steps share the host's network (unless --network none), so the
                // host is at its loopback address; Docker's `host-gateway` means that.
                Some((host, "host-gateway")) if !host.is_empty() => Ok((host.to_string(), "127.0.0.1".to_string())),
                Some((host, ip)) if !host.is_empty() && ip.parse::<std::net::IpAddr>().is_ok() => Ok((host.to_string(), ip.to_string())),
                _ => Err(anyhow!("--add-host {h:?}: expected HOST:IP (e.g. db:10.0.0.5)")),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BuildOptions {
            context,
            dockerfile,
            tags,
            push,
            outputs,
            build_args,
            target: self.stage.target,
            digest_file: self.digest_file,
            metadata_file: self.metadata_file,
            iidfile: self.iidfile,
            format: layers.format.parse().map_err(|e| anyhow!("--format: {e}"))?,
            progress: if self.quiet { crate::progress::Mode::Quiet } else { self.progress.parse().map_err(|e| anyhow!("--progress: {e}"))? },
            print_id: self.quiet,
            isolation_choice: self.isolation.parse().map_err(|e| anyhow!("--isolation: {e}"))?,
            isolation: crate::options::Isolation::Rootless,
            no_cache: self.no_cache,
            pull: self.pull.parse().map_err(|e| anyhow!("--pull: {e}"))?,
            squash: self.squash,
            shm_size: self.shm_size.as_deref().map(|s| crate::options::parse_ram(s).map_err(|e| anyhow!("--shm-size {e}"))).transpose()?,
            ulimits: self.ulimits.iter().map(|u| crate::options::Ulimit::parse(u).map_err(|e| anyhow!("--ulimit {e}"))).collect::<Result<_>>()?,
            annotations: self.annotations.iter().map(|a| crate::options::Annotation::parse(a).map_err(|e| anyhow!("--annotation {e}"))).collect::<Result<_>>()?,
            named_contexts: self
                .build_contexts
                .iter()
                .map(|c| match c.split_once('=') {
                    Some((n, v)) if !n.is_empty() => crate::options::NamedContext::parse(v).map(|v| (n.to_string(), v)).map_err(|e| anyhow!("--build-context {n}: {e}")),
                    _ => Err(anyhow!("--build-context {c:?}: expected NAME=VALUE")),
                })
                .collect::<Result<_>>()?,
            no_cache_filter: self.no_cache_filter,
            cache_ttl: match &self.cache_ttl {
                Some(t) => Some(kiln_cache::gc::parse_duration(t).ok_or_else(|| anyhow!("--cache-ttl {t:?}: expected a duration like 168h or 7d"))?),
                None => None,
            },
            cache_repo: match &self.cache_repo {
                Some(r) => Some(r.parse::<Reference>().map_err(|e| anyhow!("--cache-repo {r}: {e}"))?),
                None => None,
            },
            cache_repo_steps: crate::options::CacheRepoSteps::parse(&self.cache_repo_steps).map_err(|e| anyhow!("--cache-repo-steps {e}"))?,
            base_image_cache: self.base_image_cache,
            all_stages: self.all_stages,
            log_timestamp: self.log_timestamp,
            ignore_paths: self.ignore_paths.iter().map(|p| parse_ignore_path(p)).collect::<Result<_>>()?,
            attestations: crate::options::attest::Attestations::parse(self.sbom.as_deref(), self.provenance.as_deref(), &self.attest, self.attest_style.as_deref())
                .map_err(|e| anyhow!("{e}"))?,
            context_uri: std::env::var(crate::options::attest::CONTEXT_URI_ENV).ok().filter(|v| !v.is_empty()),
            context_commit: std::env::var(crate::options::attest::CONTEXT_COMMIT_ENV).ok().filter(|v| !v.is_empty()),
            explain,
            cache_from,
            cache_inline: cache_to.as_ref().is_some_and(crate::options::cachespec::CacheTo::is_inline),
            cache_to: cache_to.and_then(crate::options::cachespec::CacheTo::into_export),
            registry: self.registry.to_options()?,
            labels: self
                .labels
                .iter()
                .map(|l| match l.split_once('=') {
                    Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                    _ => Err(anyhow!("--label {l:?}: expected KEY=VALUE")),
                })
                .collect::<Result<_>>()?,
            secrets: self.secrets.iter().map(|s| crate::cli::values::parse_secret(s)).collect::<Result<_>>()?,
            ssh: self.ssh.iter().map(|s| crate::cli::values::parse_ssh(s)).collect::<Result<_>>()?,
            platforms,
            state_dir: state_dir()?,
            source_date_epoch,
            log_filter: self.log_filter,
            network_none,
            extra_hosts,
            snapshotter: match self.snapshotter.as_str() {
                "auto" => None,
                s => Some(s.parse().map_err(|e| anyhow!("--snapshotter: {e}"))?),
            },
            compression: layers.compression,
            compression_level: layers.compression_level,
            force_compression: layers.force_compression,
            soci: layers.soci,
        })
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Output;

    #[test]
    fn parses_snapshotter_and_compression_flags() {
        let ctx = std::env::temp_dir();
        let parse = |extra: &[&str]| {
            let mut argv = vec!["kiln", "build"];
            argv.extend_from_slice(extra);
            argv.push(ctx.to_str().unwrap());
            match Cli::try_parse_from(argv).unwrap() {
                Cli { command: CommandKind::Build(b) } => b.validate(),
                _ => unreachable!(),
            }
        };
        let o = parse(&[]).unwrap();
        assert_eq!((o.snapshotter, o.compression, o.compression_level), (None, kiln_snapshotter::Compression::Gzip, None));
        let o = parse(&["--snapshotter", "native", "--compression", "zstd", "--compression-level", "19"]).unwrap();
        assert_eq!(o.snapshotter, Some(kiln_snapshotter::SnapshotterKind::Native));
        assert_eq!((o.compression, o.compression_level), (kiln_snapshotter::Compression::Zstd, Some(19)));
        assert_eq!(parse(&["--snapshotter", "overlay"]).unwrap().snapshotter, Some(kiln_snapshotter::SnapshotterKind::Overlay));
        assert_eq!(parse(&["--compression", "none"]).unwrap().compression, kiln_snapshotter::Compression::None);
        for (bad, flag) in [
            (&["--snapshotter", "vfs"][..], "--snapshotter"),
            (&["--compression", "lz4"][..], "--compression"),
            (&["--compression-level", "10"][..], "--compression-level"),
            (&["--compression", "none", "--compression-level", "1"][..], "--compression-level"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(flag), "{bad:?}: {e}");
        }
    }

    #[test]
    fn parses_oci_output() {
        assert_eq!(parse_output("type=oci,dest=/x").unwrap(), Output::OciLayout { dest: "/x".into() });
        assert_eq!(parse_output("-").unwrap(), Output::Tar { dest: "-".into() });
        assert_eq!(parse_output("out/dir").unwrap(), Output::Local { dest: "out/dir".into() });
        assert_eq!(parse_output("type=tar,dest=r.tar").unwrap(), Output::Tar { dest: "r.tar".into() });
        assert!(parse_output("type=oci").unwrap_err().to_string().contains("dest="));
        assert_eq!(parse_output("type=docker,dest=/x.tar").unwrap(), Output::DockerArchive { dest: "/x.tar".into() });
        assert_eq!(parse_output("type=local,dest=/r").unwrap(), Output::Local { dest: "/r".into() });
        assert!(parse_output("type=zip,dest=x").unwrap_err().to_string().contains("unsupported type"));
        assert!(parse_output("dest=x").unwrap_err().to_string().contains("missing type"));
        assert!(parse_output("type=oci,foo=1").unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn annotations_parse_as_buildkit() {
        use crate::options::{Annotation, AnnotationTarget::*};
        let a = Annotation::parse("org.opencontainers.image.source=https://x:1/y").unwrap();
        assert_eq!((a.targets.as_slice(), a.key.as_str(), a.value.as_str()), (&[Manifest][..], "org.opencontainers.image.source", "https://x:1/y"));
        let a = Annotation::parse("index,manifest-descriptor:k=v").unwrap();
        assert_eq!(a.targets, [Index, ManifestDescriptor]);
        let a = Annotation::parse("manifest[linux/arm64]:k=v").unwrap();
        assert_eq!(a.platform.as_ref().map(|p| p.architecture.as_str()), Some("arm64"));
        let arm = kiln_oci::Platform::parse("linux/arm64").unwrap();
        let amd = kiln_oci::Platform::parse("linux/amd64").unwrap();
        assert!(a.applies(Manifest, Some(&arm)) && !a.applies(Manifest, Some(&amd)) && !a.applies(Index, None));
        assert!(Annotation::parse("bogus:k=v").unwrap_err().contains("unknown annotation type"));
        assert!(Annotation::parse("novalue").is_err());
        assert!(Annotation::parse("manifest[linux/arm64:k=v").unwrap_err().contains("unclosed"));
    }

    #[test]
    fn ulimits_and_shm_sizes_parse_as_docker() {
        use crate::options::{parse_ram, Ulimit};
        assert_eq!(Ulimit::parse("nofile=1024:2048").unwrap(), Ulimit { name: "nofile".into(), soft: 1024, hard: 2048 });
        assert_eq!(Ulimit::parse("core=-1").unwrap().hard, nix::sys::resource::RLIM_INFINITY);
        assert!(Ulimit::parse("nofiles=1").unwrap_err().contains("did you mean nofile"));
        assert!(Ulimit::parse("nofile=9:3").unwrap_err().contains("above"));
        assert_eq!(parse_ram("64m").unwrap(), 64 << 20);
        assert_eq!(parse_ram("1g").unwrap(), 1 << 30);
        assert_eq!(parse_ram("512").unwrap(), 512);
        assert!(parse_ram("12q").is_err());
    }
}
