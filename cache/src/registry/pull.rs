//! Pulling an image: index → platform manifest → config (and, unless asked not to,
//! the layers), through `registry_map` and the mirrors.

use futures_util::{StreamExt, TryStreamExt};
use kiln_oci::{Descriptor, ImageConfig, ImageIndex, ImageManifest, Platform};
use oci_client::RegistryOperation;

use super::{into_error, is_index_bytes, parse_and_keep, parse_oci_digest, short, PulledImage, Registry, RegistryError};
use crate::platform::{as_written, select};
use crate::reference::Reference;
use crate::store::ContentStore;

impl Registry {
    /// Resolves `r` for `platform` and stores manifest (and index), config and layers
    /// in `store`; layers are fetched concurrently (`max_concurrent_transfers`), each
    /// once, verified. Goes through `registry_map` and mirrors (see
    /// [`Registry::pull_sources`]); a failing mirror is logged and the next source tried.
    pub async fn pull_image(
        &self,
        r: &Reference,
        platform: &Platform,
        store: &ContentStore,
    ) -> Result<PulledImage, RegistryError> {
        self.pull_image_with(r, platform, store, true).await.map(|(img, _)| img)
    }

    /// Like [`Registry::pull_image`] without the layers: manifest (and index) and
    /// config only. Also returns the source that served them (a mirror, or `r` as
    /// `registry_map` rewrites it), where [`Registry::pull_blob`] finds the layers
    /// when (and if) the build needs their bytes.
    pub async fn pull_image_config(
        &self,
        r: &Reference,
        platform: &Platform,
        store: &ContentStore,
    ) -> Result<(PulledImage, Reference), RegistryError> {
        self.pull_image_with(r, platform, store, false).await
    }

    async fn pull_image_with(
        &self,
        r: &Reference,
        platform: &Platform,
        store: &ContentStore,
        with_layers: bool,
    ) -> Result<(PulledImage, Reference), RegistryError> {
        let mut sources = self.pull_sources(r);
        let opts = &self.inner.opts;
        // Kaniko's --skip-default-registry-fallback (pkg/image/remote/remote.go): the
        // mirrors only, whatever made them fail.
        let mirrors_only = opts.skip_default_fallback && !opts.mirrors.is_empty() && sources.len() > 1;
        if mirrors_only {
            sources.pop();
        }
        let last = if mirrors_only { usize::MAX } else { sources.len() - 1 };
        let mut failures = Vec::new();
        for (i, src) in sources.iter().enumerate() {
            match self.pull_image_from(src, platform, store, with_layers).await {
                Err(e) if i < last => {
                    tracing::warn!("mirror {} failed, trying the next source: {e}", src.name());
                    failures.push(e.to_string());
                }
                res => return res.map(|img| (img, src.clone())),
            }
        }
        Err(RegistryError::NotOnMirrors { target: r.to_string(), mirrors: opts.mirrors.join(", "), failures: failures.join("; ") })
    }

    async fn pull_image_from(
        &self,
        r: &Reference,
        platform: &Platform,
        store: &ContentStore,
        with_layers: bool,
    ) -> Result<PulledImage, RegistryError> {
        let t = self.transport(r.registry(), self.reads)?;
        self.authenticate(&t, r, RegistryOperation::Pull).await?;

        // Resolve index → manifest (at most two levels: nested indexes are not a thing
        // registries serve for images, and a loop guard costs nothing).
        let mut current = r.clone();
        let mut bytes;
        let mut digest;
        let mut depth = 0;
        loop {
            (bytes, digest) = self.fetch_manifest(&t, &current).await?;
            let is_index = is_index_bytes(&bytes)
                .map_err(|e| into_error("reading manifest of".into(), r.name(), e))?;
            if !is_index {
                break;
            }
            depth += 1;
            if depth > 2 {
                return Err(RegistryError::BadContent {
                    op: "resolving".into(),
                    target: r.to_string(),
                    message: "indexes nested too deeply".into(),
                });
            }
            // Keep the index too: a later export or a digest-pinned rebuild may need it.
            let index: ImageIndex = parse_and_keep(&bytes, "index", &digest, r, store)?;
            let chosen = select(index.manifests(), platform).ok_or_else(|| RegistryError::NoMatchingPlatform {
                target: r.to_string(),
                wanted: platform.to_string(),
                available: index
                    .manifests()
                    .iter()
                    .filter_map(|m| m.platform().as_ref().map(as_written))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
            let d = parse_oci_digest(chosen.digest())
                .map_err(|e| into_error("resolving".into(), r.to_string(), e))?;
            current = r.with_digest(d);
        }

        let manifest: ImageManifest = parse_and_keep(&bytes, "manifest", &digest, r, store)?;

        let config_digest = parse_oci_digest(manifest.config().digest())
            .map_err(|e| into_error("reading manifest of".into(), r.to_string(), e))?;
        self.fetch_blob(&t, r, &config_digest, Some(manifest.config().size()), store, None, true).await?;
        let config_bytes = store.read(&config_digest).map_err(|source| RegistryError::Store {
            op: "reading config of".into(),
            target: r.to_string(),
            source,
        })?;
        let config = ImageConfig::from_bytes(&config_bytes).map_err(|e| RegistryError::BadContent {
            op: format!("parsing config {} of", short(&config_digest)),
            target: r.to_string(),
            message: e.to_string(),
        })?;

        let layers: Vec<Descriptor> = manifest.layers().clone();
        let mut wanted = Vec::new();
        for l in &layers {
            let d = parse_oci_digest(l.digest())
                .map_err(|e| into_error("reading manifest of".into(), r.to_string(), e))?;
            wanted.push((d, l.size()));
        }
        if !with_layers {
            wanted.clear();
        }
        futures_util::stream::iter(wanted.iter())
            .map(|(d, size)| self.fetch_blob(&t, r, d, Some(*size), store, None, true))
            .buffer_unordered(self.concurrency())
            .try_collect::<Vec<()>>()
            .await?;

        Ok(PulledImage {
            manifest_digest: digest,
            manifest,
            manifest_bytes: bytes,
            config_digest,
            config,
            layers,
        })
    }
}
