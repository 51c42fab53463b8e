//! Error types of the cache crate.
//!
//! Every message says what was being done and on what (a blob digest, a path, a
//! `registry/repository`), so that a user reading it knows where to look. Registry
//! errors never include credentials: we only ever format our own `Reference`
//! (which has none) and the transport's message (URLs without userinfo).

use std::path::PathBuf;

use kiln_oci::Digest;

/// Errors of the local content store and of layout export.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {0} is not in the content store")]
    NotFound(Digest),
    #[error("digest mismatch writing blob: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {expected} in the content store is corrupt ({path} hashes to {actual}){}; removed: build again to fetch or rebuild", if *others > 0 { format!(", and {others} more") } else { String::new() })]
    Corrupt { path: PathBuf, expected: Digest, actual: Digest, others: usize },
    #[error("invalid content in {what}: {message}")]
    Invalid { what: String, message: String },
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io { op, path: path.into(), source }
    }
}

/// A reference string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

/// Errors talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A transport-level failure (after retries): `op` is e.g. "pushing blob sha256:… to",
    /// `target` is `registry/repository`.
    #[error("{op} {target}: {message}")]
    Transport { op: String, target: String, message: String },
    /// The registry says the manifest, blob or repository does not exist.
    #[error("{op} {target}: not found ({message})")]
    NotFound { op: String, target: String, message: String },
    /// Something wrong with what the registry sent us.
    #[error("{op} {target}: {message}")]
    BadContent { op: String, target: String, message: String },
    /// `--skip-default-registry-fallback`: no mirror served the image.
    #[error("{target}: not found on any --registry-mirror ({mirrors}), and --skip-default-registry-fallback keeps kiln from docker.io: {failures}")]
    NotOnMirrors { target: String, mirrors: String, failures: String },
    #[error("{target}: no image for platform {wanted} (available: {available})")]
    NoMatchingPlatform { target: String, wanted: String, available: String },
    #[error("{op} {target}: {source}")]
    Store {
        op: String,
        target: String,
        #[source]
        source: StoreError,
    },
}
