//! Where bytes live: the local content store (an OCI image layout), layout export,
//! image references, and the registry client (pull/push with retries and
//! docker-config credentials).

pub mod auth;
pub mod error;
pub mod layout;
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
