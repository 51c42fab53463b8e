//! Pulling and pushing images.
//!
//! oci-client is used for transport only (DESIGN.md): raw manifests, blob-level
//! streaming, monolithic blob PUTs whose body streams from the store file (its
//! high-level `push` holds layers in memory). On top we add what it lacks: retries
//! (`retry.rs`), docker config.json credentials (`auth.rs`), platform selection
//! (`platform.rs`), and error messages naming operation, registry and repository.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};

use futures_util::{StreamExt, TryStreamExt};
use kiln_oci::{media, Descriptor, Digest, ImageConfig, ImageManifest};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;

pub use crate::error::RegistryError;
use crate::error::StoreError;
use crate::failure::{attempt, into_error, Failure};
use crate::reference::Reference;
use crate::store::ContentStore;
use crate::hosts::{self, Mode, Policy, Purpose};
pub use crate::hosts::{Hosts, Leniency};
pub use crate::mtls::{ClientCert, ClientCertError};
pub use crate::options::{RegistryOptions, Transferred, CONCURRENCY, DEFAULT_RETRIES};
use crate::transport::Transport;

mod pull;

const ACCEPT_MANIFESTS: &[&str] =
    &[media::OCI_MANIFEST, media::DOCKER_MANIFEST, media::OCI_INDEX, media::DOCKER_MANIFEST_LIST];

/// A registry client for any number of registries. Cheap to clone; shares connections
/// and tokens between clones.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
    /// The purpose reads are made for: pulls, or pushes for a cache that lives with
    /// the destinations ([`Registry::for_destinations`]).
    reads: Purpose,
}

struct Inner {
    opts: RegistryOptions,
    /// One transport per registry host and mode: the scheme and credentials are per
    /// host, loopback hosts are insecure whatever their port (which a single
    /// `HttpsExcept(list)` client could not express without knowing ports up front),
    /// and pulls and pushes may differ in verification.
    transports: Mutex<HashMap<(String, Mode), Transport>>,
    /// Whether a registry answered TLS, probed once per registry.
    speaks_tls: Mutex<HashMap<String, bool>>,
}

#[derive(Debug, Clone)]
pub struct PulledImage {
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    pub manifest_bytes: Vec<u8>,
    pub config_digest: Digest,
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    pub manifest_digest: Digest,
    pub uploaded: Vec<Digest>,
    pub mounted: Vec<Digest>,
    pub skipped: Vec<Digest>,
}

/// `r` moved to `to` (`host[:port][/prefix]`) with repository `rest` under it, keeping
/// tag and digest.
fn rebase(r: &Reference, to: &str, rest: &str) -> Option<Reference> {
    let (registry, prefix) = match to.split_once('/') {
        Some((h, p)) => (h, Some(p)),
        None => (to, None),
    };
    let repository = match (prefix, rest) {
        (Some(p), "") => p.to_string(),
        (Some(p), r) => format!("{p}/{r}"),
        (None, r) if !r.is_empty() => r.to_string(),
        (None, _) => return None,
    };
    Reference::new(registry, &repository, r.tag(), r.digest().cloned()).ok()
}

/// Parse a manifest or index (`what`) and keep its bytes in the store.
fn parse_and_keep<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
    digest: &Digest,
    r: &Reference,
    store: &ContentStore,
) -> Result<T, RegistryError> {
    let parsed = serde_json::from_slice(bytes).map_err(|e| RegistryError::BadContent {
        op: format!("parsing {what} {} of", short(digest)),
        target: r.to_string(),
        message: e.to_string(),
    })?;
    store.put(bytes).map_err(|source| RegistryError::Store { op: format!("storing {what} of"), target: r.to_string(), source })?;
    Ok(parsed)
}

fn short(d: &Digest) -> String {
    format!("sha256:{}…", d.short())
}

/// Whether `registry` (`host[:port]`) may be spoken to over plain HTTP.
pub fn is_insecure(opts: &RegistryOptions, registry: &str) -> bool {
    hosts::is_insecure(&opts.insecure, registry)
}


fn parse_oci_digest(d: &oci_spec::image::Digest) -> Result<Digest, Failure> {
    d.to_string()
        .parse()
        .map_err(|e: kiln_oci::DigestError| Failure::Bad(format!("unsupported digest: {e}")))
}

/// Whether manifest bytes are an index (or manifest list) rather than an image manifest.
pub(crate) fn is_index_bytes(bytes: &[u8]) -> Result<bool, Failure> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Failure::Bad(format!("manifest is not JSON: {e}")))?;
    match v.get("mediaType").and_then(|m| m.as_str()) {
        Some(mt) if media::is_index(mt) => Ok(true),
        Some(mt) if media::is_manifest(mt) => Ok(false),
        Some(mt) => Err(Failure::Bad(format!("unsupported manifest media type {mt}"))),
        // mediaType is optional in OCI; tell the two apart by their fields.
        None => Ok(v.get("manifests").is_some()),
    }
}

impl Registry {
    pub fn new(opts: RegistryOptions) -> Self {
        let inner = Inner { opts, transports: Mutex::new(HashMap::new()), speaks_tls: Mutex::new(HashMap::new()) };
        Registry { inner: Arc::new(inner), reads: Purpose::Pull }
    }

    /// The same client (connections, tokens) reading with the push settings: for a
    /// cache that lives with the destinations, as Kaniko's `--cache-repo` does
    /// (`pkg/cache/cache.go` takes `--insecure` and `--skip-tls-verify` for it).
    pub fn for_destinations(&self) -> Registry {
        Registry { inner: self.inner.clone(), reads: Purpose::Push }
    }

    fn attempts(&self) -> u32 {
        self.inner.opts.retries.saturating_add(1)
    }

    fn concurrency(&self) -> usize {
        self.inner.opts.max_concurrent_transfers.max(1)
    }

    /// [`attempt`] on `t`, its error completed with the mutual-TLS relay's reason.
    pub(crate) async fn attempt<T, F, Fut>(&self, t: &Transport, op: String, r: &Reference, f: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        attempt(self.attempts(), op, r, f).await.map_err(|e| t.explain(e))
    }

    fn mode(&self, registry: &str, purpose: Purpose) -> Mode {
        let o = &self.inner.opts;
        let policy = Policy {
            insecure: &o.insecure,
            pull: &o.pull,
            push: &o.push,
            ca_certs: !o.ca_certs.is_empty(),
            client_cert: o.client_cert(registry).is_some(),
        };
        policy.mode(registry, purpose, || {
            let mut probed = self.inner.speaks_tls.lock().unwrap_or_else(|p| p.into_inner());
            *probed.entry(registry.to_string()).or_insert_with(|| hosts::speaks_tls(registry))
        })
    }

    pub(crate) fn transport(&self, registry: &str, purpose: Purpose) -> Result<Transport, RegistryError> {
        let mode = self.mode(registry, purpose);
        let mut map = self.inner.transports.lock().unwrap_or_else(|p| p.into_inner());
        let key = (registry.to_string(), mode);
        if let Some(t) = map.get(&key) {
            return Ok(t.clone());
        }
        let t = crate::transport::build(&self.inner.opts, registry, mode)?;
        map.insert(key, t.clone());
        Ok(t)
    }

    /// Where a pull of `r` is tried, in order: `registry_map` rewrites it (no
    /// fallback); a docker.io name then goes to each mirror first, docker.io last.
    pub fn pull_sources(&self, r: &Reference) -> Vec<Reference> {
        let opts = &self.inner.opts;
        let mut base = r.clone();
        let name = r.name();
        for (from, to) in &opts.registry_map {
            let from = from.trim_end_matches('/');
            let rest = if name == from {
                Some("")
            } else {
                name.strip_prefix(from).and_then(|x| x.strip_prefix('/'))
            };
            // `FROM` may be a bare registry: then the whole repository is the rest.
            let Some(rest) = rest else { continue };
            if let Some(mapped) = rebase(r, to, rest) {
                base = mapped;
                break;
            }
            tracing::warn!("ignoring --registry-map {from}={to}: {to} is not a valid name");
        }
        let mut out = Vec::new();
        if base.registry() == crate::reference::DOCKER_HUB {
            for m in &opts.mirrors {
                match rebase(&base, m.trim_end_matches('/'), base.repository()) {
                    Some(x) => out.push(x),
                    None => tracing::warn!("ignoring --registry-mirror {m}: not a valid registry"),
                }
            }
        }
        out.push(base);
        out
    }

    /// Authenticates for `op` on `r`'s repository (a bearer token exchange where the
    /// registry asks for one; nothing for open registries).
    pub(crate) async fn authenticate(&self, t: &Transport, r: &Reference, op: RegistryOperation) -> Result<(), RegistryError> {
        let oref = r.to_oci();
        let push = matches!(op, RegistryOperation::Push);
        // A push authentication also reads.
        if t.recently_authed(r.repository(), push) || (!push && t.recently_authed(r.repository(), true)) {
            return Ok(());
        }
        let what = match op {
            RegistryOperation::Pull => "authenticating to pull from",
            RegistryOperation::Push => "authenticating to push to",
        };
        let done = self.attempt(t, what.to_string(), r, || async {
            if let Some(id) = &t.identity {
                let push = matches!(op, RegistryOperation::Push);
                let token = id.access_token(&t.base_url, r.repository(), push).await.map_err(|e| match e {
                    crate::oauth::OAuthError::Transient(m) => Failure::Transient(m),
                    crate::oauth::OAuthError::Refused(m) => Failure::Bad(m),
                })?;
                // oci-client keeps it for this repository and operation.
                t.client.auth(&oref, &RegistryAuth::Bearer(token.clone()), op).await.map_err(Failure::from)?;
                t.keep_token(oref.repository(), token);
                return Ok(());
            }
            if let Some(token) = t.client.auth(&oref, &t.auth, op).await.map_err(Failure::from)? {
                t.keep_token(oref.repository(), token);
            }
            Ok(())
        })
        .await;
        if done.is_ok() {
            t.mark_authed(r.repository(), push);
        }
        done
    }

    /// How long a whole manifest, index or referrers answer may take.
    pub(crate) fn answer_deadline(&self) -> std::time::Duration {
        self.inner.opts.answer_deadline
    }

    /// GETs a manifest or index (bounded: `bounded.rs`) and checks its digest (against
    /// the reference's digest when pinned, and the registry's `Docker-Content-Digest`).
    pub(crate) async fn fetch_manifest(&self, t: &Transport, r: &Reference) -> Result<(Vec<u8>, Digest), RegistryError> {
        let oref = r.to_oci();
        let what = match r.digest() {
            Some(d) => format!("pulling manifest {} from", short(d)),
            None => format!("pulling manifest for tag {} from", r.tag().unwrap_or("latest")),
        };
        let reference = match r.digest() {
            Some(d) => d.to_string(),
            None => r.tag().unwrap_or("latest").to_string(),
        };
        let url = t.url(&oref, "manifests", &reference);
        let accept = ACCEPT_MANIFESTS.join(", ");
        let deadline = self.inner.opts.answer_deadline;
        self.attempt(t, what, r, || async {
            let body = crate::bounded::get(t, &url, oref.repository(), &accept, crate::bounded::MAX_MANIFEST, deadline).await?;
            let digest = Digest::of(&body.bytes);
            if let Some(want) = r.digest() {
                if *want != digest {
                    return Err(Failure::Bad(format!("manifest digest is {digest}, expected {want}")));
                }
            }
            // What the registry says the bytes are must be what they are (when it says
            // so in the algorithm kiln computes).
            if let Some(said) = body.digest_header.filter(|h| h.starts_with("sha256:")) {
                if said != digest.to_string() {
                    return Err(Failure::Bad(format!("the registry says the manifest is {said}, its bytes are {digest}")));
                }
            }
            Ok((body.bytes, digest))
        })
        .await
    }

    /// Downloads one blob into the store unless it is there, verifying while streaming
    /// and at commit.
    async fn fetch_blob(
        &self,
        t: &Transport,
        r: &Reference,
        d: &Digest,
        size: Option<u64>,
        store: &ContentStore,
        tee: Option<&std::sync::Mutex<Option<tokio::sync::mpsc::Sender<Piece>>>>,
        keep: bool,
    ) -> Result<(), RegistryError> {
        if store.has(d) {
            return Ok(());
        }
        let oref = r.to_oci();
        let ds = d.to_string();
        self.attempt(t, format!("pulling blob {} from", short(d)), r, || async {
            // Only the first attempt feeds the reader (a retry starts the bytes over).
            let mut tee = tee.and_then(|s| s.lock().ok().and_then(|mut g| g.take()));
            let mut stream = t.client.pull_blob_stream(&oref, ds.as_str()).await?;
            let mut w = if keep { Sink::Store(store.writer()?) } else { Sink::Check(kiln_oci::Sha256Writer::new(std::io::sink())) };
            let mut n: u64 = 0;
            let mut floor = crate::bounded::RateFloor::new(self.answer_deadline());
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(Failure::Stream)?;
                floor.add(chunk.len())?;
                n += chunk.len() as u64;
                if let Some(s) = size.filter(|s| n > *s) {
                    return Err(Failure::Bad(format!("blob is larger than the {s} bytes announced")));
                }
                w.write(&chunk)?;
                if let Some(tx) = &tee {
                    if tx.send(Piece::Data(chunk.clone())).await.is_err() {
                        tee = None; // the reader stopped: download on
                    }
                }
                if let Some(c) = &self.inner.opts.transferred {
                    c.pulled.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
            if let Some(s) = size {
                if n != s {
                    return Err(Failure::Bad(format!("blob has {n} bytes, expected {s}")));
                }
            }
            let expected = d.clone();
            match w {
                // fsync may take a while: off the async threads.
                Sink::Store(w) => {
                    tokio::task::spawn_blocking(move || w.commit(Some(&expected)))
                        .await
                        .map_err(|e| Failure::Bad(format!("commit task failed: {e}")))??;
                }
                Sink::Check(h) => {
                    let (_, actual, _) = h.finish();
                    if actual != expected {
                        return Err(StoreError::DigestMismatch { expected, actual }.into());
                    }
                }
            }
            if let Some(tx) = tee {
                let _ = tx.send(Piece::End).await;
            }
            Ok(())
        })
        .await
    }

    /// A blob of `r`'s repository as a stream of chunks, not stored and not verified:
    /// the caller hashes what it reads and throws it away unless the digest matches
    /// (a cache mount restored straight into a scratch directory). Bounded as every
    /// blob read: the transport's read timeout, and the [`RateFloor`](crate::bounded::RateFloor).
    pub async fn blob_chunks(&self, r: &Reference, d: &Digest) -> Result<futures_util::stream::BoxStream<'static, Result<bytes::Bytes, RegistryError>>, RegistryError> {
        let t = self.transport(r.registry(), self.reads)?;
        self.authenticate(&t, r, RegistryOperation::Pull).await?;
        let oref = r.to_oci();
        let ds = d.to_string();
        let stream = self
            .attempt(&t, format!("pulling blob {} from", short(d)), r, || async { Ok(t.client.pull_blob_stream(&oref, ds.as_str()).await?) })
            .await?;
        let (op, target) = (format!("pulling blob {} from", short(d)), r.name());
        let mut floor = crate::bounded::RateFloor::new(self.answer_deadline());
        let counter = self.inner.opts.transferred.clone();
        Ok(futures_util::StreamExt::boxed(futures_util::StreamExt::map(stream, move |c| {
            let fail = |message: String| RegistryError::Transport { op: op.clone(), target: target.clone(), message };
            let c = c.map_err(|e| fail(e.to_string()))?;
            floor.add(c.len()).map_err(|e| fail(e.to_string()))?;
            if let Some(t) = &counter {
                t.pulled.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(c)
        })))
    }

    /// The manifest (or index) `r` names, raw, with its digest; `None` if the registry
    /// says it does not exist (404 / MANIFEST_UNKNOWN / NAME_UNKNOWN). No mirrors.
    pub async fn get_manifest(&self, r: &Reference) -> Result<Option<(Vec<u8>, Digest)>, RegistryError> {
        let t = self.transport(r.registry(), self.reads)?;
        self.authenticate(&t, r, RegistryOperation::Pull).await?;
        match self.fetch_manifest(&t, r).await {
            Ok(x) => Ok(Some(x)),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A small blob (a config) into memory, verified; at most `max` bytes.
    pub async fn get_blob(&self, r: &Reference, d: &Digest, max: u64) -> Result<Vec<u8>, RegistryError> {
        let t = self.transport(r.registry(), self.reads)?;
        self.authenticate(&t, r, RegistryOperation::Pull).await?;
        let oref = r.to_oci();
        let ds = d.to_string();
        self.attempt(&t, format!("pulling blob {} from", short(d)), r, || async {
            let mut stream = t.client.pull_blob_stream(&oref, ds.as_str()).await?;
            let mut buf = Vec::new();
            let mut floor = crate::bounded::RateFloor::new(self.answer_deadline());
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(Failure::Stream)?;
                floor.add(chunk.len())?;
                if buf.len() as u64 + chunk.len() as u64 > max {
                    return Err(Failure::Bad(format!("blob is larger than {max} bytes")));
                }
                buf.extend_from_slice(&chunk);
            }
            let got = Digest::of(&buf);
            if got != *d {
                return Err(Failure::Bad(format!("blob digest is {got}, expected {d}")));
            }
            Ok(buf)
        })
        .await
    }

    /// Downloads one blob of `r`'s repository into `store` (unless present), streamed
    /// and verified; nothing enters the store unless the digest matches.
    pub async fn pull_blob(
        &self,
        r: &Reference,
        d: &Digest,
        size: Option<u64>,
        store: &ContentStore,
    ) -> Result<(), RegistryError> {
        if store.has(d) {
            return Ok(());
        }
        let t = self.transport(r.registry(), self.reads)?;
        self.authenticate(&t, r, RegistryOperation::Pull).await?;
        self.fetch_blob(&t, r, d, size, store, None, true).await
    }

    /// [`Registry::pull_blob`], handing every chunk of the first attempt to `tee` as
    /// it arrives, so that the blob is read (unpacked) while it downloads. `tee`
    /// gets [`Piece::End`] only once the blob is in the store with its digest
    /// checked (with `keep` false: once its size and digest are checked, nothing
    /// stored — a base read only for its skeleton is never written to disk); a
    /// retried attempt does not feed it, so a reader that saw no `End` must not
    /// trust what it read. A reader that stops early does not stop the download.
    pub async fn pull_blob_tee(
        &self,
        r: &Reference,
        d: &Digest,
        size: Option<u64>,
        store: &ContentStore,
        tee: tokio::sync::mpsc::Sender<Piece>,
        keep: bool,
    ) -> Result<(), RegistryError> {
        let t = self.transport(r.registry(), self.reads)?;
        self.authenticate(&t, r, RegistryOperation::Pull).await?;
        let slot = std::sync::Mutex::new(Some(tee));
        self.fetch_blob(&t, r, d, size, store, Some(&slot), keep).await
    }

    /// Skips (exists), mounts (from `mount_from`, same registry) or uploads (streamed
    /// from `store`) each of `blobs`, `max_concurrent_transfers` at a time, then PUTs
    /// the raw `manifest` bytes under `r`'s tag or digest.
    pub async fn push_image(
        &self,
        r: &Reference,
        store: &ContentStore,
        manifest: &[u8],
        manifest_media_type: &str,
        blobs: &[Descriptor],
        mount_from: &[Reference],
    ) -> Result<PushReport, RegistryError> {
        let t = self.transport(r.registry(), Purpose::Push)?;
        self.authenticate(&t, r, RegistryOperation::Push).await?;

        // Distinct blobs, in order (a layer can appear twice in a manifest).
        let mut seen = BTreeSet::new();
        let mut digests = Vec::new();
        for b in blobs {
            let d = parse_oci_digest(b.digest())
                .map_err(|e| into_error("pushing to".into(), r.name(), e))?;
            if seen.insert(d.clone()) {
                digests.push(d);
            }
        }
        // Mount sources must be other repositories of the same registry.
        let sources: Vec<&Reference> = mount_from
            .iter()
            .filter(|m| m.registry() == r.registry() && m.repository() != r.repository())
            .collect();

        let outcomes: Vec<(Digest, Outcome)> = futures_util::stream::iter(digests)
            .map(|d| {
                let t = &t;
                let sources = &sources;
                async move {
                    let o = self.push_blob(t, r, store, &d, sources).await?;
                    Ok::<_, RegistryError>((d, o))
                }
            })
            .buffered(self.concurrency())
            .try_collect()
            .await?;

        let mut report = PushReport {
            manifest_digest: Digest::of(manifest),
            uploaded: Vec::new(),
            mounted: Vec::new(),
            skipped: Vec::new(),
        };
        for (d, o) in outcomes {
            match o {
                Outcome::Skipped => report.skipped.push(d),
                Outcome::Mounted => report.mounted.push(d),
                Outcome::Uploaded => report.uploaded.push(d),
            }
        }

        let oref = r.to_oci();
        let body = bytes::Bytes::copy_from_slice(manifest);
        let pushed = self.attempt(&t, format!("pushing manifest {} to", short(&report.manifest_digest)), r, || async {
            let ct = manifest_media_type
                .parse()
                .map_err(|_| Failure::Bad(format!("invalid media type {manifest_media_type:?}")))?;
            match t.client.push_manifest_raw(&oref, body.clone(), ct).await {
                Ok(_) => Ok(()),
                // distribution writes a blob's repository link in place, so while a
                // concurrent push of the same blob commits, the manifest can name a
                // blob it briefly does not see (seen with three builds pushing one
                // image at once): the spec's MANIFEST_BLOB_UNKNOWN, worth a retry.
                Err(e) if e.to_string().contains("MANIFEST_BLOB_UNKNOWN") => Err(Failure::Transient(e.to_string())),
                Err(e) => Err(e.into()),
            }
        })
        .await;
        match pushed {
            // As Kaniko's DoPush: the image is complete there, only the tag stays.
            Err(e) if self.inner.opts.ignore_immutable_tags && crate::failure::is_tag_immutable(&e.to_string()) => {
                tracing::warn!("{e}\n(the tag is immutable there: counted as pushed, --push-ignore-immutable-tag-errors)");
            }
            res => res?,
        }
        Ok(report)
    }

    async fn push_blob(
        &self,
        t: &Transport,
        r: &Reference,
        store: &ContentStore,
        d: &Digest,
        sources: &[&Reference],
    ) -> Result<Outcome, RegistryError> {
        let oref = r.to_oci();
        let ds = d.to_string();
        let exists = self.attempt(t, format!("checking blob {} in", short(d)), r, || async {
            Ok(t.client.blob_exists(&oref, &ds).await?)
        })
        .await?;
        if exists {
            return Ok(Outcome::Skipped);
        }
        for src in sources {
            // A failed mount is not an error: the registry may not have the blob there,
            // or may not allow mounts; we fall back to the next source, then to upload.
            match t.client.mount_blob(&oref, &src.to_oci(), &ds).await {
                Ok(()) => return Ok(Outcome::Mounted),
                Err(e) => tracing::debug!("mounting {} from {} into {}: {e}", d, src.name(), r.name()),
            }
        }
        let path = store.blob_path(d);
        let size = store.size(d).map_err(|source| RegistryError::Store {
            op: format!("pushing blob {} to", short(d)),
            target: r.name(),
            source,
        })?;
        self.attempt(t, format!("pushing blob {} to", short(d)), r, || async {
            // Reopened on each attempt: a consumed stream cannot be replayed.
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| Failure::Store(StoreError::io("opening", &path, e)))?;
            let counter = self.inner.opts.transferred.clone();
            let body = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
                .inspect_ok(move |chunk| {
                    if let Some(c) = &counter {
                        c.pushed.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                })
                .map_err(OciDistributionError::IoError);
            t.client.push_blob_stream(&oref, body, &ds, Some(size)).await?;
            Ok(())
        })
        .await?;
        Ok(Outcome::Uploaded)
    }
}

enum Outcome {
    Skipped,
    Mounted,
    Uploaded,
}


/// Where a download goes: the content store, or only a digest check.
enum Sink {
    Store(crate::store::BlobWriter),
    Check(kiln_oci::Sha256Writer<std::io::Sink>),
}

impl Sink {
    fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        match self {
            // Blocking write of a page-cache-bound file: short, and keeps the blob
            // writer (with its atomic commit) the single way into the store.
            Sink::Store(w) => w.write_all(chunk).map_err(|e| StoreError::io("writing", w.temp_path(), e)),
            Sink::Check(h) => {
                let _ = h.write_all(chunk); // into io::sink: cannot fail
                Ok(())
            }
        }
    }
}

/// What [`Registry::pull_blob_tee`] hands its reader.
#[derive(Debug)]
pub enum Piece {
    Data(bytes::Bytes),
    /// The blob is complete and stored with its digest checked.
    End,
}

/// A blocking `Read` over the pieces [`Registry::pull_blob_tee`] sends: EOF at
/// [`Piece::End`]; an error when the sender goes away without it (the attempt
/// failed: what was read is not the blob).
pub struct TeeReader {
    rx: tokio::sync::mpsc::Receiver<Piece>,
    cur: bytes::Bytes,
    ended: bool,
}

impl TeeReader {
    pub fn new(rx: tokio::sync::mpsc::Receiver<Piece>) -> Self {
        TeeReader { rx, cur: bytes::Bytes::new(), ended: false }
    }
}

impl std::io::Read for TeeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Piece::Data(b)) => self.cur = b,
                Some(Piece::End) => self.ended = true,
                None => return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the blob download was interrupted")),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        Ok(n)
    }
}
