//! The attestation documents of one platform's image: SBOMs (SPDX 2.3, CycloneDX 1.6,
//! from `kiln_sbom`'s scan of the rootfs, and of the context and intermediate
//! stages when asked) and SLSA v1 provenance. What `export` attaches (as referrers,
//! or BuildKit's way) and what `-o type=local` writes beside the rootfs.
//!
//! Documents are pure functions of their inputs: the SBOM of the same rootfs with
//! the same SOURCE_DATE_EPOCH has the same bytes. Nothing here sees a secret's value
//! or a registry credential (only secret ids reach [`provenance::Facts`]).

use std::collections::BTreeMap;

use kiln_oci::media;
use kiln_sbom::Inventory;
use serde_json::json;

use crate::options::attest::{Attestations, SbomFormat};

pub mod provenance;

pub use provenance::{Facts, Material};

pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";
pub const CYCLONEDX_PREDICATE: &str = "https://cyclonedx.org/bom";
/// Annotation of a referrer (and a BuildKit attestation layer) naming its predicate.
pub const PREDICATE_ANNOTATION: &str = "in-toto.io/predicate-type";
/// Annotation saying what an SBOM describes: `image`, `context` or `stage:NAME`.
pub const SCOPE_ANNOTATION: &str = "dev.kiln.sbom.scope";

/// What was scanned for one platform.
#[derive(Debug, Default)]
pub struct Scans {
    pub image: Inventory,
    pub context: Option<Inventory>,
    /// Intermediate stages by name, in build order.
    pub stages: Vec<(String, Inventory)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Sbom { format: SbomFormat, scope: String },
    Provenance,
}

/// One document ready to attach.
#[derive(Debug, Clone)]
pub struct Document {
    pub kind: Kind,
    /// The referrer's `artifactType` and its layer's media type.
    pub artifact_type: &'static str,
    pub predicate_type: &'static str,
    /// The SBOM document itself, or the provenance's in-toto statement.
    pub bytes: Vec<u8>,
    /// Its name in `-o type=local` (BuildKit: `sbom.spdx.json`, `provenance.json`).
    pub file_name: String,
    /// A failure to attach it is a warning (`ignore-error=true`).
    pub ignore_error: bool,
}

impl Document {
    /// The referrer manifest's annotations (sorted: deterministic bytes).
    pub fn annotations(&self, created: &str) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        a.insert("org.opencontainers.image.created".to_string(), created.to_string());
        a.insert(PREDICATE_ANNOTATION.to_string(), self.predicate_type.to_string());
        if let Kind::Sbom { scope, .. } = &self.kind {
            a.insert(SCOPE_ANNOTATION.to_string(), scope.clone());
        }
        a
    }

    /// The document as an in-toto statement about `subject` (BuildKit's attestation
    /// layers); provenance already is one.
    pub fn in_toto(&self, subject_name: &str, subject_digest: &str) -> Vec<u8> {
        if self.kind == Kind::Provenance {
            return self.bytes.clone();
        }
        let predicate: serde_json::Value = serde_json::from_slice(&self.bytes).unwrap_or(serde_json::Value::Null);
        let (alg, hex) = subject_digest.split_once(':').unwrap_or(("sha256", subject_digest));
        serde_json::to_vec(&json!({
            "_type": provenance::STATEMENT_TYPE,
            "subject": [{"name": subject_name, "digest": {alg: hex}}],
            "predicateType": self.predicate_type,
            "predicate": predicate,
        }))
        .unwrap_or_default()
    }
}

/// The image a platform's documents describe.
pub struct Subject<'a> {
    /// The first tag, or a name for an untagged build.
    pub image: &'a str,
    /// The platform manifest's digest.
    pub digest: &'a str,
    pub platform: &'a str,
}

/// Every document `req` asks for, for one platform.
pub fn documents(req: &Attestations, scans: Option<&Scans>, facts: &Facts, materials: &[Material], subject: &Subject, created: &str) -> Vec<Document> {
    let mut out = Vec::new();
    if let (Some(s), Some(scans)) = (&req.sbom, scans) {
        let mut scoped: Vec<(String, String, &Inventory)> = vec![("image".into(), "sbom".into(), &scans.image)];
        if let Some(c) = &scans.context {
            scoped.push(("context".into(), "sbom-context".into(), c));
        }
        for (name, inv) in &scans.stages {
            scoped.push((format!("stage:{name}"), format!("sbom-{}", file_safe(name)), inv));
        }
        for (scope, stem, inv) in scoped {
            let info = kiln_sbom::DocumentInfo {
                subject: kiln_sbom::Subject {
                    name: match scope.as_str() {
                        "image" => subject.image.to_string(),
                        other => format!("{} ({other})", subject.image),
                    },
                    digest: Some(subject.digest.to_string()),
                    platform: subject.platform.to_string(),
                },
                created: created.to_string(),
                tool: format!("kiln-{}", env!("CARGO_PKG_VERSION")),
            };
            for f in &s.formats {
                let (bytes, artifact_type, predicate_type, ext) = match f {
                    SbomFormat::Spdx => (kiln_sbom::spdx_json(inv, &info), media::SPDX_JSON, SPDX_PREDICATE, "spdx.json"),
                    SbomFormat::CycloneDx => (kiln_sbom::cyclonedx_json(inv, &info), media::CYCLONEDX_JSON, CYCLONEDX_PREDICATE, "cdx.json"),
                };
                out.push(Document {
                    kind: Kind::Sbom { format: *f, scope: scope.clone() },
                    artifact_type,
                    predicate_type,
                    bytes,
                    file_name: format!("{stem}.{ext}"),
                    ignore_error: s.ignore_error,
                });
            }
        }
    }
    if let Some(p) = &req.provenance {
        let builder = p.builder_id.clone().unwrap_or_else(provenance::default_builder_id);
        let name = provenance::subject_name(subject.image, subject.platform);
        out.push(Document {
            kind: Kind::Provenance,
            artifact_type: media::IN_TOTO_JSON,
            predicate_type: provenance::PREDICATE_TYPE,
            bytes: provenance::statement(p.mode, &builder, (&name, subject.digest), subject.platform, materials, facts),
            file_name: "provenance.json".into(),
            ignore_error: p.ignore_error,
        });
    }
    out
}

fn file_safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::attest::{Attestations, ProvenanceMode, ProvenanceRequest, SbomRequest};

    fn inventory(name: &str) -> Inventory {
        Inventory {
            distro: None,
            packages: vec![kiln_sbom::Package {
                ecosystem: kiln_sbom::Ecosystem::Npm,
                name: name.into(),
                version: "1.0.0".into(),
                purl: format!("pkg:npm/{name}@1.0.0"),
                licenses: vec!["MIT".into()],
                files: vec![format!("/app/node_modules/{name}/package.json")],
                found_at: format!("/app/node_modules/{name}/package.json"),
                arch: None,
                supplier: None,
            }],
            files_seen: 1,
            checksums: Default::default(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn one_document_per_format_and_scope_plus_provenance() {
        let req = Attestations {
            sbom: Some(SbomRequest { formats: vec![SbomFormat::Spdx, SbomFormat::CycloneDx], scan_context: true, scan_stage: true, ignore_error: true }),
            provenance: Some(ProvenanceRequest { mode: ProvenanceMode::Min, builder_id: None, ignore_error: false }),
            style: Default::default(),
        };
        let scans = Scans { image: inventory("a"), context: Some(inventory("b")), stages: vec![("build env".into(), inventory("c"))] };
        let digest = format!("sha256:{}", "1".repeat(64));
        let subject = Subject { image: "reg:5000/app:1", digest: &digest, platform: "linux/amd64" };
        let docs = documents(&req, Some(&scans), &Facts::default(), &[], &subject, "2023-11-14T22:13:20Z");
        let names: Vec<&str> = docs.iter().map(|d| d.file_name.as_str()).collect();
        assert_eq!(
            names,
            ["sbom.spdx.json", "sbom.cdx.json", "sbom-context.spdx.json", "sbom-context.cdx.json", "sbom-build_env.spdx.json", "sbom-build_env.cdx.json", "provenance.json"]
        );
        assert!(docs[..6].iter().all(|d| d.ignore_error) && !docs[6].ignore_error);
        assert_eq!(docs[0].artifact_type, media::SPDX_JSON);
        assert_eq!(docs[1].artifact_type, media::CYCLONEDX_JSON);
        assert_eq!(docs[6].artifact_type, media::IN_TOTO_JSON);
        let a = docs[4].annotations("2023-11-14T22:13:20Z");
        assert_eq!(a[SCOPE_ANNOTATION], "stage:build env");
        assert_eq!(a[PREDICATE_ANNOTATION], SPDX_PREDICATE);
        // Same inputs, same bytes.
        let again = documents(&req, Some(&scans), &Facts::default(), &[], &subject, "2023-11-14T22:13:20Z");
        assert!(docs.iter().zip(&again).all(|(x, y)| x.bytes == y.bytes));
        // BuildKit's layer: the document as the statement's predicate.
        let st: serde_json::Value = serde_json::from_slice(&docs[0].in_toto("pkg:docker/reg:5000/app@1", &digest)).unwrap();
        assert_eq!(st["predicateType"], SPDX_PREDICATE);
        assert_eq!(st["subject"][0]["digest"]["sha256"], "1".repeat(64));
        assert_eq!(st["predicate"], serde_json::from_slice::<serde_json::Value>(&docs[0].bytes).unwrap());
    }
}
