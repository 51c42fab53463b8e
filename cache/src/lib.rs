//! Where bytes live: the local content store (an OCI image layout, with `df`/`prune`
//! under a store lock), layout export, image references, the registry client
//! (pull/push with retries, mirrors, docker/podman credentials) and the layer cache
//! (local, `--cache-repo`, `--cache-from/--cache-to type=registry`).

pub mod auth;
pub mod error;
pub mod gc;
pub mod layercache;
pub mod layout;
pub mod lock;
pub mod platform;
pub mod reference;
pub mod registry;
pub mod retry;
pub mod store;

pub use error::{ReferenceError, RegistryError, StoreError};
pub use platform::parse_platform;
pub use reference::Reference;
pub use registry::{PulledImage, PushReport, Registry, RegistryOptions};
pub use store::{export_layout, BlobWriter, ContentStore};
pub use gc::{DiskUsage, PruneOptions, PruneReport, Usage};
pub use layercache::{
    CacheError, CacheKey, CacheOptions, CacheRecord, LayerCache, LayerRecord, LocalCache, RegistryCache,
};
