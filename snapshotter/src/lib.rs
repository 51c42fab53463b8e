//! Layer tars in and out.
//!
//! - [`apply::apply_layer_onto`]: unpack an OCI layer (gzip/zstd/plain tar) into a
//!   directory in overlayfs format, safely (nothing is written outside it), resolving
//!   parents and hardlinks through the merged view of the layers below.
//! - [`diff::write_layer`]: turn an overlay-format upper directory into a canonical
//!   OCI layer (gzip, zstd or uncompressed), computing diffID and digest in one
//!   streamed pass.
//! - [`snapshots::SnapshotStore`]: unpacked layers by diffID and a writable rootfs per
//!   step, either overlayfs ([`SnapshotterKind::Overlay`]) or a copied rootfs with a
//!   walk-and-compare diff ([`SnapshotterKind::Native`]); both hand back their changes
//!   in overlay format through [`ActiveSnapshot::diff`], so one writer serves both.

pub mod apply;
pub mod bundle;
pub mod diff;
mod entry_meta;
pub mod error;
mod fsops;
pub mod gunzip;
pub mod lazy;
mod links;
mod merged;
mod native;
pub mod overlay;
pub mod pgzip;
mod safepath;
pub mod side_by_side;
pub mod skeleton;
pub mod snapshots;
mod sys;
mod unpack_pool;
mod workers;
pub mod whiteout;
pub mod xattr;

pub use apply::{apply_layer, apply_layer_onto, apply_layer_onto_with_workers, Applied};
pub use diff::{write_layer, Compression, DiffOptions, LayerDigests};
pub use native::wait_past_ctime;
pub use snapshots::{ActiveSnapshot, SnapshotStore, SnapshotterKind};
pub use error::{ApplyError, DiffError};
