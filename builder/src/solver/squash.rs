//! `--squash` (Buildah's): the layers this build made, merged into one layer on
//! top of the base image's layers, which are kept as they are. The history keeps
//! every entry; those whose layers went into the squashed one are marked
//! `empty_layer` except the last, so history and layers still pair up.

use anyhow::{Context, Result};
use kiln_frontend::{Base, BuildGraph, StageIdx};
use kiln_snapshotter::diff::write_layer;

use super::{lower_dirs, Ctx, PulledMap};
use crate::image::{ImageState, Layer};

/// How many layers of the target stage come from the image at the root of its
/// `FROM` chain (0 for scratch).
pub(super) fn base_layers(graph: &BuildGraph, target: StageIdx, pulled: &PulledMap, platform: &str) -> usize {
    let mut stage = graph.stage(target);
    for _ in 0..graph.stages.len() {
        match stage.map(|s| &s.base) {
            Some(Base::Stage(i)) => stage = graph.stage(*i),
            Some(Base::Image(r)) => return pulled.get(&(r.clone(), platform.to_string())).map(|p| p.state.layers.len()).unwrap_or(0),
            _ => return 0,
        }
    }
    0
}

/// Replaces the layers above the first `keep` by one.
pub(super) fn squash(cx: &Ctx, state: &mut ImageState, keep: usize) -> Result<()> {
    if state.layers.len() <= keep + 1 {
        return Ok(());
    }
    let dirs = lower_dirs(cx, state)?;
    let merged = cx.snaps.squash(&dirs[keep..]).context("merging the build's layers")?;
    let opts = super::rootfs::diff_options(cx);
    let written = (|| -> Result<Layer> {
        let mut w = cx.store.writer()?;
        let digests = write_layer(&merged, &opts, &mut w).context("writing the squashed layer")?;
        let (digest, size) = w.commit(Some(&digests.digest))?;
        let ztoc = super::rootfs::store_ztoc(cx, digests.ztoc.as_deref())?;
        Ok(Layer { media_type: digests.media_type.to_string(), digest, size, diff_id: digests.diff_id, annotations: digests.annotations, ztoc })
    })();
    cx.snaps.remove_scratch(&merged);
    let layer = written?;
    let squashed = state.layers.len() - keep;
    state.layers.truncate(keep);
    state.config.rootfs.diff_ids.truncate(keep);
    state.push_layer(layer);
    // History: the entries of the squashed layers, all but the last, become empty.
    let mut with_layer: Vec<usize> = state.config.history.iter().enumerate().filter(|(_, h)| !h.empty_layer).map(|(i, _)| i).collect();
    let tail = with_layer.split_off(with_layer.len().saturating_sub(squashed));
    for &i in &tail[..tail.len().saturating_sub(1)] {
        state.config.history[i].empty_layer = true;
    }
    crate::progress::get().info("squash", &format!("squashed {squashed} layers into one ({keep} base layers kept)"));
    Ok(())
}
