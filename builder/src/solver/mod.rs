//! Runs a build graph: pulls bases, executes each needed stage's steps in order,
//! assembles the image and hands it to the exporters.
//!
//! Each target platform gets its own lowered graph; identical stage instances across
//! platforms (`FROM --platform=$BUILDPLATFORM` builder stages) are merged into one
//! job, and jobs run in parallel as soon as the stages they read are done.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use kiln_cache::reference::Reference;
use kiln_cache::registry::Registry;
use kiln_cache::store::ContentStore;
use kiln_frontend::{Base, BuildGraph, CopyFrom, LowerOptions, Network, Platform, Stage, StageIdx, Step, StepKind};
use kiln_oci::media::{self, LayerCompression};
use kiln_oci::ImageConfig;
use kiln_snapshotter::diff::{write_layer, DiffOptions};
use kiln_snapshotter::snapshots::{ActiveSnapshot, SnapshotStore};

use crate::options::BuildOptions;
use crate::steps::copy::{self, CopyRequest};
use crate::image::Owner;
use crate::export;
use crate::image::{resolve_chown, resolve_user, ImageState, Layer};
use crate::plan::keys::JobKeys;
use crate::progress::{self, StepRef};
use crate::exec::binfmt;
use crate::steps::runmounts;
use kiln_cache::layercache::{CacheKey, CacheOptions, CacheRecord, LayerCache, LayerRecord, LocalCache};
use kiln_cache::registrycache::RegistryCache;
use kiln_oci::Digest;
use crate::exec::sandbox::{self, RunSpec, MOUNT_TARGETS};
use crate::timefmt;
use crate::fsutil::next_id;

mod attest_inputs;
mod fs_step;
mod named;
mod squash;
mod prepare;
mod lazy;
mod leaves;
mod recompress;
mod rootfs;
mod schedule;
mod caches;
mod explain;
mod mountcache;
mod stage;
mod step_filter;
#[cfg(test)]
mod in_process_tests;

use fs_step::*;
pub use fs_step::RunFailed;
use prepare::*;
use lazy::*;
use rootfs::*;
use schedule::*;
use stage::*;

/// A base (or `COPY --from`) image after pulling, for one platform.
struct Pulled {
    state: ImageState,
    manifest_digest: String,
    /// Where the layers not in the store are pulled from when needed (`Ctx::ensure_blob`).
    layers_from: Option<Reference>,
}

/// Pulled images by (reference as written, platform).
type PulledMap = BTreeMap<(String, String), Pulled>;

pub(crate) struct Ctx {
    opts: BuildOptions,
    store: ContentStore,
    snaps: SnapshotStore,
    created: String,
    scratch: PathBuf,
    /// The context's `.dockerignore` (or `<Dockerfile>.dockerignore`).
    ignore: crate::context::dockerignore::Matcher,
    /// The context without what `ignore` excludes, for bind mounts: made on first use.
    context_view: std::sync::Mutex<Option<crate::context::view::ContextView>>,
    /// Layer caches, local first; `hits` says which one answered for a key.
    caches: Vec<Box<dyn LayerCache>>,
    hits: BTreeMap<String, (usize, CacheRecord)>,
    /// Every step's key, by job.
    keys: BTreeMap<JobId, JobKeys>,
    /// ADD URLs resolved before the build: their bodies are in the store.
    urls: BTreeMap<String, crate::steps::urlcache::Resolved>,
    /// Cached layers not downloaded yet (lazy: only when a later step needs them).
    lazy: std::sync::Mutex<BTreeMap<Digest, usize>>,
    /// Base image layers not downloaded yet: the repository that has each, its size.
    lazy_base: std::sync::Mutex<BTreeMap<Digest, (Reference, u64)>>,
    /// A skeleton's read of a base layer stores nothing (`lazy::skeleton_reads_stay_remote`).
    skeletons_only: bool,
    registry: Registry,
    /// Records of the steps that ran, stored in the caches after the build.
    new_records: std::sync::Mutex<Vec<CacheRecord>>,
    /// Jobs whose layers never leave this machine: kept uncompressed (`leaves`).
    stays: std::collections::BTreeSet<JobId>,
    /// Keys of the skeleton records this build made (`rootfs::make_skeleton`): part
    /// of a `mode=min` export, as the base they stand for is part of the image.
    skeleton_keys: std::sync::Mutex<Vec<String>>,
    /// The cache hits the build took (from any cache), for the exporting caches.
    used_hits: std::sync::Mutex<Vec<CacheRecord>>,
    /// Cache mounts the steps that ran used (`mountcache`).
    mounts_used: mountcache::MountsUsed,
    /// `--cache-to type=inline`: every record of the build by key (`caches::inline_records`).
    inline_records: std::sync::Mutex<BTreeMap<String, CacheRecord>>,
    /// Context files per COPY/ADD selection (path → digest), for miss explanations.
    context_files: BTreeMap<String, Vec<(String, String)>>,
    rt: tokio::runtime::Handle,
    /// Steps run and steps served from the cache, for the summary.
    counts: (std::sync::atomic::AtomicUsize, std::sync::atomic::AtomicUsize),
}

impl Ctx {
    /// The directory a bind mount of the context shows: the context itself when
    /// nothing is ignored, else the filtered view (made once per build).
    fn bind_context(&self) -> Result<PathBuf> {
        if self.ignore.is_empty() {
            return Ok(self.opts.context.clone());
        }
        let mut view = self.context_view.lock().expect("context view");
        if view.is_none() {
            let dir = self.scratch.join(format!("context-view-{}-{}", std::process::id(), crate::fsutil::next_id()));
            *view = Some(crate::context::view::ContextView::make(&self.opts.context, &self.ignore, dir)?);
        }
        Ok(view.as_ref().map(|v| v.path().to_path_buf()).unwrap_or_default())
    }

}

/// A scratch directory removed when dropped.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One stage to execute for one platform. Identical stage instances of different
/// target platforms (`FROM --platform=$BUILDPLATFORM`) become one job.
/// A job's index in the build's merged job list (one stage instance for one
/// platform; equal instances of several platforms are one job).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct JobId(pub usize);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

struct Job {
    stage: Stage,
    platform: Platform,
    /// Stage index (in its graph) → job id, for FROM and COPY --from.
    stage_jobs: BTreeMap<StageIdx, JobId>,
    /// Jobs that must finish first.
    deps: Vec<JobId>,
    /// Progress: label prefix, number of the stage's FROM step, steps in the target.
    label: String,
    first_step: usize,
    total_steps: usize,
    /// BuildKit's stage name in step names (`base`, `stage-1`), when the Dockerfile
    /// has more than one stage.
    stage_name: Option<String>,
}

/// What the per-target lowering produced.
struct TargetPlan {
    platform: Platform,
    graph: BuildGraph,
    /// Stage index → job id.
    jobs: BTreeMap<StageIdx, JobId>,
}

impl TargetPlan {
    /// The jobs whose layers the target's image holds: the target stage's and those
    /// of the stages it is built `FROM`, target first.
    fn image_jobs(&self) -> Vec<JobId> {
        let mut jobs = Vec::new();
        let mut stage = Some(self.graph.target);
        while let Some(s) = stage {
            jobs.extend(self.jobs.get(&s).copied());
            stage = match self.graph.stages.get(s.0).map(|st| &st.base) {
                Some(Base::Stage(parent)) => Some(*parent),
                _ => None,
            };
        }
        jobs
    }
}

pub async fn build(mut opts: BuildOptions) -> Result<()> {
    let started = timefmt::now_secs();
    let text = crate::fsutil::read_dockerfile(&opts.dockerfile)?;
    let file_name = opts.dockerfile.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "Dockerfile".into());
    let df = kiln_frontend::parse(&file_name, &text).map_err(|e| anyhow!("{e}"))?;
    check_syntax_directive(&df)?;
    let host = Platform::host();
    let targets = if opts.platforms.is_empty() { vec![host.clone()] } else { opts.platforms.clone() };
    let epoch_urls = epoch_from_stage(&df, &mut opts, &host, &targets[0]).await?;

    std::fs::create_dir_all(&opts.state_dir).with_context(|| format!("creating {}", opts.state_dir.display()))?;
    let store = ContentStore::open(&opts.state_dir.join("content"))?;
    let snaps = SnapshotStore::open(&opts.state_dir.join("snapshots"))?;
    let registry = Registry::new(opts.registry.clone());

    let mut pulled: PulledMap = BTreeMap::new();
    let mut plans = plan_targets(&df, &opts, &host, &targets, &registry, &store, &mut pulled).await?;
    let jobs = merge_jobs(&mut plans)?;
    // Remote ADD sources are resolved (downloaded or revalidated) before the keys,
    // which hash their content.
    let urls: Vec<String> = jobs
        .iter()
        .flat_map(|j| j.stage.steps.iter().flat_map(|s| crate::plan::keys::resolved_urls(&s.kind)))
        .map(str::to_string)
        .collect();
    let resolved = {
        let (dir, store) = (opts.state_dir.clone(), store.clone());
        tokio::task::spawn_blocking(move || crate::steps::urlcache::resolve_all(&dir, &store, &urls, epoch_urls))
            .await
            .context("resolving ADD URLs was interrupted")??
    };
    // SOURCE_DATE_EPOCH as the frontend resolved it (a --build-arg, else a global
    // ARG default; BuildKit's rules) wins over the environment's. A stage whose
    // source gave no time leaves the epoch unset.
    match plans.first().and_then(|p| p.graph.source_date_epoch.clone()) {
        Some(kiln_frontend::SourceDateEpoch::Seconds(n)) => opts.source_date_epoch = Some(n),
        Some(kiln_frontend::SourceDateEpoch::Context) => opts.source_date_epoch = None,
        Some(kiln_frontend::SourceDateEpoch::Stage(_)) | None => {}
    }
    let created = timefmt::rfc3339(opts.source_date_epoch.unwrap_or_else(timefmt::now_secs));
    let scratch = opts.state_dir.join("tmp");
    std::fs::create_dir_all(&scratch)?;
    crate::fsutil::remove_dead_builds_scratch(&scratch);
    let ignore = crate::context::dockerignore::load_for(&opts.context, &opts.dockerfile)?;

    let caches = caches::layer_caches(&opts, &store, &registry)?;
    let (keys, hits, context_files) = keys_and_hits(&opts, &jobs, &pulled, &resolved, &ignore, &caches).await?;
    for notice in caches.iter().flat_map(|c| c.take_notices()) {
        progress::get().warn(&notice);
    }
    let lazy: BTreeMap<Digest, usize> =
        hits.values().filter_map(|(i, r)| r.layer.as_ref().filter(|l| !store.has(&l.digest)).map(|l| (l.digest.clone(), *i))).collect();
    let lazy_base = lazy::base_layers_to_pull(&pulled, &store);
    let (stays, skeletons_only) = (leaves::jobs_that_stay(&opts, &plans, &jobs), lazy::skeleton_reads_stay_remote(&opts, &jobs, &pulled));
    let cx = Ctx {
        opts,
        store,
        snaps,
        created,
        scratch,
        ignore,
        context_view: std::sync::Mutex::new(None),
        caches,
        hits,
        keys,
        urls: resolved,
        lazy: std::sync::Mutex::new(lazy),
        lazy_base: std::sync::Mutex::new(lazy_base),
        skeletons_only,
        registry: registry.clone(),
        new_records: std::sync::Mutex::new(Vec::new()),
        used_hits: std::sync::Mutex::new(Vec::new()),
        skeleton_keys: Default::default(),
        stays,
        mounts_used: Default::default(),
        inline_records: Default::default(),
        context_files,
        rt: tokio::runtime::Handle::current(),
        counts: Default::default(),
    };

    // Provenance facts are known before the jobs move to their thread (finish time
    // is set at export).
    let mut facts = cx.opts.attestations.provenance.is_some().then(|| attest_inputs::facts(&cx, &jobs, &text, started));
    // --squash keeps the base image's layers: how many, per target.
    let squash_keep: Vec<usize> = plans.iter().map(|p| squash::base_layers(&p.graph, p.graph.target, &pulled, &p.platform.to_string())).collect();
    let (cx, results, pulled) = tokio::task::spawn_blocking(move || {
        let r = run_jobs(&cx, &jobs, &pulled).and_then(|res| mountcache::pack_used(&cx).map(|()| res));
        let _ = &cx.keys;
        r.map(|res| (cx, res, pulled))
    })
    .await
    .context("the build was interrupted")??;

    caches::write_caches(&cx, &plans).await?;

    let images = final_images(&cx, &plans, &results, &squash_keep)?;
    // Outputs of the root filesystem: they mount the layers.
    let rootfs_outputs: Vec<crate::options::Output> = cx
        .opts
        .outputs
        .iter()
        .filter(|o| matches!(o, crate::options::Output::Local { .. } | crate::options::Output::Tar { .. }))
        .cloned()
        .collect();
    let wants_attestations = cx.opts.attestations.any();
    let (cx, images, plans, gathered) = if rootfs_outputs.is_empty() && !wants_attestations {
        (cx, images, plans, None)
    } else {
        tokio::task::spawn_blocking(move || -> Result<_> {
            for out in &rootfs_outputs {
                match out {
                    crate::options::Output::Local { dest } => export_local(&cx, &images, dest)?,
                    crate::options::Output::Tar { dest } => crate::export::rootfs_tar::write(dest, &rootfs_views(&cx, &images)?)?,
                    _ => {}
                }
            }
            let gathered = if wants_attestations { Some(attest_inputs::gather(&cx, &plans, &results, &images, &pulled)?) } else { None };
            Ok((cx, images, plans, gathered))
        })
        .await
        .context("the export was interrupted")??
    };
    let attest_input = gathered.map(|g| {
        let mut facts = facts.take().unwrap_or_default();
        facts.finished = timefmt::now_secs();
        crate::export::attach::AttestInput { scans: g.scans, materials: g.materials, facts, created: cx.created.clone() }
    });
    let mount_from = caches::push_mount_sources(&cx, &plans);
    // Outputs written from the store need every blob; a push only needs the ones
    // the registry cannot mount, so it fetches lazily cached layers only on demand.
    // A local name (`-t` without `--push`) is an output of the store too.
    let needs_blobs = cx.opts.outputs.iter().any(|o| !matches!(o, crate::options::Output::Local { .. } | crate::options::Output::Tar { .. }))
        || export::names_locally(&cx.opts);
    if needs_blobs {
        fetch_lazy(&cx).await?;
    }
    let digest = match export::export(&cx.opts, &cx.store, &registry, images.clone(), &mount_from, attest_input.as_ref()).await {
        Err(e) if (!cx.lazy.lock().expect("lazy map").is_empty() || !cx.lazy_base.lock().expect("lazy base map").is_empty()) && missing_blob(&e) => {
            fetch_lazy(&cx).await?;
            export::export(&cx.opts, &cx.store, &registry, images, &mount_from, attest_input.as_ref()).await?
        }
        other => other?,
    };
    let ran = cx.counts.0.load(std::sync::atomic::Ordering::Relaxed);
    let cached = cx.counts.1.load(std::sync::atomic::Ordering::Relaxed);
    progress::get().summary(&digest.to_string(), ran, cached);
    Ok(())
}

/// Each target's image: its stage's result with `--label`s, squashed with `--squash`.
fn final_images(cx: &Ctx, plans: &[TargetPlan], results: &BTreeMap<JobId, ImageState>, squash_keep: &[usize]) -> Result<Vec<(Platform, ImageState)>> {
    let mut images = Vec::new();
    for (n, plan) in plans.iter().enumerate() {
        let job = plan.jobs.get(&plan.graph.target).context("target stage was not scheduled")?;
        let mut state = results.get(job).context("target stage produced no image")?.clone();
        if !cx.opts.labels.is_empty() {
            let labels = state.config.run_config_mut().labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in &cx.opts.labels {
                labels.insert(k.clone(), v.clone());
            }
        }
        if cx.opts.cache_inline {
            state.config.extra.insert(kiln_cache::registrycache::RECORDS_FIELD.to_string(), caches::inline_records(cx, plan));
        }
        if cx.opts.squash {
            let keep = squash_keep[n];
            let cx2 = cx;
            state = tokio::task::block_in_place(|| -> Result<ImageState> {
                squash::squash(cx2, &mut state, keep)?;
                Ok(state)
            })?;
        }
        tokio::task::block_in_place(|| recompress::force(cx, &mut state))?;
        images.push((plan.platform.clone(), state));
    }
    Ok(images)
}

/// Lower the Dockerfile once per target platform, pulling the bases each needs.
async fn plan_targets(
    df: &kiln_frontend::Dockerfile,
    opts: &BuildOptions,
    host: &Platform,
    targets: &[Platform],
    registry: &Registry,
    store: &ContentStore,
    pulled: &mut PulledMap,
) -> Result<Vec<TargetPlan>> {
    // Lower once per target platform. Base images take part in lowering (their env
    // expands `WORKDIR $HOME`), and which platform of a base to pull depends on the
    // stage's `FROM --platform`: so lower once without base env to learn the stage
    // platforms, pull, then lower for real.
    let mut plans = Vec::new();
    for target in targets {
        let mut lower_opts = LowerOptions {
            build_args: opts.build_args.clone(),
            target: opts.target.clone(),
            target_platform: target.clone(),
            build_platform: host.clone(),
            all_stages: opts.all_stages,
            ..Default::default()
        };
        let wanted = match kiln_frontend::lower(df, &lower_opts) {
            Ok(g) => {
                // Say that a foreign platform cannot run before pulling anything.
                for &i in &g.needed() {
                    let st = &g.stages[i];
                    if st.steps.iter().any(|s| matches!(s.kind, StepKind::Run { .. })) {
                        binfmt::ensure_runnable(&stage_platform(st, target)?)?;
                    }
                }
                images_needed(&g, target)?
            }
            Err(_) => kiln_frontend::base_images(df, &lower_opts)
                .map_err(|e| anyhow!("{e}"))?
                .into_iter()
                .map(|r| (r, target.clone()))
                .collect(),
        };
        pull_all(registry, store, opts, pulled, &wanted).await.map_err(|e| explain_pull_error(e, df))?;
        for ((name, _), p) in pulled.iter() {
            let env = p.state.env();
            lower_opts.base_env.entry(name.clone()).or_insert_with(|| {
                env.iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
            });
            // ONBUILD triggers of a base image run first in a stage built on it.
            let on_build = p.state.config.config.as_ref().and_then(|c| c.on_build.clone()).unwrap_or_default();
            lower_opts.base_onbuild.entry(name.clone()).or_insert(on_build);
        }
        let graph = kiln_frontend::lower(df, &lower_opts).map_err(|e| anyhow!("{e}"))?;
        let wanted = images_needed(&graph, target)?;
        pull_all(registry, store, opts, pulled, &wanted).await.map_err(|e| explain_pull_error(e, df))?;
        plans.push(TargetPlan { platform: target.clone(), graph, jobs: BTreeMap::new() });
    }

    Ok(plans)
}

/// The jobs of every target plan: identical stage instances become one job;
/// a foreign RUN needs an emulator, said before any work.
fn merge_jobs(plans: &mut [TargetPlan]) -> Result<Vec<Job>> {
    let multi = plans.len() > 1;
    let mut jobs: Vec<Job> = Vec::new();
    let mut by_fingerprint: BTreeMap<String, JobId> = BTreeMap::new();
    for plan in plans.iter_mut() {
        let needed = plan.graph.needed();
        let total: usize = needed.iter().map(|&i| 1 + plan.graph.stages[i].steps.len()).sum();
        let mut first_step = 1;
        let mut fingerprints: BTreeMap<StageIdx, String> = BTreeMap::new();
        for &i in &needed {
            let stage = &plan.graph.stages[i];
            let stage_platform = stage_platform(stage, &plan.platform)?;
            let fp = fingerprint(stage, &stage_platform, &fingerprints)?;
            fingerprints.insert(i, fp.clone());
            let id = match by_fingerprint.get(&fp) {
                Some(&id) => id,
                None => {
                    let stage_jobs: BTreeMap<StageIdx, JobId> = stage.deps.iter().filter_map(|d| plan.jobs.get(d).map(|j| (*d, *j))).collect();
                    let label = if multi { format!("{} ", (&plan.platform).to_string()) } else { String::new() };
                    jobs.push(Job {
                        stage: stage.clone(),
                        platform: stage_platform.clone(),
                        deps: stage_jobs.values().copied().collect(),
                        stage_jobs,
                        label,
                        first_step,
                        total_steps: total,
                        stage_name: (plan.graph.stages.len() > 1)
                            .then(|| stage.name.clone().unwrap_or_else(|| format!("stage-{i}"))),
                    });
                    let id = JobId(jobs.len() - 1);
                    by_fingerprint.insert(fp, id);
                    id
                }
            };
            plan.jobs.insert(i, id);
            first_step += 1 + stage.steps.len();
        }
    }
    // Foreign RUN steps need an emulator: say so before doing any work.
    for job in &jobs {
        if job.stage.steps.iter().any(|s| matches!(s.kind, StepKind::Run { .. })) {
            binfmt::ensure_runnable(&job.platform)?;
        }
    }

    Ok(jobs)
}

/// Hits of the layer caches, by key.
type Hits = BTreeMap<String, (usize, CacheRecord)>;

/// Every step key up front, and the caches' hits for them (module invariant).
async fn keys_and_hits(
    opts: &BuildOptions,
    jobs: &[Job],
    pulled: &PulledMap,
    resolved: &BTreeMap<String, crate::steps::urlcache::Resolved>,
    ignore: &crate::context::dockerignore::Matcher,
    caches: &[Box<dyn LayerCache>],
) -> Result<(BTreeMap<JobId, JobKeys>, Hits, BTreeMap<String, Vec<(String, String)>>)> {
    // Every key up front: the context is hashed once (incrementally, with a stat
    // cache), then all keys are probed in parallel before anything runs.
    let hasher_ignore = ignore.clone();
    let hasher_cache = crate::context::hasher::ContextHasher::cache_dir_for(&opts.state_dir, &opts.context);
    let mut hasher = crate::context::hasher::ContextHasher::new(&opts.context, hasher_ignore, Some(&hasher_cache))?;
    hasher.set_allow_empty_wildcard(true);
    let mut keys: BTreeMap<JobId, JobKeys> = BTreeMap::new();
    for (id, job) in jobs.iter().enumerate() {
        let mut ki = KeySources {
            hasher: &mut hasher,
            pulled,
            keys: &keys,
            job,
            platform: job.platform.to_string(),
            urls: resolved,
            ignore_paths: &opts.ignore_paths,
            compression: opts.compression,
            soci_span: opts.soci.as_ref().map(|s| s.span),
        };
        let k = crate::plan::keys::job_keys(&job.stage, &job.platform.to_string(), &mut ki)?;
        keys.insert(JobId(id), k);
    }
    let _ = hasher.save();
    let context_files = hasher.take_listings();
    let mut hits: BTreeMap<String, (usize, CacheRecord)> = BTreeMap::new();
    if !opts.no_cache {
        let mut wanted: Vec<CacheKey> = Vec::new();
        for (id, job) in jobs.iter().enumerate() {
            if job.stage.name.as_ref().is_some_and(|n| opts.no_cache_filter.contains(n)) {
                continue;
            }
            for (step, key) in job.stage.steps.iter().zip(&keys[&JobId(id)].steps) {
                let fs = matches!(step.kind, StepKind::Run { .. } | StepKind::Copy(_) | StepKind::Add(_))
                    || workdir_layer(&step.kind);
                if fs && crate::plan::keys::cacheable(&step.kind) {
                    wanted.push(key.clone());
                }
            }
        }
        for (i, cache) in caches.iter().enumerate() {
            let missing: Vec<CacheKey> = wanted.iter().filter(|k| !hits.contains_key(k.hex())).cloned().collect();
            if missing.is_empty() {
                break;
            }
            let t0 = std::time::Instant::now();
            let found = cache.probe_many(&missing).await;
            // bench/ci-cache.py reads this line (probe cost of a cache).
            tracing::debug!(cache = i, keys = missing.len(), hits = found.iter().flatten().count(), ms = t0.elapsed().as_secs_f64() * 1000.0, "probed");
            for (k, r) in missing.iter().zip(found) {
                if let Some(r) = r.filter(|r| r.layer.is_some() && r.diff_id.is_some()) {
                    hits.insert(k.hex().to_string(), (i, r));
                }
            }
        }
    }
    Ok((keys, hits, context_files))
}

/// `--output type=local,dest=DIR`: the final root filesystem, owned by the invoking
/// user (ownership inside the image cannot be kept outside the namespace), one
/// subdirectory per platform (`linux_arm64`) when there are several.
/// Each platform's final rootfs, mounted, with the directory it has in a
/// multi-platform output (`linux_arm64`; none for one platform, as BuildKit).
fn rootfs_views(cx: &Ctx, images: &[(Platform, ImageState)]) -> Result<Vec<(Option<String>, ActiveSnapshot)>> {
    let mut out = Vec::new();
    for (p, state) in images {
        let lowers = lower_dirs(cx, state)?;
        let dir = (images.len() > 1).then(|| p.to_string().replace('/', "_"));
        out.push((dir, cx.snaps.prepare(&lowers)?));
    }
    Ok(out)
}

fn export_local(cx: &Ctx, images: &[(Platform, ImageState)], dest: &Path) -> Result<()> {
    for (p, state) in images {
        let target = if images.len() > 1 {
            dest.join((p).to_string().replace('/', "_"))
        } else {
            dest.to_path_buf()
        };
        std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
        let lowers = lower_dirs(cx, state)?;
        let snap = cx.snaps.prepare(&lowers)?;
        let sources = vec![".".to_string()];
        let req = CopyRequest::whole_dir(snap.merged(), &sources, "/", Some(Owner::default()));
        copy::copy_into(&target, &req).with_context(|| format!("writing the rootfs to {}", target.display()))?;
        progress::get().info("output", &format!("wrote rootfs {} ({})", target.display(), (p).to_string()));
    }
    Ok(())
}

/// The base-image repositories a push can mount blobs from.
fn mount_sources(plans: &[TargetPlan]) -> Vec<Reference> {
    let mut out: Vec<Reference> = Vec::new();
    for st in plans.iter().flat_map(|p| p.graph.stages.iter()) {
        if let Base::Image(r) = &st.base {
            if let Ok(r) = r.parse::<Reference>() {
                if !out.iter().any(|o| o.name() == r.name()) {
                    out.push(r);
                }
            }
        }
    }
    out
}

/// What key computation reads outside a stage: context digests, pulled image
/// digests, keys of the stages (jobs) it depends on.
struct KeySources<'a> {
    hasher: &'a mut crate::context::hasher::ContextHasher,
    pulled: &'a PulledMap,
    keys: &'a BTreeMap<JobId, JobKeys>,
    job: &'a Job,
    platform: String,
    urls: &'a BTreeMap<String, crate::steps::urlcache::Resolved>,
    ignore_paths: &'a [PathBuf],
    compression: kiln_snapshotter::Compression,
    soci_span: Option<u64>,
}

impl crate::plan::keys::KeyInputs for KeySources<'_> {
    fn layer_filter(&self) -> String {
        let mut parts: Vec<String> = self.ignore_paths.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        // A lazy format is another layer (eStargz: other entries and diffID;
        // zstd:chunked: its TOC annotations), so another key chain: a gzip build
        // never takes an eStargz layer, nor an eStargz build a plain one.
        if self.compression.is_lazy() {
            parts.push(format!("format {}", self.compression.name()));
        }
        // --soci: records in this chain carry their layer's ztoc.
        if let Some(span) = self.soci_span {
            parts.push(format!("soci span {span}"));
        }
        parts.join("\n")
    }

    fn context_digest(&mut self, sources: &[String]) -> Result<String> {
        self.hasher.digest_sources(sources)
    }
    fn context_has(&mut self, rel: &str) -> bool {
        self.hasher.select().has(rel)
    }
    fn image_digest(&self, reference: &str) -> Result<String> {
        self.pulled
            .get(&(reference.to_string(), self.platform.clone()))
            .map(|p| p.manifest_digest.clone())
            .with_context(|| format!("image {reference} was not pulled"))
    }
    fn stage_key(&self, stage: StageIdx) -> Result<CacheKey> {
        let job = self.job.stage_jobs.get(&stage).with_context(|| format!("stage {stage} is not scheduled"))?;
        Ok(self.keys.get(job).with_context(|| format!("stage {stage} has no key yet"))?.result.clone())
    }
    fn url_digest(&self, url: &str) -> Result<String> {
        let r = self.urls.get(url).with_context(|| format!("ADD {url} was not resolved"))?;
        Ok(format!("{} {:?}", r.digest, r.mtime))
    }
}


