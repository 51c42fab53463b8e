//! The layer caches in a registry (the formats are described in `layercache`):
//! Kaniko-style `--cache-repo REPO`, one small image per key, and BuildKit-style
//! `--cache-from/--cache-to type=registry,ref=REF` (or `type=local`, the same manifest
//! in an OCI layout directory a CI system keeps), one manifest mapping keys to records,
//! imported on the first probe and exported by [`LayerCache::flush`]: with `mode=min`
//! only the records of the built image's layers, with `mode=max` every step's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use kiln_oci::{media, Digest};

use crate::layercache::{BundleSource, CacheError, CacheKey, CacheOptions, CacheRecord, LayerCache, LayerRecord, MountExport, MountRecord};
use crate::reference::Reference;
use crate::registry::Registry;
use crate::store::ContentStore;

/// Config field carrying the record in a `--cache-repo` image.
pub const RECORD_FIELD: &str = "kiln.cache.record";
/// Media type of the config blob of a `--cache-to` manifest.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.cache.config.v1+json";
/// Records per `--cache-to` config, under this field: `{ "<key hex>": record, … }`.
pub const RECORDS_FIELD: &str = "kiln.cache.records";
/// Cache mounts per `--cache-to … cache-mounts=true` config: `{ "<id>": mount record, … }`.
pub const MOUNTS_FIELD: &str = "kiln.cache.mounts";

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

/// Where a BuildKit-style cache manifest is.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheLocation {
    /// `type=registry,ref=REF`.
    Registry(Reference),
    /// `type=local,src|dest=DIR`: an OCI layout, the manifest named `tag` in its
    /// `index.json` (or, when reading, the one with `digest`).
    Layout { dir: PathBuf, tag: String, digest: Option<Digest> },
}

impl fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheLocation::Registry(r) => write!(f, "{r}"),
            CacheLocation::Layout { dir, tag, .. } => write!(f, "{}:{tag}", dir.display()),
        }
    }
}

/// `mode=` of `--cache-to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// The layers of the built image (BuildKit's default).
    Min,
    /// Every step's layer, intermediate stages too.
    Max,
}

struct ManifestState {
    from: Vec<CacheLocation>,
    to: Option<(CacheLocation, CacheMode)>,
    imported: tokio::sync::OnceCell<Imported>,
    /// Imports given with `cache-mounts=false`: their cache mounts are not restored.
    skip_mounts: Vec<CacheLocation>,
    /// `--cache-to … cache-mounts=true`.
    mount_export: Option<MountExport>,
    /// Cache mounts this build used, as it leaves them.
    mounts: Mutex<BTreeMap<String, MountRecord>>,
    /// Imports that were not usable, said once each (`LayerCache::take_notices`).
    notices: Mutex<Vec<String>>,
    /// This cache's probe hits, with where they came from: exported only once the
    /// build says it took them (`mark_used`).
    probed: Mutex<BTreeMap<String, (CacheRecord, CacheLocation)>>,
    /// What the export will contain: the hits this build took (with where they came
    /// from) and puts (source `None`: the layer is local).
    export: Mutex<BTreeMap<String, (CacheRecord, Option<CacheLocation>)>>,
    /// The built image's step keys (`set_image_keys`), for `mode=min`.
    image_keys: Mutex<Option<BTreeSet<String>>>,
}

/// What the `--cache-from` manifests hold, the first one naming a key or mount winning.
#[derive(Default)]
struct Imported {
    records: HashMap<String, (CacheRecord, CacheLocation)>,
    mounts: HashMap<String, (MountRecord, CacheLocation)>,
}

impl fmt::Debug for RegistryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.flavour {
            Flavour::Repo(r) => write!(f, "RegistryCache(repo {})", r.name()),
            Flavour::Manifest(m) => write!(
                f,
                "RegistryCache(from {:?}, to {:?})",
                m.from.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                m.to.as_ref().map(|(r, mode)| format!("{r} {mode:?}"))
            ),
        }
    }
}

/// Tags of a `--cache-repo` naming the last record at a step's position.
pub const POSITION_TAG_PREFIX: &str = "pos-";
/// BuildKit's inline cache field in an image config (recognised to say why it is not used).
pub const BUILDKIT_INLINE_FIELD: &str = "moby.buildkit.cache.v0";
/// Platform images of an index read for an inline cache.
const MAX_INDEX_CHILDREN: usize = 32;

/// Largest config blob we read while probing.
const MAX_CONFIG: u64 = 16 * 1024 * 1024;

impl RegistryCache {
    /// `--cache-repo REPO` (tag and digest of `repo` are ignored). Read and written
    /// with the push settings, as Kaniko does: the cache lives with the destinations.
    pub fn repo(registry: Registry, repo: Reference, opts: CacheOptions) -> Self {
        RegistryCache { registry: registry.for_destinations(), opts, flavour: Flavour::Repo(repo) }
    }

    /// `--cache-from` (any number) and `--cache-to` (at most one), each a registry
    /// reference or an OCI layout directory.
    pub fn manifest(registry: Registry, from: Vec<CacheLocation>, to: Option<(CacheLocation, CacheMode)>, opts: CacheOptions) -> Self {
        RegistryCache {
            registry,
            opts,
            flavour: Flavour::Manifest(ManifestState {
                from,
                to,
                imported: tokio::sync::OnceCell::new(),
                skip_mounts: Vec::new(),
                mount_export: None,
                mounts: Mutex::new(BTreeMap::new()),
                notices: Mutex::new(Vec::new()),
                probed: Mutex::new(BTreeMap::new()),
                export: Mutex::new(BTreeMap::new()),
                image_keys: Mutex::new(None),
            }),
        }
    }

    /// Cache mounts: restored from every import but those in `skip` (given with
    /// `cache-mounts=false`), exported with `export`'s limits when given.
    pub fn with_mounts(mut self, skip: Vec<CacheLocation>, export: Option<MountExport>) -> Self {
        if let Flavour::Manifest(m) = &mut self.flavour {
            m.skip_mounts = skip;
            m.mount_export = export;
        }
        self
    }

    /// Repositories holding this cache's layers: pass them as `mount_from` when pushing
    /// an image that uses cached layers, so the registry mounts instead of re-uploading.
    pub fn repositories(&self) -> Vec<Reference> {
        match &self.flavour {
            Flavour::Repo(r) => vec![r.clone()],
            Flavour::Manifest(m) => m
                .from
                .iter()
                .chain(m.to.iter().map(|(l, _)| l))
                .filter_map(|l| match l {
                    CacheLocation::Registry(r) => Some(r.clone()),
                    CacheLocation::Layout { .. } => None,
                })
                .collect(),
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
        let c = self.config_named_by(r, &m, &what).await?;
        Ok(Some((what, m, c)))
    }

    /// The config blob the manifest `m` of `r` names, parsed (at most MAX_CONFIG).
    async fn config_named_by(&self, r: &Reference, m: &serde_json::Value, what: &str) -> Result<serde_json::Value, CacheError> {
        let cfg: Digest = m["config"]["digest"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| CacheError::Invalid { what: what.to_string(), message: "no config digest".into() })?;
        let cbytes = self.registry.get_blob(r, &cfg, MAX_CONFIG).await?;
        serde_json::from_slice(&cbytes).map_err(|e| CacheError::Invalid { what: what.to_string(), message: e.to_string() })
    }

    fn repo_tag(repo: &Reference, key: &CacheKey) -> Result<Reference, CacheError> {
        repo.with_tag(key.hex())
            .map_err(|e| CacheError::Invalid { what: "cache repository".into(), message: e.to_string() })
    }

    async fn probe_repo(&self, repo: &Reference, key: &CacheKey) -> Result<Option<CacheRecord>, CacheError> {
        let r = Self::repo_tag(repo, key)?;
        // kiln's cache images carry the record (without its inputs) in an annotation of
        // the manifest: one GET per key. Older ones and other writers: the config.
        let Some((bytes, mdigest)) = self.registry.get_manifest(&r).await? else {
            return Ok(None);
        };
        let what = format!("cache image {r} ({mdigest})");
        let m: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| CacheError::Invalid { what: what.clone(), message: e.to_string() })?;
        let annotated = m["annotations"][RECORD_FIELD].as_str().and_then(|a| serde_json::from_str::<CacheRecord>(a).ok());
        let rec = match annotated {
            Some(rec) => rec,
            None => {
                let c = self.config_named_by(&r, &m, &what).await?;
                serde_json::from_value(c[RECORD_FIELD].clone())
                    .map_err(|e| CacheError::Invalid { what: what.clone(), message: format!("{RECORD_FIELD}: {e}") })?
            }
        };
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
        let mut lean = rec.clone();
        lean.inputs = None;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": blobs[0],
            "layers": layers,
            "annotations": { RECORD_FIELD: serde_json::to_string(&lean).expect("a record serialises") },
        }))
        .expect("manifest serialises");
        self.registry.push_image(&r, store, &manifest, media::OCI_MANIFEST, &blobs, &[]).await?;
        // The same manifest under a tag named by the step's position, so that a fresh
        // runner can explain a miss there (`previous`): one manifest PUT, no blob.
        if let Some(i) = &rec.inputs {
            let pos = Self::position_tag(repo, &i.position)?;
            self.registry.push_image(&pos, store, &manifest, media::OCI_MANIFEST, &[], &[]).await?;
        }
        Ok(())
    }

    /// `pos-<sha256 of the position>`: the last record made at a step's position.
    fn position_tag(repo: &Reference, position: &str) -> Result<Reference, CacheError> {
        let hex = Digest::of(position.as_bytes()).hex().to_string();
        repo.with_tag(&format!("{POSITION_TAG_PREFIX}{}", &hex[..40]))
            .map_err(|e| CacheError::Invalid { what: "cache repository".into(), message: e.to_string() })
    }

    async fn previous_in_repo(&self, repo: &Reference, now: &crate::layercache::StepInputs) -> Option<CacheRecord> {
        let r = Self::position_tag(repo, &now.position).ok()?;
        let (_, _, c) = self.config_of(&r, "cache image").await.ok()??;
        serde_json::from_value::<CacheRecord>(c[RECORD_FIELD].clone()).ok()
    }

    async fn import<'a>(&'a self, m: &'a ManifestState) -> &'a Imported {
        m.imported
            .get_or_init(|| async {
                let mut all = Imported::default();
                for r in &m.from {
                    match self.import_one(r).await {
                        Ok((recs, mounts)) => {
                            tracing::info!("imported {} cache records and {} cache mounts from {r}", recs.len(), mounts.len());
                            for rec in recs {
                                all.records.entry(rec.key.clone()).or_insert((rec, r.clone()));
                            }
                            for mount in mounts.into_iter().filter(|_| !m.skip_mounts.contains(r)) {
                                all.mounts.entry(mount.id.clone()).or_insert((mount, r.clone()));
                            }
                        }
                        Err(e) => {
                            tracing::debug!("ignoring cache from {r}: {e}");
                            m.notices.lock().unwrap_or_else(|p| p.into_inner()).push(format!("ignoring the cache {r}: {e}"));
                        }
                    }
                }
                all
            })
            .await
    }

    /// The configs at `r`: a cache manifest's, an image's (an inline cache), or each
    /// platform image's of an index (attestation manifests skipped).
    async fn configs_at(&self, r: &Reference) -> Result<Vec<(String, serde_json::Value)>, CacheError> {
        let Some((bytes, mdigest)) = self.registry.get_manifest(r).await? else {
            return Ok(Vec::new());
        };
        let what = format!("cache {r} ({mdigest})");
        let m: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| CacheError::Invalid { what: what.clone(), message: e.to_string() })?;
        let Some(children) = m["manifests"].as_array() else {
            let c = self.config_named_by(r, &m, &what).await?;
            return Ok(vec![(what, c)]);
        };
        let mut out = Vec::new();
        for child in children.iter().take(MAX_INDEX_CHILDREN) {
            if child["platform"]["os"] == "unknown" || child["annotations"]["vnd.docker.reference.type"].is_string() {
                continue;
            }
            let Some(d) = child["digest"].as_str().and_then(|s| s.parse::<Digest>().ok()) else { continue };
            if let Some((what, _, c)) = self.config_of(&r.with_digest(d), "image").await? {
                out.push((what, c));
            }
        }
        Ok(out)
    }

    async fn import_one(&self, from: &CacheLocation) -> Result<(Vec<CacheRecord>, Vec<MountRecord>), CacheError> {
        let found = match from {
            CacheLocation::Registry(r) => self.configs_at(r).await?,
            CacheLocation::Layout { dir, tag, digest } => layout::config_of(dir, tag, digest.as_ref())?.map(|(w, _, c)| (w, c)).into_iter().collect(),
        };
        let (mut records, mut mounts) = (Vec::new(), Vec::new());
        for (what, c) in found {
            if c.get(RECORDS_FIELD).is_none() {
                let message = if c.get(BUILDKIT_INLINE_FIELD).is_some() {
                    format!("it carries BuildKit's inline cache ({BUILDKIT_INLINE_FIELD}), whose keys are BuildKit's LLB digests: kiln's step keys cannot be mapped to them; build the image once with kiln --cache-to type=inline")
                } else {
                    format!("it holds no kiln cache records ({RECORDS_FIELD}): not a kiln cache, nor an image built with --cache-to type=inline")
                };
                return Err(CacheError::Invalid { what, message });
            }
            let recs: BTreeMap<String, CacheRecord> = serde_json::from_value(c[RECORDS_FIELD].clone())
                .map_err(|e| CacheError::Invalid { what: what.clone(), message: format!("{RECORDS_FIELD}: {e}") })?;
            let ms: BTreeMap<String, MountRecord> = match c.get(MOUNTS_FIELD) {
                Some(v) => serde_json::from_value(v.clone()).map_err(|e| CacheError::Invalid { what, message: format!("{MOUNTS_FIELD}: {e}") })?,
                None => BTreeMap::new(),
            };
            records.extend(recs.into_iter().filter(|(k, rec)| *k == rec.key).map(|(_, rec)| rec));
            mounts.extend(ms.into_iter().filter(|(k, m)| *k == m.id).map(|(_, m)| m));
        }
        Ok((records, mounts))
    }

    /// The cache mounts the export carries: those this build used, and the imported
    /// ones no build used for longer than the TTL (a build that took every step from
    /// the cache must not lose the npm cache for the next one that misses).
    fn mounts_to_export(&self, m: &ManifestState, imported: Option<&Imported>) -> Vec<(MountRecord, Option<CacheLocation>)> {
        let Some(ex) = m.mount_export else { return Vec::new() };
        let used = m.mounts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out: Vec<_> = used.values().map(|r| (r.clone(), None)).collect();
        for (id, (rec, src)) in imported.map(|i| &i.mounts).into_iter().flatten() {
            if !used.contains_key(id) && rec.is_fresh(ex.ttl) && ex.max_size.is_none_or(|max| rec.bytes <= max) {
                out.push((rec.clone(), Some(src.clone())));
            }
        }
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        out
    }

    /// Makes a blob of `src` present for an export to `to`: same-registry sources are
    /// mounted by `push_image`; others are copied into the store first.
    async fn bring(&self, l: &LayerRecord, src: &CacheLocation, to: &CacheLocation, store: &ContentStore) -> Result<(), CacheError> {
        if store.has(&l.digest) {
            return Ok(());
        }
        match (src, to) {
            (CacheLocation::Registry(s), CacheLocation::Registry(t)) if s.registry() == t.registry() => {}
            (CacheLocation::Registry(s), _) => self.registry.pull_blob(s, &l.digest, Some(l.size), store).await?,
            (CacheLocation::Layout { dir, .. }, _) => layout::copy_blob(dir, &l.digest, l.size, store)?,
        }
        Ok(())
    }

    async fn export(&self, m: &ManifestState, store: &ContentStore) -> Result<(), CacheError> {
        let Some((to, mode)) = &m.to else { return Ok(()) };
        let image_keys = m.image_keys.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let entries: Vec<(CacheRecord, Option<CacheLocation>)> = m
            .export
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|(rec, _)| *mode == CacheMode::Max || image_keys.as_ref().is_none_or(|k| k.contains(&rec.key)))
            .cloned()
            .collect();
        let imported = if m.mount_export.is_some() && !m.from.is_empty() { Some(self.import(m).await) } else { None };
        let mounts = self.mounts_to_export(m, imported);
        if entries.is_empty() && mounts.is_empty() {
            return Ok(());
        }
        // Blobs not here and not already where the export goes are fetched first.
        let mut blobs_from: Vec<(&LayerRecord, &CacheLocation)> = Vec::new();
        for (rec, src) in &entries {
            if let (Some(l), Some(src)) = (&rec.layer, src) {
                blobs_from.push((l, src));
            }
        }
        // A mount this build used may hold bundles it restored and did not change:
        // they are not in the store (restores stream), but where they were imported from.
        let imported_bundles: HashMap<&Digest, &CacheLocation> =
            imported.map(|i| &i.mounts).into_iter().flatten().flat_map(|(_, (r, src))| r.bundles.iter().map(move |b| (&b.digest, src))).collect();
        for (mr, src) in &mounts {
            for b in &mr.bundles {
                if let Some(src) = src.as_ref().or_else(|| imported_bundles.get(&b.digest).copied().filter(|_| !store.has(&b.digest))) {
                    blobs_from.push((b, src));
                }
            }
        }
        for (l, src) in &blobs_from {
            self.bring(l, src, to, store).await?;
        }
        let records: BTreeMap<&str, &CacheRecord> = entries.iter().map(|(r, _)| (r.key.as_str(), r)).collect();
        let mount_map: BTreeMap<&str, &MountRecord> = mounts.iter().map(|(r, _)| (r.id.as_str(), r)).collect();
        let mut config = serde_json::json!({ RECORDS_FIELD: records });
        if !mount_map.is_empty() {
            config[MOUNTS_FIELD] = serde_json::to_value(&mount_map).expect("serialises");
        }
        let config = serde_json::to_vec(&config).expect("serialises");
        let cd = store.put(&config)?;
        let mut layers = Vec::new();
        let mut seen = BTreeSet::new();
        let all_blobs = records.values().filter_map(|r| r.layer.as_ref()).chain(mount_map.values().flat_map(|m| m.bundles.iter()));
        for l in all_blobs {
            if seen.insert(l.digest.clone()) {
                layers.push(descriptor(&l.media_type, &l.digest, l.size));
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
        match to {
            CacheLocation::Registry(to) => {
                let mut blobs = vec![config_desc];
                blobs.extend(layers);
                // Where the blobs that are not here come from (push_image mounts them).
                let mut mount: Vec<Reference> = Vec::new();
                for (_, src) in &blobs_from {
                    if let CacheLocation::Registry(r) = src {
                        if !mount.contains(r) {
                            mount.push(r.clone());
                        }
                    }
                }
                self.registry.push_image(to, store, &manifest, media::OCI_MANIFEST, &blobs, &mount).await?;
            }
            CacheLocation::Layout { dir, tag, .. } => {
                let md = store.put(&manifest)?;
                let desc = descriptor(media::OCI_MANIFEST, &md, manifest.len() as u64);
                crate::layout::export_layout(store, dir, &[(desc, tag.clone())])?;
            }
        }
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
                    let Some((rec, src)) = all.records.get(key.hex()) else { return Ok(None) };
                    if !rec.is_fresh(self.opts.ttl) {
                        return Ok(None);
                    }
                    m.probed.lock().unwrap_or_else(|p| p.into_inner()).insert(rec.key.clone(), (rec.clone(), src.clone()));
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
                Flavour::Repo(repo) => CacheLocation::Registry(repo.clone()),
                Flavour::Manifest(m) => {
                    let all = self.import(m).await;
                    match all.records.get(&record.key) {
                        Some((_, src)) => src.clone(),
                        None => return Err(CacheError::MissingLayer(l.digest.clone())),
                    }
                }
            };
            match &src {
                CacheLocation::Registry(r) => self.registry.pull_blob(r, &l.digest, Some(l.size), store).await?,
                CacheLocation::Layout { dir, .. } => layout::copy_blob(dir, &l.digest, l.size, store)?,
            }
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

    fn mark_used(&self, record: &CacheRecord, store: &ContentStore) {
        let Flavour::Manifest(m) = &self.flavour else { return };
        let src = m.probed.lock().unwrap_or_else(|p| p.into_inner()).get(&record.key).map(|(_, s)| s.clone());
        let local = record.layer.as_ref().is_none_or(|l| store.has(&l.digest));
        // From this cache: exported from where it is; from another: only if the layer
        // is here to upload.
        if src.is_some() || local {
            m.export.lock().unwrap_or_else(|p| p.into_inner()).entry(record.key.clone()).or_insert_with(|| (record.clone(), src));
        }
    }

    fn previous<'a>(&'a self, now: &'a crate::layercache::StepInputs) -> BoxFuture<'a, Option<CacheRecord>> {
        async move {
            let m = match &self.flavour {
                Flavour::Repo(repo) => return self.previous_in_repo(repo, now).await,
                Flavour::Manifest(m) => m,
            };
            let all = self.import(m).await;
            all.records
                .values()
                .map(|(r, _)| r)
                .filter_map(|r| r.inputs.as_ref().filter(|i| i.position == now.position).map(|i| (i.likeness(now), r.created, r)))
                .max_by_key(|(l, c, _)| (*l, *c))
                .map(|(_, _, r)| r.clone())
        }
        .boxed()
    }

    fn mount_record<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<MountRecord>> {
        async move {
            let Flavour::Manifest(m) = &self.flavour else { return None };
            if m.from.is_empty() {
                return None;
            }
            self.import(m).await.mounts.get(id).map(|(r, _)| r.clone())
        }
        .boxed()
    }

    fn open_bundle<'a>(&'a self, rec: &'a MountRecord, i: usize) -> BoxFuture<'a, Result<BundleSource, CacheError>> {
        async move {
            let missing = || CacheError::Invalid { what: "cache mount".into(), message: format!("{:?} is in no imported cache", rec.id) };
            let Flavour::Manifest(m) = &self.flavour else { return Err(missing()) };
            let Some((_, src)) = self.import(m).await.mounts.get(&rec.id) else { return Err(missing()) };
            let b = rec.bundles.get(i).ok_or_else(missing)?;
            Ok(match src {
                CacheLocation::Registry(r) => {
                    let s = self.registry.blob_chunks(r, &b.digest).await?;
                    BundleSource::Stream(s.map(|c| c.map_err(CacheError::from)).boxed())
                }
                CacheLocation::Layout { dir, .. } => BundleSource::File(layout::blob_file(dir, &b.digest)),
            })
        }
        .boxed()
    }

    fn take_notices(&self) -> Vec<String> {
        match &self.flavour {
            Flavour::Manifest(m) => std::mem::take(&mut *m.notices.lock().unwrap_or_else(|p| p.into_inner())),
            Flavour::Repo(_) => Vec::new(),
        }
    }

    fn mount_export(&self) -> Option<MountExport> {
        match &self.flavour {
            Flavour::Manifest(m) if m.to.is_some() => m.mount_export,
            _ => None,
        }
    }

    fn put_mount(&self, rec: MountRecord) {
        if let Flavour::Manifest(m) = &self.flavour {
            m.mounts.lock().unwrap_or_else(|p| p.into_inner()).insert(rec.id.clone(), rec);
        }
    }

    fn set_image_keys(&self, keys: &[String]) {
        if let Flavour::Manifest(m) = &self.flavour {
            *m.image_keys.lock().unwrap_or_else(|p| p.into_inner()) = Some(keys.iter().cloned().collect());
        }
    }
}

/// A cache manifest in an OCI layout directory (`type=local`).
mod layout;

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
