//! Store maintenance: `kiln df` and `kiln prune`.
//!
//! Blobs fall in three categories:
//! - **images**: reachable from `index.json` (named images: never pruned);
//! - **cache**: reachable from a layer-cache record (`cache/keys/<hex>` → record blob
//!   → layer blob), and not an image blob;
//! - **unreferenced**: everything else (pulled base images, configs of pushed cache
//!   images, leftovers of killed builds).
//!
//! Plus `ingest/` temp files (blobs being written).
//!
//! `prune` runs under the exclusive store lock (see [`crate::lock`]), so no build is
//! running: nothing it deletes can be in use, and every ingest file is a leftover.
//! What it removes, oldest first (blob mtime; record key-file mtime, refreshed on
//! each hit):
//! - default: unreferenced blobs, broken cache records and ingest leftovers;
//! - `all`: also every cache record (and its blobs that nothing else references);
//! - `keep_storage`: cache records and unreferenced blobs, oldest first, only until
//!   the store is at most that size;
//! - `until`: only things older than that.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use kiln_oci::{media, Digest};

use crate::error::StoreError;
use crate::layercache::{CacheRecord, KEYS_DIR};
use crate::lock::LockMode;
use crate::store::ContentStore;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Remove all layer-cache records too (`kiln prune --all`).
    pub all: bool,
    /// Stop once the store is at most this many bytes (`--keep-storage`).
    pub keep_storage: Option<u64>,
    /// Only remove what is older than this (`--filter until=DURATION`).
    pub until: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub freed_bytes: u64,
    pub removed_blobs: usize,
    pub removed_records: usize,
    pub removed_ingest: usize,
}

/// Count and bytes of one category.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub count: usize,
    pub bytes: u64,
}

impl Usage {
    fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }
}

/// What `kiln df` prints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Blobs of images named in `index.json`.
    pub images: Usage,
    /// Blobs only the layer cache references (records and layers).
    pub cache: Usage,
    /// Number of cache records (key files).
    pub cache_records: usize,
    /// Blobs nothing references (pulled bases, leftovers): what a plain prune frees.
    pub unreferenced: Usage,
    /// Temp files of blobs being written (or left by killed builds).
    pub ingest: Usage,
}

impl DiskUsage {
    pub fn total_bytes(&self) -> u64 {
        self.images.bytes + self.cache.bytes + self.unreferenced.bytes + self.ingest.bytes
    }
}

struct Blob {
    size: u64,
    mtime: SystemTime,
}

struct Entry {
    key_file: PathBuf,
    record: Digest,
    layer: Option<Digest>,
    mtime: SystemTime,
}

struct Scan {
    blobs: BTreeMap<Digest, Blob>,
    image: BTreeSet<Digest>,
    entries: Vec<Entry>,
    broken: Vec<PathBuf>,
    ingest: Vec<(PathBuf, u64)>,
}

fn scan(store: &ContentStore) -> Result<Scan, StoreError> {
    let root = store.root();
    let mut blobs = BTreeMap::new();
    let dir = root.join("blobs").join("sha256");
    for e in fs::read_dir(&dir).map_err(|e| StoreError::io("listing", &dir, e))? {
        let e = e.map_err(|e| StoreError::io("listing", &dir, e))?;
        let name = e.file_name();
        let Some(d) = name.to_str().and_then(|n| format!("sha256:{n}").parse::<Digest>().ok()) else {
            continue; // not ours (or a temp name): left alone
        };
        let Ok(m) = e.metadata() else { continue };
        blobs.insert(d, Blob { size: m.len(), mtime: m.modified().unwrap_or(SystemTime::UNIX_EPOCH) });
    }

    // Image roots: walk index.json down through indexes and manifests.
    let mut image = BTreeSet::new();
    let mut todo: Vec<(Digest, String)> = Vec::new();
    for d in store.refs()? {
        if let Ok(dg) = d.digest().to_string().parse() {
            todo.push((dg, d.media_type().to_string()));
        }
    }
    while let Some((d, mt)) = todo.pop() {
        if !image.insert(d.clone()) {
            continue;
        }
        if !(media::is_index(&mt) || media::is_manifest(&mt)) {
            continue;
        }
        let Ok(bytes) = store.read(&d) else { continue };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else { continue };
        let children = v["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(std::iter::once(&v["config"]).filter(|c| c.is_object()))
            .chain(v["layers"].as_array().into_iter().flatten());
        for c in children {
            if let (Some(ds), mt) = (c["digest"].as_str(), c["mediaType"].as_str().unwrap_or("")) {
                if let Ok(cd) = ds.parse() {
                    todo.push((cd, mt.to_string()));
                }
            }
        }
    }

    let mut entries = Vec::new();
    let mut broken = Vec::new();
    // Files being written (`store::create_unique`: `.<what>-<pid>-….tmp` beside their
    // destination): under the exclusive lock no build runs, so any left is a killed
    // build's, counted with the ingest leftovers.
    let mut ingest = Vec::new();
    let kdir = root.join(KEYS_DIR);
    for dir in [root.to_path_buf(), kdir.clone()] {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") && e.file_type().is_ok_and(|t| t.is_file()) {
                ingest.push((e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)));
            }
        }
    }
    if let Ok(rd) = fs::read_dir(&kdir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue; // a key file being written
            }
            let mtime = e.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
            let rec = fs::read_to_string(&p).ok().and_then(|t| t.trim().parse::<Digest>().ok());
            let Some(rd) = rec.filter(|d| blobs.contains_key(d)) else {
                broken.push(p);
                continue;
            };
            let parsed = store.read(&rd).ok().and_then(|b| serde_json::from_slice::<CacheRecord>(&b).ok());
            let Some(r) = parsed else {
                broken.push(p);
                continue;
            };
            let layer = r.layer.map(|l| l.digest);
            if layer.as_ref().is_some_and(|l| !blobs.contains_key(l)) {
                broken.push(p);
                continue;
            }
            entries.push(Entry { key_file: p, record: rd, layer, mtime });
        }
    }

    let idir = root.join("ingest");
    if let Ok(rd) = fs::read_dir(&idir) {
        for e in rd.flatten() {
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            ingest.push((e.path(), size));
        }
    }
    Ok(Scan { blobs, image, entries, broken, ingest })
}

impl ContentStore {
    /// Bytes by category (see [`DiskUsage`]). Runs under the shared lock: with builds
    /// running, the numbers are a snapshot.
    pub fn df(&self) -> Result<DiskUsage, StoreError> {
        let s = scan(self)?;
        let cache_refs: BTreeSet<&Digest> =
            s.entries.iter().flat_map(|e| std::iter::once(&e.record).chain(e.layer.iter())).collect();
        let mut u = DiskUsage { cache_records: s.entries.len(), ..Default::default() };
        for (d, b) in &s.blobs {
            if s.image.contains(d) {
                u.images.add(b.size);
            } else if cache_refs.contains(d) {
                u.cache.add(b.size);
            } else {
                u.unreferenced.add(b.size);
            }
        }
        for (_, size) in &s.ingest {
            u.ingest.add(*size);
        }
        Ok(u)
    }

    /// Removes what `opts` selects (module docs) and returns what was freed. Takes the
    /// store lock exclusively for the sweep — waiting for running builds (other
    /// processes) to finish — and returns it to shared afterwards. Do not call it while
    /// another handle of the same root is open in this process.
    pub fn prune(&self, opts: &PruneOptions) -> Result<PruneReport, StoreError> {
        Ok(self.prune_and(opts, || ())?.0)
    }

    /// [`prune`](Self::prune), then `also` while the exclusive lock is still held:
    /// the state kept beside the store (unpacked layers, scratch of killed builds)
    /// can be removed there, since no build can be running or start meanwhile.
    pub fn prune_and<T>(&self, opts: &PruneOptions, also: impl FnOnce() -> T) -> Result<(PruneReport, T), StoreError> {
        let lock_path = self.root().join("lock");
        if !self.lock_file().try_convert(LockMode::Exclusive, &lock_path)? {
            tracing::warn!("waiting for builds using {} to finish before pruning", self.root().display());
            self.lock_file().convert(LockMode::Exclusive, &lock_path)?;
        }
        let res = self.prune_locked(opts).map(|report| (report, also()));
        let back = self.lock_file().convert(LockMode::Shared, &lock_path);
        let out = res?;
        back?;
        Ok(out)
    }

    fn prune_locked(&self, opts: &PruneOptions) -> Result<PruneReport, StoreError> {
        let s = scan(self)?;
        let now = SystemTime::now();
        let old_enough = |t: SystemTime| match opts.until {
            None => true,
            Some(u) => now.duration_since(t).map(|age| age >= u).unwrap_or(false),
        };
        let mut rep = PruneReport::default();

        // Leftovers first: no build runs, so no ingest file is live.
        for (p, size) in &s.ingest {
            if fs::remove_file(p).is_ok() {
                rep.removed_ingest += 1;
                rep.freed_bytes += size;
            }
        }
        for p in &s.broken {
            if fs::remove_file(p).is_ok() {
                rep.removed_records += 1;
            }
        }

        // How many live entries reference each blob (records and layers).
        let mut refcount: BTreeMap<Digest, usize> = BTreeMap::new();
        for e in &s.entries {
            *refcount.entry(e.record.clone()).or_default() += 1;
            if let Some(l) = &e.layer {
                *refcount.entry(l.clone()).or_default() += 1;
            }
        }

        enum Unit<'a> {
            Blob(&'a Digest),
            Entry(&'a Entry),
        }
        let mut units: Vec<(SystemTime, Unit)> = Vec::new();
        for (d, b) in &s.blobs {
            if !s.image.contains(d) && !refcount.contains_key(d) && old_enough(b.mtime) {
                units.push((b.mtime, Unit::Blob(d)));
            }
        }
        if opts.all || opts.keep_storage.is_some() {
            for e in &s.entries {
                if old_enough(e.mtime) {
                    units.push((e.mtime, Unit::Entry(e)));
                }
            }
        }
        units.sort_by_key(|(t, _)| *t);

        let mut total: u64 = s.blobs.values().map(|b| b.size).sum();
        let remove_blob = |d: &Digest, rep: &mut PruneReport, total: &mut u64| {
            let size = s.blobs.get(d).map(|b| b.size).unwrap_or(0);
            if fs::remove_file(self.blob_path(d)).is_ok() {
                rep.removed_blobs += 1;
                rep.freed_bytes += size;
                *total = total.saturating_sub(size);
            }
        };
        for (_, unit) in units {
            if let Some(keep) = opts.keep_storage {
                if total <= keep {
                    break;
                }
            }
            match unit {
                Unit::Blob(d) => remove_blob(d, &mut rep, &mut total),
                Unit::Entry(e) => {
                    if fs::remove_file(&e.key_file).is_err() {
                        continue;
                    }
                    rep.removed_records += 1;
                    for d in std::iter::once(&e.record).chain(e.layer.iter()) {
                        let n = refcount.get_mut(d).expect("counted");
                        *n -= 1;
                        if *n == 0 && !s.image.contains(d) {
                            remove_blob(d, &mut rep, &mut total);
                        }
                    }
                }
            }
        }
        crate::store::sync_dir(&self.root().join("blobs").join("sha256"));
        Ok(rep)
    }
}

/// Parses `--keep-storage` sizes: `1073741824`, `512MB`, `10GB`, `1.5GiB`, `100k`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024f64.powi(4),
        _ => return None,
    };
    (n >= 0.0).then_some((n * mult) as u64)
}

/// Parses `until=` / `--cache-ttl` durations: `90s`, `30m`, `24h`, `7d`, `1h30m`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 7 * 86400,
            _ => return None,
        };
    }
    if !num.is_empty() {
        return None; // a number without unit
    }
    Some(Duration::from_secs(total))
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::layercache::{CacheKey, CacheOptions, CacheRecord, LayerRecord, LocalCache};
    use oci_spec::image::{DescriptorBuilder, MediaType};
    use std::io::Write;

    fn desc(mt: &str, d: &Digest, size: usize) -> kiln_oci::Descriptor {
        DescriptorBuilder::default()
            .media_type(MediaType::from(mt))
            .digest(oci_spec::image::Digest::try_from(d.to_string()).unwrap())
            .size(size as u64)
            .build()
            .unwrap()
    }

    /// Makes a blob look `age` old.
    fn age(store: &ContentStore, d: &Digest, age: Duration) {
        let f = fs::File::options().write(true).open(store.blob_path(d));
        // Blobs are read-only; fall back to changing the mode for the test.
        let f = f.unwrap_or_else(|_| {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(store.blob_path(d), fs::Permissions::from_mode(0o644)).unwrap();
            fs::File::options().write(true).open(store.blob_path(d)).unwrap()
        });
        f.set_modified(SystemTime::now() - age).unwrap();
    }

    fn image(store: &ContentStore, layer: &[u8]) -> (kiln_oci::Descriptor, Vec<Digest>) {
        let l = store.put(layer).unwrap();
        let c = br#"{"architecture":"amd64","os":"linux"}"#;
        let cd = store.put(c).unwrap();
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": desc(media::OCI_CONFIG, &cd, c.len()),
            "layers": [desc(media::OCI_LAYER_GZIP, &l, layer.len())],
        }))
        .unwrap();
        let md = store.put(&m).unwrap();
        (desc(media::OCI_MANIFEST, &md, m.len()), vec![md, cd, l])
    }

    fn record(store: &ContentStore, name: &str, layer: &[u8]) -> (CacheKey, Digest) {
        let k = CacheKey::from_material(name.as_bytes());
        let l = store.put(layer).unwrap();
        let r = CacheRecord::new(
            &k,
            Some(LayerRecord { media_type: media::OCI_LAYER_GZIP.into(), digest: l.clone(), size: layer.len() as u64, annotations: Default::default(), ztoc: None }),
            None,
            name,
        );
        LocalCache::new(store.clone(), CacheOptions::default()).insert(&r).unwrap();
        (k, l)
    }

    #[test]
    fn df_and_default_prune() {
        let t = tempfile::tempdir().unwrap();
        let s = ContentStore::open(t.path()).unwrap();
        let (img, img_blobs) = image(&s, &[1u8; 1000]);
        s.set_ref("app:v1", &img).unwrap();
        let (_, cached_layer) = record(&s, "RUN a", &[2u8; 500]);
        let loose = s.put(&[3u8; 300]).unwrap();
        let mut w = s.writer().unwrap();
        w.write_all(&[4u8; 50]).unwrap();
        std::mem::forget(w); // a killed build's temp file
        // A key file a killed build was writing (`write_atomic`'s temp name).
        fs::write(s.root().join(KEYS_DIR).join(".write-99-0-1.tmp"), [5u8; 7]).unwrap();

        let u = s.df().unwrap();
        assert_eq!(u.images.count, 3);
        assert_eq!(u.cache.count, 2); // record + layer
        assert_eq!(u.cache_records, 1);
        assert_eq!(u.unreferenced, Usage { count: 1, bytes: 300 });
        assert_eq!(u.ingest, Usage { count: 2, bytes: 57 });
        assert!(u.total_bytes() > 1850);

        let rep = s.prune(&PruneOptions::default()).unwrap();
        assert_eq!(rep.removed_blobs, 1);
        assert_eq!(rep.removed_ingest, 2);
        assert_eq!(rep.freed_bytes, 357);
        assert!(!s.root().join(KEYS_DIR).join(".write-99-0-1.tmp").exists());
        assert!(!s.has(&loose));
        for d in &img_blobs {
            assert!(s.has(d));
        }
        assert!(s.has(&cached_layer));
        let u = s.df().unwrap();
        assert_eq!((u.unreferenced.count, u.ingest.count), (0, 0));

        // --all: the cache goes, named images stay.
        let rep = s.prune(&PruneOptions { all: true, ..Default::default() }).unwrap();
        assert_eq!(rep.removed_records, 1);
        assert_eq!(rep.removed_blobs, 2);
        assert!(!s.has(&cached_layer));
        for d in &img_blobs {
            assert!(s.has(d));
        }
        // An untagged image is prunable.
        s.remove_ref("app:v1").unwrap();
        let rep = s.prune(&PruneOptions::default()).unwrap();
        assert_eq!(rep.removed_blobs, 3);
        assert_eq!(s.df().unwrap().total_bytes(), 0);
    }

    #[test]
    fn shared_layer_survives_record_removal() {
        let t = tempfile::tempdir().unwrap();
        let s = ContentStore::open(t.path()).unwrap();
        let (img, blobs) = image(&s, b"shared-layer");
        s.set_ref("x", &img).unwrap();
        record(&s, "RUN a", b"shared-layer");
        let rep = s.prune(&PruneOptions { all: true, ..Default::default() }).unwrap();
        assert_eq!(rep.removed_records, 1);
        assert_eq!(rep.removed_blobs, 1); // just the record blob
        assert!(s.has(&blobs[2]));
    }

    #[test]
    fn keep_storage_removes_oldest_first_and_until_filters() {
        let t = tempfile::tempdir().unwrap();
        let s = ContentStore::open(t.path()).unwrap();
        let a = s.put(&[1u8; 1000]).unwrap();
        let b = s.put(&[2u8; 1000]).unwrap();
        let c = s.put(&[3u8; 1000]).unwrap();
        age(&s, &a, Duration::from_secs(3 * 3600));
        age(&s, &b, Duration::from_secs(2 * 3600));
        // until=90m: only a and b qualify; keep 1500 bytes: a then b go.
        let rep = s
            .prune(&PruneOptions { keep_storage: Some(2000), until: Some(Duration::from_secs(5400)), all: false })
            .unwrap();
        assert_eq!(rep.removed_blobs, 1, "{rep:?}");
        assert!(!s.has(&a) && s.has(&b) && s.has(&c));
        let rep = s.prune(&PruneOptions { until: Some(Duration::from_secs(5400)), ..Default::default() }).unwrap();
        assert_eq!(rep.removed_blobs, 1);
        assert!(!s.has(&b) && s.has(&c));
        // keep_storage includes cache records, oldest first.
        let (k1, l1) = record(&s, "RUN 1", &[5u8; 1000]);
        let old = SystemTime::now() - Duration::from_secs(60);
        fs::File::options().write(true).open(s.root().join(KEYS_DIR).join(k1.hex())).unwrap().set_modified(old).unwrap();
        let (_, l2) = record(&s, "RUN 2", &[6u8; 1000]);
        let rep = s.prune(&PruneOptions { keep_storage: Some(2500), ..Default::default() }).unwrap();
        // Oldest first: record 1 (key file 60s old) goes, then the store fits.
        assert!(s.df().unwrap().total_bytes() <= 2500, "{rep:?}");
        assert_eq!((rep.removed_records, rep.removed_blobs), (1, 2), "{rep:?}");
        assert!(!s.has(&l1) && s.has(&c) && s.has(&l2), "{rep:?}");
    }

    #[test]
    fn prune_and_runs_its_work_while_no_build_can_start() {
        let t = tempfile::tempdir().unwrap();
        let s = ContentStore::open(t.path()).unwrap();
        let lock = t.path().join("lock");
        let (_, started) = s
            .prune_and(&PruneOptions { all: true, ..Default::default() }, || {
                // What a build does first: take the shared lock. It must not get it.
                let probe = std::fs::File::open(&lock).unwrap();
                use std::os::fd::AsRawFd;
                // SAFETY: flock on a descriptor we own.
                unsafe { libc::flock(probe.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) == 0 }
            })
            .unwrap();
        assert!(!started, "a build could start while prune removed the state beside the store");
    }

    #[test]
    fn prune_waits_for_builds() {
        let t = tempfile::tempdir().unwrap();
        let s = ContentStore::open(t.path()).unwrap();
        s.put(b"garbage").unwrap();
        // Another "process" (another open file description) has the store open.
        let build = crate::lock::LockFile::acquire(&t.path().join("lock"), LockMode::Shared, || {}).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = s.clone();
        let h = std::thread::spawn(move || {
            let r = s2.prune(&PruneOptions::default()).unwrap();
            tx.send(r).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "prune ran during a build");
        drop(build);
        let rep = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(rep.removed_blobs, 1);
        h.join().unwrap();
        // And a new build waits while a prune (exclusive holder) runs.
        drop(s);
        let pruning = crate::lock::LockFile::acquire(&t.path().join("lock"), LockMode::Exclusive, || {}).unwrap();
        let root = t.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            let s = ContentStore::open(&root).unwrap();
            tx.send(()).unwrap();
            drop(s);
        });
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "a build started during a prune");
        drop(pruning);
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        h.join().unwrap();
    }

    #[test]
    fn parses_sizes_and_durations() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("512MB"), Some(512_000_000));
        assert_eq!(parse_size("1.5GiB"), Some(1610612736));
        assert_eq!(parse_size("10gb"), Some(10_000_000_000));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604800)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("5y"), None);
    }
}
