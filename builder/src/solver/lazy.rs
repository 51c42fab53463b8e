//! Blobs fetched when needed: base image layers (pulled from their repository) and
//! cached layers (from the cache that had the record), for a step that needs their
//! bytes (`Ctx::ensure_blob`) or an output that needs every blob (`fetch_lazy`).

use super::*;

/// The layers of the pulled images that are not in the store, by digest: where each
/// is pulled from, and its size.
pub(super) fn base_layers_to_pull(pulled: &PulledMap, store: &ContentStore) -> BTreeMap<Digest, (Reference, u64)> {
    let mut lazy_base = BTreeMap::new();
    for p in pulled.values() {
        let Some(repo) = &p.layers_from else { continue };
        for l in p.state.layers.iter().filter(|l| !store.has(&l.digest)) {
            lazy_base.insert(l.digest.clone(), (repo.clone(), l.size));
        }
    }
    lazy_base
}

/// Whether nothing in this build needs a base layer's bytes beyond its skeleton, so
/// that a skeleton's read stores nothing (issue 18 part 2: a COPY-only push never
/// writes the base to disk): every output is a push to the registry every lazy base
/// comes from (its blobs are mounted there), no stage has a RUN (which unpacks) and no
/// SBOM scans the image. Else the blob is kept as it streams, so that a later unpack,
/// output or upload does not download it again. A step that fails on skeletons, or
/// touches a file of the base, still unpacks and downloads again then.
pub(super) fn skeleton_reads_stay_remote(opts: &BuildOptions, jobs: &[Job], pulled: &PulledMap) -> bool {
    let pushes_only = opts.push && opts.outputs.is_empty() && !opts.tags.is_empty();
    let same_registry = pulled
        .values()
        .filter_map(|p| p.layers_from.as_ref())
        .all(|from| opts.tags.iter().all(|t| t.registry() == from.registry()));
    let no_run = jobs.iter().all(|j| j.stage.steps.iter().all(|s| !matches!(s.kind, StepKind::Run { .. })));
    pushes_only && same_registry && no_run && opts.attestations.sbom.is_none()
}

impl Ctx {
    /// Pull the base layers among `digests` that are not here yet, four at a time
    /// (each pull bounded by the registry client as always).
    pub(super) async fn pull_base_layers(&self, digests: &[Digest]) -> Result<()> {
        let wanted: Vec<(Digest, (Reference, u64))> = {
            let lazy = self.lazy_base.lock().expect("lazy base map");
            digests.iter().filter_map(|d| lazy.get(d).map(|v| (d.clone(), v.clone()))).collect()
        };
        for chunk in wanted.chunks(4) {
            let mut set = tokio::task::JoinSet::new();
            for (d, (repo, size)) in chunk.iter().cloned() {
                let (registry, store) = (self.registry.clone(), self.store.clone());
                set.spawn(async move {
                    registry.pull_blob(&repo, &d, Some(size), &store).await.with_context(|| format!("pulling layer {d} of {repo}"))?;
                    Ok::<_, anyhow::Error>(d)
                });
            }
            while let Some(done) = set.join_next().await {
                let d = done.context("a layer pull was interrupted")??;
                self.lazy_base.lock().expect("lazy base map").remove(&d);
            }
        }
        Ok(())
    }

    /// Make sure a layer blob is in the content store, fetching a lazily cached one.
    pub(super) fn ensure_blob(&self, layer: &Layer) -> Result<()> {
        if self.store.has(&layer.digest) {
            return Ok(());
        }
        if self.lazy_base.lock().expect("lazy base map").contains_key(&layer.digest) {
            return self.rt.block_on(self.pull_base_layers(std::slice::from_ref(&layer.digest)));
        }
        let from = self.lazy.lock().expect("lazy map").get(&layer.digest).copied();
        let Some(i) = from else {
            bail!("layer {} is missing from the content store", layer.digest);
        };
        self.rt.block_on(self.fetch_cached_layer(&layer.digest, i))
    }

    /// `work` on the blob of `l`. A base layer not pulled yet is read as it downloads
    /// (issue 18 part 1: inflate and unpack overlap the transfer); the reader sees
    /// the end of the blob only once it is stored with its digest checked, and when
    /// the download had to start over, or `work` failed on the streamed bytes, `work`
    /// runs again on the stored blob. Otherwise `work` reads the stored blob.
    /// With `keep` false a streamed blob is checked but not stored, and stays lazy
    /// (a skeleton's read: issue 18 part 2, the base is never written to disk; an
    /// output or a step that needs it later downloads it then).
    pub(super) fn read_blob<T>(&self, l: &Layer, keep: bool, work: impl Fn(Box<dyn std::io::Read>) -> Result<T>) -> Result<T> {
        let pulling = self.lazy_base.lock().expect("lazy base map").get(&l.digest).cloned();
        let from_store = |cx: &Ctx| -> Result<T> {
            cx.ensure_blob(l)?;
            work(Box::new(std::io::BufReader::new(cx.store.open_blob(&l.digest)?)))
        };
        let Some((repo, size)) = pulling.filter(|_| !self.store.has(&l.digest) && streaming()) else { return from_store(self) };
        let (tx, rx) = tokio::sync::mpsc::channel(32);
        let (registry, store, d) = (self.registry.clone(), self.store.clone(), l.digest.clone());
        let download = self.rt.spawn(async move { registry.pull_blob_tee(&repo, &d, Some(size), &store, tx, keep).await });
        let streamed = work(Box::new(std::io::BufReader::with_capacity(256 * 1024, kiln_cache::registry::TeeReader::new(rx))));
        let done = self.rt.block_on(download).context("a layer download was interrupted")?;
        done.with_context(|| format!("pulling layer {}", l.digest))?;
        if keep {
            self.lazy_base.lock().expect("lazy base map").remove(&l.digest);
        }
        match streamed {
            Ok(v) => {
                tracing::debug!(layer = %l.digest, kept = keep, "layer read as it downloaded");
                Ok(v)
            }
            Err(e) => {
                tracing::debug!(layer = %l.digest, error = %format!("{e:#}"), "reading the layer as it downloaded failed: again from the store");
                from_store(self)
            }
        }
    }

    /// Fetch the lazily cached layer `digest` from cache `i`, the one whose hit named it.
    async fn fetch_cached_layer(&self, digest: &Digest, i: usize) -> Result<()> {
        let rec = self
            .hits
            .values()
            .find(|(c, r)| *c == i && r.layer.as_ref().map(|l| &l.digest) == Some(digest))
            .map(|(_, r)| r.clone())
            .context("cache record for a lazy layer")?;
        self.caches[i].fetch_layer(&rec, &self.store).await.with_context(|| format!("fetching cached layer {digest}"))?;
        self.lazy.lock().expect("lazy map").remove(digest);
        Ok(())
    }
}

/// Whether an export failed because a blob is not in the content store (a lazily
/// cached layer the registry could not mount).
pub(super) fn missing_blob(e: &anyhow::Error) -> bool {
    use kiln_cache::{RegistryError, StoreError};
    e.chain().any(|c| {
        matches!(c.downcast_ref::<StoreError>(), Some(StoreError::NotFound(_)))
            || matches!(c.downcast_ref::<RegistryError>(), Some(RegistryError::Store { source: StoreError::NotFound(_), .. }))
    })
}

/// Download every cached layer that was not needed so far.
pub(super) async fn fetch_lazy(cx: &Ctx) -> Result<()> {
    // Base layers nothing needed so far, for an output that needs every blob.
    let base: Vec<Digest> = cx.lazy_base.lock().expect("lazy base map").keys().cloned().collect();
    cx.pull_base_layers(&base).await?;
    let lazy: Vec<(Digest, usize)> = cx.lazy.lock().expect("lazy map").iter().map(|(d, i)| (d.clone(), *i)).collect();
    for (digest, i) in lazy {
        cx.fetch_cached_layer(&digest, i).await?;
    }
    Ok(())
}

/// `KILN_STREAM_PULL=0` downloads a layer completely before reading it (for
/// comparisons).
fn streaming() -> bool {
    std::env::var("KILN_STREAM_PULL").as_deref() != Ok("0")
}
