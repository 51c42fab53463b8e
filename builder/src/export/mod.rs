//! Turning the built image into a manifest and sending it where the user asked:
//! registries (`--push`) and OCI layouts (`--output type=oci,dest=DIR`).

use anyhow::{Context, Result};
use kiln_cache::reference::Reference;
use kiln_cache::registry::Registry;
use kiln_cache::layout::export_layout;
use kiln_cache::store::ContentStore;
use kiln_oci::{media, Descriptor, Digest};
use serde_json::json;

use crate::options::{BuildOptions, Output};
use crate::image::ImageState;
use kiln_frontend::Platform;
use crate::options::Format;

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
pub fn write_manifest(store: &ContentStore, state: &ImageState, format: Format) -> Result<Manifest> {
    let config_bytes = state.config.to_bytes();
    let config_digest = store.put(&config_bytes)?;
    let mut layers = Vec::new();
    let mut blobs = vec![descriptor(format.config(), &config_digest, config_bytes.len() as u64)?];
    for l in &state.layers {
        let mt = format.layer(&l.media_type)?;
        layers.push(json!({"mediaType": mt, "digest": l.digest.to_string(), "size": l.size}));
        blobs.push(descriptor(&mt, &l.digest, l.size)?);
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": format.manifest(),
        "config": {"mediaType": format.config(), "digest": config_digest.to_string(), "size": config_bytes.len()},
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest)?;
    let digest = store.put(&bytes)?;
    Ok(Manifest { bytes, digest, blobs })
}

/// What was built: one manifest, or an index over one manifest per platform.
struct Built {
    /// The descriptor to tag: the manifest, or the index.
    top: Descriptor,
    top_bytes: Vec<u8>,
    top_media_type: &'static str,
    /// (platform, manifest) for each platform.
    manifests: Vec<(Platform, Manifest)>,
}

fn write_index(store: &ContentStore, manifests: &[(Platform, Manifest)], format: Format) -> Result<(Vec<u8>, Digest)> {
    let entries: Vec<kiln_oci::IndexEntry> = manifests
        .iter()
        .map(|(p, m)| {
            kiln_oci::IndexEntry::new(format.manifest(), &m.digest, m.bytes.len() as u64).with_platform(p.to_json())
        })
        .collect();
    let bytes = kiln_oci::index_json(format.index(), &entries);
    let digest = store.put(&bytes)?;
    Ok((bytes, digest))
}

pub async fn export(
    opts: &BuildOptions,
    store: &ContentStore,
    registry: &Registry,
    images: Vec<(Platform, ImageState)>,
    mount_from: &[Reference],
) -> Result<Digest> {
    let mut manifests = Vec::new();
    for (p, state) in &images {
        manifests.push((p.clone(), write_manifest(store, state, opts.format)?));
    }
    // One platform asked for (or defaulted): a plain manifest, as `docker build`.
    // Several: an OCI index with a platform on each entry.
    let built = if manifests.len() == 1 {
        let m = &manifests[0].1;
        Built {
            top: descriptor(opts.format.manifest(), &m.digest, m.bytes.len() as u64)?,
            top_bytes: m.bytes.clone(),
            top_media_type: opts.format.manifest(),
            manifests,
        }
    } else {
        let (bytes, digest) = write_index(store, &manifests, opts.format)?;
        for (p, m) in &manifests {
            crate::progress::get().info("image", &format!("image {} {}", (p).to_string(), m.digest));
        }
        let mt = opts.format.index();
        Built { top: descriptor(mt, &digest, bytes.len() as u64)?, top_bytes: bytes, top_media_type: mt, manifests }
    };
    let top_digest: Digest = built.top.digest().to_string().parse()?;
    crate::progress::get().info("image", &format!("image {top_digest}"));

    for out in &opts.outputs {
        match out {
            Output::OciLayout { dest } if dest.extension().is_some_and(|e| e == "tar") => {
                // An OCI layout in a tar (the same archive as type=docker, whose
                // extra manifest.json OCI tools ignore).
                write_docker_archive(store, dest, &built, &opts.tags)
                    .with_context(|| format!("writing OCI archive {}", dest.display()))?;
                crate::progress::get().info("output", &format!("wrote OCI archive {}", dest.display()));
            }
            Output::OciLayout { dest } => {
                let tag = opts.tags.first().and_then(|t| t.tag().map(str::to_string)).unwrap_or_else(|| "latest".into());
                export_layout(store, dest, &[(built.top.clone(), tag.clone())])
                    .with_context(|| format!("writing OCI layout {}", dest.display()))?;
                crate::progress::get().info("output", &format!("wrote OCI layout {} (tag {tag})", dest.display()));
            }
            Output::DockerArchive { dest } => {
                write_docker_archive(store, dest, &built, &opts.tags)
                    .with_context(|| format!("writing image archive {}", dest.display()))?;
                crate::progress::get().info("output", &format!("wrote image archive {} (load it with `docker load -i` or `podman load -i`)", dest.display()));
            }
            // Written by the solver, which can mount the layers.
            Output::Local { .. } => {}
        }
    }
    if opts.push {
        for tag in &opts.tags {
            // Platform manifests first (by digest), so the index never points at
            // something the registry does not have.
            if built.manifests.len() > 1 {
                for (p, m) in &built.manifests {
                    let r = tag.with_digest(m.digest.clone());
                    let report = registry
                        .push_image(&r, store, &m.bytes, opts.format.manifest(), &m.blobs, mount_from)
                        .await
                        .with_context(|| format!("pushing the {} image to {}", (p).to_string(), tag.name()))?;
                    print_report(&report, Some(p));
                }
                let report = registry
                    .push_image(tag, store, &built.top_bytes, built.top_media_type, &[], mount_from)
                    .await
                    .with_context(|| format!("pushing the index to {tag}"))?;
                crate::progress::get().info("push", &format!("pushed {tag}@{}", report.manifest_digest));
            } else {
                let m = &built.manifests[0].1;
                let report = registry
                    .push_image(tag, store, &m.bytes, opts.format.manifest(), &m.blobs, mount_from)
                    .await
                    .with_context(|| format!("pushing {tag}"))?;
                print_report(&report, None);
                crate::progress::get().info("push", &format!("pushed {tag}@{}", report.manifest_digest));
            }
        }
    }
    if let Some(path) = &opts.digest_file {
        std::fs::write(path, top_digest.to_string()).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &opts.iidfile {
        // Docker's image ID is the config digest; for several platforms, the index.
        let id = if built.manifests.len() == 1 { built.manifests[0].1.blobs[0].digest().to_string() } else { top_digest.to_string() };
        std::fs::write(path, id).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &opts.metadata_file {
        let platforms: serde_json::Map<String, serde_json::Value> =
            built.manifests.iter().map(|(p, m)| ((p).to_string(), json!(m.digest.to_string()))).collect();
        let meta = json!({
            "containerimage.digest": top_digest.to_string(),
            "containerimage.descriptor": {"mediaType": built.top_media_type, "digest": top_digest.to_string(), "size": built.top_bytes.len()},
            "image.name": opts.tags.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(","),
            "kiln.platforms": platforms,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&meta)?).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(top_digest)
}

fn print_report(report: &kiln_cache::registry::PushReport, p: Option<&Platform>) {
    let prefix = p.map(|p| format!("{} ", (p).to_string())).unwrap_or_default();
    for d in &report.skipped {
        crate::progress::get().info("blob", &format!("  {prefix}blob {} exists", d.short()));
    }
    for d in &report.mounted {
        crate::progress::get().info("blob", &format!("  {prefix}blob {} mounted", d.short()));
    }
    for d in &report.uploaded {
        crate::progress::get().info("blob", &format!("  {prefix}blob {} pushed", d.short()));
    }
}

/// A tar that `docker load` and `podman load` accept: an OCI image layout (what
/// `docker save` writes since Docker 25) plus the classic `manifest.json` naming the
/// config and layer blobs inside it. Layers stay gzip-compressed; both loaders
/// decompress them. With several platforms only the host's image is listed in
/// `manifest.json` (Docker loads one platform), the layout holds all.
fn write_docker_archive(store: &ContentStore, dest: &std::path::Path, built: &Built, tags: &[Reference]) -> Result<()> {
    let host = Platform::host();
    let (_, m) = built
        .manifests
        .iter()
        .find(|(p, _)| p.architecture == host.architecture)
        .unwrap_or(&built.manifests[0]);
    let tmp = dest.with_extension(format!("tmp-{}", std::process::id()));
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let add_bytes = |tar: &mut tar::Builder<_>, name: &str, bytes: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, name, bytes)?;
        Ok(())
    };
    add_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let tag = tags.first().map(|t| t.to_string());
    let top_digest: Digest = built.top.digest().to_string().parse().context("the top descriptor's digest")?;
    let mut top = kiln_oci::IndexEntry::new(built.top_media_type, &top_digest, built.top_bytes.len() as u64);
    if let Some(t) = &tag {
        top = top.annotate("io.containerd.image.name", t).annotate("org.opencontainers.image.ref.name", t.rsplit(':').next().unwrap_or("latest"));
    }
    add_bytes(&mut tar, "index.json", &kiln_oci::index_json(media::OCI_INDEX, &[top]))?;
    let config = m.blobs[0].digest().to_string();
    let layers: Vec<String> = m.blobs[1..].iter().map(|b| format!("blobs/sha256/{}", b.digest().to_string().trim_start_matches("sha256:"))).collect();
    let manifest_json = json!([{
        "Config": format!("blobs/sha256/{}", config.trim_start_matches("sha256:")),
        "RepoTags": tags.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "Layers": layers,
    }]);
    add_bytes(&mut tar, "manifest.json", &serde_json::to_vec(&manifest_json)?)?;
    let mut blobs: Vec<Digest> = vec![top_digest_of(built)?];
    for (_, m) in &built.manifests {
        blobs.push(m.digest.clone());
        for b in &m.blobs {
            blobs.push(b.digest().to_string().parse()?);
        }
    }
    blobs.sort();
    blobs.dedup();
    for d in blobs {
        let path = store.blob_path(&d);
        let mut f = std::fs::File::open(&path).with_context(|| format!("reading blob {d}"))?;
        let mut h = tar::Header::new_ustar();
        h.set_size(f.metadata()?.len());
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, format!("blobs/sha256/{}", d.hex()), &mut f)?;
    }
    let w = tar.into_inner()?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, dest).with_context(|| format!("moving the archive to {}", dest.display()))?;
    Ok(())
}

fn top_digest_of(built: &Built) -> Result<Digest> {
    Ok(built.top.digest().to_string().parse()?)
}
