//! Kaniko's base-image cache directory (`executor --cache=true --cache-dir DIR`,
//! filled by `warmer --cache-dir DIR --image IMG`), read and written in Kaniko's own
//! layout so that a volume warmed by either tool serves both:
//!
//!   DIR/sha256:<manifest hex>        a docker tarball of one platform's image
//!                                    (`manifest.json`, config `sha256:<hex>`,
//!                                    compressed layers `<hex>.tar.gz`)
//!   DIR/sha256:<manifest hex>.json   that image's manifest, byte for byte
//!
//! An entry older than the cache TTL (its file's mtime, as Kaniko checks it) is stale.
//! Every blob taken from an entry is stored by its digest, and the manifest must hash
//! to the entry's name: a damaged cache is a miss, never a wrong base.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use kiln_cache::registry::PulledImage;
use kiln_cache::store::ContentStore;
use kiln_oci::{Digest, ImageConfig, ImageManifest};

/// Kaniko's default `--cache-ttl`: two weeks.
pub const DEFAULT_TTL: Duration = Duration::from_secs(336 * 3600);

/// Largest manifest read from a cache entry.
const MAX_MANIFEST: u64 = 4 << 20;

/// What the cache directory holds for one manifest digest.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Fresh(PathBuf),
    Expired,
    Missing,
}

fn entry_path(dir: &Path, manifest: &Digest) -> PathBuf {
    dir.join(manifest.to_string())
}

fn manifest_path(entry: &Path) -> PathBuf {
    let mut p = entry.as_os_str().to_owned();
    p.push(".json");
    PathBuf::from(p)
}

/// The entry for `manifest`, if there is one younger than `ttl`.
pub fn lookup(dir: &Path, manifest: &Digest, ttl: Duration) -> Lookup {
    let path = entry_path(dir, manifest);
    let Ok(meta) = std::fs::metadata(&path) else { return Lookup::Missing };
    let age = meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok()).unwrap_or_default();
    if age > ttl {
        Lookup::Expired
    } else {
        Lookup::Fresh(path)
    }
}

/// Stores the blobs of the entry at `path` and returns the image it holds, checked
/// against `manifest` (the digest the entry is named by).
pub fn import(store: &ContentStore, path: &Path, manifest: &Digest) -> Result<PulledImage> {
    let mpath = manifest_path(path);
    let mut bytes = Vec::new();
    std::fs::File::open(&mpath)
        .with_context(|| format!("reading {} (a cache entry needs the manifest beside it)", mpath.display()))?
        .take(MAX_MANIFEST + 1)
        .read_to_end(&mut bytes)?;
    if Digest::of(&bytes) != *manifest {
        bail!("{} does not hash to {manifest}", mpath.display());
    }
    let parsed: ImageManifest = serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", mpath.display()))?;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    for entry in tar.entries().with_context(|| format!("reading {}", path.display()))? {
        let mut e = entry.with_context(|| format!("reading {}", path.display()))?;
        let name = e.path()?.to_string_lossy().into_owned();
        if !e.header().entry_type().is_file() || name == "manifest.json" {
            continue;
        }
        let mut w = store.writer()?;
        std::io::copy(&mut e, &mut w).with_context(|| format!("storing {name} of {}", path.display()))?;
        w.commit(None).with_context(|| format!("storing {name} of {}", path.display()))?;
    }
    let config_digest: Digest = parsed.config().digest().to_string().parse()?;
    for d in std::iter::once(parsed.config().digest()).chain(parsed.layers().iter().map(|l| l.digest())) {
        let d: Digest = d.to_string().parse()?;
        if !store.has(&d) {
            bail!("{} lacks blob {d}", path.display());
        }
    }
    let config = ImageConfig::from_bytes(&store.read(&config_digest)?).map_err(|e| anyhow!("config {config_digest} of {}: {e}", path.display()))?;
    store.put(&bytes)?;
    Ok(PulledImage {
        manifest_digest: manifest.clone(),
        layers: parsed.layers().clone(),
        manifest: parsed,
        manifest_bytes: bytes,
        config_digest,
        config,
    })
}

fn add_file<W: Write>(tar: &mut tar::Builder<W>, name: &str, len: u64, data: impl Read) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(len);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, name, data)?;
    Ok(())
}

/// Writes `img` (whose blobs are in `store`) as the entry for its manifest digest,
/// under the names Kaniko's warmer gives them; `tag` goes into `RepoTags`. Both files
/// are written aside and renamed into place, the tarball first, as Kaniko does.
pub fn write(store: &ContentStore, dir: &Path, img: &PulledImage, tag: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating the cache directory {}", dir.display()))?;
    let unique = format!("{}.{}", std::process::id(), crate::fsutil::next_id());
    let tmp_tar = dir.join(format!("warmingImage.{unique}"));
    let tmp_manifest = dir.join(format!("warmingManifest.{unique}"));
    let result = (|| -> Result<PathBuf> {
        let out = std::io::BufWriter::new(std::fs::File::create(&tmp_tar).with_context(|| format!("creating {}", tmp_tar.display()))?);
        let mut tar = tar::Builder::new(out);
        let config_name = img.config_digest.to_string();
        let config = store.read(&img.config_digest)?;
        add_file(&mut tar, &config_name, config.len() as u64, config.as_slice())?;
        let mut layer_names = Vec::new();
        for l in &img.layers {
            let d: Digest = l.digest().to_string().parse()?;
            let name = format!("{}.tar.gz", d.hex());
            let f = store.open_blob(&d)?;
            add_file(&mut tar, &name, f.metadata()?.len(), f)?;
            layer_names.push(name);
        }
        let listing = serde_json::to_vec(&serde_json::json!([{ "Config": config_name, "RepoTags": [tag], "Layers": layer_names }]))?;
        add_file(&mut tar, "manifest.json", listing.len() as u64, listing.as_slice())?;
        tar.into_inner()?.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::write(&tmp_manifest, &img.manifest_bytes).with_context(|| format!("writing {}", tmp_manifest.display()))?;
        let entry = entry_path(dir, &img.manifest_digest);
        std::fs::rename(&tmp_tar, &entry).with_context(|| format!("renaming into {}", entry.display()))?;
        std::fs::rename(&tmp_manifest, manifest_path(&entry)).with_context(|| format!("renaming into {}.json", entry.display()))?;
        Ok(entry)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp_tar);
        let _ = std::fs::remove_file(&tmp_manifest);
    }
    result
}

/// The digest of `reference`'s manifest for `platform` (through its index, if any):
/// what an entry is named by.
pub async fn platform_manifest_digest(registry: &kiln_cache::registry::Registry, reference: &kiln_cache::reference::Reference, platform: &kiln_oci::Platform) -> Result<kiln_oci::Digest> {
    // Through the mirrors and maps a pull would use, in the same order.
    let mut found = None;
    let mut last_err = None;
    for src in registry.pull_sources(reference) {
        match registry.get_manifest(&src).await {
            Ok(Some(m)) => {
                found = Some(m);
                break;
            }
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
    }
    let (bytes, digest) = match (found, last_err) {
        (Some(m), _) => m,
        (None, Some(e)) => return Err(e.into()),
        (None, None) => bail!("{reference}: no such image"),
    };
    if !kiln_cache::images::is_index(&bytes)? {
        return Ok(digest);
    }
    let index: kiln_oci::ImageIndex = serde_json::from_slice(&bytes).with_context(|| format!("the index of {reference}"))?;
    let chosen = kiln_cache::platform::select(index.manifests(), platform).ok_or_else(|| anyhow!("{reference} has no {platform} image"))?;
    Ok(chosen.digest().to_string().parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image of one layer, stored; its manifest is what a registry would serve.
    fn stored_image(store: &ContentStore) -> PulledImage {
        let layer = store.put(b"not really a gzip, but a blob all the same").unwrap();
        let config_bytes = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]},"config":{}}"#;
        let config = store.put(config_bytes).unwrap();
        let manifest_bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer}","size":43}}]}}"#,
            config_bytes.len()
        )
        .into_bytes();
        let manifest_digest = Digest::of(&manifest_bytes);
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes).unwrap();
        PulledImage {
            manifest_digest,
            layers: manifest.layers().clone(),
            manifest,
            manifest_bytes,
            config_digest: config,
            config: ImageConfig::from_bytes(config_bytes).unwrap(),
        }
    }

    #[test]
    fn an_entry_written_is_found_and_imports_into_an_empty_store() {
        let t = tempfile::tempdir().unwrap();
        let src = ContentStore::open(&t.path().join("src")).unwrap();
        let img = stored_image(&src);
        let dir = t.path().join("cache");
        let entry = write(&src, &dir, &img, "reg/app:1").unwrap();
        assert_eq!(entry.file_name().unwrap().to_str().unwrap(), img.manifest_digest.to_string());
        let names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names.len(), 2, "tarball and manifest only, no leftovers: {names:?}");
        assert_eq!(lookup(&dir, &img.manifest_digest, DEFAULT_TTL), Lookup::Fresh(entry.clone()));
        assert_eq!(lookup(&dir, &img.manifest_digest, Duration::ZERO), Lookup::Expired, "mtime is in the past");
        assert_eq!(lookup(&dir, &img.config_digest, DEFAULT_TTL), Lookup::Missing);

        let dst = ContentStore::open(&t.path().join("dst")).unwrap();
        let got = import(&dst, &entry, &img.manifest_digest).unwrap();
        assert_eq!(got.manifest_bytes, img.manifest_bytes);
        assert_eq!(got.config_digest, img.config_digest);
        for l in &img.layers {
            let d: Digest = l.digest().to_string().parse().unwrap();
            assert_eq!(dst.read(&d).unwrap(), src.read(&d).unwrap());
        }
        assert!(dst.has(&img.manifest_digest));
    }

    #[test]
    fn a_damaged_entry_is_an_error_not_a_base() {
        let t = tempfile::tempdir().unwrap();
        let src = ContentStore::open(&t.path().join("src")).unwrap();
        let img = stored_image(&src);
        let dir = t.path().join("cache");
        let entry = write(&src, &dir, &img, "reg/app:1").unwrap();
        // A manifest that does not hash to the entry's name.
        std::fs::write(manifest_path(&entry), b"{}").unwrap();
        let dst = ContentStore::open(&t.path().join("dst")).unwrap();
        assert!(import(&dst, &entry, &img.manifest_digest).unwrap_err().to_string().contains("does not hash"));
        // A tarball that lacks a layer.
        std::fs::write(manifest_path(&entry), &img.manifest_bytes).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let config = src.read(&img.config_digest).unwrap();
        add_file(&mut tar, &img.config_digest.to_string(), config.len() as u64, config.as_slice()).unwrap();
        std::fs::write(&entry, tar.into_inner().unwrap()).unwrap();
        let err = import(&dst, &entry, &img.manifest_digest).unwrap_err().to_string();
        assert!(err.contains("lacks blob"), "{err}");
    }
}
