//! The layer caches of one build: which ones (local first, then `--cache-repo` and
//! `--cache-from`/`--cache-to`), and what goes back into them after the steps — the
//! records of what ran, the hits taken, and the export with its mode.

use super::*;

/// The local layer cache, plus `--cache-repo` (Kaniko style) and
/// `--cache-from`/`--cache-to` (BuildKit style) registry caches.
pub(super) fn layer_caches(opts: &BuildOptions, store: &ContentStore, registry: &Registry) -> Result<Vec<Box<dyn LayerCache>>> {
    let copts = || CacheOptions { ttl: opts.cache_ttl, ..Default::default() };
    let mut caches: Vec<Box<dyn LayerCache>> = vec![Box::new(LocalCache::new(store.clone(), copts()))];
    if let Some(repo) = &opts.cache_repo {
        let repo_cache = RegistryCache::repo(registry.clone(), repo.clone(), copts());
        caches.push(Box::new(step_filter::StepFilter { inner: repo_cache, steps: opts.cache_repo_steps }));
    }
    if !opts.cache_from.is_empty() || opts.cache_to.is_some() {
        let from = opts.cache_from.iter().map(|c| c.location.clone()).collect();
        let to = opts.cache_to.as_ref().map(|c| (c.location.clone(), c.mode));
        let skip = opts.cache_from.iter().filter(|c| !c.restore_mounts).map(|c| c.location.clone()).collect();
        let mounts = opts.cache_to.as_ref().and_then(|c| c.mounts);
        caches.push(Box::new(RegistryCache::manifest(registry.clone(), from, to, copts()).with_mounts(skip, mounts)));
    }
    Ok(caches)
}

/// After the steps: what ran goes into every cache (local, `--cache-repo`,
/// `--cache-to`), what was taken from one is marked used, and the exports are written.
pub(super) async fn write_caches(cx: &Ctx, plans: &[TargetPlan]) -> Result<()> {
    let records = std::mem::take(&mut *cx.new_records.lock().expect("records"));
    let image_keys = image_step_keys(cx, plans);
    // Hits of this build's steps, taken or not (a stage whose result was a hit
    // further on is part of the build's cache chain, as BuildKit exports it in
    // mode=max), and the late hits the build took; mode=min filters them below.
    let mut used = std::mem::take(&mut *cx.used_hits.lock().expect("hits"));
    used.extend(cx.hits.values().map(|(_, r)| r.clone()));
    if cx.opts.cache_inline {
        let mut inline = cx.inline_records.lock().expect("inline records");
        for r in used.iter().chain(&records) {
            inline.insert(r.key.clone(), r.clone());
        }
    }
    for cache in &cx.caches {
        for r in &used {
            cache.mark_used(r, &cx.store);
        }
        for r in &records {
            if let Err(e) = cache.put(r, &cx.store).await {
                crate::progress::get().warn(&format!("could not store cache record {}: {e:#}", &r.key[..12]));
            }
        }
        cache.set_image_keys(&image_keys);
        if let Err(e) = cache.flush(&cx.store).await {
            // --cache-to ignore-error=false asks for a failed export to fail the build.
            if cx.opts.cache_to.as_ref().is_some_and(|c| c.ignore_error == Some(false)) {
                return Err(anyhow!("writing the cache (--cache-to ignore-error=false): {e:#}"));
            }
            crate::progress::get().warn(&format!("could not write the cache: {e:#}"));
        }
    }

    Ok(())
}

/// `--cache-to type=inline`: the records of the image's own steps, in its config
/// under the field a `--cache-from` import reads. Without their `inputs` (context
/// paths, build arg values): an image is for others to pull, and a miss against an
/// inline cache is still named by the step, not by the input.
pub(super) fn inline_records(cx: &Ctx, plan: &TargetPlan) -> serde_json::Value {
    let all = cx.inline_records.lock().expect("inline records");
    let mut out = serde_json::Map::new();
    for k in plan_step_keys(cx, plan) {
        if let Some(r) = all.get(&k) {
            let mut r = r.clone();
            r.inputs = None;
            out.insert(k, serde_json::to_value(&r).expect("a record serialises"));
        }
    }
    serde_json::Value::Object(out)
}

/// Where a push may mount blobs from: the bases' repositories and the registry caches'.
pub(super) fn push_mount_sources(cx: &Ctx, plans: &[TargetPlan]) -> Vec<Reference> {
    let mut mount_from = mount_sources(plans);
    // Cached layers live in the cache repositories: pushes mount them from there.
    let cache_refs = cx.opts.cache_from.iter().map(|c| &c.location).chain(cx.opts.cache_to.iter().map(|c| &c.location));
    mount_from.extend(cx.opts.cache_repo.iter().cloned().chain(cache_refs.filter_map(|l| match l {
        kiln_cache::registrycache::CacheLocation::Registry(r) => Some(r.clone()),
        kiln_cache::registrycache::CacheLocation::Layout { .. } => None,
    })));
    mount_from
}

/// The keys of the steps whose layers the built images hold: the target stage's and
/// those of the stages it is built `FROM`, on every platform (`--cache-to mode=min`).
fn image_step_keys(cx: &Ctx, plans: &[TargetPlan]) -> Vec<String> {
    let mut keys: Vec<String> = plans.iter().flat_map(|p| plan_step_keys(cx, p)).collect();
    keys.extend(cx.skeleton_keys.lock().expect("skeleton keys").iter().cloned());
    keys
}

/// The step keys of one target's image (see [`image_step_keys`]).
pub(super) fn plan_step_keys(cx: &Ctx, plan: &TargetPlan) -> Vec<String> {
    plan.image_jobs().iter().filter_map(|j| cx.keys.get(j)).flat_map(|k| k.steps.iter().map(|k| k.hex().to_string())).collect()
}
