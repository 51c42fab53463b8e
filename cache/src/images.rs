//! Named local images: the images `kiln build -t` (without `--push`), `kiln tag`,
//! `kiln pull` and `kiln load` keep in the content store, by name, until `kiln rmi`.
//!
//! A name is the normalised reference (`docker.io/library/app:dev`; no tag means
//! `latest`), stored as the `org.opencontainers.image.ref.name` of an entry of the
//! store's `index.json`, so the store stays a valid OCI layout and named images
//! are GC roots (`gc::prune` keeps everything they reach). An entry may point at a
//! manifest or at an index (a multi-platform build); every blob it reaches is in
//! the store before it is named.

use kiln_oci::{media, Descriptor, Digest, ImageConfig, ImageIndex, ImageManifest, Platform};

use crate::reference::Reference;
use crate::registry::PulledImage;
use crate::store::{ref_name, ContentStore, StoreError};

/// The name under which `r` is kept: registry, repository and tag (`latest` when
/// none); a digest in `r` is not part of a name.
pub fn local_name(r: &Reference) -> String {
    format!("{}:{}", r.name(), r.tag().unwrap_or("latest"))
}

/// The image of `images` that `r` stands for: by name, or for `name@sha256:…` the
/// one with that digest.
pub fn find_in<'a>(images: &'a [LocalImage], r: &Reference) -> Option<&'a LocalImage> {
    match r.digest() {
        Some(want) => images.iter().find(|i| i.digest().ok().as_ref() == Some(want)),
        None => {
            let name = local_name(r);
            images.iter().find(|i| i.name.to_string() == name)
        }
    }
}

/// One named image of the store.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// Normalised, always with a tag.
    pub name: Reference,
    /// The manifest or index it names (with the name annotation).
    pub descriptor: Descriptor,
}

impl LocalImage {
    pub fn digest(&self) -> Result<Digest, StoreError> {
        parse_digest(self.descriptor.digest())
    }
}

fn parse_digest(d: &oci_spec::image::Digest) -> Result<Digest, StoreError> {
    d.to_string().parse().map_err(|e| StoreError::Invalid { what: "index.json".into(), message: format!("digest {d}: {e}") })
}

fn invalid(what: impl std::fmt::Display, e: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid { what: what.to_string(), message: e.to_string() }
}

impl ContentStore {
    /// Every named image, sorted by name. Entries whose name is not an image
    /// reference (written by other tools into the layout) are left out.
    pub fn images(&self) -> Result<Vec<LocalImage>, StoreError> {
        let mut out: Vec<LocalImage> = self
            .refs()?
            .into_iter()
            .filter_map(|d| {
                let name: Reference = ref_name(&d)?.parse().ok()?;
                name.tag()?;
                Some(LocalImage { name, descriptor: d })
            })
            .collect();
        out.sort_by_key(|i| i.name.to_string());
        Ok(out)
    }

    /// The named image `r` stands for: by name, or, for `name@sha256:…` or a bare
    /// digest, the named image with that digest.
    pub fn find_image(&self, r: &Reference) -> Result<Option<LocalImage>, StoreError> {
        Ok(find_in(&self.images()?, r).cloned())
    }

    /// Names `desc` (a manifest or an index whose blobs are all in the store) as `r`,
    /// replacing what had that name.
    pub fn name_image(&self, r: &Reference, desc: &Descriptor) -> Result<(), StoreError> {
        let mut d = desc.clone();
        d.set_annotations(None);
        self.set_ref(&local_name(r), &d)
    }

    /// Removes the name `r`; whether it existed. The blobs stay until a prune finds
    /// nothing else reaching them.
    pub fn remove_image(&self, r: &Reference) -> Result<bool, StoreError> {
        let name = local_name(r);
        let existed = self.refs()?.iter().any(|d| ref_name(d) == Some(name.as_str()));
        if existed {
            self.remove_ref(&name)?;
        }
        Ok(existed)
    }

    /// The platform's image of a named image, read as a pull would return it; `None`
    /// when no image has that name or the named index has no image for `platform`.
    pub fn local_image(&self, r: &Reference, platform: &Platform) -> Result<Option<PulledImage>, StoreError> {
        let Some(img) = self.find_image(r)? else { return Ok(None) };
        let mut digest = img.digest()?;
        let mut bytes = self.read(&digest)?;
        for _ in 0..2 {
            if !is_index(&bytes).map_err(|e| invalid(&digest, e))? {
                break;
            }
            let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| invalid(&digest, e))?;
            let Some(chosen) = crate::platform::select(index.manifests(), platform) else { return Ok(None) };
            digest = parse_digest(chosen.digest())?;
            bytes = self.read(&digest)?;
        }
        let manifest: ImageManifest = serde_json::from_slice(&bytes).map_err(|e| invalid(&digest, e))?;
        let config_digest = parse_digest(manifest.config().digest())?;
        let config = ImageConfig::from_bytes(&self.read(&config_digest)?).map_err(|e| invalid(&config_digest, e))?;
        // A single-platform image is no image of another platform.
        let own = Platform::new(&config.os, &config.architecture, config.variant.as_deref());
        if crate::platform::select(&[platform_descriptor(&digest, &own)?], platform).is_none() {
            return Ok(None);
        }
        let layers = manifest.layers().clone();
        for l in &layers {
            let d = parse_digest(l.digest())?;
            if !self.has(&d) {
                return Err(StoreError::NotFound(d));
            }
        }
        Ok(Some(PulledImage { manifest_digest: digest, manifest, manifest_bytes: bytes, config_digest, config, layers }))
    }
}

/// A descriptor standing for a manifest of `platform`, for [`crate::platform::select`].
fn platform_descriptor(digest: &Digest, platform: &Platform) -> Result<Descriptor, StoreError> {
    let d: oci_spec::image::Digest = digest.to_string().parse().map_err(|e| invalid(digest, e))?;
    let mut desc = Descriptor::new(media::OCI_MANIFEST.into(), 0, d);
    desc.set_platform(Some(platform.to_spec()));
    Ok(desc)
}

/// Whether manifest bytes are an index (by media type, else by shape).
pub fn is_index(bytes: &[u8]) -> Result<bool, serde_json::Error> {
    let v: serde_json::Value = serde_json::from_slice(bytes)?;
    Ok(match v.get("mediaType").and_then(|m| m.as_str()) {
        Some(mt) => media::is_index(mt),
        None => v.get("manifests").is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(&dir.path().join("content")).unwrap();
        (dir, s)
    }

    /// A one-layer image for `arch`, its blobs in the store.
    fn put_image(s: &ContentStore, arch: &str) -> (Descriptor, Digest) {
        let layer = s.put(format!("layer-{arch}").as_bytes()).unwrap();
        let diff = Digest::of(format!("diff-{arch}").as_bytes());
        let config = serde_json::json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff.to_string()]}, "config": {}});
        let cfg_bytes = serde_json::to_vec(&config).unwrap();
        let cfg = s.put(&cfg_bytes).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": cfg.to_string(), "size": cfg_bytes.len()},
            "layers": [{"mediaType": media::OCI_LAYER_GZIP, "digest": layer.to_string(), "size": 11}],
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let d = s.put(&bytes).unwrap();
        let desc: Descriptor = serde_json::from_value(serde_json::json!({"mediaType": media::OCI_MANIFEST, "digest": d.to_string(), "size": bytes.len()})).unwrap();
        (desc, d)
    }

    #[test]
    fn names_are_normalised_and_replaced() {
        let (_d, s) = store();
        let (a, da) = put_image(&s, "amd64");
        let (b, db) = put_image(&s, "arm64");
        s.name_image(&"myapp".parse().unwrap(), &a).unwrap();
        s.name_image(&"localhost:5000/x/y:1".parse().unwrap(), &a).unwrap();
        assert_eq!(s.find_image(&"docker.io/library/myapp:latest".parse().unwrap()).unwrap().unwrap().digest().unwrap(), da);
        s.name_image(&"myapp:latest".parse().unwrap(), &b).unwrap();
        let names: Vec<String> = s.images().unwrap().iter().map(|i| i.name.to_string()).collect();
        assert_eq!(names, ["docker.io/library/myapp:latest", "localhost:5000/x/y:1"]);
        assert_eq!(s.find_image(&"myapp".parse().unwrap()).unwrap().unwrap().digest().unwrap(), db);
        // By digest, with or without a name in front.
        let by_digest: Reference = format!("other@{da}").parse().unwrap();
        assert_eq!(s.find_image(&by_digest).unwrap().unwrap().name.to_string(), "localhost:5000/x/y:1");
        assert!(s.remove_image(&"myapp".parse().unwrap()).unwrap());
        assert!(!s.remove_image(&"myapp".parse().unwrap()).unwrap());
        assert!(s.find_image(&"myapp".parse().unwrap()).unwrap().is_none());
    }

    #[test]
    fn local_image_selects_the_platform_of_an_index() {
        let (_d, s) = store();
        let (a, da) = put_image(&s, "amd64");
        let (b, db) = put_image(&s, "arm64");
        let entry = |d: &Descriptor, arch: &str| {
            serde_json::json!({"mediaType": media::OCI_MANIFEST, "digest": d.digest().to_string(), "size": d.size(), "platform": {"os": "linux", "architecture": arch}})
        };
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": [entry(&a, "amd64"), entry(&b, "arm64")]});
        let bytes = serde_json::to_vec(&index).unwrap();
        let di = s.put(&bytes).unwrap();
        let desc: Descriptor = serde_json::from_value(serde_json::json!({"mediaType": media::OCI_INDEX, "digest": di.to_string(), "size": bytes.len()})).unwrap();
        let r: Reference = "multi:1".parse().unwrap();
        s.name_image(&r, &desc).unwrap();
        let p = |s: &str| -> Platform { crate::platform::parse_platform(s).unwrap() };
        assert_eq!(s.local_image(&r, &p("linux/arm64")).unwrap().unwrap().manifest_digest, db);
        assert_eq!(s.local_image(&r, &p("linux/amd64")).unwrap().unwrap().manifest_digest, da);
        assert!(s.local_image(&r, &p("linux/s390x")).unwrap().is_none());
        assert!(s.local_image(&"absent".parse().unwrap(), &p("linux/amd64")).unwrap().is_none());
        // A single-platform image only serves its own platform.
        s.name_image(&"single:1".parse().unwrap(), &a).unwrap();
        assert!(s.local_image(&"single:1".parse().unwrap(), &p("linux/amd64")).unwrap().is_some());
        assert!(s.local_image(&"single:1".parse().unwrap(), &p("linux/arm64")).unwrap().is_none());
    }
}
