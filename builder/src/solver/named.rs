//! `--build-context NAME=VALUE`: what `FROM NAME`, `COPY --from=NAME` and
//! `RUN --mount=from=NAME` read instead of the image or stage of that name, made
//! into an image the rest of the build handles like a pulled one:
//!
//! - `docker-image://REF`: that image (resolved per `--pull`);
//! - `oci-layout://PATH[:TAG|@DIGEST]`: an image of a local OCI layout, its blobs
//!   copied into the store;
//! - a directory (also what a git URL or an https tarball was materialised into by
//!   `cmd::source`): an image of one uncompressed layer holding the directory's
//!   files, owned by 0:0 as context files are, so its digest is its content.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use kiln_cache::reference::Reference;
use kiln_cache::store::ContentStore;
use kiln_cache::PulledImage;
use kiln_oci::{media, Digest, ImageConfig, ImageIndex};
use serde_json::json;

use crate::options::NamedContext;
use kiln_frontend::Platform;

/// The named context `name` (as written in the Dockerfile) stands for, if any:
/// matched as written or as the same normalised image reference.
pub(super) fn lookup<'a>(contexts: &'a std::collections::BTreeMap<String, NamedContext>, name: &str) -> Option<&'a NamedContext> {
    if let Some(c) = contexts.get(name) {
        return Some(c);
    }
    let want: Reference = name.parse().ok()?;
    contexts.iter().find(|(k, _)| k.parse::<Reference>().ok().as_ref() == Some(&want)).map(|(_, v)| v)
}

fn parse_digest(d: &oci_spec::image::Digest) -> Result<Digest> {
    d.to_string().parse().map_err(|e| anyhow!("digest {d}: {e}"))
}

/// The image `platform` of an OCI layout, its blobs copied into `store`.
pub(super) fn layout_image(store: &ContentStore, dir: &Path, select: Option<&str>, platform: &Platform) -> Result<PulledImage> {
    let what = || format!("oci-layout://{}", dir.display());
    let index_bytes = std::fs::read(dir.join("index.json")).with_context(|| format!("{}: reading index.json", what()))?;
    let index: ImageIndex = serde_json::from_slice(&index_bytes).with_context(|| format!("{}: index.json", what()))?;
    let entry = match select {
        Some(s) if s.starts_with("sha256:") => index.manifests().iter().find(|d| d.digest().to_string() == s),
        Some(tag) => index.manifests().iter().find(|d| {
            d.annotations().as_ref().and_then(|a| a.get(kiln_cache::store::REF_NAME)).is_some_and(|n| n == tag || n.rsplit(':').next() == Some(tag))
        }),
        None => index.manifests().first(),
    }
    .ok_or_else(|| anyhow!("{}: no image {}", what(), select.unwrap_or("in index.json")))?;
    let blob = |d: &Digest| -> Result<Vec<u8>> {
        let bytes = std::fs::read(dir.join("blobs/sha256").join(d.hex())).with_context(|| format!("{}: blob {d}", what()))?;
        if Digest::of(&bytes) != *d {
            bail!("{}: blob {d} does not match its digest", what());
        }
        Ok(bytes)
    };
    let copy = |d: &Digest| -> Result<()> {
        if store.has(d) {
            return Ok(());
        }
        let mut f = std::fs::File::open(dir.join("blobs/sha256").join(d.hex())).with_context(|| format!("{}: blob {d}", what()))?;
        let mut w = store.writer()?;
        std::io::copy(&mut f, &mut w)?;
        w.commit(Some(d)).with_context(|| format!("{}: blob {d}", what()))?;
        Ok(())
    };
    let mut digest = parse_digest(entry.digest())?;
    let mut bytes = blob(&digest)?;
    if kiln_cache::images::is_index(&bytes)? {
        let inner: ImageIndex = serde_json::from_slice(&bytes)?;
        let chosen = kiln_cache::platform::select(inner.manifests(), platform).ok_or_else(|| anyhow!("{}: no {platform} image", what()))?;
        store.put(&bytes)?;
        digest = parse_digest(chosen.digest())?;
        bytes = blob(&digest)?;
    }
    store.put(&bytes)?;
    let manifest: kiln_oci::ImageManifest = serde_json::from_slice(&bytes).with_context(|| format!("{}: manifest {digest}", what()))?;
    let config_digest = parse_digest(manifest.config().digest())?;
    copy(&config_digest)?;
    for l in manifest.layers() {
        copy(&parse_digest(l.digest())?)?;
    }
    let config = ImageConfig::from_bytes(&store.read(&config_digest)?).map_err(|e| anyhow!("{}: config: {e}", what()))?;
    let layers = manifest.layers().clone();
    Ok(PulledImage { manifest_digest: digest, manifest, manifest_bytes: bytes, config_digest, config, layers })
}

/// An image of one layer holding `dir`'s files (sorted, owned by 0:0, mtimes kept).
pub(super) fn dir_image(store: &ContentStore, dir: &Path, platform: &Platform) -> Result<PulledImage> {
    let mut w = store.writer()?;
    {
        let mut tar = tar::Builder::new(&mut w);
        tar.mode(tar::HeaderMode::Deterministic);
        tar.follow_symlinks(false);
        append_sorted(&mut tar, dir, dir).with_context(|| format!("reading the build context {}", dir.display()))?;
        tar.finish()?;
    }
    let (layer, size) = w.commit(None)?;
    let config = json!({
        "architecture": platform.architecture, "os": platform.os, "variant": platform.variant,
        "rootfs": {"type": "layers", "diff_ids": [layer.to_string()]},
        "config": {},
    });
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = store.put(&config_bytes)?;
    let manifest = json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len()},
        "layers": [{"mediaType": media::OCI_LAYER_TAR, "digest": layer.to_string(), "size": size}],
    });
    let bytes = serde_json::to_vec(&manifest)?;
    let digest = store.put(&bytes)?;
    let parsed: kiln_oci::ImageManifest = serde_json::from_slice(&bytes)?;
    let layers = parsed.layers().clone();
    let config = ImageConfig::from_bytes(&config_bytes).map_err(|e| anyhow!("{e}"))?;
    Ok(PulledImage { manifest_digest: digest, manifest: parsed, manifest_bytes: bytes, config_digest, config, layers })
}

fn append_sorted<W: std::io::Write>(tar: &mut tar::Builder<W>, root: &Path, dir: &Path) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path.strip_prefix(root)?;
        let md = std::fs::symlink_metadata(&path)?;
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&md, tar::HeaderMode::Complete);
        h.set_uid(0);
        h.set_gid(0);
        if md.file_type().is_symlink() {
            h.set_size(0);
            tar.append_link(&mut h, rel, std::fs::read_link(&path)?)?;
        } else if md.is_dir() {
            h.set_size(0);
            tar.append_data(&mut h, rel, std::io::empty())?;
            append_sorted(tar, root, &path)?;
        } else if md.is_file() {
            tar.append_data(&mut h, rel, std::fs::File::open(&path)?)?;
        }
        // Sockets, fifos and devices are not context files BuildKit sends.
    }
    Ok(())
}
