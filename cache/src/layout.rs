//! Exporting images from the content store as a standalone OCI image layout
//! (what `kiln build --output type=oci,dest=DIR` writes).
//!
//! Blobs are hard-linked when store and destination share a filesystem (cheap, and
//! safe because store blobs are immutable and read-only), otherwise copied through a
//! temp file and renamed so a half-copied blob is never visible under its digest.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::Path;

use kiln_oci::{media, Descriptor, Digest, ImageIndex, ImageManifest};
use oci_spec::image::MediaType;

use crate::store::{create_unique, init_layout, ref_name, sync_dir, write_atomic, ContentStore, StoreError, REF_NAME};

/// See the crate-level API description: writes `images` and everything they reference
/// into a layout at `dest`, merging with an existing `index.json` (same tag replaced).
pub fn export_layout(
    store: &ContentStore,
    dest: &Path,
    images: &[(Descriptor, String)],
) -> Result<(), StoreError> {
    export_layout_with_referrers(store, dest, images, &[])
}

/// [`export_layout`], plus `referrers` (artifact manifests whose `subject` is one of
/// the images): their blobs, and a descriptor for each (with `artifactType`, no ref
/// name) in `index.json`, which is where OCI image-layout 1.1 readers (ORAS, `kiln`)
/// find the referrers of a layout's images.
pub fn export_layout_with_referrers(
    store: &ContentStore,
    dest: &Path,
    images: &[(Descriptor, String)],
    referrers: &[Descriptor],
) -> Result<(), StoreError> {
    init_layout(dest)?;
    let mut blobs = Vec::new();
    let mut done = BTreeSet::new();
    for desc in images.iter().map(|(d, _)| d).chain(referrers) {
        list_tree(store, desc, &mut done, &mut blobs)?;
    }
    // A layout's readers trust its digests: never hand on bytes that no longer match.
    store.verify(&blobs)?;
    for d in &blobs {
        link_or_copy(store, dest, d)?;
    }

    let index_path = dest.join("index.json");
    let bytes = fs::read(&index_path).map_err(|e| StoreError::io("reading", &index_path, e))?;
    let mut index: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| StoreError::Invalid {
        what: index_path.display().to_string(),
        message: e.to_string(),
    })?;
    let new_tags: BTreeSet<&str> = images.iter().map(|(_, t)| t.as_str()).collect();
    let mut manifests: Vec<Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| match ref_name(d) {
            Some(t) => !new_tags.contains(t),
            None => true,
        })
        .cloned()
        .collect();
    for (desc, tag) in images {
        let mut d = desc.clone();
        let mut ann: HashMap<String, String> = d.annotations().clone().unwrap_or_default();
        ann.insert(REF_NAME.to_string(), tag.clone());
        d.set_annotations(Some(ann));
        manifests.push(d);
    }
    for r in referrers {
        if !manifests.iter().any(|m| m.digest() == r.digest()) {
            manifests.push(r.clone());
        }
    }
    index.set_manifests(manifests);
    index.set_media_type(Some(MediaType::ImageIndex));
    let out = serde_json::to_vec_pretty(&index).map_err(|e| StoreError::Invalid {
        what: index_path.display().to_string(),
        message: e.to_string(),
    })?;
    write_atomic(&index_path, &out)
}

fn parse_digest(d: &Descriptor) -> Result<Digest, StoreError> {
    d.digest().to_string().parse().map_err(|e: kiln_oci::DigestError| StoreError::Invalid {
        what: format!("descriptor {}", d.digest()),
        message: e.to_string(),
    })
}

/// The blob of `desc` and, for manifests and indexes, what they reference (each
/// once, in `out`).
fn list_tree(store: &ContentStore, desc: &Descriptor, done: &mut BTreeSet<Digest>, out: &mut Vec<Digest>) -> Result<(), StoreError> {
    let digest = parse_digest(desc)?;
    if !done.insert(digest.clone()) {
        return Ok(());
    }
    if !store.has(&digest) {
        return Err(StoreError::NotFound(digest));
    }
    out.push(digest.clone());
    let mt = desc.media_type().to_string();
    if media::is_index(&mt) {
        let bytes = store.read(&digest)?;
        let idx: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| invalid(&digest, e))?;
        for m in idx.manifests() {
            list_tree(store, m, done, out)?;
        }
    } else if media::is_manifest(&mt) {
        let bytes = store.read(&digest)?;
        let m: ImageManifest = serde_json::from_slice(&bytes).map_err(|e| invalid(&digest, e))?;
        list_tree(store, m.config(), done, out)?;
        for l in m.layers() {
            list_tree(store, l, done, out)?;
        }
    }
    Ok(())
}

fn invalid(d: &Digest, e: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid { what: format!("blob {d}"), message: e.to_string() }
}

fn link_or_copy(store: &ContentStore, dest: &Path, d: &Digest) -> Result<(), StoreError> {
    let src = store.blob_path(d);
    if !src.is_file() {
        return Err(StoreError::NotFound(d.clone()));
    }
    let dir = dest.join("blobs").join("sha256");
    let dst = dir.join(d.hex());
    if dst.is_file() {
        // Content-addressed: an existing file of that name has these bytes (it got
        // there by a verified write of ours or an equivalent tool).
        return Ok(());
    }
    if fs::hard_link(&src, &dst).is_ok() {
        return Ok(());
    }
    // Cross-device or hard links not permitted: copy via temp + rename.
    let (mut out, tmp) = create_unique(&dir, "copy")?;
    let res = (|| -> io::Result<()> {
        let mut inp = store.open_blob(d).map_err(io::Error::other)?;
        io::copy(&mut inp, &mut out)?;
        out.sync_all()?;
        fs::rename(&tmp, &dst)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::io("copying blob to", &dst, e));
    }
    sync_dir(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{DescriptorBuilder, ImageManifestBuilder};

    fn desc(mt: MediaType, d: &Digest, size: u64) -> Descriptor {
        DescriptorBuilder::default()
            .media_type(mt)
            .digest(oci_spec::image::Digest::try_from(d.to_string()).unwrap())
            .size(size)
            .build()
            .unwrap()
    }

    fn make_image(s: &ContentStore, layer: &[u8]) -> Descriptor {
        let ld = s.put(layer).unwrap();
        let cfg = br#"{"architecture":"amd64","os":"linux"}"#;
        let cd = s.put(cfg).unwrap();
        let m = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(desc(MediaType::ImageConfig, &cd, cfg.len() as u64))
            .layers(vec![desc(MediaType::ImageLayerGzip, &ld, layer.len() as u64)])
            .build()
            .unwrap();
        let mb = serde_json::to_vec(&m).unwrap();
        let md = s.put(&mb).unwrap();
        desc(MediaType::ImageManifest, &md, mb.len() as u64)
    }

    fn index_tags(dest: &Path) -> Vec<(String, String)> {
        let idx: ImageIndex =
            serde_json::from_slice(&fs::read(dest.join("index.json")).unwrap()).unwrap();
        idx.manifests()
            .iter()
            .map(|d| (ref_name(d).unwrap().to_string(), d.digest().to_string()))
            .collect()
    }

    #[test]
    fn exports_and_merges() {
        let t = tempfile::tempdir().unwrap();
        let s = ContentStore::open(&t.path().join("store")).unwrap();
        let a = make_image(&s, b"layer-a");
        let b = make_image(&s, b"layer-b");
        let dest = t.path().join("out");
        export_layout(&s, &dest, &[(a.clone(), "v1".into())]).unwrap();
        assert!(dest.join("oci-layout").is_file());
        let blobs = |p: &Path| fs::read_dir(p.join("blobs/sha256")).unwrap().count();
        assert_eq!(blobs(&dest), 3);
        assert_eq!(index_tags(&dest), vec![("v1".to_string(), a.digest().to_string())]);
        for e in fs::read_dir(dest.join("blobs/sha256")).unwrap() {
            let e = e.unwrap();
            let d: Digest = format!("sha256:{}", e.file_name().to_str().unwrap()).parse().unwrap();
            assert_eq!(Digest::of(&fs::read(e.path()).unwrap()), d);
        }
        // Merge: new tag added, same tag replaced.
        export_layout(&s, &dest, &[(b.clone(), "v2".into())]).unwrap();
        export_layout(&s, &dest, &[(b.clone(), "v1".into())]).unwrap();
        let mut tags = index_tags(&dest);
        tags.sort();
        assert_eq!(
            tags,
            vec![("v1".to_string(), b.digest().to_string()), ("v2".to_string(), b.digest().to_string())]
        );
        assert_eq!(blobs(&dest), 5); // shared config + 2 layers + 2 manifests
    }

    #[test]
    fn exports_index_recursively() {
        let t = tempfile::tempdir().unwrap();
        let s = ContentStore::open(&t.path().join("store")).unwrap();
        let a = make_image(&s, b"amd");
        let b = make_image(&s, b"arm");
        let idx = oci_spec::image::ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(vec![a, b])
            .build()
            .unwrap();
        let ib = serde_json::to_vec(&idx).unwrap();
        let id = s.put(&ib).unwrap();
        let dest = t.path().join("out");
        export_layout(&s, &dest, &[(desc(MediaType::ImageIndex, &id, ib.len() as u64), "multi".into())])
            .unwrap();
        assert_eq!(fs::read_dir(dest.join("blobs/sha256")).unwrap().count(), 6);
    }

    #[test]
    fn missing_blob_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let s = ContentStore::open(&t.path().join("store")).unwrap();
        let d = desc(MediaType::ImageManifest, &Digest::of(b"absent"), 6);
        let err = export_layout(&s, &t.path().join("out"), &[(d, "x".into())]).unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    }
}
