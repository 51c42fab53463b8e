//! Which layers leave the machine, and compressing the ones kept uncompressed when
//! they come to leave.
//!
//! A layer is compressed only to travel: in a pushed or written image, or in a
//! cache that is exported. The layers of a stage that no output image is built on
//! (a builder stage the final stage only `COPY --from`s) and that no exported cache
//! takes are kept as an uncompressed blob (`…layer.v1.tar`, its digest its diffID):
//! writing it costs what writing the tar costs, not what gzip costs (issue 18 part
//! 4: a 460 MB apt layer took 30 s to gzip). Steps read a stage's tree from its
//! snapshots, never from blobs, so nothing else changes. When such a layer later
//! comes to leave (a cache hit in a stage an output is built on, in this build or
//! a later one), it is compressed then, from the kept blob, to the bytes compressing
//! it at once would have given (`kiln_snapshotter::diff::compress_tar`), and the
//! local cache's record is replaced by the compressed one.

use std::collections::BTreeSet;

use super::*;

/// The jobs whose layers stay on this machine: none when an exported cache takes
/// every step's layer (`--cache-to … mode=max`, a Kaniko `--cache-repo`) or layers
/// are not compressed anyway; else every job that no target is built `FROM`.
pub(super) fn jobs_that_stay(opts: &BuildOptions, plans: &[TargetPlan], jobs: &[Job]) -> BTreeSet<JobId> {
    let every_step_exported = opts.cache_repo.is_some()
        || opts.cache_to.as_ref().is_some_and(|c| c.mode == kiln_cache::registrycache::CacheMode::Max);
    // Lazy formats are written as made: an eStargz layer is not its plain tar
    // compressed later (it adds entries), and both carry their TOC annotations.
    if every_step_exported || opts.compression == kiln_snapshotter::Compression::None || opts.compression.is_lazy() || keep_compressing() {
        return BTreeSet::new();
    }
    let leave: BTreeSet<JobId> = plans.iter().flat_map(TargetPlan::image_jobs).collect();
    (0..jobs.len()).map(JobId).filter(|j| !leave.contains(j)).collect()
}

/// `KILN_COMPRESS_ALL=1` compresses every layer as it is made (the behaviour before
/// kept layers, for comparisons).
fn keep_compressing() -> bool {
    std::env::var_os("KILN_COMPRESS_ALL").is_some_and(|v| v == "1")
}

/// The layer of a cache hit as the stage needs it: a kept (uncompressed) layer
/// compressed when the stage's layers leave, its record replaced in the caches;
/// otherwise the record as it is.
pub(super) fn hit_for_stage(cx: &Ctx, state: &ImageState, rec: &CacheRecord) -> Result<CacheRecord> {
    let Some(l) = &rec.layer else { return Ok(rec.clone()) };
    let kept = media::layer_compression(&l.media_type) == Some(LayerCompression::None);
    if state.layers_stay || !kept || cx.opts.compression == kiln_snapshotter::Compression::None || !cx.store.has(&l.digest) {
        return Ok(rec.clone());
    }
    let diff_id = rec.diff_id.as_ref().context("a cache record without its diffID")?;
    let t0 = std::time::Instant::now();
    let blob = std::io::BufReader::new(cx.store.open_blob(&l.digest)?);
    let (layer, _) = super::recompress::compress_from(cx, blob, diff_id)
        .with_context(|| format!("compressing the kept layer {} (the layer its cache record names)", l.digest))?;
    tracing::debug!(kept = %l.digest, layer = %layer.digest, ms = t0.elapsed().as_millis() as u64, "kept layer compressed");
    let mut out = rec.clone();
    out.layer = Some(layer);
    cx.new_records.lock().expect("records").push(out.clone());
    Ok(out)
}
