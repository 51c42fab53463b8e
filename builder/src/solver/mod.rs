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
use kiln_frontend::{Base, BuildGraph, CopyFrom, LowerOptions, Network, Platform, Stage, Step, StepKind};
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

/// A base (or `COPY --from`) image after pulling, for one platform.
struct Pulled {
    state: ImageState,
    manifest_digest: String,
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
    /// Layer caches, local first; `hits` says which one answered for a key.
    caches: Vec<Box<dyn LayerCache>>,
    hits: BTreeMap<String, (usize, CacheRecord)>,
    /// Every step's key, by job.
    keys: BTreeMap<usize, JobKeys>,
    /// ADD URLs resolved before the build: their bodies are in the store.
    urls: BTreeMap<String, crate::steps::urlcache::Resolved>,
    /// Cached layers not downloaded yet (lazy: only when a later step needs them).
    lazy: std::sync::Mutex<BTreeMap<Digest, usize>>,
    /// Records of the steps that ran, stored in the caches after the build.
    new_records: std::sync::Mutex<Vec<CacheRecord>>,
    rt: tokio::runtime::Handle,
    /// Steps run and steps served from the cache, for the summary.
    counts: (std::sync::atomic::AtomicUsize, std::sync::atomic::AtomicUsize),
}

impl Ctx {
    /// Make sure a layer blob is in the content store, fetching a lazily cached one.
    fn ensure_blob(&self, layer: &Layer) -> Result<()> {
        if self.store.has(&layer.digest) {
            return Ok(());
        }
        let from = self.lazy.lock().expect("lazy map").get(&layer.digest).copied();
        let Some(i) = from else {
            bail!("layer {} is missing from the content store", layer.digest);
        };
        let rec = self
            .hits
            .values()
            .find(|(c, r)| *c == i && r.layer.as_ref().map(|l| &l.digest) == Some(&layer.digest))
            .map(|(_, r)| r.clone())
            .context("cache record for a lazy layer")?;
        self.rt
            .block_on(self.caches[i].fetch_layer(&rec, &self.store))
            .with_context(|| format!("fetching cached layer {}", layer.digest))?;
        self.lazy.lock().expect("lazy map").remove(&layer.digest);
        Ok(())
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
struct Job {
    stage: Stage,
    platform: Platform,
    /// Stage index (in its graph) → job id, for FROM and COPY --from.
    stage_jobs: BTreeMap<usize, usize>,
    /// Jobs that must finish first.
    deps: Vec<usize>,
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
    jobs: BTreeMap<usize, usize>,
}

pub async fn build(mut opts: BuildOptions) -> Result<()> {
    let text = std::fs::read_to_string(&opts.dockerfile)
        .with_context(|| format!("reading Dockerfile {}", opts.dockerfile.display()))?;
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

    // Lower once per target platform. Base images take part in lowering (their env
    // expands `WORKDIR $HOME`), and which platform of a base to pull depends on the
    // stage's `FROM --platform`: so lower once without base env to learn the stage
    // platforms, pull, then lower for real.
    let mut pulled: PulledMap = BTreeMap::new();
    let mut plans = Vec::new();
    for target in &targets {
        let mut lower_opts = LowerOptions {
            build_args: opts.build_args.clone(),
            target: opts.target.clone(),
            target_platform: target.clone(),
            build_platform: host.clone(),
            ..Default::default()
        };
        let wanted = match kiln_frontend::lower(&df, &lower_opts) {
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
            Err(_) => kiln_frontend::base_images(&df, &lower_opts)
                .map_err(|e| anyhow!("{e}"))?
                .into_iter()
                .map(|r| (r, target.clone()))
                .collect(),
        };
        pull_all(&registry, &store, &mut pulled, &wanted).await.map_err(|e| explain_pull_error(e, &df))?;
        for ((name, _), p) in pulled.iter() {
            let env = p.state.env();
            lower_opts.base_env.entry(name.clone()).or_insert_with(|| {
                env.iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
            });
            // ONBUILD triggers of a base image run first in a stage built on it.
            let on_build = p.state.config.config.as_ref().and_then(|c| c.on_build.clone()).unwrap_or_default();
            lower_opts.base_onbuild.entry(name.clone()).or_insert(on_build);
        }
        let graph = kiln_frontend::lower(&df, &lower_opts).map_err(|e| anyhow!("{e}"))?;
        let wanted = images_needed(&graph, target)?;
        pull_all(&registry, &store, &mut pulled, &wanted).await.map_err(|e| explain_pull_error(e, &df))?;
        plans.push(TargetPlan { platform: target.clone(), graph, jobs: BTreeMap::new() });
    }

    let multi = plans.len() > 1;
    let mut jobs: Vec<Job> = Vec::new();
    let mut by_fingerprint: BTreeMap<String, usize> = BTreeMap::new();
    for plan in &mut plans {
        let needed = plan.graph.needed();
        let total: usize = needed.iter().map(|&i| 1 + plan.graph.stages[i].steps.len()).sum();
        let mut first_step = 1;
        let mut fingerprints: BTreeMap<usize, String> = BTreeMap::new();
        for &i in &needed {
            let stage = &plan.graph.stages[i];
            let stage_platform = stage_platform(stage, &plan.platform)?;
            let fp = fingerprint(stage, &stage_platform, &fingerprints)?;
            fingerprints.insert(i, fp.clone());
            let id = match by_fingerprint.get(&fp) {
                Some(&id) => id,
                None => {
                    let stage_jobs: BTreeMap<usize, usize> = stage.deps.iter().filter_map(|d| plan.jobs.get(d).map(|j| (*d, *j))).collect();
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
                    by_fingerprint.insert(fp, jobs.len() - 1);
                    jobs.len() - 1
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
    let ignore = crate::context::dockerignore::load_for(&opts.context, &opts.dockerfile)?;

    // Every key up front: the context is hashed once (incrementally, with a stat
    // cache), then all keys are probed in parallel before anything runs.
    let hasher_ignore = ignore.clone();
    let hasher_cache = crate::context::hasher::ContextHasher::cache_dir_for(&opts.state_dir, &opts.context);
    let mut hasher = crate::context::hasher::ContextHasher::new(&opts.context, hasher_ignore, Some(&hasher_cache))?;
    hasher.set_allow_empty_wildcard(true);
    let mut keys: BTreeMap<usize, JobKeys> = BTreeMap::new();
    for (id, job) in jobs.iter().enumerate() {
        let mut ki = KeySources {
            hasher: &mut hasher,
            pulled: &pulled,
            keys: &keys,
            job,
            platform: (&job.platform).to_string(),
            urls: &resolved,
        };
        let k = crate::plan::keys::job_keys(&job.stage, &(&job.platform).to_string(), &mut ki)?;
        keys.insert(id, k);
    }
    let _ = hasher.save();
    let caches = layer_caches(&opts, &store, &registry)?;
    let mut hits: BTreeMap<String, (usize, CacheRecord)> = BTreeMap::new();
    if !opts.no_cache {
        let mut wanted: Vec<CacheKey> = Vec::new();
        for (id, job) in jobs.iter().enumerate() {
            if job.stage.name.as_ref().is_some_and(|n| opts.no_cache_filter.contains(n)) {
                continue;
            }
            for (step, key) in job.stage.steps.iter().zip(&keys[&id].steps) {
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
            for (k, r) in missing.iter().zip(cache.probe_many(&missing).await) {
                if let Some(r) = r.filter(|r| r.layer.is_some() && r.diff_id.is_some()) {
                    hits.insert(k.hex().to_string(), (i, r));
                }
            }
        }
    }
    let lazy: BTreeMap<Digest, usize> = hits
        .values()
        .filter_map(|(i, r)| r.layer.as_ref().filter(|l| !store.has(&l.digest)).map(|l| (l.digest.clone(), *i)))
        .collect();
    let cx = Ctx {
        opts,
        store,
        snaps,
        created,
        scratch,
        ignore,
        caches,
        hits,
        keys,
        urls: resolved,
        lazy: std::sync::Mutex::new(lazy),
        new_records: std::sync::Mutex::new(Vec::new()),
        rt: tokio::runtime::Handle::current(),
        counts: Default::default(),
    };

    let (cx, results) = tokio::task::spawn_blocking(move || {
        let r = run_jobs(&cx, &jobs, &pulled);
        let _ = &cx.keys;
        r.map(|res| (cx, res))
    })
    .await
    .context("the build was interrupted")??;

    // Remember what ran, in every cache (local, and --cache-repo / --cache-to).
    let records = std::mem::take(&mut *cx.new_records.lock().expect("records"));
    for cache in &cx.caches {
        for r in &records {
            if let Err(e) = cache.put(r, &cx.store).await {
                eprintln!("warning: could not store cache record {}: {e:#}", &r.key[..12]);
            }
        }
        if let Err(e) = cache.flush(&cx.store).await {
            eprintln!("warning: could not write the cache: {e:#}");
        }
    }

    let mut images = Vec::new();
    for plan in &plans {
        let job = plan.jobs.get(&plan.graph.target).context("target stage was not scheduled")?;
        let mut state = results.get(job).context("target stage produced no image")?.clone();
        if !cx.opts.labels.is_empty() {
            let labels = state.config.run_config_mut().labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in &cx.opts.labels {
                labels.insert(k.clone(), v.clone());
            }
        }
        images.push((plan.platform.clone(), state));
    }
    let local: Vec<PathBuf> = cx
        .opts
        .outputs
        .iter()
        .filter_map(|o| match o {
            crate::options::Output::Local { dest } => Some(dest.clone()),
            _ => None,
        })
        .collect();
    let (cx, images) = if local.is_empty() {
        (cx, images)
    } else {
        tokio::task::spawn_blocking(move || -> Result<_> {
            for dest in &local {
                export_local(&cx, &images, dest)?;
            }
            Ok((cx, images))
        })
        .await
        .context("the export was interrupted")??
    };
    let mut mount_from = mount_sources(&plans);
    // Cached layers live in the cache repositories: pushes mount them from there.
    mount_from.extend(cx.opts.cache_repo.iter().chain(cx.opts.cache_from.iter()).chain(cx.opts.cache_to.iter()).cloned());
    // Outputs written from the store need every blob; a push only needs the ones
    // the registry cannot mount, so it fetches lazily cached layers only on demand.
    let needs_blobs = cx.opts.outputs.iter().any(|o| !matches!(o, crate::options::Output::Local { .. }));
    if needs_blobs {
        fetch_lazy(&cx).await?;
    }
    let digest = match export::export(&cx.opts, &cx.store, &registry, images.clone(), &mount_from).await {
        Err(e) if !cx.lazy.lock().expect("lazy map").is_empty() && missing_blob(&e) => {
            fetch_lazy(&cx).await?;
            export::export(&cx.opts, &cx.store, &registry, images, &mount_from).await?
        }
        other => other?,
    };
    let ran = cx.counts.0.load(std::sync::atomic::Ordering::Relaxed);
    let cached = cx.counts.1.load(std::sync::atomic::Ordering::Relaxed);
    progress::get().summary(&digest.to_string(), ran, cached);
    Ok(())
}

/// Whether an export failed because a blob is not in the content store (a lazily
/// cached layer the registry could not mount).
fn missing_blob(e: &anyhow::Error) -> bool {
    use kiln_cache::{RegistryError, StoreError};
    e.chain().any(|c| {
        matches!(c.downcast_ref::<StoreError>(), Some(StoreError::NotFound(_)))
            || matches!(c.downcast_ref::<RegistryError>(), Some(RegistryError::Store { source: StoreError::NotFound(_), .. }))
    })
}

/// Download every cached layer that was not needed so far.
async fn fetch_lazy(cx: &Ctx) -> Result<()> {
    let lazy: Vec<(Digest, usize)> = cx.lazy.lock().expect("lazy map").iter().map(|(d, i)| (d.clone(), *i)).collect();
    for (digest, i) in lazy {
        let rec = cx
            .hits
            .values()
            .find(|(c, r)| *c == i && r.layer.as_ref().map(|l| &l.digest) == Some(&digest))
            .map(|(_, r)| r.clone())
            .context("cache record for a lazy layer")?;
        cx.caches[i].fetch_layer(&rec, &cx.store).await.with_context(|| format!("fetching cached layer {digest}"))?;
        cx.lazy.lock().expect("lazy map").remove(&digest);
    }
    Ok(())
}

/// `--output type=local,dest=DIR`: the final root filesystem, owned by the invoking
/// user (ownership inside the image cannot be kept outside the namespace), one
/// subdirectory per platform (`linux_arm64`) when there are several.
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
    keys: &'a BTreeMap<usize, JobKeys>,
    job: &'a Job,
    platform: String,
    urls: &'a BTreeMap<String, crate::steps::urlcache::Resolved>,
}

impl crate::plan::keys::KeyInputs for KeySources<'_> {
    fn context_digest(&mut self, sources: &[String]) -> Result<String> {
        self.hasher.digest_sources(sources)
    }
    fn context_has(&mut self, rel: &str) -> bool {
        self.hasher.has(rel)
    }
    fn image_digest(&self, reference: &str) -> Result<String> {
        self.pulled
            .get(&(reference.to_string(), self.platform.clone()))
            .map(|p| p.manifest_digest.clone())
            .with_context(|| format!("image {reference} was not pulled"))
    }
    fn stage_key(&self, stage: usize) -> Result<CacheKey> {
        let job = self.job.stage_jobs.get(&stage).with_context(|| format!("stage {stage} is not scheduled"))?;
        Ok(self.keys.get(job).with_context(|| format!("stage {stage} has no key yet"))?.result.clone())
    }
    fn url_digest(&self, url: &str) -> Result<String> {
        let r = self.urls.get(url).with_context(|| format!("ADD {url} was not resolved"))?;
        Ok(format!("{} {:?}", r.digest, r.mtime))
    }
}

/// SOURCE_DATE_EPOCH naming a stage: the time of that stage's one remote source,
/// found before lowering for real so that `ARG SOURCE_DATE_EPOCH` sees the number
/// (BuildKit dockerfile2llb/epoch.go: the response's Last-Modified, else the newest
/// mtime in the downloaded archive, else no epoch). Returns the URL resolved, so
/// the build does not ask for it again.
async fn epoch_from_stage(
    df: &kiln_frontend::Dockerfile,
    opts: &mut BuildOptions,
    host: &Platform,
    target: &Platform,
) -> Result<BTreeMap<String, crate::steps::urlcache::Resolved>> {
    let lower_opts = LowerOptions {
        build_args: opts.build_args.clone(),
        target: opts.target.clone(),
        target_platform: target.clone(),
        build_platform: host.clone(),
        ..Default::default()
    };
    // A Dockerfile that does not lower here fails below with the real error.
    let Ok(graph) = kiln_frontend::lower(df, &lower_opts) else { return Ok(BTreeMap::new()) };
    let Some(kiln_frontend::SourceDateEpoch::Stage(i)) = graph.source_date_epoch else { return Ok(BTreeMap::new()) };
    let url = epoch_source(&graph.stages[i])?;
    let (dir, store_dir) = (opts.state_dir.clone(), opts.state_dir.join("content"));
    let resolved = tokio::task::spawn_blocking(move || -> Result<_> {
        let store = ContentStore::open(&store_dir)?;
        let map = crate::steps::urlcache::resolve_all(&dir, &store, std::slice::from_ref(&url), BTreeMap::new())?;
        let r = &map[&url];
        let t = match r.mtime {
            Some(t) => Some(t),
            None => crate::steps::urlcache::archive_max_mtime(&store, &r.digest)?,
        };
        Ok((map, t))
    })
    .await
    .context("resolving the SOURCE_DATE_EPOCH stage was interrupted")??;
    if let Some(t) = resolved.1 {
        opts.build_args.insert("SOURCE_DATE_EPOCH".into(), t.to_string());
    }
    Ok(resolved.0)
}

/// The one remote source of a SOURCE_DATE_EPOCH stage (the frontend checked the
/// stage: FROM scratch and one ADD of one remote source).
fn epoch_source(stage: &Stage) -> Result<String> {
    let url = stage.steps.iter().find_map(|s| match &s.kind {
        StepKind::Add(spec) => spec.sources.first().cloned(),
        _ => None,
    });
    match url {
        Some(u) if crate::steps::fetch::is_git(&u) => {
            bail!("SOURCE_DATE_EPOCH from a stage's git source ({u}) is not supported yet: give a number of seconds")
        }
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => Ok(u),
        _ => bail!("the SOURCE_DATE_EPOCH stage has no remote ADD source"),
    }
}

/// The local layer cache, plus `--cache-repo` (Kaniko style) and
/// `--cache-from`/`--cache-to` (BuildKit style) registry caches.
fn layer_caches(opts: &BuildOptions, store: &ContentStore, registry: &Registry) -> Result<Vec<Box<dyn LayerCache>>> {
    let copts = || CacheOptions { ttl: opts.cache_ttl, ..Default::default() };
    let mut caches: Vec<Box<dyn LayerCache>> = vec![Box::new(LocalCache::new(store.clone(), copts()))];
    if let Some(repo) = &opts.cache_repo {
        caches.push(Box::new(RegistryCache::repo(registry.clone(), repo.clone(), copts())));
    }
    if !opts.cache_from.is_empty() || opts.cache_to.is_some() {
        caches.push(Box::new(RegistryCache::manifest(registry.clone(), opts.cache_from.clone(), opts.cache_to.clone(), copts())));
    }
    Ok(caches)
}

/// The platform a stage runs for: its `FROM --platform`, else the target's.
fn stage_platform(stage: &Stage, target: &Platform) -> Result<Platform> {
    match stage.platform.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => Platform::parse(p).with_context(|| format!("FROM --platform={p} at {}:{}", stage.loc.file, stage.loc.line)),
        None => Ok(target.clone()),
    }
}

/// Identity of a stage instance: its base, platform, steps and the identities of the
/// stages it reads. Equal fingerprints build equal images, so they run once.
fn fingerprint(stage: &Stage, platform: &Platform, deps: &BTreeMap<usize, String>) -> Result<String> {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    h.update((platform).to_string().as_bytes());
    h.update(serde_json::to_vec(&stage.steps)?);
    match &stage.base {
        Base::Scratch => h.update(b"scratch"),
        Base::Image(r) => h.update(format!("image:{r}").as_bytes()),
        Base::Stage(i) => h.update(format!("stage:{}", deps.get(i).map(String::as_str).unwrap_or("?")).as_bytes()),
    }
    for d in &stage.deps {
        h.update(format!("dep:{}", deps.get(d).map(String::as_str).unwrap_or("?")).as_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

/// Images a graph reads (FROM and COPY --from), with the platform of each use.
fn images_needed(graph: &BuildGraph, target: &Platform) -> Result<Vec<(String, Platform)>> {
    let mut out = Vec::new();
    for &i in &graph.needed() {
        let stage = &graph.stages[i];
        let p = stage_platform(stage, target)?;
        if let Base::Image(r) = &stage.base {
            out.push((r.clone(), p.clone()));
        }
        for step in &stage.steps {
            if let StepKind::Copy(c) | StepKind::Add(c) = &step.kind {
                if let Some(CopyFrom::Image(r)) = &c.from {
                    out.push((r.clone(), p.clone()));
                }
            }
        }
    }
    Ok(out)
}

/// `# syntax=IMAGE` asks BuildKit to run that frontend. kiln has BuildKit's
/// Dockerfile frontend built in: the `docker/dockerfile` images (any tag, `-labs`,
/// `-upstream`) mean it; any other frontend cannot be run, and building with the
/// built-in one instead could give another image, so that is an error.
fn check_syntax_directive(df: &kiln_frontend::Dockerfile) -> Result<()> {
    let Some(d) = df.directives.iter().find(|d| d.name == "syntax") else { return Ok(()) };
    let image = d.value.split_whitespace().next().unwrap_or("");
    let name = image.split(['@']).next().unwrap_or("");
    let name = match name.rsplit_once(':') {
        Some((n, tag)) if !tag.contains('/') => n,
        _ => name,
    };
    let name = name.trim_start_matches("docker.io/");
    if matches!(name, "docker/dockerfile" | "docker/dockerfile-upstream") {
        return Ok(());
    }
    bail!(
        "{}:{}: # syntax={image}: kiln builds with BuildKit's Dockerfile frontend built in (the docker/dockerfile images) and cannot run the frontend {name:?}",
        d.loc.file,
        d.loc.line
    )
}

/// An image that could not be pulled, by name: the error says so, and the caller
/// names where the Dockerfile asks for it.
#[derive(Debug, thiserror::Error)]
#[error("pulling image {reference} for {platform}")]
struct PullFailed {
    name: String,
    reference: String,
    platform: String,
}

/// A failed pull, located and explained as BuildKit does: the Dockerfile line that
/// names the image, and a stage of a close name when it was probably meant
/// (`FROM bulid` for the stage `build`).
fn explain_pull_error(e: anyhow::Error, df: &kiln_frontend::Dockerfile) -> anyhow::Error {
    let Some(pf) = e.downcast_ref::<PullFailed>() else { return e };
    let name = pf.name.clone();
    let stages: Vec<String> = df
        .instructions
        .iter()
        .filter_map(|i| match &i.command {
            kiln_frontend::Command::From { name: Some(n), .. } => Some(n.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    let origin = df.instructions.iter().find_map(|i| {
        let names_it = match &i.command {
            kiln_frontend::Command::From { image, .. } => image == &name,
            _ => i.flags.iter().any(|f| f.name == "from" && f.value.as_deref() == Some(name.as_str())),
        };
        names_it.then(|| format!("{}:{}", i.loc.file, i.loc.line))
    });
    let hint = kiln_frontend::suggest::did_you_mean(
        kiln_frontend::suggest::search(&name.to_ascii_lowercase(), stages.iter().map(String::as_str), true).as_deref(),
    );
    let what = match origin {
        Some(at) => format!("{at}: {name:?} is not a stage and could not be pulled as an image{hint}"),
        None => format!("{name:?} could not be pulled{hint}"),
    };
    e.context(what)
}

async fn pull_all(registry: &Registry, store: &ContentStore, pulled: &mut PulledMap, wanted: &[(String, Platform)]) -> Result<()> {
    for (name, p) in wanted {
        let key = (name.clone(), (p).to_string());
        if pulled.contains_key(&key) {
            continue;
        }
        let reference: Reference = name.parse().map_err(|e| anyhow!("image {name}: {e}"))?;
        progress::get().info("pull", &format!("pulling {reference} ({})", key.1));
        let img = registry.pull_image(&reference, p, store).await.map_err(|e| {
            anyhow::Error::new(e).context(PullFailed { name: name.clone(), reference: reference.to_string(), platform: key.1.clone() })
        })?;
        if img.config.rootfs.diff_ids.len() != img.layers.len() {
            bail!("image {reference}: its config lists {} diff_ids for {} layers", img.config.rootfs.diff_ids.len(), img.layers.len());
        }
        let layers = img
            .layers
            .iter()
            .zip(img.config.rootfs.diff_ids.iter())
            .map(|(d, diff_id)| {
                Ok(Layer {
                    media_type: oci_layer_type(d.media_type().as_ref()),
                    digest: d.digest().to_string().parse()?,
                    size: d.size(),
                    diff_id: diff_id.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        pulled.insert(key, Pulled { state: ImageState::new(img.config, layers), manifest_digest: img.manifest_digest.to_string() });
    }
    Ok(())
}

/// Run the jobs, each as soon as its dependencies are done, up to the machine's
/// parallelism at once. The first failure stops new jobs from starting.
fn run_jobs(cx: &Ctx, jobs: &[Job], pulled: &PulledMap) -> Result<BTreeMap<usize, ImageState>> {
    use std::sync::mpsc;
    let parallel = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2);
    let mut results: BTreeMap<usize, ImageState> = BTreeMap::new();
    let mut started = vec![false; jobs.len()];
    let mut running = 0usize;
    let mut failure: Option<anyhow::Error> = None;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Result<ImageState>)>();
        loop {
            if failure.is_none() {
                for (id, job) in jobs.iter().enumerate() {
                    if running >= parallel {
                        break;
                    }
                    if started[id] || !job.deps.iter().all(|d| results.contains_key(d)) {
                        continue;
                    }
                    started[id] = true;
                    running += 1;
                    let inputs: BTreeMap<usize, ImageState> =
                        job.stage_jobs.iter().map(|(stage, j)| (*stage, results[j].clone())).collect();
                    let tx = tx.clone();
                    scope.spawn(move || {
                        let r = run_stage(cx, id, job, pulled, &inputs);
                        let _ = tx.send((id, r));
                    });
                }
            }
            if running == 0 {
                break;
            }
            let (id, r) = rx.recv().expect("a job thread always reports");
            running -= 1;
            match r {
                Ok(state) => {
                    results.insert(id, state);
                }
                Err(e) => {
                    if failure.is_none() {
                        failure = Some(e);
                    }
                }
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    if results.len() != jobs.len() {
        bail!("internal error: {} of {} stages ran (dependency cycle?)", results.len(), jobs.len());
    }
    Ok(results)
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

fn run_stage(cx: &Ctx, job_id: usize, job: &Job, pulled: &PulledMap, inputs: &BTreeMap<usize, ImageState>) -> Result<ImageState> {
    let stage = &job.stage;
    let plat = (&job.platform).to_string();
    let (from_text, mut state) = match &stage.base {
        Base::Scratch => {
            // BuildKit's empty image (dockerfile2llb emptyImage): WorkingDir `/` and,
            // except on Windows, the default PATH.
            let run = kiln_oci::RunConfig {
                env: (job.platform.os != "windows")
                    .then(|| vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()]),
                working_dir: Some("/".into()),
                ..Default::default()
            };
            let config = ImageConfig {
                architecture: job.platform.architecture.clone(),
                os: job.platform.os.clone(),
                variant: job.platform.variant.clone(),
                config: Some(run),
                ..Default::default()
            };
            ("scratch".to_string(), ImageState::new(config, Vec::new()))
        }
        Base::Image(name) => {
            let p = pulled.get(&(name.clone(), plat.clone())).with_context(|| format!("image {name} ({plat}) was not pulled"))?;
            (name.clone(), p.state.clone())
        }
        Base::Stage(i) => {
            let s = inputs.get(i).with_context(|| format!("stage {i} has not been built"))?;
            (format!("stage {i}"), s.clone())
        }
    };
    state.cmd_set_here = false;
    // A base's ONBUILD triggers ran in this stage (the frontend inserted them);
    // they are not inherited by the image built here, as in BuildKit.
    if let Some(rc) = state.config.config.as_mut() {
        rc.on_build = None;
    }
    let label = stage.name.as_ref().map(|n| format!(" AS {n}")).unwrap_or_default();
    let mut n = job.first_step;
    let total = job.total_steps;
    let from_line = format!("FROM {from_text}{label}");
    let names = StepNames::of(job);
    progress::get().step(&StepRef { platform: &job.label, name: &names.from, n, total, text: &from_line }, progress::State::Running, None, None);
    let sources = Sources { stages: inputs, pulled, platform: &plat };
    let keys = &cx.keys[&job_id];
    // History times: a step that ran gets the build's time, a cached one the time
    // it first ran, a config-only step the time of the step before it — so a build
    // served wholly from the cache gives the same image digest.
    let mut last_time = state.config.created.clone().unwrap_or_else(|| cx.created.clone());

    // The content key of the step before, once a step in this stage had one.
    let mut content_parent: Option<CacheKey> = None;
    let probe = !cx.opts.no_cache && !stage.name.as_ref().is_some_and(|n| cx.opts.no_cache_filter.contains(n));
    for (i, (step, key)) in stage.steps.iter().zip(&keys.steps).enumerate() {
        n += 1;
        let step_index = n - job.first_step - 1;
        let sref = StepRef { platform: &job.label, name: &names.steps[step_index], n, total, text: &step.display };
        // As BuildKit (dockerfile2llb dispatchWorkdir): every WORKDIR but `/` is a
        // mkdir -p of its directory (owned by USER when set) with a layer of its
        // own, empty when the directory exists; other config steps make no layer.
        let config_step = state.apply_config_step(&step.kind);
        if config_step && !workdir_layer(&step.kind) {
            progress::get().step(&sref, progress::State::Running, None, None);
            state.push_history(&last_time, &step.created_by, true);
            if let Some(p) = &content_parent {
                content_parent = crate::plan::keys::content_key(keys, i, p, &mut |_| unreachable!("a config step reads no stage")).ok();
            }
            continue;
        }
        if let Some((_, rec)) = cx.hits.get(key.hex()) {
            progress::get().step(&sref, progress::State::Cached, None, None);
            cx.counts.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            last_time = use_cached(cx, &mut state, rec, &step.created_by);
            content_parent = None;
            continue;
        }
        let cacheable = crate::plan::keys::cacheable(&step.kind);
        let content = if probe && cacheable && (content_parent.is_some() || keys.reads_stage(i)) {
            step_content_key(cx, keys, i, step, content_parent.as_ref(), &sources)
        } else {
            None
        };
        if let Some(rec) = content.as_ref().and_then(|c| probe_late(cx, c)) {
            progress::get().step(&sref, progress::State::Cached, None, None);
            cx.counts.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            last_time = use_cached(cx, &mut state, &rec, &step.created_by);
            // Found by content: the step's own key leads to the same layer next time.
            remember(cx, key, &state, &step.created_by, &last_time);
            content_parent = content;
            continue;
        }
        progress::get().step(&sref, progress::State::Running, None, None);
        let started = std::time::Instant::now();
        let ran = if config_step { materialize_workdir(cx, &mut state) } else { run_fs_step(cx, &mut state, step, &sources, n) };
        ran.with_context(|| format!("{}step {n}/{total} ({}) `{}`", job.label, source_range(step), one_line(&step.source)))?;
        let l = state.layers.last().expect("a step that ran added a layer");
        progress::get().step(&sref, progress::State::Done, Some(started.elapsed().as_secs_f64()), Some((&l.digest.to_string(), l.size)));
        cx.counts.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        last_time = cx.created.clone();
        state.push_history(&last_time, &step.created_by, false);
        if cacheable {
            remember(cx, key, &state, &step.created_by, &last_time);
            if let Some(c) = &content {
                remember(cx, c, &state, &step.created_by, &last_time);
            }
        }
        content_parent = content;
    }
    state.config.created = Some(last_time);
    Ok(state)
}

/// BuildKit's step names (dockerfile2llb `prefixCommand`): per stage, counting the
/// steps that make an operation (FROM an image, RUN, COPY, ADD, WORKDIR but `/`),
/// `[platform stage i/n]` with the index padded to the width of n. Config-only
/// steps make no operation and get no number (empty name).
struct StepNames {
    from: String,
    steps: Vec<String>,
}

impl StepNames {
    fn of(job: &Job) -> StepNames {
        let stage = &job.stage;
        let counts = |k: &StepKind| matches!(k, StepKind::Run { .. } | StepKind::Copy(_) | StepKind::Add(_)) || workdir_layer(k);
        let from_counts = matches!(stage.base, Base::Image(_));
        let total = usize::from(from_counts) + stage.steps.iter().filter(|s| counts(&s.kind)).count();
        let width = total.to_string().len();
        let mut prefix = job.label.clone();
        if let Some(n) = &job.stage_name {
            prefix.push_str(n);
            prefix.push(' ');
        }
        let mut i = 0;
        let mut next = |yes: bool| {
            if !yes {
                return String::new();
            }
            i += 1;
            format!("{prefix}{i:>width$}/{total}")
        };
        let from = next(from_counts);
        let steps = stage.steps.iter().map(|s| next(counts(&s.kind))).collect();
        StepNames { from, steps }
    }
}

/// The content key of step `i` (keys.rs), hashing what it selects in the stages it
/// reads; `None` when it cannot be made (a source missing there: the step will
/// run and say so).
fn step_content_key(
    cx: &Ctx,
    keys: &JobKeys,
    i: usize,
    step: &Step,
    parent: Option<&CacheKey>,
    sources: &Sources<'_>,
) -> Option<CacheKey> {
    let selectors = crate::context::stagecontent::selectors(step)?;
    let parent = parent.unwrap_or_else(|| keys.parent_of(i)).clone();
    let mut digest_of = |input: usize| -> Result<String> {
        let (Some(kiln_frontend::StepInput::Stage(j)), Some(Some(paths))) = (step.inputs.get(input), selectors.get(input)) else {
            bail!("input {input} is not a stage");
        };
        let state = sources.get(&CopyFrom::Stage(*j))?;
        let lowers = lower_dirs(cx, state)?;
        let snap = cx.snaps.prepare(&lowers)?;
        crate::context::stagecontent::digest_in(snap.merged(), paths)
    };
    match crate::plan::keys::content_key(keys, i, &parent, &mut digest_of) {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), "no content key");
            None
        }
    }
}

/// Look a key made during the build up in the caches (local first); a hit's layer
/// is fetched now, as the step would otherwise run.
fn probe_late(cx: &Ctx, key: &CacheKey) -> Option<CacheRecord> {
    for cache in &cx.caches {
        let found = cx.rt.block_on(cache.probe_many(std::slice::from_ref(key))).pop().flatten();
        let Some(rec) = found.filter(|r| r.layer.is_some() && r.diff_id.is_some()) else { continue };
        let l = rec.layer.as_ref().expect("filtered");
        if !cx.store.has(&l.digest) {
            if let Err(e) = cx.rt.block_on(cache.fetch_layer(&rec, &cx.store)) {
                tracing::debug!(error = %e, "cached layer not fetched");
                continue;
            }
        }
        return Some(rec);
    }
    None
}

/// Take a step's layer from a cache hit; returns the history time it first ran.
fn use_cached(cx: &Ctx, state: &mut ImageState, rec: &CacheRecord, created_by: &str) -> String {
    let (Some(l), Some(diff_id)) = (&rec.layer, &rec.diff_id) else { unreachable!("hits carry a layer") };
    state.push_layer(Layer { media_type: l.media_type.clone(), digest: l.digest.clone(), size: l.size, diff_id: diff_id.clone() });
    let time = rec.history_created.clone().unwrap_or_else(|| cx.created.clone());
    state.push_history(&time, created_by, false);
    time
}

/// Queue a cache record for the step that just added the last layer of `state`.
fn remember(cx: &Ctx, key: &CacheKey, state: &ImageState, created_by: &str, time: &str) {
    let l = state.layers.last().expect("the step added a layer");
    let mut rec = CacheRecord::new(
        key,
        Some(LayerRecord { media_type: l.media_type.clone(), digest: l.digest.clone(), size: l.size }),
        Some(l.diff_id.clone()),
        created_by,
    );
    rec.history_created = Some(time.to_string());
    cx.new_records.lock().expect("records").push(rec);
}

/// Roots for `RUN --mount=type=bind`: stages and images mounted for the step (their
/// scratch upper takes any writes and is thrown away), or a writable view of the
/// context.
struct MountRoots<'a, 'b> {
    cx: &'a Ctx,
    sources: &'a Sources<'b>,
    held: Vec<ActiveSnapshot>,
}

impl runmounts::FromRoots for MountRoots<'_, '_> {
    fn root_of(&mut self, from: &CopyFrom) -> Result<PathBuf> {
        let state = self.sources.get(from)?;
        let lowers = lower_dirs(self.cx, state)?;
        let snap = self.cx.snaps.prepare(&lowers)?;
        let root = snap.merged().to_path_buf();
        self.held.push(snap);
        Ok(root)
    }

    fn root_of_context_rw(&mut self) -> Result<PathBuf> {
        let snap = self.cx.snaps.prepare(&[self.cx.opts.context.clone()])?;
        let root = snap.merged().to_path_buf();
        self.held.push(snap);
        Ok(root)
    }
}

/// Where `COPY --from` reads: earlier stages of this build, or pulled images.
struct Sources<'a> {
    stages: &'a BTreeMap<usize, ImageState>,
    pulled: &'a PulledMap,
    platform: &'a str,
}

impl Sources<'_> {
    fn get(&self, from: &CopyFrom) -> Result<&ImageState> {
        match from {
            CopyFrom::Stage(i) => self.stages.get(i).with_context(|| format!("stage {i} has not been built")),
            CopyFrom::Image(r) => self
                .pulled
                .get(&(r.clone(), self.platform.to_string()))
                .map(|p| &p.state)
                .with_context(|| format!("image {r} was not pulled")),
        }
    }
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
    // Settle overlay vs native once per build (auto: probe an overlay mount).
    let (_, notice) = cx.snaps.select(cx.opts.snapshotter);
    if let Some(n) = notice {
        eprintln!("note: {n}");
    }
    // Each layer is unpacked knowing the ones below it (symlinked parents and
    // hardlinks into lower layers resolve as on a merged rootfs).
    let mut dirs: Vec<PathBuf> = Vec::with_capacity(state.layers.len());
    for l in &state.layers {
        let dir = match cx.snaps.layer_on(&l.diff_id, &dirs) {
            Some(p) => p,
            None => {
                let compression = media::layer_compression(&l.media_type)
                    .with_context(|| format!("layer {} has unsupported media type {}", l.digest, l.media_type))?;
                let t0 = std::time::Instant::now();
                cx.ensure_blob(l)?;
                let t1 = std::time::Instant::now();
                let blob = cx.store.open_blob(&l.digest)?;
                let dir = cx
                    .snaps
                    .unpack_onto(&l.diff_id, &dirs, std::io::BufReader::new(blob), compression)
                    .with_context(|| format!("unpacking layer {}", l.digest))?;
                tracing::debug!(
                    layer = %l.digest,
                    fetch_ms = (t1 - t0).as_millis() as u64,
                    unpack_ms = t1.elapsed().as_millis() as u64,
                    "layer unpacked"
                );
                dir
            }
        };
        dirs.push(dir);
    }
    Ok(dirs)
}

/// Whether a step is a WORKDIR that makes a layer (any but `/`, as BuildKit).
fn workdir_layer(kind: &StepKind) -> bool {
    matches!(kind, StepKind::Workdir(w) if w.trim_end_matches('/') != "")
}

/// Who owns a WORKDIR that a step creates: the stage's USER (root if unknown).
fn workdir_owner(root: &Path, state: &ImageState) -> Owner {
    resolve_user(root, &state.user()).map(|r| Owner { uid: r.uid, gid: r.gid }).unwrap_or_default()
}

/// `Dockerfile:2`, or `Dockerfile:2-3` for an instruction continued over lines (as
/// BuildKit's source map reports it).
fn source_range(step: &Step) -> String {
    if step.end_line > step.loc.line {
        format!("{}:{}-{}", step.loc.file, step.loc.line, step.end_line)
    } else {
        format!("{}:{}", step.loc.file, step.loc.line)
    }
}

/// WORKDIR's layer: its directory made with its parents (an empty layer when it
/// exists already).
fn materialize_workdir(cx: &Ctx, state: &mut ImageState) -> Result<()> {
    let lowers = lower_dirs(cx, state)?;
    let active = cx.snaps.prepare(&lowers)?;
    let root = active.merged().to_path_buf();
    let workdir = state.workdir();
    copy::mkdir_p_as(&root, Path::new(&workdir), Some(workdir_owner(&root, state)))?;
    commit_layer(cx, state, active)
}

fn run_fs_step(cx: &Ctx, state: &mut ImageState, step: &Step, sources: &Sources<'_>, step_no: usize) -> Result<()> {
    let lowers = lower_dirs(cx, state)?;
    let t0 = std::time::Instant::now();
    let mut active = cx.snaps.prepare(&lowers)?;
    tracing::debug!(step = step_no, ms = t0.elapsed().as_millis() as u64, "rootfs prepared");
    let root = active.merged().to_path_buf();
    let workdir = state.workdir();
    // Docker creates the working directory if the image lacks it, owned by the
    // stage's USER (as BuildKit does).
    copy::mkdir_p_as(&root, Path::new(&workdir), Some(workdir_owner(&root, state)))?;

    match &step.kind {
        StepKind::Run { argv, build_env, network, mounts, heredocs, .. } => {
            let mut roots = MountRoots { cx, sources, held: Vec::new() };
            let inputs = runmounts::Inputs {
                context: &cx.opts.context,
                state_dir: &cx.opts.state_dir,
                workdir: &workdir,
                secrets: &cx.opts.secrets,
                ssh: &cx.opts.ssh,
                no_cache: cx.opts.no_cache,
            };
            let chroot = cx.opts.isolation == crate::options::Isolation::Chroot;
            if chroot && !mounts.is_empty() {
                bail!("RUN --mount needs mount namespaces, which --isolation chroot does not have");
            }
            if chroot && argv.iter().any(|a| a.contains("/dev/pipes/")) {
                bail!("a heredoc script with #! needs a mount, which --isolation chroot does not have");
            }
            let network_none = match network {
                Network::None => true,
                Network::Host => false,
                Network::Default => cx.opts.network_none,
            };
            if chroot && network_none {
                bail!("RUN --network=none needs a network namespace, which --isolation chroot does not have");
            }
            let prepared = runmounts::prepare(mounts, heredocs, &inputs, &mut roots)?;
            if chroot {
                // Device nodes are made by mknod over these stubs (no bind mounts).
                for (rel, _, _) in sandbox::CHROOT_DEVICES {
                    active.create_stub(Path::new(rel), false)?;
                }
            }
            for (target, is_dir) in &prepared.stubs {
                active.create_stub(target, *is_dir)?;
            }
            let run_as = resolve_user(&root, &state.user())?;
            for (target, is_dir) in MOUNT_TARGETS {
                active.create_stub(Path::new(target), *is_dir)?;
            }
            let mut env = state.env();
            // The frontend decided precedence (an ENV before an ARG of the same name
            // loses to it in RUN, as in BuildKit): what it lists here wins.
            for (k, v) in build_env {
                crate::image::set_env(&mut env, k, v);
            }
            if !env.iter().any(|e| e.starts_with("PATH=")) {
                env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
            }
            // As Docker: HOME from the user's /etc/passwd entry unless the image sets it.
            if !env.iter().any(|e| e.starts_with("HOME=")) {
                env.push(format!("HOME={}", run_as.home));
            }
            // Mount-provided variables (SSH_AUTH_SOCK, env secrets) are the step's only.
            env.extend(prepared.env.iter().cloned());
            let spec = RunSpec {
                rootfs: root.clone(),
                argv: argv.clone(),
                env,
                cwd: workdir.clone(),
                uid: run_as.uid,
                gid: run_as.gid,
                groups: run_as.groups,
                // BuildKit's sandbox hostname, or the BUILDKIT_SANDBOX_HOSTNAME build arg.
                hostname: cx.opts.build_args.get("BUILDKIT_SANDBOX_HOSTNAME").cloned().unwrap_or_else(|| "buildkitsandbox".into()),
                network_none,
                extra_hosts: cx.opts.extra_hosts.clone(),
                mounts: prepared.mounts.clone(),
                chroot,
            };
            let spec_path = cx.scratch.join(format!("run-{}-{}.json", std::process::id(), next_id()));
            let t0 = std::time::Instant::now();
            let code = sandbox::run(&spec, &spec_path, step_no)?;
            tracing::debug!(step = step_no, ms = t0.elapsed().as_millis() as u64, code, "RUN finished");
            drop(prepared);
            drop(roots);
            if code != 0 {
                // BuildKit's wording (solver/llbsolver/ops/exec.go), with the command
                // as executed: the shell form shows its shell.
                bail!("process {:?} did not complete successfully: exit code: {code}", argv.join(" "));
            }
            active.remove_stubs()?;
        }
        StepKind::Copy(spec) | StepKind::Add(spec) => {
            let is_add = matches!(step.kind, StepKind::Add(_));
            // Context files become 0:0; files from a stage or image keep their owner
            // (as BuildKit does) unless --chown says otherwise.
            let owner = match (&spec.chown, &spec.from) {
                (Some(c), _) => Some(resolve_chown(&root, c)?),
                (None, None) => Some(Owner::default()),
                (None, Some(_)) => None,
            };
            let chmod = spec.chmod.as_ref().map(|c| c.mode.clone());
            let exclude = if spec.exclude.is_empty() { None } else { Some(crate::context::dockerignore::Matcher::new(&spec.exclude)?) };
            let is_url = |s: &str| s.starts_with("http://") || s.starts_with("https://");
            let is_git = crate::steps::fetch::is_git;
            let (remote, local): (Vec<String>, Vec<String>) =
                spec.sources.iter().cloned().partition(|s| is_add && (is_url(s) || is_git(s)));
            let total_sources = spec.sources.len() + spec.heredocs.len();
            let dest_is_dir = total_sources > 1;
            let unpack = is_add && spec.unpack != Some(false);

            // Heredocs and downloads are staged as files in a scratch "context".
            let staged = if spec.heredocs.is_empty() && remote.is_empty() {
                None
            } else {
                let dir = cx.scratch.join(format!("staged-{}-{}", std::process::id(), next_id()));
                std::fs::create_dir_all(&dir)?;
                Some(ScratchDir(dir))
            };
            let mut staged_names = Vec::new();
            if let Some(dir) = &staged {
                for h in &spec.heredocs {
                    let f = dir.0.join(&h.name);
                    std::fs::write(&f, &h.content).with_context(|| format!("staging heredoc {}", h.name))?;
                    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
                    staged_names.push(h.name.clone());
                }
                for url in &remote {
                    if is_git(url) {
                        let tree = crate::steps::fetch::git_checkout(url, &dir.0, spec.keep_git_dir)?;
                        // The repository's contents go into DEST, as a directory source.
                        let all = [".".to_string()];
                        let req = CopyRequest {
                            workdir: &workdir,
                            chmod: chmod.as_ref(),
                            ..CopyRequest::whole_dir(&tree, &all, &spec.dest, owner.or(Some(Owner::default())))
                        };
                        copy::copy_into(&root, &req)?;
                        continue;
                    }
                    let name = crate::steps::fetch::file_name(url);
                    let f = dir.0.join(&name);
                    let mtime = match cx.urls.get(url) {
                        Some(r) => {
                            std::fs::copy(cx.store.blob_path(&r.digest), &f)
                                .with_context(|| format!("ADD {url}: staging the download"))?;
                            r.mtime
                        }
                        None => crate::steps::fetch::download(url, &f, spec.checksum.as_deref())?.mtime,
                    };
                    // Docker gives downloaded files mode 0600 and the server's mtime.
                    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
                    if let Some(t) = mtime {
                        let ts = nix::sys::time::TimeSpec::new(t, 0);
                        let _ = nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, &f, &ts, &ts, nix::sys::stat::UtimensatFlags::FollowSymlink);
                    }
                    staged_names.push(name);
                }
            }
            if spec.checksum.is_some() && remote.is_empty() {
                bail!("--checksum is only supported for ADD from a URL");
            }
            // A source stage or image is mounted for the copy (its scratch upper is
            // discarded).
            let from_root = match &spec.from {
                Some(from) => {
                    let src_state = sources.get(from)?;
                    let src_lowers = lower_dirs(cx, src_state)?;
                    Some(cx.snaps.prepare(&src_lowers)?)
                }
                None => None,
            };
            if !local.is_empty() {
                let context = from_root.as_ref().map(|a| a.merged()).unwrap_or(&cx.opts.context);
                let req = CopyRequest {
                    context,
                    sources: &local,
                    dest: &spec.dest,
                    workdir: &workdir,
                    owner,
                    chmod: chmod.as_ref(),
                    parents: spec.parents,
                    ignore: if from_root.is_none() { Some(&cx.ignore) } else { None },
                    exclude: exclude.as_ref(),
                    dest_is_dir,
                    unpack_archives: unpack && from_root.is_none(),
                    archive_owner: spec.chown.as_ref().and(owner),
                };
                copy::copy_into(&root, &req)?;
            }
            if let Some(dir) = staged.as_ref().filter(|_| !staged_names.is_empty()) {
                let req = CopyRequest {
                    workdir: &workdir,
                    chmod: chmod.as_ref(),
                    dest_is_dir,
                    // Remote archives are not unpacked unless --unpack asks.
                    unpack_archives: spec.unpack == Some(true),
                    archive_owner: spec.chown.as_ref().and(owner),
                    ..CopyRequest::whole_dir(&dir.0, &staged_names, &spec.dest, owner.or(Some(Owner::default())))
                };
                copy::copy_into(&root, &req)?;
            }
            drop(from_root);
            active.unmount()?;
        }
        _ => unreachable!("config-only steps are applied by ImageState"),
    }
    commit_layer(cx, state, active)
}

fn commit_layer(cx: &Ctx, state: &mut ImageState, mut active: ActiveSnapshot) -> Result<()> {
    let opts = DiffOptions {
        exclude: Vec::new(),
        source_date_epoch: cx.opts.source_date_epoch,
        gzip_level: cx.opts.compression_level.map(|l| l.clamp(0, 9) as u32),
        compression: cx.opts.compression,
        zstd_level: cx.opts.compression_level,
    };
    let mut w = cx.store.writer()?;
    // overlay: the upperdir (hardlinks broken by copy-up repaired); native: the
    // walk-and-compare diff in the same format.
    let t0 = std::time::Instant::now();
    let upper = active.diff().context("computing the step's changes")?;
    let t1 = std::time::Instant::now();
    let digests = write_layer(upper, &opts, &mut w).context("writing the layer")?;
    let (digest, size) = w.commit(Some(&digests.digest))?;
    let t2 = std::time::Instant::now();
    cx.snaps.commit(active, &digests.diff_id)?;
    tracing::debug!(
        layer = %digest,
        size,
        diff_ms = (t1 - t0).as_millis() as u64,
        write_ms = (t2 - t1).as_millis() as u64,
        commit_ms = t2.elapsed().as_millis() as u64,
        "layer committed"
    );
    state.push_layer(Layer { media_type: digests.media_type.to_string(), digest, size, diff_id: digests.diff_id });
    Ok(())
}
