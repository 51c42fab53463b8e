//! `kiln prune` and `kiln df`: what kiln keeps on disk, and giving it back.
//!
//! The content store (blobs, cache records) is pruned by the cache crate under its
//! exclusive lock. Unpacked layers (`snapshots/layers`) belong to subordinate ids, so
//! prune runs inside the build's user namespace; it removes every unpacked layer
//! that no longer has its blob in the store after pruning (they are rebuilt from
//! blobs on demand), all of them with `--all`, plus leftovers of killed builds.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use kiln_cache::gc::{parse_duration, parse_size};
use kiln_cache::{ContentStore, PruneOptions};

use crate::cli::maintenance::PruneArgs;
use crate::fsutil::disk_usage;


pub fn prune(args: &PruneArgs, state_dir: &Path) -> Result<()> {
    let keep_storage = match &args.keep_storage {
        Some(s) => Some(parse_size(s).ok_or_else(|| anyhow!("--keep-storage {s:?}: expected a size like 10GB or 512MiB"))?),
        None => None,
    };
    let until = match &args.filter {
        Some(f) => {
            let d = f.strip_prefix("until=").ok_or_else(|| anyhow!("--filter {f:?}: only until=DURATION is supported"))?;
            Some(parse_duration(d).ok_or_else(|| anyhow!("--filter {f:?}: expected a duration like 24h"))?)
        }
        None => None,
    };
    let content = state_dir.join("content");
    if !content.exists() {
        println!("nothing to prune in {}", state_dir.display());
        return Ok(());
    }
    let store = ContentStore::open(&content)?;
    // Everything is removed under the store's exclusive lock: no build runs meanwhile
    // (each holds the shared lock for its whole life), so none can be using a rootfs,
    // a scratch file or a secret removed here.
    let (report, (layers, beside)) =
        store.prune_and(&PruneOptions { all: args.all, keep_storage, until }, || remove_beside_store(state_dir, args.all, until))?;
    let freed = report.freed_bytes + beside;
    println!(
        "removed {} blobs, {} cache records, {} unpacked layers; freed {}",
        report.removed_blobs,
        report.removed_records,
        layers,
        human(freed)
    );
    Ok(())
}

/// What `prune` removes beside the content store: unpacked layers (`all`; those
/// older than `until`), scratch of killed builds (active steps, `tmp`), staged
/// secrets of dead builds in memory, and (`all`) cache mounts and context caches.
/// Returns (unpacked layers removed, bytes freed).
fn remove_beside_store(state_dir: &Path, all: bool, until: Option<std::time::Duration>) -> (usize, u64) {
    let (mut layers, mut freed) = (0usize, 0u64);
    let snap_root = state_dir.join("snapshots");
    // Unpacked layers and skeletons (a directory and its `.list` each) are rebuilt
    // from blobs on demand: --all removes them (those older than --filter, if given);
    // a plain prune keeps them.
    for rd in ["layers", "skeletons"].map(|d| std::fs::read_dir(snap_root.join(d))).into_iter().flatten() {
        for e in rd.flatten() {
            let old_enough = until.is_none_or(|u| {
                e.metadata().and_then(|m| m.modified()).map(|t| t.elapsed().unwrap_or_default() >= u).unwrap_or(true)
            });
            if all && old_enough {
                freed += disk_usage(&e.path());
                layers += usize::from(e.file_type().is_ok_and(|t| t.is_dir()));
                kiln_snapshotter::snapshots::remove_tree(&e.path());
            }
        }
    }
    for d in [snap_root.join("active"), state_dir.join("tmp")] {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                freed += disk_usage(&e.path());
                kiln_snapshotter::snapshots::remove_tree(&e.path());
            }
        }
    }
    // Secrets are staged outside the state directory (in memory), shared by every
    // state directory of this user: only a dead build's go.
    freed += crate::fsutil::remove_leftovers_of_dead(Path::new(crate::fsutil::SECRETS_DIR), &[crate::fsutil::SECRETS_PREFIX]);
    if all {
        for d in ["cache-mounts", "context-cache"] {
            let p = state_dir.join(d);
            if p.exists() {
                freed += disk_usage(&p);
                kiln_snapshotter::snapshots::remove_tree(&p);
            }
        }
    }
    (layers, freed)
}

pub fn df(state_dir: &Path) -> Result<()> {
    let content = state_dir.join("content");
    println!("{:<28} {:>8} {:>12}", "TYPE", "COUNT", "SIZE");
    if content.exists() {
        let store = ContentStore::open(&content)?;
        let u = store.df().context("measuring the content store")?;
        println!("{:<28} {:>8} {:>12}", "images", u.images.count, human(u.images.bytes));
        println!("{:<28} {:>8} {:>12}", "layer cache", u.cache_records, human(u.cache.bytes));
        println!("{:<28} {:>8} {:>12}", "unreferenced blobs", u.unreferenced.count, human(u.unreferenced.bytes));
    }
    let snapshots = state_dir.join("snapshots/layers");
    let count = std::fs::read_dir(&snapshots).map(|r| r.count()).unwrap_or(0);
    println!("{:<28} {:>8} {:>12}", "unpacked layers", count, human(disk_usage(&snapshots)));
    let skeletons = state_dir.join("snapshots/skeletons");
    let count = std::fs::read_dir(&skeletons).map(|r| r.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).count()).unwrap_or(0);
    println!("{:<28} {:>8} {:>12}", "layer skeletons", count, human(disk_usage(&skeletons)));
    let mounts = state_dir.join("cache-mounts");
    let count = std::fs::read_dir(&mounts).map(|r| r.count()).unwrap_or(0);
    println!("{:<28} {:>8} {:>12}", "RUN cache mounts", count, human(disk_usage(&mounts)));
    Ok(())
}

fn human(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[i]) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human(12), "12 B");
        assert_eq!(super::human(1536), "1.5 KiB");
        assert_eq!(super::human(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
