//! One stage's step loop: cache hits (by key, then by content key), steps run,
//! history and step names as BuildKit shows them.

use super::*;

/// Docker media types name the same bytes; the manifest we write is OCI.
pub(super) fn oci_layer_type(mt: &str) -> String {
    match media::layer_compression(mt) {
        Some(LayerCompression::Gzip) => media::OCI_LAYER_GZIP.to_string(),
        Some(LayerCompression::Zstd) => media::OCI_LAYER_ZSTD.to_string(),
        Some(LayerCompression::None) => media::OCI_LAYER_TAR.to_string(),
        None => mt.to_string(),
    }
}

pub(super) fn run_stage(cx: &Ctx, job_id: JobId, job: &Job, pulled: &PulledMap, inputs: &BTreeMap<StageIdx, ImageState>) -> Result<ImageState> {
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
    state.layers_stay = cx.stays.contains(&job_id);
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
            last_time = take_hit(cx, &sref, &mut state, rec, &step.created_by)?;
            content_parent = None;
            continue;
        }
        let cacheable = crate::plan::keys::cacheable(&step.kind);
        let content = if probe && cacheable && (content_parent.is_some() || keys.reads_stage(i)) {
            step_content_key(cx, keys, i, step, content_parent.as_ref(), &sources)
        } else {
            None
        };
        let explained = cacheable.then(|| super::explain::step_inputs(cx, job_id, job, i, pulled));
        if let Some(rec) = content.as_ref().and_then(|c| probe_late(cx, c)) {
            last_time = take_hit(cx, &sref, &mut state, &rec, &step.created_by)?;
            // Found by content: the step's own key leads to the same layer next time.
            remember(cx, key, &state, &step.created_by, &last_time, explained.as_ref());
            content_parent = content;
            continue;
        }
        if let (true, Some(now)) = (probe, &explained) {
            super::explain::explain_miss(cx, &sref, key, now);
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
            remember(cx, key, &state, &step.created_by, &last_time, explained.as_ref());
            if let Some(c) = &content {
                remember(cx, c, &state, &step.created_by, &last_time, explained.as_ref());
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
pub(super) struct StepNames {
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
pub(super) fn step_content_key(
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
pub(super) fn probe_late(cx: &Ctx, key: &CacheKey) -> Option<CacheRecord> {
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

/// A step served from the cache: reported and counted as cached, its layer taken;
/// returns the history time it first ran.
fn take_hit(cx: &Ctx, sref: &StepRef<'_>, state: &mut ImageState, rec: &CacheRecord, created_by: &str) -> Result<String> {
    let rec = super::leaves::hit_for_stage(cx, state, rec).with_context(|| format!("step {}/{}: the cached layer", sref.n, sref.total))?;
    let (Some(l), Some(diff_id)) = (&rec.layer, &rec.diff_id) else { bail!("step {}/{}: a cache record without its layer", sref.n, sref.total) };
    progress::get().step(sref, progress::State::Cached, None, None);
    cx.counts.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    state.push_layer(Layer { media_type: l.media_type.clone(), digest: l.digest.clone(), size: l.size, diff_id: diff_id.clone(), annotations: l.annotations.clone(), ztoc: l.ztoc.clone().filter(|z| cx.store.has(&z.digest)) });
    let time = rec.history_created.clone().unwrap_or_else(|| cx.created.clone());
    state.push_history(&time, created_by, false);
    cx.used_hits.lock().expect("hits").push(rec);
    Ok(time)
}

/// Queue a cache record for the step that just added the last layer of `state`.
pub(super) fn remember(cx: &Ctx, key: &CacheKey, state: &ImageState, created_by: &str, time: &str, inputs: Option<&kiln_cache::layercache::StepInputs>) {
    let l = state.layers.last().expect("the step added a layer");
    let mut rec = CacheRecord::new(
        key,
        Some(LayerRecord { media_type: l.media_type.clone(), digest: l.digest.clone(), size: l.size, annotations: l.annotations.clone(), ztoc: l.ztoc.clone() }),
        Some(l.diff_id.clone()),
        created_by,
    );
    rec.history_created = Some(time.to_string());
    rec.inputs = inputs.cloned();
    cx.new_records.lock().expect("records").push(rec);
}

pub(super) fn one_line(s: &str) -> String {
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

/// `Dockerfile:2`, or `Dockerfile:2-3` for an instruction continued over lines (as
/// BuildKit's source map reports it).
pub(super) fn source_range(step: &Step) -> String {
    if step.end_line > step.loc.line {
        format!("{}:{}-{}", step.loc.file, step.loc.line, step.end_line)
    } else {
        format!("{}:{}", step.loc.file, step.loc.line)
    }
}
