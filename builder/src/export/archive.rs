//! Image archives: the tar `docker load`/`podman load` and OCI tools read (an OCI
//! layout plus Docker's `manifest.json`), written from images in the store, for
//! `--output type=docker|oci,dest=X.tar` and `kiln save`.

use std::io::Write;

use anyhow::{Context, Result};
use kiln_cache::reference::Reference;
use kiln_cache::store::ContentStore;
use kiln_frontend::Platform;
use kiln_oci::{media, Digest};
use serde_json::json;

use super::Built;

/// Which archive to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// OCI layout + `manifest.json` (what `docker save` writes since Docker 25).
    Docker,
    /// The OCI layout alone.
    Oci,
}

/// A tar that `docker load` and `podman load` accept: an OCI image layout plus the
/// classic `manifest.json` naming the config and layer blobs inside it. Layers stay
/// compressed; both loaders decompress them. With several platforms only the host's
/// image is listed in `manifest.json` (Docker loads one platform), the layout holds all.
pub fn write_docker_archive(store: &ContentStore, dest: &std::path::Path, built: &Built, tags: &[Reference]) -> Result<()> {
    write_archive_file(store, dest, &[(built, tags.to_vec())], ArchiveKind::Docker)
}

/// [`write_archive`] into `dest` (`-`: stdout), replacing it only once complete.
pub fn write_archive_file(store: &ContentStore, dest: &std::path::Path, images: &[(&Built, Vec<Reference>)], kind: ArchiveKind) -> Result<()> {
    super::write_output(dest, |w| write_archive(store, w, images, kind))
}

fn add_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, name, bytes)?;
    Ok(())
}

fn blob_name(d: &str) -> String {
    format!("blobs/sha256/{}", d.trim_start_matches("sha256:"))
}

/// The archive of `images`, each with the names it is saved under (index.json:
/// one entry per name, as `docker save` writes them, or one unnamed entry).
pub fn write_archive<W: Write>(store: &ContentStore, out: W, images: &[(&Built, Vec<Reference>)], kind: ArchiveKind) -> Result<()> {
    let mut tar = tar::Builder::new(out);
    add_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let host = Platform::host();
    let mut entries = Vec::new();
    let mut docker_manifest = Vec::new();
    let mut blobs: Vec<Digest> = Vec::new();
    for (built, tags) in images {
        let top_digest: Digest = built.top.digest().to_string().parse().context("the top descriptor's digest")?;
        let top = kiln_oci::IndexEntry::new(built.top_media_type, &top_digest, built.top_bytes.len() as u64);
        if tags.is_empty() {
            entries.push(top.clone());
        }
        for t in tags {
            let t = t.to_string();
            entries.push(top.clone().annotate("io.containerd.image.name", &t).annotate("org.opencontainers.image.ref.name", t.rsplit(':').next().unwrap_or("latest")));
        }
        let (_, m) = built.manifests.iter().find(|(p, _)| p.architecture == host.architecture).unwrap_or(&built.manifests[0]);
        docker_manifest.push(json!({
            "Config": blob_name(&m.blobs[0].digest().to_string()),
            "RepoTags": tags.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            "Layers": m.blobs[1..].iter().map(|b| blob_name(&b.digest().to_string())).collect::<Vec<_>>(),
        }));
        blobs.push(top_digest);
        for (_, m) in &built.manifests {
            blobs.push(m.digest.clone());
            for b in &m.blobs {
                blobs.push(b.digest().to_string().parse()?);
            }
        }
    }
    // The archive's readers trust its digests: a corrupt store blob is named before
    // a byte of the archive is written.
    blobs.sort();
    blobs.dedup();
    store.verify(&blobs)?;
    add_bytes(&mut tar, "index.json", &kiln_oci::index_json(media::OCI_INDEX, &entries))?;
    if kind == ArchiveKind::Docker {
        add_bytes(&mut tar, "manifest.json", &serde_json::to_vec(&docker_manifest)?)?;
    }
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
    tar.into_inner()?;
    Ok(())
}
