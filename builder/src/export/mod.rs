//! Turning the built image into a manifest and sending it where the user asked:
//! registries (`--push`) and OCI layouts (`--output type=oci,dest=DIR`).

use anyhow::{Context, Result};
use kiln_cache::reference::Reference;
use kiln_cache::registry::Registry;
use kiln_cache::layout::export_layout_with_referrers;
use kiln_cache::store::ContentStore;
use kiln_oci::{media, Descriptor, Digest};
use serde_json::json;

use crate::options::{AnnotationTarget, BuildOptions, Output};
use crate::image::ImageState;
use kiln_frontend::Platform;
use crate::options::Format;

pub mod archive;
pub mod attach;
pub mod base_cache;
pub mod rootfs_tar;
pub mod soci;

/// The stored manifest of a finished image.
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    /// Config first, then layers: every blob the manifest references.
    pub blobs: Vec<Descriptor>,
}

/// Writes what `write` produces to `dest`, or to stdout when `dest` is `-`; a file
/// is replaced only once complete (a temp file beside it, synced, renamed), and
/// removed again when writing fails.
pub fn write_output(dest: &std::path::Path, write: impl FnOnce(&mut dyn std::io::Write) -> Result<()>) -> Result<()> {
    use std::io::Write as _;
    if dest.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::new(stdout.lock());
        write(&mut w)?;
        w.flush()?;
        return Ok(());
    }
    let tmp = dest.with_extension(format!("tmp-{}", std::process::id()));
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let written = write(&mut w).and_then(|()| Ok(w.into_inner().map_err(|e| e.into_error())?.sync_all()?));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, dest).with_context(|| format!("moving the output to {}", dest.display()))
}

/// An OCI descriptor of a blob.
pub fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Result<Descriptor> {
    let d: oci_spec::image::Digest = digest.to_string().parse().context("converting digest")?;
    Ok(Descriptor::new(media_type.into(), size, d))
}

/// Store config and manifest in the content store. Keys are written sorted
/// (serde_json's default map), so the same image gives the same bytes.
pub fn write_manifest(store: &ContentStore, state: &ImageState, format: Format, annotations: &serde_json::Map<String, serde_json::Value>) -> Result<Manifest> {
    let config_bytes = state.config.to_bytes();
    let config_digest = store.put(&config_bytes)?;
    let mut layers = Vec::new();
    let mut blobs = vec![descriptor(format.config(), &config_digest, config_bytes.len() as u64)?];
    for l in &state.layers {
        let mt = format.layer(&l.media_type)?;
        let mut d = json!({"mediaType": mt, "digest": l.digest.to_string(), "size": l.size});
        if !l.annotations.is_empty() {
            d["annotations"] = l.annotations.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>().into();
        }
        layers.push(d);
        blobs.push(descriptor(&mt, &l.digest, l.size)?);
    }
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": format.manifest(),
        "config": {"mediaType": format.config(), "digest": config_digest.to_string(), "size": config_bytes.len()},
        "layers": layers,
    });
    if !annotations.is_empty() {
        manifest["annotations"] = serde_json::Value::Object(annotations.clone());
    }
    let bytes = serde_json::to_vec(&manifest)?;
    let digest = store.put(&bytes)?;
    Ok(Manifest { bytes, digest, blobs })
}

/// What was built (or is named locally): one manifest, or an index over one
/// manifest per platform.
pub struct Built {
    /// The descriptor to tag: the manifest, or the index.
    pub top: Descriptor,
    pub top_bytes: Vec<u8>,
    pub top_media_type: &'static str,
    /// (platform, manifest) for each platform.
    pub manifests: Vec<(Platform, Manifest)>,
    /// Further manifests the index lists (BuildKit-style attestation manifests,
    /// SOCI index manifests), pushed by digest before it.
    pub attached: Vec<Manifest>,
    /// The index entries of `attached` manifests that other writers of the index
    /// keep (the SOCI indexes').
    pub extra: Vec<kiln_oci::IndexEntry>,
}

fn annotations_for(opts: &BuildOptions, target: AnnotationTarget, platform: Option<&Platform>) -> serde_json::Map<String, serde_json::Value> {
    opts.annotations.iter().filter(|a| a.applies(target, platform)).map(|a| (a.key.clone(), json!(a.value))).collect()
}

/// The index of `manifests` (platforms and descriptor annotations) followed by
/// `extra` entries (BuildKit-style attestation manifests), with the index annotations.
pub(crate) fn write_index(
    store: &ContentStore,
    opts: &BuildOptions,
    manifests: &[(Platform, Manifest)],
    format: Format,
    media_type: &str,
    extra: Vec<kiln_oci::IndexEntry>,
) -> Result<(Vec<u8>, Digest)> {
    let mut entries: Vec<kiln_oci::IndexEntry> = manifests
        .iter()
        .map(|(p, m)| {
            let mut e = kiln_oci::IndexEntry::new(format.manifest(), &m.digest, m.bytes.len() as u64).with_platform(p.to_json());
            for (k, v) in annotations_for(opts, AnnotationTarget::ManifestDescriptor, Some(p)) {
                e = e.annotate(&k, v.as_str().unwrap_or_default());
            }
            e
        })
        .collect();
    entries.extend(extra);
    let mut bytes = kiln_oci::index_json(media_type, &entries);
    let index_ann = annotations_for(opts, AnnotationTarget::Index, None);
    if !index_ann.is_empty() {
        let mut v: serde_json::Value = serde_json::from_slice(&bytes)?;
        v["annotations"] = serde_json::Value::Object(index_ann);
        bytes = serde_json::to_vec(&v)?;
    }
    let digest = store.put(&bytes)?;
    Ok((bytes, digest))
}

pub async fn export(
    opts: &BuildOptions,
    store: &ContentStore,
    registry: &Registry,
    images: Vec<(Platform, ImageState)>,
    mount_from: &[Reference],
    attest: Option<&attach::AttestInput>,
) -> Result<Digest> {
    let mut manifests = Vec::new();
    let mut socis = Vec::new();
    for (p, state) in &images {
        let mut ann = annotations_for(opts, AnnotationTarget::Manifest, Some(p));
        let soci = match &opts.soci {
            Some(s) => soci::index_manifest(store, s, state, opts.format)?,
            None => None,
        };
        if let Some(m) = &soci {
            ann.insert(soci::IMAGE_INDEX_DIGEST.to_string(), json!(m.digest.to_string()));
        } else if let Some(s) = &opts.soci {
            crate::progress::get().warn(&format!("--soci: no gzip layer of the {p} image that kiln wrote is {} bytes or more: no SOCI index for it", s.min_layer_size));
        }
        manifests.push((p.clone(), write_manifest(store, state, opts.format, &ann)?));
        socis.push(soci);
    }
    // One platform asked for (or defaulted): a plain manifest, as `docker build`.
    // Several, or a SOCI index: an OCI index with a platform on each entry.
    let mut built = if socis.iter().any(Option::is_some) {
        soci::enabled_image(store, opts, manifests, socis)?
    } else if manifests.len() == 1 {
        let m = &manifests[0].1;
        Built {
            top: descriptor(opts.format.manifest(), &m.digest, m.bytes.len() as u64)?,
            top_bytes: m.bytes.clone(),
            top_media_type: opts.format.manifest(),
            manifests,
            attached: Vec::new(),
            extra: Vec::new(),
        }
    } else {
        let (bytes, digest) = write_index(store, opts, &manifests, opts.format, opts.format.index(), Vec::new())?;
        for (p, m) in &manifests {
            crate::progress::get().info("image", &format!("image {} {}", (p).to_string(), m.digest));
        }
        let mt = opts.format.index();
        Built { top: descriptor(mt, &digest, bytes.len() as u64)?, top_bytes: bytes, top_media_type: mt, manifests, attached: Vec::new(), extra: Vec::new() }
    };
    let docs = match attest {
        Some(input) if opts.attestations.any() => attach::documents(opts, input, &built, &input.created),
        _ => Vec::new(),
    };
    let referrers = if attach::in_index(opts) {
        attach::into_buildkit_index(store, opts, &mut built, docs.clone())?;
        Vec::new()
    } else {
        let created = attest.map(|a| a.created.as_str()).unwrap_or_default();
        attach::store_referrers(store, &built, docs.clone(), created)?
    };
    let top_digest: Digest = built.top.digest().to_string().parse()?;
    crate::progress::get().info("image", &format!("image {top_digest}"));
    let single = built.manifests.len() == 1;
    for a in &opts.annotations {
        let index_only = a.targets.iter().all(|t| matches!(t, AnnotationTarget::Index | AnnotationTarget::ManifestDescriptor | AnnotationTarget::IndexDescriptor));
        if (single && index_only) || a.targets.contains(&AnnotationTarget::IndexDescriptor) {
            crate::progress::get().warn(&format!("--annotation {}: this build writes no index (or index descriptor) to carry it; not written", a.key));
        }
    }

    for out in &opts.outputs {
        match out {
            Output::OciLayout { dest } if dest.extension().is_some_and(|e| e == "tar") || dest.as_os_str() == "-" => {
                // An OCI layout in a tar (the same archive as type=docker, whose
                // extra manifest.json OCI tools ignore).
                archive::write_docker_archive(store, dest, &built, &opts.tags)
                    .with_context(|| format!("writing OCI archive {}", dest.display()))?;
                crate::progress::get().info("output", &format!("wrote OCI archive {}", dest.display()));
            }
            Output::OciLayout { dest } => {
                let tag = opts.tags.first().and_then(|t| t.tag().map(str::to_string)).unwrap_or_else(|| "latest".into());
                let refs: Vec<Descriptor> = referrers.iter().map(attach::Referrer::descriptor).collect::<Result<_>>()?;
                export_layout_with_referrers(store, dest, &[(built.top.clone(), tag.clone())], &refs)
                    .with_context(|| format!("writing OCI layout {}", dest.display()))?;
                crate::progress::get().info("output", &format!("wrote OCI layout {} (tag {tag})", dest.display()));
            }
            Output::DockerArchive { dest } => {
                archive::write_docker_archive(store, dest, &built, &opts.tags)
                    .with_context(|| format!("writing image archive {}", dest.display()))?;
                crate::progress::get().info("output", &format!("wrote image archive {} (load it with `docker load -i` or `podman load -i`)", dest.display()));
            }
            // The rootfs was written by the solver, which can mount the layers;
            // the attestations go beside it.
            Output::Local { dest } => attach::write_local(dest, &built, &docs)?,
            Output::Tar { .. } => {}
        }
    }
    if names_locally(opts) {
        for tag in &opts.tags {
            store.name_image(tag, &built.top).with_context(|| format!("naming the image {tag} in {}", store.root().display()))?;
            crate::progress::get().info("image", &format!("named {tag}"));
        }
    }
    if opts.push {
        for tag in &opts.tags {
            push_built(registry, store, tag, &built, mount_from).await?;
        }
        attach::push_referrers(registry, store, &opts.tags, &referrers).await?;
    }
    if let Some(path) = &opts.digest_file {
        std::fs::write(path, top_digest.to_string()).with_context(|| format!("writing {}", path.display()))?;
    }
    // Docker's image ID is the config digest; for several platforms, the index.
    let id = if built.manifests.len() == 1 { built.manifests[0].1.blobs[0].digest().to_string() } else { top_digest.to_string() };
    if let Some(path) = &opts.iidfile {
        std::fs::write(path, &id).with_context(|| format!("writing {}", path.display()))?;
    }
    if opts.print_id {
        println!("{id}");
    }
    if let Some(path) = &opts.metadata_file {
        let platforms: serde_json::Map<String, serde_json::Value> =
            built.manifests.iter().map(|(p, m)| ((p).to_string(), json!(m.digest.to_string()))).collect();
        let mut meta = json!({
            "containerimage.digest": top_digest.to_string(),
            "containerimage.descriptor": {"mediaType": built.top_media_type, "digest": top_digest.to_string(), "size": built.top_bytes.len()},
            "containerimage.config.digest": built.manifests[0].1.blobs[0].digest().to_string(),
            "image.name": opts.tags.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(","),
            "kiln.platforms": platforms,
        });
        if !referrers.is_empty() {
            meta["kiln.attestations"] = json!(referrers
                .iter()
                .map(|r| json!({"platform": r.platform.to_string(), "artifactType": r.artifact_type, "digest": r.manifest.digest.to_string(), "subject": r.subject.to_string()}))
                .collect::<Vec<_>>());
        }
        std::fs::write(path, serde_json::to_vec_pretty(&meta)?).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(top_digest)
}

/// `-t NAME` without `--push` keeps the image in the content store under each name
/// (as `docker build -t` and `buildah build -t` do), until `kiln rmi`.
pub fn names_locally(opts: &BuildOptions) -> bool {
    !opts.push && !opts.tags.is_empty()
}

/// Pushes `built` as `tag`: the platform manifests first (by digest), so the index
/// never points at something the registry does not have. Returns the pushed digest.
pub async fn push_built(registry: &Registry, store: &ContentStore, tag: &Reference, built: &Built, mount_from: &[Reference]) -> Result<Digest> {
    if built.manifests.len() > 1 || !built.attached.is_empty() {
        for m in &built.attached {
            let r = tag.with_digest(m.digest.clone());
            registry
                .push_image(&r, store, &m.bytes, media::OCI_MANIFEST, &m.blobs, mount_from)
                .await
                .with_context(|| format!("pushing an attestation manifest to {}", tag.name()))?;
        }
        for (p, m) in &built.manifests {
            let r = tag.with_digest(m.digest.clone());
            let mt = manifest_media_type(&m.bytes);
            let report = registry
                .push_image(&r, store, &m.bytes, mt, &m.blobs, mount_from)
                .await
                .with_context(|| format!("pushing the {p} image to {}", tag.name()))?;
            print_report(&report, Some(p));
        }
        let report = registry
            .push_image(tag, store, &built.top_bytes, built.top_media_type, &[], mount_from)
            .await
            .with_context(|| format!("pushing the index to {tag}"))?;
        crate::progress::get().info("push", &format!("pushed {tag}@{}", report.manifest_digest));
        Ok(report.manifest_digest)
    } else {
        let m = &built.manifests[0].1;
        let report = registry
            .push_image(tag, store, &m.bytes, built.top_media_type, &m.blobs, mount_from)
            .await
            .with_context(|| format!("pushing {tag}"))?;
        print_report(&report, None);
        crate::progress::get().info("push", &format!("pushed {tag}@{}", report.manifest_digest));
        Ok(report.manifest_digest)
    }
}

/// The media type a manifest's bytes declare (Docker's or OCI's).
fn manifest_media_type(bytes: &[u8]) -> &'static str {
    let declared = serde_json::from_slice::<serde_json::Value>(bytes).ok().and_then(|v| v["mediaType"].as_str().map(str::to_string));
    match declared.as_deref() {
        Some(media::DOCKER_MANIFEST) => media::DOCKER_MANIFEST,
        Some(media::DOCKER_MANIFEST_LIST) => media::DOCKER_MANIFEST_LIST,
        Some(media::OCI_INDEX) => media::OCI_INDEX,
        _ => media::OCI_MANIFEST,
    }
}

/// A named local image as [`Built`]: its manifest, or its index and each platform's
/// manifest, with the blobs each references (all in the store).
pub fn load_built(store: &ContentStore, top: &Descriptor) -> Result<Built> {
    let top_digest: Digest = top.digest().to_string().parse()?;
    let top_bytes = store.read(&top_digest)?;
    let top_media_type = manifest_media_type(&top_bytes);
    let mut top = top.clone();
    top.set_annotations(None);
    let one = |digest: &Digest, bytes: Vec<u8>| -> Result<Manifest> {
        let m: kiln_oci::ImageManifest = serde_json::from_slice(&bytes).with_context(|| format!("manifest {digest}"))?;
        let mut blobs = vec![m.config().clone()];
        blobs.extend(m.layers().iter().cloned());
        Ok(Manifest { bytes, digest: digest.clone(), blobs })
    };
    let mut attached = Vec::new();
    let manifests = if kiln_cache::images::is_index(&top_bytes)? {
        let index: kiln_oci::ImageIndex = serde_json::from_slice(&top_bytes).with_context(|| format!("index {top_digest}"))?;
        let mut out = Vec::new();
        for e in index.manifests() {
            let d: Digest = e.digest().to_string().parse()?;
            let is_attestation = e.annotations().as_ref().and_then(|a| a.get("vnd.docker.reference.type")).is_some_and(|t| t == "attestation-manifest");
            let is_soci = e.artifact_type().as_ref().is_some_and(|t| t.to_string() == soci::INDEX_V2);
            if is_attestation || is_soci {
                attached.push(one(&d, store.read(&d)?)?);
                continue;
            }
            let p = e.platform().as_ref().map(Platform::from_spec).unwrap_or_else(Platform::host);
            out.push((p, one(&d, store.read(&d)?)?));
        }
        out
    } else {
        let config_digest: Digest = one(&top_digest, top_bytes.clone())?.blobs[0].digest().to_string().parse()?;
        let config = kiln_oci::ImageConfig::from_bytes(&store.read(&config_digest)?).map_err(|e| anyhow::anyhow!("config {config_digest}: {e}"))?;
        let p = Platform::new(&config.os, &config.architecture, config.variant.as_deref());
        vec![(p, one(&top_digest, top_bytes.clone())?)]
    };
    Ok(Built { top, top_bytes, top_media_type, manifests, attached, extra: Vec::new() })
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
