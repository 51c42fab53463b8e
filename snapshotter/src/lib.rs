//! Layer tars in and out.
//!
//! - [`apply::apply_layer`]: unpack an OCI layer (gzip/zstd/plain tar) into a
//!   directory in overlayfs format, safely (nothing is written outside it).
//! - [`diff::write_layer`]: turn an overlay upperdir into a canonical, gzipped OCI
//!   layer, computing diffID and digest in one streamed pass.
//! - [`snapshots::SnapshotStore`]: unpacked layers by diffID and overlay-mounted
//!   rootfs for running steps (the only place that knows overlayfs, with [`overlay`]).

pub mod apply;
pub mod diff;
pub mod error;
mod fsops;
mod links;
mod merged;
mod native;
pub mod overlay;
mod safepath;
pub mod snapshots;
mod sys;
pub mod whiteout;
pub mod xattr;

pub use apply::{apply_layer, apply_layer_onto, Applied};
pub use diff::{write_layer, Compression, DiffOptions, LayerDigests};
pub use snapshots::{ActiveSnapshot, SnapshotStore, SnapshotterKind};
pub use error::{ApplyError, DiffError};
