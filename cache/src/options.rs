//! What a registry client is told: hosts and TLS, mirrors and rewrites, client
//! identities, retries, concurrency, credentials (`RegistryOptions`).

use std::sync::Arc;

use crate::hosts::Leniency;
use crate::mtls::ClientCert;
pub use crate::transfer::Transferred;

/// Default bound on blobs transferred at once per image (`max_concurrent_transfers`).
pub const CONCURRENCY: usize = 4;
/// Default number of retries after a failed attempt (`--push-retry`).
pub const DEFAULT_RETRIES: u32 = 3;

#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// `--insecure-registry host[:port]`: plain HTTP, or TLS without verification
    /// if it speaks TLS, for pulls and pushes (the Docker daemon's meaning).
    /// `localhost`, 127.0.0.0/8 and ::1 are plain HTTP unless they speak TLS.
    pub insecure: Vec<String>,
    /// Kaniko's per-purpose switches: what pulls (base images, `--cache-from`) and
    /// pushes (destinations, `--cache-to`, the `--cache-repo` cache both ways) may
    /// do short of verified TLS.
    pub pull: Leniency,
    pub push: Leniency,
    /// `--registry-client-cert REGISTRY=CERT,KEY`: mutual TLS with that registry.
    pub client_certs: Vec<ClientCert>,
    /// `--registry-mirror host[:port][/prefix]`: tried in order for `docker.io` pulls,
    /// falling back to the next and finally to docker.io itself.
    pub mirrors: Vec<String>,
    /// `--skip-default-registry-fallback`: with mirrors, an image none of them
    /// serves is an error rather than a pull from docker.io.
    pub skip_default_fallback: bool,
    /// `--push-ignore-immutable-tag-errors`: a manifest PUT refused because the tag
    /// is immutable (the messages Kaniko recognises) counts as pushed, with a warning.
    pub ignore_immutable_tags: bool,
    /// `--registry-map FROM=TO`: pulls of a name starting with `FROM`
    /// (`registry[/repository-prefix]`, matched at a `/` boundary) go to `TO` instead,
    /// without fallback. The first matching entry wins.
    pub registry_map: Vec<(String, String)>,
    /// `--registry-certificate FILE`: extra PEM CA certificates trusted for TLS.
    pub ca_certs: Vec<std::path::PathBuf>,
    /// `--push-retry N`: retries after a failed attempt of any operation on 429, 5xx
    /// and dropped connections (so N+1 attempts), with exponential backoff from 200ms.
    pub retries: u32,
    /// Blobs transferred at once per image (pull and push).
    pub max_concurrent_transfers: usize,
    /// Where credentials come from; `None`: the environment's usual files
    /// ([`crate::auth::AuthFiles::from_env`]).
    pub auth_files: Option<crate::auth::AuthFiles>,
    /// Counts the bytes of blobs pulled and pushed, for a progress display.
    pub transferred: Option<Arc<Transferred>>,
    /// How long a registry may take to send a whole manifest, index or referrers
    /// list (each attempt), and the window over which a blob must arrive at
    /// [`MIN_BLOB_RATE`](crate::MIN_BLOB_RATE) on average; a stalled or dripping
    /// answer is then a transient failure.
    pub answer_deadline: std::time::Duration,
}


impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: Vec::new(),
            pull: Leniency::default(),
            push: Leniency::default(),
            client_certs: Vec::new(),
            mirrors: Vec::new(),
            skip_default_fallback: false,
            ignore_immutable_tags: false,
            registry_map: Vec::new(),
            ca_certs: Vec::new(),
            retries: DEFAULT_RETRIES,
            max_concurrent_transfers: CONCURRENCY,
            auth_files: None,
            transferred: None,
            answer_deadline: std::time::Duration::from_secs(60),
        }
    }
}

impl RegistryOptions {
    /// The client identity for `registry` (`host[:port]`, or one given for its host).
    pub(crate) fn client_cert(&self, registry: &str) -> Option<&ClientCert> {
        let host = crate::hosts::host_of(registry);
        self.client_certs.iter().find(|c| c.registry == registry).or_else(|| self.client_certs.iter().find(|c| c.registry == host))
    }
}
