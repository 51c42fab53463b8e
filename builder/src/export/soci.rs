//! `--soci`: a SOCI-enabled image as soci-snapshotter's `soci convert` makes one
//! (SOCI index manifest v2, `docs/soci-index-manifest-v2.md`, `soci/soci_convert.go`):
//! an OCI index holding the image manifest, annotated `com.amazon.soci.index-digest`,
//! and a SOCI index manifest (config media type and descriptor `artifactType`
//! `application/vnd.amazon.soci.index.v2+json`, the descriptor annotated
//! `com.amazon.soci.image-manifest-digest`) whose layers are the ztocs of the image's
//! gzip layers, each annotated with the layer's digest, media type and the span size.
//! The ztocs are made as the layers are written (`kiln_snapshotter::lazy::soci`).

use anyhow::Result;
use serde_json::json;

use super::{descriptor, Built, Manifest};
use crate::options::BuildOptions;
use kiln_frontend::Platform;
use crate::image::ImageState;
use crate::options::{Format, SociOptions};
use kiln_cache::store::ContentStore;
use kiln_oci::media;

pub const INDEX_V2: &str = "application/vnd.amazon.soci.index.v2+json";
pub const ZTOC_MEDIA_TYPE: &str = "application/octet-stream";
pub const IMAGE_INDEX_DIGEST: &str = "com.amazon.soci.index-digest";
pub const IMAGE_MANIFEST_DIGEST: &str = "com.amazon.soci.image-manifest-digest";
pub const LAYER_DIGEST: &str = "com.amazon.soci.image-layer-digest";
pub const LAYER_MEDIA_TYPE: &str = "com.amazon.soci.image-layer-mediaType";
pub const SPAN_SIZE: &str = "com.amazon.soci.span-size";
pub const BUILD_TOOL: &str = "com.amazon.soci.build-tool-identifier";

/// The SOCI index manifest of `state`, or `None` when no layer has a ztoc and is at
/// least `min_layer_size` (soci's `ErrEmptyIndex`: no index is written then).
pub fn index_manifest(store: &ContentStore, soci: &SociOptions, state: &ImageState, format: Format) -> Result<Option<Manifest>> {
    let config = b"{}";
    let config_digest = store.put(config)?;
    let mut layers = Vec::new();
    let mut blobs = vec![descriptor(INDEX_V2, &config_digest, config.len() as u64)?];
    for l in state.layers.iter().filter(|l| l.size >= soci.min_layer_size) {
        let Some(z) = &l.ztoc else { continue };
        layers.push(json!({
            "mediaType": ZTOC_MEDIA_TYPE,
            "digest": z.digest.to_string(),
            "size": z.size,
            "annotations": {
                LAYER_MEDIA_TYPE: format.layer(&l.media_type)?,
                LAYER_DIGEST: l.digest.to_string(),
                SPAN_SIZE: soci.span.to_string(),
            },
        }));
        blobs.push(descriptor(ZTOC_MEDIA_TYPE, &z.digest, z.size)?);
    }
    if layers.is_empty() {
        return Ok(None);
    }
    let bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": INDEX_V2, "digest": config_digest.to_string(), "size": config.len()},
        "layers": layers,
        "annotations": {BUILD_TOOL: concat!("kiln ", env!("CARGO_PKG_VERSION"))},
    }))?;
    let digest = store.put(&bytes)?;
    Ok(Some(Manifest { bytes, digest, blobs }))
}

/// The SOCI-enabled image: an OCI index of the image manifests and, after them, the
/// SOCI index manifest of each platform that has one (pushed before the index).
pub fn enabled_image(store: &ContentStore, opts: &BuildOptions, manifests: Vec<(Platform, Manifest)>, socis: Vec<Option<Manifest>>) -> Result<Built> {
    let mut extra = Vec::new();
    let mut attached = Vec::new();
    for ((p, m), s) in manifests.iter().zip(socis) {
        let Some(s) = s else { continue };
        extra.push(
            kiln_oci::IndexEntry::new(media::OCI_MANIFEST, &s.digest, s.bytes.len() as u64)
                .with_artifact_type(INDEX_V2)
                .with_platform(p.to_json())
                .annotate(IMAGE_MANIFEST_DIGEST, &m.digest.to_string()),
        );
        attached.push(s);
    }
    let (bytes, digest) = super::write_index(store, opts, &manifests, opts.format, media::OCI_INDEX, extra.clone())?;
    let top = descriptor(media::OCI_INDEX, &digest, bytes.len() as u64)?;
    Ok(Built { top, top_bytes: bytes, top_media_type: media::OCI_INDEX, manifests, attached, extra })
}
