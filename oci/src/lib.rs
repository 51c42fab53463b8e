//! Small OCI types shared by kiln's crates.
//!
//! `snapshotter` and `cache` both speak in digests and descriptors; keeping those
//! here (and not in `builder`) lets the dependency arrows point one way.
//! Manifests, indexes and descriptors come from `oci-spec`; the image config is our
//! own struct because `oci-spec` drops `Healthcheck`/`OnBuild`/`Shell` and writes maps
//! in random order (non-reproducible digests).

pub mod config;
pub mod digest;
pub mod index;
pub mod media;
pub mod percent;
pub mod platform;

pub use config::{HealthConfig, History, ImageConfig, RootFs, RunConfig};
pub use digest::{BackgroundSha256Reader, Digest, DigestError, Sha256Reader, Sha256Writer};
pub use index::{index_json, IndexEntry};
pub use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
pub use platform::{Platform, PlatformError};
