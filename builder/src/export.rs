//! Turning the built image into a manifest and sending it where the user asked:
//! registries (`--push`) and OCI layouts (`--output type=oci,dest=DIR`).

use anyhow::{Context, Result};
use kiln_cache::reference::Reference;
use kiln_cache::registry::Registry;
use kiln_cache::store::{export_layout, ContentStore};
use kiln_oci::{media, Descriptor, Digest};
use serde_json::json;

use crate::cli::{BuildOptions, Output};
use crate::image::ImageState;

/// The stored manifest of a finished image.
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    /// Config first, then layers: every blob the manifest references.
    pub blobs: Vec<Descriptor>,
}

fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Result<Descriptor> {
    let d: oci_spec::image::Digest = digest.to_string().parse().context("converting digest")?;
    Ok(Descriptor::new(media_type.into(), size, d))
}

/// Store config and manifest in the content store. Keys are written sorted
/// (serde_json's default map), so the same image gives the same bytes.
pub fn write_manifest(store: &ContentStore, state: &ImageState) -> Result<Manifest> {
    let config_bytes = state.config.to_bytes();
    let config_digest = store.put(&config_bytes)?;
    let layers: Vec<serde_json::Value> = state
        .layers
        .iter()
        .map(|l| json!({"mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size}))
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len()},
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest)?;
    let digest = store.put(&bytes)?;
    let mut blobs = vec![descriptor(media::OCI_CONFIG, &config_digest, config_bytes.len() as u64)?];
    for l in &state.layers {
        blobs.push(descriptor(&l.media_type, &l.digest, l.size)?);
    }
    Ok(Manifest { bytes, digest, blobs })
}

pub async fn export(
    opts: &BuildOptions,
    store: &ContentStore,
    registry: &Registry,
    state: ImageState,
    mount_from: &[Reference],
) -> Result<()> {
    let m = write_manifest(store, &state)?;
    eprintln!("image {}", m.digest);
    for out in &opts.outputs {
        match out {
            Output::OciLayout { dest } => {
                let tag = opts.tags.first().and_then(|t| t.tag().map(str::to_string)).unwrap_or_else(|| "latest".into());
                let desc = descriptor(media::OCI_MANIFEST, &m.digest, m.bytes.len() as u64)?;
                export_layout(store, dest, &[(desc, tag.clone())])
                    .with_context(|| format!("writing OCI layout {}", dest.display()))?;
                eprintln!("wrote OCI layout {} (tag {tag})", dest.display());
            }
        }
    }
    if opts.push {
        for tag in &opts.tags {
            let report = registry
                .push_image(tag, store, &m.bytes, media::OCI_MANIFEST, &m.blobs, mount_from)
                .await
                .with_context(|| format!("pushing {tag}"))?;
            for d in &report.skipped {
                eprintln!("  blob {} exists", d.short());
            }
            for d in &report.mounted {
                eprintln!("  blob {} mounted", d.short());
            }
            for d in &report.uploaded {
                eprintln!("  blob {} pushed", d.short());
            }
            eprintln!("pushed {tag}@{}", report.manifest_digest);
        }
    }
    if let Some(path) = &opts.digest_file {
        std::fs::write(path, m.digest.to_string()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
