//! OCI 1.1 referrers: artifact manifests whose `subject` names another manifest
//! (kiln's SBOM and provenance attestations), pushed and listed.
//!
//! A registry with the referrers API indexes a manifest with a `subject` itself (it
//! answers the PUT with `OCI-Subject`); one without it (distribution 2.8, the
//! `docker-registry` of Debian) needs the client to keep the referrers tag schema:
//! an image index tagged `sha256-<hex of the subject>` listing every referrer.
//! oci-client does not show the PUT's response headers, so support is decided by
//! asking: after the push, the subject's referrers are listed (the referrers API,
//! which oci-client falls back from to the tag schema on 404); if the new manifest is
//! not among them, kiln adds it to the tag-schema index (read, merge, write back:
//! existing entries are kept, none is listed twice).

use std::collections::BTreeMap;

use kiln_oci::{media, Descriptor, Digest, IndexEntry};
use oci_client::RegistryOperation;
use serde_json::{json, Value};

use crate::error::RegistryError;
use crate::hosts::Purpose;
use crate::reference::Reference;
use crate::registry::Registry;
use crate::store::ContentStore;

/// The digest of the empty JSON object `{}`: an artifact manifest's config.
pub const EMPTY_JSON_DIGEST: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// One referrer of a subject, as a referrers index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// How a referrer was made findable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferrerPush {
    /// The registry lists it through its referrers API.
    Api,
    /// kiln listed it in the referrers tag schema's index under this tag.
    TagSchema { tag: String },
}

/// The bytes of an OCI 1.1 artifact manifest: the empty config, one layer, the
/// subject, `artifactType` and annotations (sorted keys: same input, same bytes).
pub fn artifact_manifest(artifact_type: &str, layer: &Descriptor, subject: &Descriptor, annotations: &BTreeMap<String, String>) -> Vec<u8> {
    let desc = |d: &Descriptor| json!({"mediaType": d.media_type().to_string(), "digest": d.digest().to_string(), "size": d.size()});
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": media::OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2, "data": "e30="},
        "layers": [desc(layer)],
        "subject": desc(subject),
    });
    if !annotations.is_empty() {
        m["annotations"] = json!(annotations);
    }
    serde_json::to_vec(&m).unwrap_or_default()
}

/// The referrers tag schema's tag for `subject`: `sha256-<hex>`.
pub fn tag_for(subject: &Digest) -> String {
    subject.to_string().replace(':', "-")
}

/// An index entry with the `mediaType`, `artifactType` and string annotations of
/// `v` (a referrer manifest, or an entry of a referrers index).
fn entry_from(v: &Value, digest: &Digest, size: u64) -> IndexEntry {
    let mut e = IndexEntry::new(v["mediaType"].as_str().unwrap_or(media::OCI_MANIFEST), digest, size);
    if let Some(t) = v["artifactType"].as_str() {
        e = e.with_artifact_type(t);
    }
    for (k, val) in v["annotations"].as_object().into_iter().flatten() {
        if let Some(val) = val.as_str() {
            e = e.annotate(k, val);
        }
    }
    e
}

/// The index entry a referrers index has for the artifact manifest `bytes`.
fn entry_of(bytes: &[u8]) -> Result<IndexEntry, String> {
    let m: Value = serde_json::from_slice(bytes).map_err(|e| format!("the referrer is not JSON: {e}"))?;
    Ok(entry_from(&m, &Digest::of(bytes), bytes.len() as u64))
}

/// The entries of an existing referrers index, with `add` appended unless listed.
pub fn merge_index(existing: Option<&[u8]>, add: IndexEntry) -> Result<Vec<IndexEntry>, String> {
    let mut entries = Vec::new();
    if let Some(bytes) = existing {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("the referrers index is not JSON: {e}"))?;
        let list = v["manifests"].as_array().ok_or("the referrers tag holds no image index (no `manifests`)")?;
        for m in list {
            let digest: Digest = m["digest"].as_str().unwrap_or_default().parse().map_err(|e| format!("a referrers index entry: {e}"))?;
            entries.push(entry_from(m, &digest, m["size"].as_u64().unwrap_or(0)));
        }
    }
    if !entries.iter().any(|e| e.digest == add.digest) {
        entries.push(add);
    }
    Ok(entries)
}

impl Registry {
    /// Pushes the referrer `manifest` (an OCI manifest with a `subject`) by digest into
    /// `repo`'s repository after its `blobs` (read from `store`), and makes it listable
    /// as a referrer of `subject`: through the referrers API where the registry has
    /// one, else in the referrers tag schema.
    pub async fn push_referrer(
        &self,
        repo: &Reference,
        store: &ContentStore,
        manifest: &[u8],
        blobs: &[Descriptor],
        subject: &Digest,
    ) -> Result<ReferrerPush, RegistryError> {
        let bad = |message: String| RegistryError::BadContent { op: "attaching a referrer in".into(), target: repo.name(), message };
        let entry = entry_of(manifest).map_err(bad)?;
        let digest = entry.digest.clone();
        self.push_image(&repo.with_digest(digest.clone()), store, manifest, media::OCI_MANIFEST, blobs, &[]).await?;

        let tag = tag_for(subject);
        let tag_ref = repo.with_tag(&tag).map_err(|e| bad(e.to_string()))?;
        let registry = self.for_destinations();
        let existing = registry.get_manifest(&tag_ref).await?;
        match &existing {
            // Already listed (an earlier push of the same attestation).
            Some((b, _)) if merge_index(Some(b), entry.clone()).map_err(bad)?.len() == index_len(b) => {
                return Ok(ReferrerPush::TagSchema { tag });
            }
            Some(_) => {}
            None => {
                if registry.referrers(repo, subject, None).await?.iter().any(|r| r.digest == digest) {
                    return Ok(ReferrerPush::Api);
                }
            }
        }
        let entries = merge_index(existing.as_ref().map(|(b, _)| b.as_slice()), entry).map_err(bad)?;
        let index = kiln_oci::index_json(media::OCI_INDEX, &entries);
        self.push_image(&tag_ref, store, &index, media::OCI_INDEX, &[], &[]).await?;
        Ok(ReferrerPush::TagSchema { tag })
    }

    /// The referrers of `subject` in `repo`'s repository (the referrers API, else the
    /// tag schema; none is an empty list), only of `artifact_type` when given.
    pub async fn referrers(&self, repo: &Reference, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Referrer>, RegistryError> {
        let t = self.transport(repo.registry(), Purpose::Pull)?;
        self.authenticate(&t, repo, RegistryOperation::Pull).await?;
        let oref = repo.with_digest(subject.clone()).to_oci();
        let url = t.url(&oref, "referrers", &subject.to_string());
        let deadline = self.answer_deadline();
        let listed = self
            .attempt(&t, format!("listing the referrers of {} in", subject.short()), repo, || async {
                Ok(crate::bounded::get(&t, &url, oref.repository(), media::OCI_INDEX, crate::bounded::MAX_MANIFEST, deadline).await?.bytes)
            })
            .await;
        // No referrers API (404): the tag schema's index, if there is one.
        let bytes = match listed {
            Ok(b) => b,
            Err(RegistryError::NotFound { .. }) => {
                let tag_ref = repo.with_tag(&subject.to_string().replace(':', "-")).map_err(|e| bad_entry(repo, e.to_string()))?;
                match self.fetch_manifest(&t, &tag_ref).await {
                    Ok((b, _)) => b,
                    Err(RegistryError::NotFound { .. }) => return Ok(Vec::new()),
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let index: oci_client::manifest::OciImageIndex = serde_json::from_slice(&bytes).map_err(|e| bad_entry(repo, format!("the referrers index: {e}")))?;
        let mut out = Vec::new();
        for m in index.manifests {
            let digest: Digest = m.digest.parse().map_err(|e: kiln_oci::DigestError| bad_entry(repo, format!("entry {}: {e}", m.digest)))?;
            if artifact_type.is_some_and(|want| m.artifact_type.as_deref() != Some(want)) {
                continue;
            }
            out.push(Referrer {
                digest,
                size: u64::try_from(m.size).unwrap_or(0),
                media_type: m.media_type,
                artifact_type: m.artifact_type,
                annotations: m.annotations.unwrap_or_default(),
            });
        }
        Ok(out)
    }
}

fn index_len(bytes: &[u8]) -> usize {
    serde_json::from_slice::<Value>(bytes).ok().and_then(|v| v["manifests"].as_array().map(Vec::len)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(mt: &str, d: &Digest, size: u64) -> Descriptor {
        Descriptor::new(mt.into(), size, d.to_string().parse::<oci_spec::image::Digest>().unwrap())
    }

    #[test]
    fn empty_json_digest_is_that_of_braces() {
        assert_eq!(Digest::of(b"{}").to_string(), EMPTY_JSON_DIGEST);
    }

    #[test]
    fn artifact_manifest_shape_and_determinism() {
        let layer = desc(media::SPDX_JSON, &Digest::of(b"doc"), 3);
        let subject = desc(media::OCI_MANIFEST, &Digest::of(b"image"), 5);
        let ann: BTreeMap<String, String> = [("b".to_string(), "2".to_string()), ("a".to_string(), "1".to_string())].into();
        let bytes = artifact_manifest(media::SPDX_JSON, &layer, &subject, &ann);
        assert_eq!(bytes, artifact_manifest(media::SPDX_JSON, &layer, &subject, &ann));
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["artifactType"], media::SPDX_JSON);
        assert_eq!(v["config"]["mediaType"], media::OCI_EMPTY);
        assert_eq!(v["config"]["digest"], EMPTY_JSON_DIGEST);
        assert_eq!(v["layers"][0]["digest"], Digest::of(b"doc").to_string());
        assert_eq!(v["subject"]["digest"], Digest::of(b"image").to_string());
        assert_eq!(v["subject"]["size"], 5);
        assert!(String::from_utf8(bytes).unwrap().contains(r#""annotations":{"a":"1","b":"2"}"#));
        let e = entry_of(&artifact_manifest(media::SPDX_JSON, &layer, &subject, &ann)).unwrap();
        assert_eq!(e.artifact_type.as_deref(), Some(media::SPDX_JSON));
        assert_eq!(e.annotations, [("a".to_string(), "1".to_string()), ("b".to_string(), "2".to_string())]);
    }

    #[test]
    fn tag_schema_name_and_merge() {
        let d = Digest::of(b"x");
        assert_eq!(tag_for(&d), format!("sha256-{}", d.hex()));
        let a = IndexEntry::new(media::OCI_MANIFEST, &Digest::of(b"a"), 1).with_artifact_type(media::SPDX_JSON);
        let b = IndexEntry::new(media::OCI_MANIFEST, &Digest::of(b"b"), 2).with_artifact_type(media::IN_TOTO_JSON).annotate("k", "v");
        let first = merge_index(None, a.clone()).unwrap();
        let bytes = kiln_oci::index_json(media::OCI_INDEX, &first);
        let both = merge_index(Some(&bytes), b.clone()).unwrap();
        assert_eq!(both.len(), 2);
        assert_eq!(both[1].annotations, [("k".to_string(), "v".to_string())]);
        let again = merge_index(Some(&kiln_oci::index_json(media::OCI_INDEX, &both)), a).unwrap();
        assert_eq!(again.len(), 2, "a referrer is listed once");
        assert_eq!(again[0].artifact_type.as_deref(), Some(media::SPDX_JSON));
        assert!(merge_index(Some(b"{\"schemaVersion\":2}"), b.clone()).unwrap_err().contains("no image index"));
        assert!(merge_index(Some(b"not json"), b).is_err());
    }
}

fn bad_entry(repo: &Reference, message: String) -> RegistryError {
    RegistryError::BadContent { op: "listing referrers in".into(), target: repo.name(), message }
}
