//! Runs a build graph: pulls bases, executes each needed stage's steps in order,
//! assembles the image and hands it to the exporters.
//!
//! The walking skeleton executes stages one after another; the graph already carries
//! the dependencies a parallel solver (and the layer cache) will use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use kiln_cache::reference::Reference;
use kiln_cache::registry::{Registry, RegistryOptions};
use kiln_cache::store::ContentStore;
use kiln_frontend::{Base, BuildGraph, LowerOptions, Platform, Stage, Step, StepKind};
use kiln_oci::media::{self, LayerCompression};
use kiln_oci::ImageConfig;
use kiln_snapshotter::diff::{write_layer, DiffOptions};
use kiln_snapshotter::snapshots::{ActiveSnapshot, SnapshotStore};

use crate::cli::BuildOptions;
use crate::copy::{self, CopyRequest, Owner};
use crate::export;
use crate::image::{resolve_chown, resolve_user, ImageState, Layer};
use crate::progress::Progress;
use crate::sandbox::{self, RunSpec, MOUNT_TARGETS};
use crate::timefmt;

/// The platform kiln runs on, as OCI names it.
pub fn host_platform() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    Platform { os: "linux".into(), architecture: arch.into(), variant: None }
}

/// A base image after pulling: its config and layers, in the content store.
struct Pulled {
    reference: Reference,
    state: ImageState,
}

struct Ctx {
    opts: BuildOptions,
    store: ContentStore,
    snaps: SnapshotStore,
    progress: Progress,
    created: String,
    platform: Platform,
    scratch: PathBuf,
}

pub async fn build(opts: BuildOptions) -> Result<()> {
    let text = std::fs::read_to_string(&opts.dockerfile)
        .with_context(|| format!("reading Dockerfile {}", opts.dockerfile.display()))?;
    let file_name = opts.dockerfile.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "Dockerfile".into());
    let df = kiln_frontend::parse(&file_name, &text).map_err(|e| anyhow!("{e}"))?;
    let platform = host_platform();
    let mut lower_opts = LowerOptions {
        build_args: opts.build_args.clone(),
        target: opts.target.clone(),
        target_platform: platform.clone(),
        build_platform: platform.clone(),
        base_env: BTreeMap::new(),
    };

    std::fs::create_dir_all(&opts.state_dir).with_context(|| format!("creating {}", opts.state_dir.display()))?;
    let store = ContentStore::open(&opts.state_dir.join("content"))?;
    let snaps = SnapshotStore::open(&opts.state_dir.join("snapshots"))?;
    let registry = Registry::new(RegistryOptions { insecure: opts.insecure_registries.clone() });

    // Base images first: their env takes part in lowering (`WORKDIR $HOME`).
    let mut pulled: BTreeMap<String, Pulled> = BTreeMap::new();
    for name in kiln_frontend::base_images(&df, &lower_opts).map_err(|e| anyhow!("{e}"))? {
        let reference: Reference = name.parse().map_err(|e| anyhow!("FROM {name}: {e}"))?;
        eprintln!("pulling {reference}");
        let img = registry
            .pull_image(&reference, &to_cache_platform(&platform), &store)
            .await
            .with_context(|| format!("pulling base image {reference}"))?;
        let layers = img
            .layers
            .iter()
            .zip(img.config.rootfs.diff_ids.iter())
            .map(|(d, diff_id)| {
                Ok(Layer {
                    media_type: oci_layer_type(&d.media_type().to_string()),
                    digest: d.digest().to_string().parse()?,
                    size: d.size(),
                    diff_id: diff_id.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if layers.len() != img.layers.len() {
            bail!("base image {reference}: its config lists {} diff_ids for {} layers", img.config.rootfs.diff_ids.len(), img.layers.len());
        }
        let env = img.config.config.as_ref().and_then(|c| c.env.clone()).unwrap_or_default();
        lower_opts.base_env.insert(name.clone(), env.iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect());
        pulled.insert(name, Pulled { reference, state: ImageState::new(img.config, layers) });
    }

    let graph = kiln_frontend::lower(&df, &lower_opts).map_err(|e| anyhow!("{e}"))?;
    let needed = graph.needed();
    let total: usize = needed.iter().map(|&i| 1 + graph.stages[i].steps.len()).sum();
    let created = timefmt::rfc3339(opts.source_date_epoch.unwrap_or_else(timefmt::now_secs));
    let scratch = opts.state_dir.join("tmp");
    std::fs::create_dir_all(&scratch)?;
    let mut cx = Ctx { opts, store, snaps, progress: Progress::new(total), created, platform, scratch };

    let mut results: BTreeMap<usize, ImageState> = BTreeMap::new();
    for &i in &needed {
        let state = run_stage(&mut cx, &graph, &graph.stages[i], &pulled, &results)?;
        results.insert(i, state);
    }
    let final_state = results.remove(&graph.target).context("target stage produced no image")?;
    let mount_from: Vec<Reference> = pulled.values().map(|p| p.reference.clone()).collect();
    export::export(&cx.opts, &cx.store, &registry, final_state, &mount_from).await
}

fn to_cache_platform(p: &Platform) -> kiln_oci::Platform {
    kiln_cache::parse_platform(&p.to_string()).unwrap_or_default()
}

/// Docker media types name the same bytes; the manifest we write is OCI.
fn oci_layer_type(mt: &str) -> String {
    match media::layer_compression(mt) {
        Some(LayerCompression::Gzip) => media::OCI_LAYER_GZIP.to_string(),
        Some(LayerCompression::Zstd) => media::OCI_LAYER_ZSTD.to_string(),
        Some(LayerCompression::None) => media::OCI_LAYER_TAR.to_string(),
        None => mt.to_string(),
    }
}

fn run_stage(
    cx: &mut Ctx,
    graph: &BuildGraph,
    stage: &Stage,
    pulled: &BTreeMap<String, Pulled>,
    results: &BTreeMap<usize, ImageState>,
) -> Result<ImageState> {
    let (from_text, mut state) = match &stage.base {
        Base::Scratch => {
            let config = ImageConfig {
                architecture: cx.platform.architecture.clone(),
                os: cx.platform.os.clone(),
                variant: cx.platform.variant.clone(),
                ..Default::default()
            };
            ("scratch".to_string(), ImageState::new(config, Vec::new()))
        }
        Base::Image(name) => {
            let p = pulled.get(name).with_context(|| format!("base image {name} was not pulled"))?;
            (name.clone(), p.state.clone())
        }
        Base::Stage(i) => {
            let s = results.get(i).with_context(|| format!("stage {i} has not been built"))?;
            (graph.stages[*i].name.clone().unwrap_or_else(|| i.to_string()), s.clone())
        }
    };
    state.cmd_set_here = false;
    let label = stage.name.as_ref().map(|n| format!(" AS {n}")).unwrap_or_default();
    cx.progress.step(&format!("FROM {from_text}{label}"));
    state.config.created = Some(cx.created.clone());

    for step in &stage.steps {
        let n = cx.progress.step(&step.source);
        let total = cx.progress.total();
        if state.apply_config_step(&step.kind) {
            state.push_history(&cx.created, &step.created_by, true);
            continue;
        }
        run_fs_step(cx, &mut state, step, results)
            .with_context(|| format!("step {n}/{total} ({}:{}) `{}`", step.loc.file, step.loc.line, one_line(&step.source)))?;
        state.push_history(&cx.created, &step.created_by, false);
    }
    Ok(state)
}

fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > 80 {
        let mut cut = 77;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &s[..cut])
    } else {
        s
    }
}

/// Make sure every layer of `state` is unpacked; return their directories, bottom first.
fn lower_dirs(cx: &Ctx, state: &ImageState) -> Result<Vec<PathBuf>> {
    state
        .layers
        .iter()
        .map(|l| {
            if let Some(p) = cx.snaps.layer(&l.diff_id) {
                return Ok(p);
            }
            let compression = media::layer_compression(&l.media_type)
                .with_context(|| format!("layer {} has unsupported media type {}", l.digest, l.media_type))?;
            let blob = cx.store.open_blob(&l.digest)?;
            cx.snaps
                .unpack(&l.diff_id, std::io::BufReader::new(blob), compression)
                .with_context(|| format!("unpacking layer {}", l.digest))
        })
        .collect()
}

fn run_fs_step(cx: &mut Ctx, state: &mut ImageState, step: &Step, results: &BTreeMap<usize, ImageState>) -> Result<()> {
    let lowers = lower_dirs(cx, state)?;
    let mut active = cx.snaps.prepare(&lowers)?;
    let root = active.merged().to_path_buf();
    let workdir = state.workdir();
    // Docker creates the working directory if the image lacks it.
    copy::mkdir_p(&root, Path::new(&workdir))?;

    match &step.kind {
        StepKind::Run { argv, build_env, network, mounts, .. } => {
            if !mounts.is_empty() {
                bail!("RUN --mount is not supported yet");
            }
            let run_as = resolve_user(&root, &state.user())?;
            for (target, is_dir) in MOUNT_TARGETS {
                active.create_stub(Path::new(target), *is_dir)?;
            }
            let mut env = state.env();
            for (k, v) in build_env {
                // ENV wins over ARG of the same name.
                if !env.iter().any(|e| e.split_once('=').map(|(ek, _)| ek) == Some(k.as_str())) {
                    env.push(format!("{k}={v}"));
                }
            }
            if !env.iter().any(|e| e.starts_with("PATH=")) {
                env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
            }
            let spec = RunSpec {
                rootfs: root.clone(),
                argv: argv.clone(),
                env,
                cwd: workdir.clone(),
                uid: run_as.uid,
                gid: run_as.gid,
                groups: run_as.groups,
                hostname: "kiln".into(),
                network_none: network.as_deref() == Some("none"),
            };
            let spec_path = cx.scratch.join(format!("run-{}.json", std::process::id()));
            let code = sandbox::run(&spec, &spec_path)?;
            if code != 0 {
                bail!("RUN failed: exit code {code}");
            }
            active.remove_stubs()?;
        }
        StepKind::Copy(spec) | StepKind::Add(spec) => {
            if spec.from.is_some() {
                let _ = results;
                bail!("COPY --from is not supported yet");
            }
            if !spec.heredocs.is_empty() {
                bail!("COPY from a heredoc is not supported yet");
            }
            if let StepKind::Add(_) = &step.kind {
                if spec.sources.iter().any(|s| s.contains("://")) {
                    bail!("ADD from a URL is not supported yet");
                }
            }
            let owner = match &spec.chown {
                Some(c) => resolve_chown(&root, c)?,
                None => Owner::default(),
            };
            let chmod = match &spec.chmod {
                Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| anyhow!("--chmod={m}: only octal modes are supported yet"))?),
                None => None,
            };
            let req = CopyRequest { context: &cx.opts.context, sources: &spec.sources, dest: &spec.dest, workdir: &workdir, owner, chmod };
            copy::copy_into(&root, &req)?;
            active.unmount()?;
        }
        _ => unreachable!("config-only steps are applied by ImageState"),
    }
    commit_layer(cx, state, active)
}

fn commit_layer(cx: &Ctx, state: &mut ImageState, mut active: ActiveSnapshot) -> Result<()> {
    active.unmount()?;
    let opts = DiffOptions { exclude: Vec::new(), source_date_epoch: cx.opts.source_date_epoch, gzip_level: None };
    let mut w = cx.store.writer()?;
    let digests = write_layer(active.upper(), &opts, &mut w).context("writing the layer")?;
    let (digest, size) = w.commit(Some(&digests.digest))?;
    cx.snaps.commit(active, &digests.diff_id)?;
    cx.progress.info(&format!("layer {} ({} bytes)", digest.short(), size));
    state.push_layer(Layer { media_type: media::OCI_LAYER_GZIP.to_string(), digest, size, diff_id: digests.diff_id });
    Ok(())
}
