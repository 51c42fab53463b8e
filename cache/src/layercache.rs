//! The layer cache: step key → the layer and config change that step produced.
//!
//! A [`CacheKey`] is the sha256 of canonical key material the caller computes
//! (parent key, expanded instruction, input digests, platform, build args used —
//! never secret values). A [`CacheRecord`] says what the step produced: its layer
//! (descriptor + diffID, or none for metadata-only steps), the config change as JSON,
//! and the history `created_by`/`created` so that a rebuild from cache gives the
//! same image bytes.
//!
//! Three implementations of [`LayerCache`]:
//! - [`LocalCache`]: in the content store. The record is a blob; `cache/keys/<hex>`
//!   holds the record's digest (written atomically). A hit needs the layer blob
//!   present locally.
//! - `RegistryCache::repo` (module `registrycache`) — Kaniko-style `--cache-repo
//!   REPO`: one small image per key, `REPO:<key hex>`, whose single layer is the
//!   step's layer and whose config carries the record (under `"kiln.cache.record"`,
//!   next to a standard `rootfs` and `history`). Written as soon as a step finishes
//!   (`put`).
//! - `RegistryCache::manifest` — BuildKit-style `--cache-from/--cache-to
//!   type=registry,ref=REF`: one OCI image manifest under REF whose config blob
//!   (`application/vnd.kiln.cache.config.v1+json`) maps key → record and whose layers
//!   are all the records' layers (so the registry keeps them). Imported once on the
//!   first probe; exported by [`LayerCache::flush`] with this build's hits and puts.
//!
//! Probing never downloads a layer (lazy); [`LayerCache::fetch_layer`] does, into the
//! content store, verified. Records older than the TTL are misses. Probe errors
//! (network, bad content) are logged and count as misses in
//! [`LayerCache::probe_many`]: a broken cache must not fail a build.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use kiln_oci::Digest;
use serde::{Deserialize, Serialize};

use crate::error::{RegistryError, StoreError};
use crate::store::{write_atomic, ContentStore};

/// Where local key files live, relative to the store root.
pub const KEYS_DIR: &str = "cache/keys";
/// Default number of keys probed at once.
pub const DEFAULT_PROBE_CONCURRENCY: usize = 16;

/// A step's cache key: sha256 of its canonical key material.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(Digest);

impl CacheKey {
    /// The key of `material` (sha256 of the bytes, as given).
    pub fn from_material(material: &[u8]) -> Self {
        CacheKey(Digest::of(material))
    }

    /// The key of several parts, each length-prefixed so that part boundaries count
    /// (`["ab","c"]` ≠ `["a","bc"]`).
    pub fn from_parts<I, P>(parts: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        let mut m = Vec::new();
        for p in parts {
            let p = p.as_ref();
            m.extend_from_slice(&(p.len() as u64).to_be_bytes());
            m.extend_from_slice(p);
        }
        Self::from_material(&m)
    }

    /// 64 lowercase hex characters (a valid tag, a valid file name).
    pub fn hex(&self) -> &str {
        self.0.hex()
    }

    pub fn from_hex(hex: &str) -> Option<Self> {
        format!("sha256:{hex}").parse().ok().map(CacheKey)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", &self.hex()[..12])
    }
}

/// The layer a step produced, as it is stored (compressed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// Descriptor annotations of the blob (the lazy formats' TOC digest and
    /// position); absent in records of plain layers.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// The layer's SOCI ztoc (`--soci`), a blob of the same store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ztoc: Option<BlobRef>,
}

/// A blob of the content store by digest and size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub digest: Digest,
    pub size: u64,
}

/// What a cached step produced. Serialised as small JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The key's hex, so that a record found by name can be checked.
    pub key: String,
    /// The layer, or `None` for a step that only changes the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<LayerRecord>,
    /// The layer's diffID (uncompressed digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<Digest>,
    /// The step's change to the image config, as the builder serialises it
    /// (`null` for none). Opaque to the cache.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub config_change: serde_json::Value,
    /// History `created_by`.
    pub created_by: String,
    /// History `created` timestamp written in the image (RFC 3339), if any. Opaque.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_created: Option<String>,
    /// When the record was made, seconds since the epoch: what `--cache-ttl` compares.
    pub created: u64,
    /// What the key was made of, to explain a later miss (`builder/src/solver/explain.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<StepInputs>,
}

/// What a step's key was made of, kept in its record: where the step is (the same
/// across builds), its parent key, and per input a digest or a value that may be
/// shown (never a secret's; build arg values that look like credentials only as
/// digests), context files by path.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StepInputs {
    /// Dockerfile, stage, step index, platform.
    pub position: String,
    pub parent: String,
    /// `instruction`, `arg NAME`, `context SOURCES`, `stage S`, `image R`, `url U`,
    /// `base` → what it was.
    pub parts: BTreeMap<String, String>,
    /// Context path → content digest, for selections of a bounded size.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub files_truncated: bool,
}

impl StepInputs {
    /// How much of `other` is the same as this (parts with equal values, and the
    /// parent counting as much as the instruction): among the records at one position
    /// (another project's Dockerfile has the same), the one most like the step.
    pub fn likeness(&self, other: &StepInputs) -> usize {
        let same = self.parts.iter().filter(|(k, v)| other.parts.get(*k) == Some(*v)).count();
        let instruction = usize::from(self.parts.get("instruction").is_some_and(|i| other.parts.get("instruction") == Some(i)));
        same + 4 * instruction + 2 * usize::from(self.parent == other.parent)
    }
}

impl CacheRecord {
    /// A record for `key` made now.
    pub fn new(key: &CacheKey, layer: Option<LayerRecord>, diff_id: Option<Digest>, created_by: &str) -> Self {
        CacheRecord {
            key: key.hex().to_string(),
            layer,
            diff_id,
            config_change: serde_json::Value::Null,
            created_by: created_by.to_string(),
            inputs: None,
            history_created: None,
            created: now_secs(),
        }
    }

    /// Whether the record is younger than `ttl` (always, without a TTL).
    pub fn is_fresh(&self, ttl: Option<Duration>) -> bool {
        match ttl {
            None => true,
            Some(ttl) => now_secs().saturating_sub(self.created) <= ttl.as_secs(),
        }
    }

    pub(crate) fn check(&self, key: &CacheKey, what: &str) -> Result<(), CacheError> {
        if self.key != key.hex() {
            return Err(CacheError::Invalid {
                what: what.to_string(),
                message: format!("record is for key {}, not {}", self.key, key.hex()),
            });
        }
        Ok(())
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("layer cache: {0}")]
    Store(#[from] StoreError),
    #[error("layer cache: {0}")]
    Registry(#[from] RegistryError),
    #[error("layer cache: invalid {what}: {message}")]
    Invalid { what: String, message: String },
    #[error("layer cache: layer {0} of a record is not in the content store")]
    MissingLayer(Digest),
}

/// The contents of a `RUN --mount=type=cache` as a registry cache carries them
/// (`cache-mounts=true`): the bundles of `kiln_snapshotter::bundle`, applied in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MountRecord {
    /// The mount's `id` (its target when it has none), as the local cache names it.
    pub id: String,
    pub bundles: Vec<LayerRecord>,
    /// File bytes and entries of the tree, for progress and limits.
    pub bytes: u64,
    pub entries: u64,
    /// Platforms of the steps that used it (BuildKit shares a cache id across
    /// platforms; so does kiln: this is for people reading the manifest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// When a build last used it (seconds since the epoch): what `cache-mounts-ttl` compares.
    pub last_used: u64,
}

impl MountRecord {
    /// Whether a build used it within `ttl`.
    pub fn is_fresh(&self, ttl: Option<Duration>) -> bool {
        ttl.is_none_or(|t| now_secs().saturating_sub(self.last_used) <= t.as_secs())
    }

    /// Compressed bytes of its bundles.
    pub fn size(&self) -> u64 {
        self.bundles.iter().map(|b| b.size).sum()
    }
}

/// Where a bundle of a cache mount is read from.
pub enum BundleSource {
    /// A registry's answer, chunk by chunk.
    Stream(futures_util::stream::BoxStream<'static, Result<bytes::Bytes, CacheError>>),
    /// A blob of an OCI layout directory (`type=local`).
    File(std::path::PathBuf),
}

impl BundleSource {
    /// As a blocking reader (a registry stream is driven on `rt` chunk by chunk).
    pub fn into_read(self, rt: tokio::runtime::Handle) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        Ok(match self {
            BundleSource::File(p) => Box::new(std::fs::File::open(&p)?),
            BundleSource::Stream(stream) => Box::new(StreamReader { rt, stream: stream.fuse(), chunk: bytes::Bytes::new() }),
        })
    }
}

struct StreamReader {
    rt: tokio::runtime::Handle,
    /// Fused: a reader is read again after it said "end".
    stream: futures_util::stream::Fuse<futures_util::stream::BoxStream<'static, Result<bytes::Bytes, CacheError>>>,
    chunk: bytes::Bytes,
}

impl std::io::Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rt.block_on(self.stream.next()) {
                Some(Ok(c)) => self.chunk = c,
                Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

/// `--cache-to …,cache-mounts=true`: an export that carries cache mounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MountExport {
    /// `cache-mounts-max-size=`: a mount bigger than this (file bytes) stays local.
    pub max_size: Option<u64>,
    /// `cache-mounts-ttl=`: a mount of the imported cache that no build used for this
    /// long is not carried into the export.
    pub ttl: Option<Duration>,
}

/// Options shared by the cache implementations.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    /// `--cache-ttl`: older records are misses.
    pub ttl: Option<Duration>,
    /// How many keys [`LayerCache::probe_many`] looks up at once.
    pub probe_concurrency: usize,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions { ttl: None, probe_concurrency: DEFAULT_PROBE_CONCURRENCY }
    }
}

/// A layer cache (see module docs). Object safe: a build can hold
/// `Vec<Box<dyn LayerCache>>` (local first, then registry caches).
pub trait LayerCache: Send + Sync {
    /// Looks one key up. `Ok(None)` is a miss (absent, expired, or — locally — its layer
    /// is gone). Never downloads a layer.
    fn probe<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<Option<CacheRecord>, CacheError>>;

    /// Looks all `keys` up concurrently (bounded), in order. Errors are logged and
    /// count as misses.
    fn probe_many<'a>(&'a self, keys: &'a [CacheKey]) -> BoxFuture<'a, Vec<Option<CacheRecord>>> {
        let n = self.probe_concurrency().max(1);
        async move {
            let Some((first, rest)) = keys.split_first() else { return Vec::new() };
            // The first alone: it authenticates (or imports a manifest) once, where
            // `n` concurrent first probes would each do it.
            let mut out = vec![probe_or_miss(self, first).await];
            let futs: Vec<BoxFuture<'a, Option<CacheRecord>>> = rest.iter().map(|k| probe_or_miss(self, k)).collect();
            out.extend(futures_util::stream::iter(futs).buffered(n).collect::<Vec<_>>().await);
            out
        }
        .boxed()
    }

    /// Makes the record's layer blob present in `store` (downloading and verifying it
    /// if needed). No-op for a record without a layer.
    fn fetch_layer<'a>(&'a self, record: &'a CacheRecord, store: &'a ContentStore) -> BoxFuture<'a, Result<(), CacheError>>;

    /// Stores a record. Its layer blob must be in `store`.
    fn put<'a>(&'a self, record: &'a CacheRecord, store: &'a ContentStore) -> BoxFuture<'a, Result<(), CacheError>>;

    /// Writes out what is batched (the `--cache-to` manifest); no-op for the others.
    /// Call once at the end of a successful build.
    fn flush<'a>(&'a self, _store: &'a ContentStore) -> BoxFuture<'a, Result<(), CacheError>> {
        async { Ok(()) }.boxed()
    }

    /// Bound for `probe_many`.
    fn probe_concurrency(&self) -> usize {
        DEFAULT_PROBE_CONCURRENCY
    }

    /// The keys of the steps whose layers the built image holds (every platform):
    /// what a `mode=min` export keeps. Told before [`flush`](Self::flush).
    fn set_image_keys(&self, _keys: &[String]) {}

    /// A record this build took (a hit, from any cache): an exporting cache keeps it
    /// for [`flush`](Self::flush); probe hits that were not taken are not exported.
    fn mark_used(&self, _record: &CacheRecord, _store: &ContentStore) {}

    /// The cache mount `id` as this cache brings it (`--cache-from` of an export made
    /// with `cache-mounts=true`).
    fn mount_record<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Option<MountRecord>> {
        async { None }.boxed()
    }

    /// Bundle `i` of a mount record this cache brought: where to read it from. Not
    /// verified: the reader hashes it and keeps nothing unless the digest matches.
    fn open_bundle<'a>(&'a self, rec: &'a MountRecord, _i: usize) -> BoxFuture<'a, Result<BundleSource, CacheError>> {
        async move { Err(CacheError::Invalid { what: "cache mount".into(), message: format!("{:?} is in no imported cache", rec.id) }) }.boxed()
    }

    /// What this cache has to say once (an import that was not usable and why), for
    /// the build's progress output; each notice is returned once.
    fn take_notices(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether this cache's export carries cache mounts, and its limits.
    fn mount_export(&self) -> Option<MountExport> {
        None
    }

    /// A cache mount as this build leaves it (bundles in the store), for the export.
    fn put_mount(&self, _rec: MountRecord) {}

    /// The record this cache has for a step at `now`'s position most like it
    /// ([`StepInputs::likeness`], then the newest), to explain why the step missed.
    fn previous<'a>(&'a self, _now: &'a StepInputs) -> BoxFuture<'a, Option<CacheRecord>> {
        async { None }.boxed()
    }
}

fn probe_or_miss<'a, C: LayerCache + ?Sized>(c: &'a C, k: &'a CacheKey) -> BoxFuture<'a, Option<CacheRecord>> {
    c.probe(k)
        .map(move |r| match r {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("cache probe for {k:?} failed, treating it as a miss: {e}");
                None
            }
        })
        .boxed()
}

// ---------------------------------------------------------------- local

/// The cache in the local content store (see module docs).
#[derive(Clone, Debug)]
pub struct LocalCache {
    store: ContentStore,
    opts: CacheOptions,
    /// Step position → its records and when each was last used, made on first use
    /// (`previous_at`).
    positions: std::sync::Arc<std::sync::OnceLock<std::collections::HashMap<String, Vec<(SystemTime, CacheRecord)>>>>,
}

impl LocalCache {
    pub fn new(store: ContentStore, opts: CacheOptions) -> Self {
        LocalCache { store, opts, positions: Default::default() }
    }

    fn key_path(&self, key: &CacheKey) -> std::path::PathBuf {
        self.store.root().join(KEYS_DIR).join(key.hex())
    }

    /// The record at `now`'s position most like it, the one written or used last
    /// (`get` touches a key file, as `insert` writes it) among equals. The index is
    /// made on the first call (a miss, when work is about to be done anyway) from the
    /// records in the store, so nothing beside them is kept or pruned.
    pub fn previous_at(&self, now: &StepInputs) -> Option<CacheRecord> {
        let index = self.positions.get_or_init(|| {
            let mut index: std::collections::HashMap<String, Vec<(SystemTime, CacheRecord)>> = std::collections::HashMap::new();
            for e in fs::read_dir(self.store.root().join(KEYS_DIR)).into_iter().flatten().flatten() {
                let Some(key) = CacheKey::from_hex(&e.file_name().to_string_lossy()) else { continue };
                let used = e.metadata().and_then(|m| m.modified()).unwrap_or(UNIX_EPOCH);
                let Ok(Some(rec)) = self.read(&key, false) else { continue };
                let Some(pos) = rec.inputs.as_ref().map(|i| i.position.clone()) else { continue };
                index.entry(pos).or_default().push((used, rec));
            }
            index
        });
        let candidates = index.get(&now.position)?;
        let best = candidates.iter().max_by_key(|(used, r)| (r.inputs.as_ref().map(|i| i.likeness(now)).unwrap_or(0), *used))?;
        Some(best.1.clone())
    }

    /// Synchronous lookup (the trait's `probe` wraps it).
    pub fn get(&self, key: &CacheKey) -> Result<Option<CacheRecord>, CacheError> {
        self.read(key, true)
    }

    /// The record of `key`; `touch`: mark it used (prune keeps used records longest).
    fn read(&self, key: &CacheKey, touch: bool) -> Result<Option<CacheRecord>, CacheError> {
        let p = self.key_path(key);
        let text = match fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("reading", &p, e).into()),
        };
        let Ok(d) = text.trim().parse::<Digest>() else {
            tracing::warn!("ignoring corrupt cache key file {}", p.display());
            return Ok(None);
        };
        let bytes = match self.store.read(&d) {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let rec: CacheRecord = serde_json::from_slice(&bytes)
            .map_err(|e| CacheError::Invalid { what: format!("cache record {d}"), message: e.to_string() })?;
        rec.check(key, &format!("cache record {d}"))?;
        if !rec.is_fresh(self.opts.ttl) {
            return Ok(None);
        }
        if let Some(l) = &rec.layer {
            if !self.store.has(&l.digest) {
                return Ok(None);
            }
        }
        // Recently used records are pruned last (best effort).
        if touch {
            if let Ok(f) = fs::File::options().write(true).open(&p) {
                let _ = f.set_modified(SystemTime::now());
            }
        }
        Ok(Some(rec))
    }

    /// Synchronous store (the trait's `put` wraps it).
    pub fn insert(&self, rec: &CacheRecord) -> Result<(), CacheError> {
        let key = CacheKey::from_hex(&rec.key)
            .ok_or_else(|| CacheError::Invalid { what: "cache record".into(), message: format!("bad key {:?}", rec.key) })?;
        if let Some(l) = &rec.layer {
            if !self.store.has(&l.digest) {
                return Err(CacheError::MissingLayer(l.digest.clone()));
            }
        }
        let bytes = serde_json::to_vec(rec).expect("a record serialises");
        let d = self.store.put(&bytes)?;
        write_atomic(&self.key_path(&key), d.to_string().as_bytes())?;
        Ok(())
    }
}

impl LayerCache for LocalCache {
    fn probe<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<Option<CacheRecord>, CacheError>> {
        async move { self.get(key) }.boxed()
    }
    fn fetch_layer<'a>(&'a self, record: &'a CacheRecord, store: &'a ContentStore) -> BoxFuture<'a, Result<(), CacheError>> {
        async move {
            match &record.layer {
                Some(l) if !store.has(&l.digest) => Err(CacheError::MissingLayer(l.digest.clone())),
                _ => Ok(()),
            }
        }
        .boxed()
    }
    fn put<'a>(&'a self, record: &'a CacheRecord, _store: &'a ContentStore) -> BoxFuture<'a, Result<(), CacheError>> {
        async move { self.insert(record) }.boxed()
    }
    fn previous<'a>(&'a self, now: &'a StepInputs) -> BoxFuture<'a, Option<CacheRecord>> {
        async move { self.previous_at(now) }.boxed()
    }
    fn probe_concurrency(&self) -> usize {
        self.opts.probe_concurrency
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_oci::media;

    fn layer(store: &ContentStore, bytes: &[u8]) -> LayerRecord {
        let d = store.put(bytes).unwrap();
        LayerRecord { media_type: media::OCI_LAYER_GZIP.into(), digest: d, size: bytes.len() as u64, annotations: Default::default(), ztoc: None }
    }

    #[test]
    fn keys() {
        let a = CacheKey::from_material(b"parent\0RUN x");
        assert_eq!(a, CacheKey::from_material(b"parent\0RUN x"));
        assert_ne!(a, CacheKey::from_material(b"parent\0RUN y"));
        assert_eq!(a.hex().len(), 64);
        assert_eq!(CacheKey::from_hex(a.hex()), Some(a.clone()));
        assert_eq!(CacheKey::from_hex("xyz"), None);
        assert_ne!(CacheKey::from_parts(["ab", "c"]), CacheKey::from_parts(["a", "bc"]));
        assert_eq!(CacheKey::from_parts(["ab", "c"]), CacheKey::from_parts(vec![b"ab".to_vec(), b"c".to_vec()]));
    }

    #[tokio::test]
    async fn local_roundtrip_ttl_and_missing_layer() {
        let t = tempfile::tempdir().unwrap();
        let store = ContentStore::open(t.path()).unwrap();
        let cache = LocalCache::new(store.clone(), CacheOptions::default());
        let k1 = CacheKey::from_material(b"one");
        let k2 = CacheKey::from_material(b"two");
        let k3 = CacheKey::from_material(b"three");
        let mut r1 = CacheRecord::new(&k1, Some(layer(&store, b"layer-1")), Some(Digest::of(b"tar-1")), "RUN one");
        r1.config_change = serde_json::json!({"Env": ["A=1"]});
        r1.history_created = Some("2024-01-01T00:00:00Z".into());
        cache.put(&r1, &store).await.unwrap();
        // A config-only step.
        let r2 = CacheRecord::new(&k2, None, None, "ENV B=2");
        cache.put(&r2, &store).await.unwrap();
        assert!(store.root().join(KEYS_DIR).join(k1.hex()).is_file());

        let got = cache.probe_many(&[k1.clone(), k3.clone(), k2.clone()]).await;
        assert_eq!(got, vec![Some(r1.clone()), None, Some(r2.clone())]);
        cache.fetch_layer(&r1, &store).await.unwrap();

        // Another handle on the same store (a second build) sees the records.
        let other = LocalCache::new(store.clone(), CacheOptions::default());
        assert_eq!(other.get(&k1).unwrap(), Some(r1.clone()));

        // TTL: an old record is a miss.
        let mut old = CacheRecord::new(&k3, None, None, "RUN old");
        old.created -= 3600;
        cache.put(&old, &store).await.unwrap();
        let ttl = LocalCache::new(store.clone(), CacheOptions { ttl: Some(Duration::from_secs(60)), ..Default::default() });
        assert_eq!(ttl.probe(&k3).await.unwrap(), None);
        assert_eq!(ttl.probe(&k2).await.unwrap(), Some(r2.clone()));
        assert_eq!(cache.probe(&k3).await.unwrap(), Some(old));

        // A record whose layer is gone is a miss, and putting one without its layer fails.
        std::fs::remove_file(store.blob_path(&r1.layer.as_ref().unwrap().digest)).unwrap();
        assert_eq!(cache.probe(&k1).await.unwrap(), None);
        let err = cache.put(&r1, &store).await.unwrap_err();
        assert!(matches!(err, CacheError::MissingLayer(_)), "{err}");

        // A record stored under the wrong key is an error (and a miss in probe_many).
        let k4 = CacheKey::from_material(b"four");
        let d = store.put(&serde_json::to_vec(&r2).unwrap()).unwrap();
        std::fs::write(store.root().join(KEYS_DIR).join(k4.hex()), d.to_string()).unwrap();
        assert!(cache.probe(&k4).await.is_err());
        assert_eq!(cache.probe_many(std::slice::from_ref(&k4)).await, vec![None]);
    }

    #[test]
    fn record_json_shape() {
        let k = CacheKey::from_material(b"k");
        let mut r = CacheRecord::new(&k, None, None, "ENV A=1");
        r.created = 1700000000;
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v, serde_json::json!({"key": k.hex(), "created_by": "ENV A=1", "created": 1700000000}));
        let back: CacheRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
