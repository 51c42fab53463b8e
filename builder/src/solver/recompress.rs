//! `--force-compression` (BuildKit's `force-compression=true`, Buildah's
//! `--force-compression`): every layer of an output image that is not in the
//! build's `--compression` format — the base image's, in practice — is rewritten
//! in it from its uncompressed tar, so that a whole image is eStargz or
//! zstd:chunked (or zstd) and not only the layers the build made. Without it the
//! base layers keep their blobs, as BuildKit and Buildah keep them.
//!
//! A rewrite is remembered in the local cache under the source blob, the format and
//! the level, so a rebuild does not recompress the base again.

use super::*;

fn key(l: &Layer, cx: &Ctx) -> CacheKey {
    let level = cx.opts.compression_level.map(|l| l.to_string()).unwrap_or_default();
    let soci = cx.opts.soci.as_ref().map(|s| format!("soci span {}", s.span)).unwrap_or_default();
    CacheKey::from_parts(["kiln.recompress.v1", &l.digest.to_string(), cx.opts.compression.name(), &level, &soci])
}

/// Rewrites the layers of `state` not in the build's format.
pub(super) fn force(cx: &Ctx, state: &mut ImageState) -> Result<()> {
    if !cx.opts.force_compression {
        return Ok(());
    }
    let want = cx.opts.compression;
    let mut rewritten = 0;
    for i in 0..state.layers.len() {
        let l = state.layers[i].clone();
        // With --soci, a gzip layer without a ztoc is rewritten too (to get one).
        if want.describes(&l.media_type, &l.annotations) && (cx.opts.soci.is_none() || l.ztoc.is_some()) {
            continue;
        }
        let k = key(&l, cx);
        let known = super::stage::probe_late(cx, &k).and_then(|r| Some((r.layer?, r.diff_id?)));
        let (rec, diff_id) = match known {
            Some(hit) => hit,
            None => {
                let done = rewrite(cx, &l).with_context(|| format!("--force-compression: recompressing layer {} as {}", l.digest, want.name()))?;
                let rec = CacheRecord::new(&k, Some(done.0.clone()), Some(done.1.clone()), &format!("kiln recompress {} as {}", l.digest, want.name()));
                cx.new_records.lock().expect("records").push(rec);
                done
            }
        };
        let ztoc = rec.ztoc.filter(|z| cx.store.has(&z.digest));
        state.layers[i] = Layer { media_type: rec.media_type, digest: rec.digest, size: rec.size, diff_id: diff_id.clone(), annotations: rec.annotations, ztoc };
        state.config.rootfs.diff_ids[i] = diff_id;
        rewritten += 1;
    }
    if rewritten > 0 {
        progress::get().info("compression", &format!("{rewritten} layer(s) recompressed as {} (--force-compression)", want.name()));
    }
    Ok(())
}

/// Decompresses the blob and writes its tar in the build's format.
fn rewrite(cx: &Ctx, l: &Layer) -> Result<(LayerRecord, Digest)> {
    cx.ensure_blob(l)?;
    let blob = std::io::BufReader::new(cx.store.open_blob(&l.digest)?);
    let tar = kiln_snapshotter::apply::decompressed(blob, super::rootfs::compression_of(l)?)?;
    compress_from(cx, tar, &l.diff_id).map_err(|e| e.context("the image config names it"))
}

/// `tar` (whose sha256 must be `diff_id`) written as the build writes layers, into
/// the store, with its ztoc: the layer's record and its diffID (another one for
/// eStargz). Nothing is kept when the tar is not `diff_id`.
pub(super) fn compress_from(cx: &Ctx, tar: impl std::io::Read, diff_id: &Digest) -> Result<(LayerRecord, Digest)> {
    let mut hashed = kiln_oci::Sha256Reader::new(tar);
    let mut w = cx.store.writer()?;
    let d = kiln_snapshotter::diff::compress_tar(&mut hashed, &super::rootfs::diff_options(cx), &mut w)?;
    let (_, tar_digest, _) = hashed.finish();
    if &tar_digest != diff_id {
        bail!("the layer's tar is {tar_digest}, not the diffID {diff_id}");
    }
    let (digest, size) = w.commit(Some(&d.digest))?;
    let ztoc = super::rootfs::store_ztoc(cx, d.ztoc.as_deref())?;
    Ok((LayerRecord { media_type: d.media_type.to_string(), digest, size, annotations: d.annotations, ztoc }, d.diff_id))
}
