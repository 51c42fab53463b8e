//! The layer caches in a registry (the formats are described in `layercache`):
//! Kaniko-style `--cache-repo REPO`, one small image per key, and BuildKit-style
//! `--cache-from/--cache-to type=registry,ref=REF`, one manifest mapping keys to
//! records, imported on the first probe and exported by [`LayerCache::flush`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use kiln_oci::{media, Digest};

use crate::layercache::{CacheError, CacheKey, CacheOptions, CacheRecord, LayerCache};
use crate::reference::Reference;
use crate::registry::Registry;
use crate::store::ContentStore;

/// Config field carrying the record in a `--cache-repo` image.
pub const RECORD_FIELD: &str = "kiln.cache.record";
/// Media type of the config blob of a `--cache-to` manifest.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.cache.config.v1+json";
/// Records per `--cache-to` config, under this field: `{ "<key hex>": record, … }`.
pub const RECORDS_FIELD: &str = "kiln.cache.records";

/// A cache in a registry, Kaniko-style (`--cache-repo`) or BuildKit-style
/// (`--cache-from`/`--cache-to type=registry`). See module docs.
pub struct RegistryCache {
    registry: Registry,
    opts: CacheOptions,
    flavour: Flavour,
}

enum Flavour {
    Repo(Reference),
    Manifest(ManifestState),
}

struct ManifestState {
    from: Vec<Reference>,
    to: Option<Reference>,
    imported: tokio::sync::OnceCell<HashMap<String, (CacheRecord, Reference)>>,
    /// What the export will contain: this build's hits (with where they came from) and
    /// puts (source `None`: the layer is local).
    export: Mutex<BTreeMap<String, (CacheRecord, Option<Reference>)>>,
}

impl fmt::Debug for RegistryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.flavour {
            Flavour::Repo(r) => write!(f, "RegistryCache(repo {})", r.name()),
            Flavour::Manifest(m) => write!(
                f,
                "RegistryCache(from {:?}, to {:?})",
                m.from.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                m.to.as_ref().map(|r| r.to_string())
            ),
        }
    }
}

/// Largest config blob we read while probing.
const MAX_CONFIG: u64 = 16 * 1024 * 1024;

impl RegistryCache {
    /// `--cache-repo REPO` (tag and digest of `repo` are ignored). Read and written
    /// with the push settings, as Kaniko does: the cache lives with the destinations.
    pub fn repo(registry: Registry, repo: Reference, opts: CacheOptions) -> Self {
        RegistryCache { registry: registry.for_destinations(), opts, flavour: Flavour::Repo(repo) }
    }

    /// `--cache-from type=registry,ref=…` (any number) and `--cache-to
    /// type=registry,ref=…` (at most one).
    pub fn manifest(registry: Registry, from: Vec<Reference>, to: Option<Reference>, opts: CacheOptions) -> Self {
        RegistryCache {
            registry,
            opts,
            flavour: Flavour::Manifest(ManifestState {
                from,
                to,
                imported: tokio::sync::OnceCell::new(),
                export: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Repositories holding this cache's layers: pass them as `mount_from` when pushing
    /// an image that uses cached layers, so the registry mounts instead of re-uploading.
    pub fn repositories(&self) -> Vec<Reference> {
        match &self.flavour {
            Flavour::Repo(r) => vec![r.clone()],
            Flavour::Manifest(m) => m.from.iter().chain(m.to.iter()).cloned().collect(),
        }
    }

    /// The manifest and config JSON of the cache image or manifest at `r` (None if
    /// absent), with a description of it for errors.
    async fn config_of(&self, r: &Reference, kind: &str) -> Result<Option<(String, serde_json::Value, serde_json::Value)>, CacheError> {
        let Some((bytes, mdigest)) = self.registry.get_manifest(r).await? else {
            return Ok(None);
        };
        let what = format!("{kind} {r} ({mdigest})");
        let m: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| CacheError::Invalid { what: what.clone(), message: e.to_string() })?;
        let cfg: Digest = m["config"]["digest"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| CacheError::Invalid { what: what.clone(), message: "no config digest".into() })?;
        let cbytes = self.registry.get_blob(r, &cfg, MAX_CONFIG).await?;
        let c = serde_json::from_slice(&cbytes).map_err(|e| CacheError::Invalid { what: what.clone(), message: e.to_string() })?;
        Ok(Some((what, m, c)))
    }

    fn repo_tag(repo: &Reference, key: &CacheKey) -> Result<Reference, CacheError> {
        repo.with_tag(key.hex())
            .map_err(|e| CacheError::Invalid { what: "cache repository".into(), message: e.to_string() })
    }

    async fn probe_repo(&self, repo: &Reference, key: &CacheKey) -> Result<Option<CacheRecord>, CacheError> {
        let r = Self::repo_tag(repo, key)?;
        let Some((what, m, c)) = self.config_of(&r, "cache image").await? else {
            return Ok(None);
        };
        let rec: CacheRecord = serde_json::from_value(c[RECORD_FIELD].clone())
            .map_err(|e| CacheError::Invalid { what: what.clone(), message: format!("{RECORD_FIELD}: {e}") })?;
        rec.check(key, &what)?;
        let layer0 = m["layers"][0]["digest"].as_str().map(str::to_string);
        if layer0 != rec.layer.as_ref().map(|l| l.digest.to_string()) {
            return Err(CacheError::Invalid { what, message: "record and manifest name different layers".into() });
        }
        Ok(rec.is_fresh(self.opts.ttl).then_some(rec))
    }

    async fn put_repo(&self, repo: &Reference, rec: &CacheRecord, store: &ContentStore) -> Result<(), CacheError> {
        let key = CacheKey::from_hex(&rec.key)
            .ok_or_else(|| CacheError::Invalid { what: "cache record".into(), message: format!("bad key {:?}", rec.key) })?;
        let r = Self::repo_tag(repo, &key)?;
        let mut history = serde_json::json!({"created_by": rec.created_by});
        if let Some(c) = &rec.history_created {
            history["created"] = c.clone().into();
        }
        let config = serde_json::json!({
            "architecture": go_arch(),
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": rec.diff_id.iter().collect::<Vec<_>>()},
            "history": [history],
            RECORD_FIELD: rec,
        });
        let config = serde_json::to_vec(&config).expect("config serialises");
        let cd = store.put(&config)?;
        let mut blobs = vec![descriptor(media::OCI_CONFIG, &cd, config.len() as u64)];
        let mut layers = Vec::new();
        if let Some(l) = &rec.layer {
            if !store.has(&l.digest) {
                return Err(CacheError::MissingLayer(l.digest.clone()));
            }
            layers.push(descriptor(&l.media_type, &l.digest, l.size));
        }
        blobs.extend(layers.iter().cloned());
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": blobs[0],
            "layers": layers,
        }))
        .expect("manifest serialises");
        self.registry.push_image(&r, store, &manifest, media::OCI_MANIFEST, &blobs, &[]).await?;
        Ok(())
    }

    async fn import<'a>(&'a self, m: &'a ManifestState) -> &'a HashMap<String, (CacheRecord, Reference)> {
        m.imported
            .get_or_init(|| async {
                let mut all = HashMap::new();
                for r in &m.from {
                    match self.import_one(r).await {
                        Ok(recs) => {
                            tracing::info!("imported {} cache records from {r}", recs.len());
                            for rec in recs {
                                all.entry(rec.key.clone()).or_insert((rec, r.clone()));
                            }
                        }
                        Err(e) => tracing::warn!("ignoring cache from {r}: {e}"),
                    }
                }
                all
            })
            .await
    }

    async fn import_one(&self, r: &Reference) -> Result<Vec<CacheRecord>, CacheError> {
        let Some((what, _, c)) = self.config_of(r, "cache manifest").await? else {
            return Ok(Vec::new());
        };
        let recs: BTreeMap<String, CacheRecord> = serde_json::from_value(c[RECORDS_FIELD].clone())
            .map_err(|e| CacheError::Invalid { what, message: format!("{RECORDS_FIELD}: {e}") })?;
        Ok(recs.into_iter().filter(|(k, rec)| *k == rec.key).map(|(_, rec)| rec).collect())
    }

    async fn export(&self, m: &ManifestState, store: &ContentStore) -> Result<(), CacheError> {
        let Some(to) = &m.to else { return Ok(()) };
        let entries: Vec<(CacheRecord, Option<Reference>)> =
            m.export.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        if entries.is_empty() {
            return Ok(());
        }
        // Layers not here and not already in the target repository are fetched first
        // (same-registry sources are mounted by push_image when possible).
        for (rec, src) in &entries {
            let (Some(l), Some(src)) = (&rec.layer, src) else { continue };
            if store.has(&l.digest) || (src.registry() == to.registry() && src.repository() == to.repository()) {
                continue;
            }
            if src.registry() == to.registry() {
                continue; // mounted by push_image
            }
            self.registry.pull_blob(src, &l.digest, Some(l.size), store).await?;
        }
        let records: BTreeMap<&str, &CacheRecord> = entries.iter().map(|(r, _)| (r.key.as_str(), r)).collect();
        let config = serde_json::to_vec(&serde_json::json!({ RECORDS_FIELD: records })).expect("serialises");
        let cd = store.put(&config)?;
        let mut layers = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for rec in records.values() {
            if let Some(l) = &rec.layer {
                if seen.insert(l.digest.clone()) {
                    layers.push(descriptor(&l.media_type, &l.digest, l.size));
                }
            }
        }
        let config_desc = descriptor(CACHE_CONFIG_MEDIA_TYPE, &cd, config.len() as u64);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": config_desc,
            "layers": layers,
        }))
        .expect("serialises");
        let mut blobs = vec![config_desc];
        blobs.extend(layers);
        let mount: Vec<Reference> = entries.iter().filter_map(|(_, s)| s.clone()).collect();
        self.registry.push_image(to, store, &manifest, media::OCI_MANIFEST, &blobs, &mount).await?;
        Ok(())
    }
}

impl LayerCache for RegistryCache {
    fn probe<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<Option<CacheRecord>, CacheError>> {
        async move {
            match &self.flavour {
                Flavour::Repo(repo) => self.probe_repo(repo, key).await,
                Flavour::Manifest(m) => {
                    let all = self.import(m).await;
                    let Some((rec, src)) = all.get(key.hex()) else { return Ok(None) };
                    if !rec.is_fresh(self.opts.ttl) {
                        return Ok(None);
                    }
                    m.export
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(rec.key.clone())
                        .or_insert_with(|| (rec.clone(), Some(src.clone())));
                    Ok(Some(rec.clone()))
                }
            }
        }
        .boxed()
    }

    fn fetch_layer<'a>(&'a self, record: &'a CacheRecord, store: &'a ContentStore) -> BoxFuture<'a, Result<(), CacheError>> {
        async move {
            let Some(l) = &record.layer else { return Ok(()) };
            if store.has(&l.digest) {
                return Ok(());
            }
            let src = match &self.flavour {
                Flavour::Repo(repo) => repo.clone(),
                Flavour::Manifest(m) => {
                    let all = self.import(m).await;
                    match all.get(&record.key) {
                        Some((_, src)) => src.clone(),
                        None => return Err(CacheError::MissingLayer(l.digest.clone())),
                    }
                }
            };
            self.registry.pull_blob(&src, &l.digest, Some(l.size), store).await?;
            Ok(())
        }
        .boxed()
    }

    fn put<'a>(&'a self, record: &'a CacheRecord, store: &'a ContentStore) -> BoxFuture<'a, Result<(), CacheError>> {
        async move {
            match &self.flavour {
                Flavour::Repo(repo) => self.put_repo(repo, record, store).await,
                Flavour::Manifest(m) => {
                    if let Some(l) = &record.layer {
                        if !store.has(&l.digest) {
                            return Err(CacheError::MissingLayer(l.digest.clone()));
                        }
                    }
                    m.export
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(record.key.clone(), (record.clone(), None));
                    Ok(())
                }
            }
        }
        .boxed()
    }

    fn flush<'a>(&'a self, store: &'a ContentStore) -> BoxFuture<'a, Result<(), CacheError>> {
        async move {
            match &self.flavour {
                Flavour::Repo(_) => Ok(()),
                Flavour::Manifest(m) => self.export(m, store).await,
            }
        }
        .boxed()
    }

    fn probe_concurrency(&self) -> usize {
        self.opts.probe_concurrency
    }
}

fn descriptor(media_type: &str, d: &Digest, size: u64) -> kiln_oci::Descriptor {
    oci_spec::image::DescriptorBuilder::default()
        .media_type(oci_spec::image::MediaType::from(media_type))
        .digest(oci_spec::image::Digest::try_from(d.to_string()).expect("valid digest"))
        .size(size)
        .build()
        .expect("descriptor builds")
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}
