//! Attestations attached to the built image: each platform's documents stored as
//! OCI 1.1 artifact manifests whose `subject` is that platform's manifest (the
//! default: the image and its index stay byte for byte what they are without
//! attestations), or, with `--attest-style=buildkit`, as BuildKit's attestation
//! manifests inside the index (`unknown/unknown`, `vnd.docker.reference.*`).
//!
//! Pushed after the image (a referrer's subject must exist first); a refused push
//! fails the build unless the attestation says `ignore-error=true`.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use kiln_cache::reference::Reference;
use kiln_cache::registry::Registry;
use kiln_cache::store::ContentStore;
use kiln_frontend::Platform;
use kiln_oci::{media, Descriptor, Digest};
use serde_json::json;

use super::{descriptor, Built, Manifest};
use crate::attest::{self, Document, Facts, Material, Scans};
use crate::options::attest::AttestStyle;
use crate::options::BuildOptions;

/// What the solver gathered for the attestations, per platform in build order.
pub struct AttestInput {
    pub scans: Vec<Option<Scans>>,
    pub materials: Vec<Vec<Material>>,
    pub facts: Facts,
    /// The build's creation time (SOURCE_DATE_EPOCH, else now), RFC 3339.
    pub created: String,
}

/// One stored referrer: its manifest (in the store) and what it describes.
pub struct Referrer {
    pub doc: Document,
    pub platform: Platform,
    pub manifest: Manifest,
    /// The platform manifest it refers to.
    pub subject: Digest,
    pub artifact_type: &'static str,
}

impl Referrer {
    /// Its descriptor with `artifactType` (an OCI layout's index lists it so).
    pub fn descriptor(&self) -> Result<Descriptor> {
        let mut d = descriptor(media::OCI_MANIFEST, &self.manifest.digest, self.manifest.bytes.len() as u64)?;
        d.set_artifact_type(Some(self.artifact_type.into()));
        Ok(d)
    }
}

/// The name documents give the image: the first tag, else the context's name.
fn image_name(opts: &BuildOptions) -> String {
    match opts.tags.first() {
        Some(t) => t.to_string(),
        None => opts.context.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into()),
    }
}

/// Every platform's documents, made for the manifests in `built`.
pub fn documents(opts: &BuildOptions, input: &AttestInput, built: &Built, created: &str) -> Vec<(usize, Document)> {
    let name = image_name(opts);
    let mut out = Vec::new();
    for (i, (p, m)) in built.manifests.iter().enumerate() {
        let platform = p.to_string();
        let digest = m.digest.to_string();
        let subject = attest::Subject { image: &name, digest: &digest, platform: &platform };
        let scans = input.scans.get(i).and_then(Option::as_ref);
        let materials = input.materials.get(i).map(Vec::as_slice).unwrap_or_default();
        for d in attest::documents(&opts.attestations, scans, &input.facts, materials, &subject, created) {
            out.push((i, d));
        }
    }
    out
}

/// Stores each document as a referrer of its platform manifest.
pub fn store_referrers(store: &ContentStore, built: &Built, docs: Vec<(usize, Document)>, created: &str) -> Result<Vec<Referrer>> {
    let empty = store.put(b"{}")?;
    let mut out = Vec::new();
    for (i, doc) in docs {
        let (p, m) = &built.manifests[i];
        let payload = store.put(&doc.bytes)?;
        let layer = descriptor(doc.artifact_type, &payload, doc.bytes.len() as u64)?;
        let subject = descriptor(super::manifest_media_type(&m.bytes), &m.digest, m.bytes.len() as u64)?;
        let bytes = kiln_cache::referrers::artifact_manifest(doc.artifact_type, &layer, &subject, &doc.annotations(created));
        let digest = store.put(&bytes)?;
        let blobs = vec![descriptor(media::OCI_EMPTY, &empty, 2)?, layer];
        out.push(Referrer { artifact_type: doc.artifact_type, doc, platform: p.clone(), manifest: Manifest { bytes, digest, blobs }, subject: m.digest.clone() });
    }
    Ok(out)
}

/// Pushes every referrer into each tag's repository (once per repository).
pub async fn push_referrers(registry: &Registry, store: &ContentStore, tags: &[Reference], referrers: &[Referrer]) -> Result<()> {
    let mut repos: Vec<&Reference> = Vec::new();
    for t in tags {
        if !repos.iter().any(|r| r.registry() == t.registry() && r.repository() == t.repository()) {
            repos.push(t);
        }
    }
    for repo in repos {
        for r in referrers {
            let pushed = registry
                .push_referrer(repo, store, &r.manifest.bytes, &r.manifest.blobs, &r.subject)
                .await
                .with_context(|| format!("attaching the {} {} to {}", r.platform, describe(&r.doc), repo.name()));
            match pushed {
                Ok(how) => {
                    let via = match how {
                        kiln_cache::referrers::ReferrerPush::Api => "referrers API".to_string(),
                        kiln_cache::referrers::ReferrerPush::TagSchema { tag } => format!("referrers tag {tag}"),
                    };
                    crate::progress::get().info("attest", &format!("attached {} {} {} ({via})", r.platform, describe(&r.doc), r.manifest.digest.short()));
                }
                Err(e) if r.doc.ignore_error => crate::progress::get().warn(&format!("{e:#} (ignore-error=true: the build goes on)")),
                Err(e) => return Err(e.context("a registry that cannot hold referrers fails the build unless the attestation has ignore-error=true")),
            }
        }
    }
    Ok(())
}

/// `SBOM (spdx, image)`, `provenance`.
pub fn describe(doc: &Document) -> String {
    match &doc.kind {
        attest::Kind::Sbom { format, scope } => {
            let f = match format {
                crate::options::attest::SbomFormat::Spdx => "spdx",
                crate::options::attest::SbomFormat::CycloneDx => "cyclonedx",
            };
            format!("SBOM ({f}, {scope})")
        }
        attest::Kind::Provenance => "provenance".into(),
    }
}

/// BuildKit's layout: for each platform, a manifest of in-toto statements, listed in
/// the index after the images with `unknown/unknown` and a reference to its image.
/// `built` becomes an index (as BuildKit's is with attestations, even for one platform).
pub fn into_buildkit_index(store: &ContentStore, opts: &BuildOptions, built: &mut Built, docs: Vec<(usize, Document)>) -> Result<()> {
    let name = image_name(opts);
    let mut by_platform: BTreeMap<usize, Vec<Document>> = BTreeMap::new();
    for (i, d) in docs {
        by_platform.entry(i).or_default().push(d);
    }
    let mut entries: Vec<kiln_oci::IndexEntry> = Vec::new();
    for (i, docs) in by_platform {
        let (p, m) = &built.manifests[i];
        let subject_name = attest::provenance::subject_name(&name, &p.to_string());
        let mut layers = Vec::new();
        let mut blobs = Vec::new();
        let mut diff_ids = Vec::new();
        for d in &docs {
            let bytes = d.in_toto(&subject_name, &m.digest.to_string());
            let digest = store.put(&bytes)?;
            layers.push(json!({"mediaType": media::IN_TOTO_JSON, "digest": digest.to_string(), "size": bytes.len(),
                "annotations": {attest::PREDICATE_ANNOTATION: d.predicate_type}}));
            blobs.push(descriptor(media::IN_TOTO_JSON, &digest, bytes.len() as u64)?);
            diff_ids.push(digest.to_string());
        }
        let config = serde_json::to_vec(&json!({"architecture": "unknown", "os": "unknown", "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}))?;
        let config_digest = store.put(&config)?;
        blobs.insert(0, descriptor(media::OCI_CONFIG, &config_digest, config.len() as u64)?);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
            "layers": layers,
        }))?;
        let digest = store.put(&manifest)?;
        entries.push(
            kiln_oci::IndexEntry::new(media::OCI_MANIFEST, &digest, manifest.len() as u64)
                .with_platform(json!({"architecture": "unknown", "os": "unknown"}))
                .annotate("vnd.docker.reference.digest", &m.digest.to_string())
                .annotate("vnd.docker.reference.type", "attestation-manifest"),
        );
        built.attached.push(Manifest { bytes: manifest, digest, blobs });
    }
    let entries: Vec<kiln_oci::IndexEntry> = built.extra.iter().cloned().chain(entries).collect();
    let (bytes, digest) = super::write_index(store, opts, &built.manifests, opts.format, media::OCI_INDEX, entries)?;
    built.top = descriptor(media::OCI_INDEX, &digest, bytes.len() as u64)?;
    built.top_bytes = bytes;
    built.top_media_type = media::OCI_INDEX;
    Ok(())
}

/// Writes each platform's documents beside its rootfs (`-o type=local`).
pub fn write_local(dest: &std::path::Path, built: &Built, docs: &[(usize, Document)]) -> Result<()> {
    for (i, d) in docs {
        let dir = if built.manifests.len() > 1 { dest.join(built.manifests[*i].0.to_string().replace('/', "_")) } else { dest.to_path_buf() };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(&d.file_name);
        std::fs::write(&path, &d.bytes).with_context(|| format!("writing {}", path.display()))?;
        crate::progress::get().info("output", &format!("wrote {} {}", describe(d), path.display()));
    }
    Ok(())
}

/// Whether attestations in this build go into the index (BuildKit's way).
pub fn in_index(opts: &BuildOptions) -> bool {
    opts.attestations.any() && opts.attestations.style == AttestStyle::BuildKit
}
