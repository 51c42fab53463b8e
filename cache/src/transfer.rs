//! Counters of registry traffic, for a progress display that wants to show it.

/// Blob bytes moved so far (see `RegistryOptions::transferred`).
#[derive(Debug, Default)]
pub struct Transferred {
    pub pulled: std::sync::atomic::AtomicU64,
    pub pushed: std::sync::atomic::AtomicU64,
}
