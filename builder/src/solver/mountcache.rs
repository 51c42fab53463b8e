//! Cache mounts that travel with a registry cache (`--cache-to …,cache-mounts=true`;
//! `--cache-from` brings them back): which ones this build's steps used, restoring
//! one this machine does not have right before the first step that needs it runs
//! (lazily: a build whose `npm ci` is a cache hit downloads no npm cache), and packing
//! each into bundles (`kiln_snapshotter::bundle`) for the export. A restored or
//! unchanged mount is not packed again: its listing is compared with the one its
//! bundles were made from (`packed.json` beside `data/`).

use std::collections::BTreeSet;
use std::fs;
use std::io::BufReader;
use std::os::unix::fs::PermissionsExt;

use kiln_cache::layercache::MountRecord;
use kiln_frontend::{MountKind, RunMount};
use kiln_snapshotter::bundle::{self, BundleOptions, BUNDLE_MEDIA_TYPE};

use super::*;

/// Cache mounts the build's steps used: id → platforms of those steps.
pub(super) type MountsUsed = std::sync::Mutex<BTreeMap<String, BTreeSet<String>>>;

/// What `packed.json` holds: the listing a mount had when its bundles were made.
#[derive(serde::Serialize, serde::Deserialize)]
struct Packed {
    listing: Digest,
    record: MountRecord,
}

/// Before a RUN: each of its cache mounts is recorded as used and, the first time in
/// this build, restored from the first cache that carries it when this machine has
/// none (never under `--no-cache`, which starts cache mounts empty). A failed
/// restore is a warning: the step runs with an empty cache, as on a first run.
pub(super) fn before_run(cx: &Ctx, mounts: &[RunMount], workdir: &str, platform: &str) {
    // Held while restoring: a parallel job using the same mount waits for it.
    let mut used = cx.mounts_used.lock().unwrap_or_else(|p| p.into_inner());
    for m in mounts.iter().filter(|m| m.kind == MountKind::Cache) {
        let id = runmounts::cache_id(m, workdir);
        let first = !used.contains_key(&id);
        used.entry(id.clone()).or_default().insert(platform.to_string());
        let dir = runmounts::cache_path(&cx.opts.state_dir, &id);
        if !first || cx.opts.no_cache || dir.join("data").is_dir() {
            continue;
        }
        if let Err(e) = restore(cx, m, &id, &dir) {
            progress::get().warn(&format!("cache mount {id:?} was not restored (the step starts with it empty): {e:#}"));
        }
    }
}

fn restore(cx: &Ctx, m: &RunMount, id: &str, dir: &Path) -> Result<()> {
    for cache in &cx.caches {
        let Some(rec) = cx.rt.block_on(cache.mount_record(id)) else { continue };
        if let Some(b) = rec.bundles.iter().find(|b| b.media_type != BUNDLE_MEDIA_TYPE) {
            bail!("bundle {} has media type {:?}, not kiln's {BUNDLE_MEDIA_TYPE}", b.digest, b.media_type);
        }
        let t0 = std::time::Instant::now();
        fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("data.restore-{}", next_id()));
        fs::create_dir(&tmp)?;
        let (mode, uid, gid) = (m.mode.unwrap_or(0o755), m.uid.unwrap_or(0), m.gid.unwrap_or(0));
        let unpacked = (|| -> Result<()> {
            nix::unistd::chown(&tmp, Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(gid)))?;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
            for (i, b) in rec.bundles.iter().enumerate() {
                unpack_bundle(cx, cache.as_ref(), &rec, i, &tmp).with_context(|| format!("bundle {}", b.digest))?;
            }
            Ok(())
        })();
        if let Err(e) = unpacked {
            kiln_snapshotter::snapshots::remove_tree(&tmp);
            return Err(e);
        }
        // Its bundles are what it is now: an export packs nothing unless a step changes it.
        let listing = bundle::listing_digest(&tmp)?;
        fs::write(dir.join("id"), id)?;
        if fs::rename(&tmp, dir.join("data")).is_err() {
            kiln_snapshotter::snapshots::remove_tree(&tmp); // another build made it first
            return Ok(());
        }
        write_packed(dir, &Packed { listing, record: rec.clone() });
        progress::get().info(
            "cache_mount",
            &format!(
                "restored cache mount {id:?}: {:.1} MiB in {} entries from {} bundles in {:.1}s",
                rec.bytes as f64 / (1 << 20) as f64,
                rec.entries,
                rec.bundles.len(),
                t0.elapsed().as_secs_f64()
            ),
        );
        return Ok(());
    }
    Ok(())
}

/// Streams bundle `i` from where the cache keeps it into `into`: read once, hashed
/// as it goes (the scratch directory is thrown away unless every digest matches),
/// never stored (a restore costs one read of the bundles and one write of the tree).
fn unpack_bundle(cx: &Ctx, cache: &dyn LayerCache, rec: &MountRecord, i: usize, into: &Path) -> Result<()> {
    let b = &rec.bundles[i];
    let source = cx.rt.block_on(cache.open_bundle(rec, i))?;
    // One byte past the size the record gives is read, to notice a longer blob (an
    // endless answer stops there).
    let reader = std::io::Read::take(source.into_read(cx.rt.clone())?, b.size + 1);
    let mut hashed = kiln_oci::Sha256Reader::new(reader);
    kiln_snapshotter::apply_layer_onto(BufReader::with_capacity(1 << 20, &mut hashed), LayerCompression::Zstd, into, &[])?;
    // What follows the tar's end (zstd frame end, padding) counts for the digest.
    std::io::copy(&mut hashed, &mut std::io::sink())?;
    let (_, got, n) = hashed.finish();
    if got != b.digest || n != b.size {
        bail!("it is {got} ({n} bytes), the cache says {} ({} bytes)", b.digest, b.size);
    }
    Ok(())
}

fn write_packed(dir: &Path, p: &Packed) {
    let tmp = dir.join(format!("packed.json.tmp-{}", next_id()));
    let ok = serde_json::to_vec(p).ok().and_then(|b| fs::write(&tmp, b).ok()).and_then(|_| fs::rename(&tmp, dir.join("packed.json")).ok());
    if ok.is_none() {
        let _ = fs::remove_file(&tmp);
    }
}

fn read_packed(dir: &Path) -> Option<Packed> {
    let bytes = fs::read(dir.join("packed.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// After the steps, when an export carries cache mounts: each mount the build used,
/// as bundles in the store, handed to the exporting caches. A mount bigger than
/// `cache-mounts-max-size` stays local (a warning says so).
pub(super) fn pack_used(cx: &Ctx) -> Result<()> {
    let exporting: Vec<_> = cx.caches.iter().filter_map(|c| c.mount_export().map(|e| (c, e))).collect();
    if exporting.is_empty() {
        return Ok(());
    }
    let used = cx.mounts_used.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for (id, platforms) in used {
        let dir = runmounts::cache_path(&cx.opts.state_dir, &id);
        if !dir.join("data").is_dir() {
            continue;
        }
        let mut rec = match pack(cx, &id, &dir) {
            Ok(r) => r,
            // As any export failure: a warning unless ignore-error=false asks otherwise.
            Err(e) if cx.opts.cache_to.as_ref().is_some_and(|c| c.ignore_error == Some(false)) => {
                return Err(e.context(format!("packing cache mount {id:?} (--cache-to ignore-error=false)")));
            }
            Err(e) => {
                progress::get().warn(&format!("cache mount {id:?} is not exported: {e:#}"));
                continue;
            }
        };
        rec.id = id.clone();
        rec.platforms = platforms.into_iter().collect();
        rec.last_used = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        for (cache, ex) in &exporting {
            if let Some(max) = ex.max_size.filter(|max| rec.bytes > *max) {
                progress::get().warn(&format!(
                    "cache mount {id:?} holds {} MiB, more than cache-mounts-max-size ({} MiB): not exported",
                    rec.bytes >> 20,
                    max >> 20
                ));
                continue;
            }
            cache.put_mount(rec.clone());
        }
    }
    Ok(())
}

/// The mount's bundles: those of `packed.json` when its listing is unchanged and
/// they are all in the store, else newly packed (under the mount's lock, so no
/// `sharing=locked` step of another build writes it meanwhile).
fn pack(cx: &Ctx, id: &str, dir: &Path) -> Result<MountRecord> {
    let _lock = runmounts::lock_cache_dir(dir)?;
    let data = dir.join("data");
    let listing = bundle::listing_digest(&data)?;
    if let Some(p) = read_packed(dir) {
        // Its bundles must be somewhere the export can take them from: the store, or
        // (restored ones, which are streamed, not stored) the cache they came from.
        let imported: Vec<MountRecord> = cx.caches.iter().filter_map(|c| cx.rt.block_on(c.mount_record(id))).collect();
        let reachable = |d: &Digest| cx.store.has(d) || imported.iter().any(|r| r.bundles.iter().any(|b| b.digest == *d));
        if p.listing == listing && p.record.bundles.iter().all(|b| reachable(&b.digest)) {
            return Ok(p.record);
        }
    }
    let t0 = std::time::Instant::now();
    let bundles = bundle::pack(&data, &BundleOptions::default(), || cx.store.writer().map_err(std::io::Error::other))?;
    let mut rec = MountRecord { id: String::new(), bundles: Vec::new(), bytes: 0, entries: 0, platforms: Vec::new(), last_used: 0 };
    for b in bundles {
        let (digest, size) = b.out.commit(Some(&b.digest))?;
        rec.bundles.push(LayerRecord { media_type: BUNDLE_MEDIA_TYPE.to_string(), digest, size, annotations: Default::default(), ztoc: None });
        rec.bytes += b.bytes;
        rec.entries += b.entries;
    }
    tracing::debug!(ms = t0.elapsed().as_millis() as u64, bundles = rec.bundles.len(), bytes = rec.bytes, "cache mount packed");
    write_packed(dir, &Packed { listing, record: rec.clone() });
    Ok(rec)
}
