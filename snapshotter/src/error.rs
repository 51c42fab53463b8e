//! Error types. Every error about a tar entry names the entry (as it appeared in the
//! layer, lossily decoded) so that a user can find it; the caller adds which layer.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The layer stream itself could not be read or decompressed (truncated blob,
    /// corrupt gzip, bad tar header checksum...).
    #[error("reading layer stream: {0}")]
    Read(#[source] io::Error),

    /// The compression is not one we can decode.
    #[error("unsupported layer compression: {0}")]
    Unsupported(String),

    /// The target directory could not be opened.
    #[error("target directory {path}: {source}")]
    Target {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The entry would write outside the target, or is otherwise malformed in a way
    /// that we refuse rather than guess about.
    #[error("layer entry {path:?}: {reason}")]
    Unsafe { path: String, reason: String },

    /// A hardlink whose target is not present in this layer. Each layer is unpacked
    /// into its own directory (an overlay lowerdir), so a link to a file of a lower
    /// layer cannot be made.
    #[error(
        "layer entry {path:?}: hardlink target {target:?} is not an earlier entry of this layer \
         (links into lower layers are not supported)"
    )]
    HardlinkTarget { path: String, target: String },

    /// A filesystem operation failed for this entry.
    #[error("layer entry {path:?}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// A thread creating files for the unpack ended without reporting (a bug).
    #[error("unpacking: a file-creating worker thread stopped unexpectedly")]
    WorkerLost,
}

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// A file of the upper directory could not be read.
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// Something in the upper directory cannot be represented in a layer.
    #[error("{path}: {reason}")]
    Unrepresentable { path: PathBuf, reason: String },

    /// Writing the tar/gzip stream to the output failed.
    #[error("writing layer: {0}")]
    Write(#[source] io::Error),
}

/// The `map_err` for a failed filesystem operation on the entry `path`.
pub(crate) fn io_err<'a>(path: &'a str, op: &'static str) -> impl FnOnce(io::Error) -> ApplyError + 'a {
    move |source| ApplyError::Io { path: path.to_string(), op, source }
}

pub(crate) fn unsafe_err(path: &str, reason: impl Into<String>) -> ApplyError {
    ApplyError::Unsafe { path: path.to_string(), reason: reason.into() }
}
