//! The snapshotter boundary: unpacked lower layers of an image state, the
//! rootfs of a step, mount roots for RUN --mount from stages, and committing a
//! step's changes as a layer.

use super::*;

/// Roots for `RUN --mount=type=bind`: stages and images mounted for the step (their
/// scratch upper takes any writes and is thrown away), or a writable view of the
/// context.
pub(super) struct MountRoots<'a, 'b> {
    pub(super) cx: &'a Ctx,
    pub(super) sources: &'a Sources<'b>,
    pub(super) held: Vec<ActiveSnapshot>,
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
        let snap = self.cx.snaps.prepare(&[self.cx.bind_context()?])?;
        let root = snap.merged().to_path_buf();
        self.held.push(snap);
        Ok(root)
    }
}

/// Where `COPY --from` reads: earlier stages of this build, or pulled images.
pub(super) struct Sources<'a> {
    pub(super) stages: &'a BTreeMap<StageIdx, ImageState>,
    pub(super) pulled: &'a PulledMap,
    pub(super) platform: &'a str,
}

impl Sources<'_> {
    pub(super) fn get(&self, from: &CopyFrom) -> Result<&ImageState> {
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

/// Make sure every layer of `state` is unpacked; return their directories, bottom first.
pub(super) fn lower_dirs(cx: &Ctx, state: &ImageState) -> Result<Vec<PathBuf>> {
    // Settle overlay vs native once per build (auto: probe an overlay mount).
    let (_, notice) = cx.snaps.select(cx.opts.snapshotter);
    if let Some(n) = notice {
        crate::progress::get().info("note", &format!("note: {n}"));
    }
    let missing: Vec<&Layer> = state.layers.iter().filter(|l| cx.snaps.layer(&l.diff_id).is_none()).collect();
    if missing.len() > 1 && side_by_side() {
        unpack_side_by_side(cx, &missing)?;
    } else {
        // Base layers not pulled yet come down together, not one per unpack.
        let digests: Vec<Digest> = missing.iter().map(|l| l.digest.clone()).collect();
        cx.rt.block_on(cx.pull_base_layers(&digests))?;
    }
    // Each layer is unpacked knowing the ones below it (symlinked parents and
    // hardlinks into lower layers resolve as on a merged rootfs).
    let mut dirs: Vec<PathBuf> = Vec::with_capacity(state.layers.len());
    for l in &state.layers {
        let dir = match cx.snaps.layer_on(&l.diff_id, &dirs) {
            Some(p) => p,
            None => {
                let compression = compression_of(l)?;
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

/// Several layers without snapshots: each fetched and unpacked on its own thread, on
/// nothing (`kiln_snapshotter::side_by_side`); those that lean on their lowers are
/// left for `lower_dirs` to unpack in order, their blobs fetched by then. As many
/// at once as there are cores (at least 2, at most 4): unpacking is bound by one
/// core's inflate and the kernel's inode creation, so layers side by side scale.
fn unpack_side_by_side(cx: &Ctx, layers: &[&Layer]) -> Result<()> {
    // Largest first: with one layer much bigger than the rest (a toolchain layer),
    // it starts at once and the small ones share the other cores, instead of it
    // starting last and running alone at the end.
    let mut layers = layers.to_vec();
    layers.sort_by_key(|l| std::cmp::Reverse(l.size));
    on_threads(&layers, "a layer unpack", |l| {
        let compression = compression_of(l)?;
        let t0 = std::time::Instant::now();
        let alone = cx.read_blob(l, true, |blob| cx.snaps.unpack_alone(&l.diff_id, blob, compression).with_context(|| format!("unpacking layer {}", l.digest)))?;
        tracing::debug!(layer = %l.digest, alone = alone.is_some(), ms = t0.elapsed().as_millis() as u64, "layer unpacked side by side");
        Ok(())
    })
}

/// `work` on every item, as many at once as there are cores (at least 2, at most 4),
/// each thread taking the next item until none is left; the first error is returned.
fn on_threads<T: Sync>(items: &[T], what: &str, work: impl Fn(&T) -> Result<()> + Sync) -> Result<()> {
    let at_once = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 4);
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..at_once.min(items.len()))
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    while let Some(item) = items.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
                        work(item)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow!("{what} thread panicked"))??;
        }
        Ok(())
    })
}

/// `KILN_SIDE_BY_SIDE=0` unpacks (and makes skeletons of) a base's layers in order.
fn side_by_side() -> bool {
    std::env::var("KILN_SIDE_BY_SIDE").as_deref() != Ok("0")
}

/// How a layer's blob is compressed, from its media type.
pub(super) fn compression_of(l: &Layer) -> Result<LayerCompression> {
    media::layer_compression(&l.media_type).with_context(|| format!("layer {} has unsupported media type {}", l.digest, l.media_type))
}

/// The lowers of a step that only adds files, with the base left packed: the
/// skeletons (`kiln_snapshotter::skeleton`) of the leading layers that have no
/// snapshot yet, then the snapshots of the layers above them.
pub(super) struct SparseLowers {
    lowers: Vec<PathBuf>,
    skeletons: Vec<PathBuf>,
}

/// `None` where skeletons cannot serve: native snapshots (no overlay to merge them),
/// every layer unpacked already (nothing to save), a layer above the leading ones
/// without its snapshot, or `KILN_UNPACK_FREE=0` (the escape hatch, and how the
/// tests build the same image the unpacking way).
fn sparse_lowers(cx: &Ctx, state: &ImageState) -> Result<Option<SparseLowers>> {
    if std::env::var("KILN_UNPACK_FREE").as_deref() == Ok("0") {
        return Ok(None);
    }
    let (kind, _) = cx.snaps.select(cx.opts.snapshotter);
    if kind != kiln_snapshotter::SnapshotterKind::Overlay {
        return Ok(None);
    }
    let lead = state.layers.iter().take_while(|l| cx.snaps.layer(&l.diff_id).is_none()).count();
    if lead == 0 {
        return Ok(None);
    }
    let mut rest = Vec::new();
    for l in &state.layers[lead..] {
        match cx.snaps.layer(&l.diff_id) {
            Some(p) => rest.push(p),
            None => return Ok(None),
        }
    }
    if lead > 1 && side_by_side() {
        skeletons_side_by_side(cx, &state.layers[..lead])?;
    }
    let mut skeletons: Vec<PathBuf> = Vec::with_capacity(lead);
    let mut pulled = false;
    for (i, l) in state.layers[..lead].iter().enumerate() {
        let dir = match cx.snaps.skeleton(&l.diff_id, &skeletons) {
            Some(p) => p,
            None => {
                let key = skeleton_key(&state.layers[..=i]);
                match probe_late(cx, &key).map(|rec| restore_skeleton(cx, l, &skeletons, rec)) {
                    Some(Ok(dir)) => dir,
                    found => {
                        if let Some(Err(e)) = found {
                            tracing::debug!(error = %format!("{e:#}"), "cached skeleton not used");
                        }
                        if !pulled {
                            // The rest of the base still without skeletons comes down
                            // together, not one per skeleton; one layer alone is read
                            // as it downloads (`make_skeleton`, kept unless
                            // `Ctx::skeletons_only`).
                            let wanted = without_skeletons(cx, &state.layers[..lead], &skeletons);
                            if wanted.len() > 1 {
                                cx.rt.block_on(cx.pull_base_layers(&wanted))?;
                            }
                            pulled = true;
                        }
                        make_skeleton(cx, l, &skeletons, &key)?
                    }
                }
            }
        };
        skeletons.push(dir);
    }
    let mut lowers = skeletons.clone();
    lowers.extend(rest);
    Ok(Some(SparseLowers { lowers, skeletons }))
}

/// The blobs of the layers of `lead` above the skeletons `made` (its bottom ones)
/// whose skeletons are not made yet, each named on the skeletons below it.
fn without_skeletons(cx: &Ctx, lead: &[Layer], made: &[PathBuf]) -> Vec<Digest> {
    let mut below = made.to_vec();
    let mut wanted = Vec::new();
    for l in &lead[made.len()..] {
        if cx.snaps.skeleton(&l.diff_id, &below).is_none() {
            wanted.push(l.digest.clone());
        }
        below.push(cx.snaps.skeleton_path(&l.diff_id, &below));
    }
    wanted
}

/// The skeletons of `lead` (the bottom layers, none unpacked) that neither this
/// machine nor a cache has, made at once, each on its own thread on nothing
/// (`SnapshotStore::skeleton_alone`; as `unpack_side_by_side` for unpacking). Those
/// that reach below themselves are left to `sparse_lowers`' ordered pass.
fn skeletons_side_by_side(cx: &Ctx, lead: &[Layer]) -> Result<()> {
    let mut paths: Vec<PathBuf> = Vec::with_capacity(lead.len());
    let mut todo: Vec<(usize, CacheKey)> = Vec::new();
    for (i, l) in lead.iter().enumerate() {
        if cx.snaps.skeleton(&l.diff_id, &paths).is_none() {
            let key = skeleton_key(&lead[..=i]);
            match probe_late(cx, &key).map(|rec| restore_skeleton(cx, l, &paths, rec)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %format!("{e:#}"), "cached skeleton not used");
                    todo.push((i, key));
                }
                None => todo.push((i, key)),
            }
        }
        paths.push(cx.snaps.skeleton_path(&l.diff_id, &paths));
    }
    if todo.len() < 2 {
        return Ok(());
    }
    // Largest first, as in `unpack_side_by_side`.
    todo.sort_by_key(|(i, _)| std::cmp::Reverse(lead[*i].size));
    on_threads(&todo, "a layer skeleton", |(i, key)| make_skeleton_as(cx, &lead[*i], &paths[..*i], key, true).map(|_| ()))
}

/// The cache key of the skeleton of the top of `layers` (a skeleton depends on the
/// layers below it: parents resolved through them).
fn skeleton_key(layers: &[Layer]) -> CacheKey {
    CacheKey::from_parts(std::iter::once("kiln skeleton v1".to_string()).chain(layers.iter().map(|l| l.diff_id.to_string())))
}

/// A skeleton from a cache's record of one (its blob fetched by `probe_late`).
fn restore_skeleton(cx: &Ctx, l: &Layer, below: &[PathBuf], rec: CacheRecord) -> Result<PathBuf> {
    let (Some(blob), Some(blob_diff_id)) = (&rec.layer, &rec.diff_id) else { bail!("a skeleton record without its layer") };
    let compression = media::layer_compression(&blob.media_type).with_context(|| format!("media type {}", blob.media_type))?;
    let reader = std::io::BufReader::new(cx.store.open_blob(&blob.digest)?);
    let dir = cx.snaps.restore_skeleton(&l.diff_id, below, reader, compression, blob_diff_id)?;
    tracing::debug!(layer = %l.digest, skeleton = %blob.digest, "layer skeleton from the cache");
    cx.used_hits.lock().expect("hits").push(rec);
    Ok(dir)
}

/// A skeleton made from the layer itself; written as a layer too when a cache
/// travels (`--cache-to`, `--cache-repo`), so that a fresh runner takes it from there
/// and needs no byte of the base.
fn make_skeleton(cx: &Ctx, l: &Layer, below: &[PathBuf], key: &CacheKey) -> Result<PathBuf> {
    make_skeleton_as(cx, l, below, key, false)?.context("skeleton not made")
}

/// [`make_skeleton`], or with `alone` made on nothing to stand on `below` (not made
/// yet): `None` when the layer reaches below itself (`SnapshotStore::skeleton_alone`).
fn make_skeleton_as(cx: &Ctx, l: &Layer, below: &[PathBuf], key: &CacheKey, alone: bool) -> Result<Option<PathBuf>> {
    let compression = compression_of(l)?;
    let t0 = std::time::Instant::now();
    let travels = cx.opts.cache_to.is_some() || cx.opts.cache_repo.is_some();
    let opts = DiffOptions { compression: kiln_snapshotter::Compression::Zstd, ..Default::default() };
    let made = cx.read_blob(l, !cx.skeletons_only, |blob| {
        let mut w = cx.store.writer()?;
        let to = travels.then_some((&opts, &mut w as &mut dyn std::io::Write));
        let made = if alone {
            cx.snaps.skeleton_alone(&l.diff_id, below, blob, compression, to)
        } else {
            cx.snaps.skeleton_onto(&l.diff_id, below, blob, compression, to).map(Some)
        };
        Ok((made.with_context(|| format!("reading layer {}", l.digest))?, w))
    })?;
    let (made, w) = made;
    let Some((dir, digests)) = made else {
        tracing::debug!(layer = %l.digest, "layer skeleton reaches below: made in order");
        return Ok(None);
    };
    tracing::debug!(layer = %l.digest, alone, ms = t0.elapsed().as_millis() as u64, "layer skeleton made");
    if let Some(d) = digests {
        let (digest, size) = w.commit(Some(&d.digest))?;
        let layer = LayerRecord { media_type: d.media_type.to_string(), digest, size, annotations: Default::default(), ztoc: None };
        let rec = CacheRecord::new(key, Some(layer), Some(d.diff_id), &format!("kiln skeleton of {}", l.diff_id));
        cx.new_records.lock().expect("records").push(rec);
        cx.skeleton_keys.lock().expect("skeleton keys").push(key.hex().to_string());
    }
    Ok(Some(dir))
}

/// Run `work` (a step that only adds files: COPY, ADD, WORKDIR) on skeletons and
/// commit its layer: `true`. `false` when it must run on the unpacked layers
/// instead: skeletons cannot serve, the work failed there (the unpacked run gives
/// the error, or succeeds where a skeleton lacked something), or it touched a path
/// where the base has a file (`listed_node_in`). The layer is then the one the
/// unpacked base gives, byte for byte (`integration/tests/e2e_unpack_free.rs`).
pub(super) fn unpack_free(
    cx: &Ctx,
    state: &mut ImageState,
    work: impl FnOnce(&ImageState, &mut ActiveSnapshot, &Path) -> Result<()>,
) -> Result<bool> {
    let sparse = match sparse_lowers(cx, state) {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(false),
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), "no skeletons: unpacking");
            return Ok(false);
        }
    };
    let mut active = cx.snaps.prepare(&sparse.lowers)?;
    let root = active.merged().to_path_buf();
    if let Err(e) = work(state, &mut active, &root) {
        tracing::debug!(error = %format!("{e:#}"), "the step failed on skeletons: unpacking");
        return Ok(false);
    }
    let upper = active.diff().context("computing the step's changes")?;
    if let Some(p) = kiln_snapshotter::skeleton::listed_node_in(upper, &sparse.skeletons).context("checking the step's changes")? {
        tracing::debug!(path = %p, "the step touched a file of the base: unpacking");
        return Ok(false);
    }
    commit_layer(cx, state, active)?;
    Ok(true)
}

/// Whether a step is a WORKDIR that makes a layer (any but `/`, as BuildKit).
pub(super) fn workdir_layer(kind: &StepKind) -> bool {
    matches!(kind, StepKind::Workdir(w) if w.trim_end_matches('/') != "")
}

/// Who owns a WORKDIR that a step creates: the stage's USER (root if unknown).
pub(super) fn workdir_owner(root: &Path, state: &ImageState) -> Owner {
    resolve_user(root, &state.user()).map(|r| Owner { uid: r.uid, gid: r.gid }).unwrap_or_default()
}

/// WORKDIR's layer: its directory made with its parents (an empty layer when it
/// exists already).
pub(super) fn materialize_workdir(cx: &Ctx, state: &mut ImageState) -> Result<()> {
    let mkdir = |state: &ImageState, _: &mut ActiveSnapshot, root: &Path| {
        copy::mkdir_p_as(root, Path::new(&state.workdir()), Some(workdir_owner(root, state)))
    };
    if unpack_free(cx, state, mkdir)? {
        return Ok(());
    }
    let lowers = lower_dirs(cx, state)?;
    let active = cx.snaps.prepare(&lowers)?;
    let root = active.merged().to_path_buf();
    let workdir = state.workdir();
    copy::mkdir_p_as(&root, Path::new(&workdir), Some(workdir_owner(&root, state)))?;
    commit_layer(cx, state, active)
}

/// A writer that adds what passes through to the live view's layer counter.
struct Counted<W> {
    inner: W,
    count: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(c) = &self.count {
            c.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// How this build writes layers: `--compression`, its level, `SOURCE_DATE_EPOCH`,
/// and the `--ignore-path` trees left out of every layer.
pub(super) fn diff_options(cx: &Ctx) -> DiffOptions {
    DiffOptions {
        exclude: cx.opts.ignore_paths.iter().map(|p| p.strip_prefix("/").unwrap_or(p).to_path_buf()).collect(),
        source_date_epoch: cx.opts.source_date_epoch,
        gzip_level: cx.opts.compression_level.map(|l| l.clamp(0, 9) as u32),
        compression: cx.opts.compression,
        zstd_level: cx.opts.compression_level,
        soci_span: cx.opts.soci.as_ref().map(|s| s.span),
    }
}

pub(super) fn commit_layer(cx: &Ctx, state: &mut ImageState, mut active: ActiveSnapshot) -> Result<()> {
    let mut opts = diff_options(cx);
    if state.layers_stay {
        // Never leaves this machine as it is: kept uncompressed (`leaves.rs`).
        opts.compression = kiln_snapshotter::Compression::None;
    }
    let mut w = cx.store.writer()?;
    // overlay: the upperdir (hardlinks broken by copy-up repaired); native: the
    // walk-and-compare diff in the same format.
    let t0 = std::time::Instant::now();
    let upper = active.diff().context("computing the step's changes")?;
    let t1 = std::time::Instant::now();
    let digests = write_layer(upper, &opts, Counted { inner: &mut w, count: progress::get().layer_bytes() }).context("writing the layer")?;
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
    let ztoc = store_ztoc(cx, digests.ztoc.as_deref())?;
    state.push_layer(Layer { media_type: digests.media_type.to_string(), digest, size, diff_id: digests.diff_id, annotations: digests.annotations, ztoc });
    Ok(())
}

/// A layer's SOCI ztoc into the content store.
pub(super) fn store_ztoc(cx: &Ctx, ztoc: Option<&[u8]>) -> Result<Option<kiln_cache::layercache::BlobRef>> {
    let Some(z) = ztoc else { return Ok(None) };
    Ok(Some(kiln_cache::layercache::BlobRef { digest: cx.store.put(z)?, size: z.len() as u64 }))
}
