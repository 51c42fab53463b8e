//! Where bytes live: the local content store (an OCI image layout, with `df`/`prune`
//! under a store lock), layout export, image references, the registry client
//! (pull/push with retries, mirrors, docker/podman credentials) and the layer cache
//! (local, `--cache-repo`, `--cache-from/--cache-to type=registry|local`).
//!
//! How a build uses it:
//! ```text
//! let store = ContentStore::open(&root.join("content"))?;      // shared store lock, held while `store` lives
//! let registry = Registry::new(RegistryOptions { insecure, mirrors, registry_map, ca_certs, retries, ..Default::default() });
//! let mut caches: Vec<Box<dyn LayerCache>> = vec![Box::new(LocalCache::new(store.clone(), CacheOptions { ttl, ..Default::default() }))];
//! caches.push(Box::new(RegistryCache::repo(registry.clone(), cache_repo, opts)));          // --cache-repo
//! caches.push(Box::new(RegistryCache::manifest(registry.clone(), from, to, opts)));        // --cache-from/--cache-to
//! let hits = caches[i].probe_many(&keys).await;      // all keys, concurrently, no layer downloaded
//! caches[i].fetch_layer(&record, &store).await?;     // only when a later step needs the filesystem
//! caches[i].put(&record, &store).await?;             // after a step ran (layer blob already in the store)
//! caches[i].mark_used(&hit, &store);                 // a hit the build took: exported too
//! caches[i].set_image_keys(&keys);                   // the image's steps: all mode=min exports
//! caches[i].flush(&store).await?;                    // end of a successful build (--cache-to export)
//! registry.push_image(&r, &store, &m, mt, &blobs, &cache.repositories()).await?; // mounts cached layers
//! store.df()?; store.prune(&PruneOptions { all, keep_storage, until })?;
//! ```

pub mod auth;
mod bounded;
pub mod error;
mod failure;
pub mod gc;
pub mod images;
mod hosts;
mod mtls;
pub mod layercache;
pub mod layout;
pub mod lock;
mod oauth;
mod options;
pub mod platform;
pub mod reference;
pub mod referrers;
pub mod registry;
pub mod registrycache;
pub mod retry;
pub mod store;
mod transfer;
mod transport;

pub use bounded::{MAX_MANIFEST, MIN_BLOB_RATE};
pub use error::{ReferenceError, RegistryError, StoreError};
pub use platform::parse_platform;
pub use reference::Reference;
pub use registry::{ClientCert, ClientCertError, Hosts, Leniency, PulledImage, PushReport, Registry, RegistryOptions};
pub use layout::export_layout;
pub use store::{BlobWriter, ContentStore};
pub use gc::{DiskUsage, PruneOptions, PruneReport, Usage};
pub use layercache::{CacheError, CacheKey, CacheOptions, CacheRecord, LayerCache, LayerRecord, LocalCache};
pub use registrycache::RegistryCache;

#[cfg(test)]
mod fuzz_parsers;
