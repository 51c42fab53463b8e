//! The one writer of image-index JSON (multi-platform images, OCI layouts and
//! archives, `kiln index create`), so every index kiln writes has the same shape:
//! `schemaVersion`, `mediaType`, then `manifests` in the order given, each with
//! `mediaType`, `digest`, `size` and, when known, `platform` and `annotations`.
//! Keys are written sorted (serde_json's map), so the same index gives the same bytes.

use serde_json::{json, Value};

use crate::Digest;

/// One manifest an index names.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// OCI 1.1 `artifactType` (entries of a referrers index).
    pub artifact_type: Option<String>,
    /// The platform object (`architecture`, `os`, `variant`, `os.version`, ...).
    pub platform: Option<Value>,
    pub annotations: Vec<(String, String)>,
}

impl IndexEntry {
    pub fn new(media_type: &str, digest: &Digest, size: u64) -> Self {
        IndexEntry { media_type: media_type.to_string(), digest: digest.clone(), size, artifact_type: None, platform: None, annotations: Vec::new() }
    }

    pub fn with_platform(mut self, platform: Value) -> Self {
        self.platform = Some(platform);
        self
    }

    pub fn with_artifact_type(mut self, artifact_type: &str) -> Self {
        self.artifact_type = Some(artifact_type.to_string());
        self
    }

    pub fn annotate(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.to_string(), value.to_string()));
        self
    }
}

/// The bytes of an index of `media_type` (OCI index or Docker manifest list).
pub fn index_json(media_type: &str, entries: &[IndexEntry]) -> Vec<u8> {
    let manifests: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut m = json!({"mediaType": e.media_type, "digest": e.digest.to_string(), "size": e.size});
            if let Some(t) = &e.artifact_type {
                m["artifactType"] = json!(t);
            }
            if let Some(p) = &e.platform {
                m["platform"] = p.clone();
            }
            if !e.annotations.is_empty() {
                let a: serde_json::Map<String, Value> = e.annotations.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                m["annotations"] = Value::Object(a);
            }
            m
        })
        .collect();
    serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests})).expect("JSON values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_order() {
        let d = Digest::of(b"x");
        let e = [
            IndexEntry::new("application/vnd.oci.image.manifest.v1+json", &d, 7)
                .with_platform(json!({"os": "linux", "architecture": "arm64"})),
            IndexEntry::new("application/vnd.oci.image.manifest.v1+json", &d, 7).annotate("org.opencontainers.image.ref.name", "1"),
        ];
        let v: Value = serde_json::from_slice(&index_json("application/vnd.oci.image.index.v1+json", &e)).unwrap();
        assert_eq!(v["schemaVersion"], 2);
        assert_eq!(v["manifests"][0]["platform"]["architecture"], "arm64");
        assert!(v["manifests"][0].get("annotations").is_none());
        assert_eq!(v["manifests"][1]["annotations"]["org.opencontainers.image.ref.name"], "1");
        assert!(v["manifests"][1].get("platform").is_none());
        assert_eq!(v["manifests"][1]["size"], 7);
    }
}
