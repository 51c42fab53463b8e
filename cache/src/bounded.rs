//! kiln's own GET for what a registry sends that is held in memory: manifests,
//! indexes and referrers lists. oci-client reads such answers whole (`bytes()`), so a
//! registry that sends gigabytes, or a body without end, grew kiln until it was killed.
//! Here every such body has a size cap ([`MAX_MANIFEST`], 4 MiB) and the
//! whole answer a deadline (a slow-loris registry sending a byte just before each read
//! timeout cannot hold a build for hours). Same TLS settings and credentials as
//! oci-client's requests; a redirect to another host carries no credentials (reqwest
//! drops `Authorization` when the host or port changes).

use std::time::{Duration, Instant};

use oci_client::errors::{OciDistributionError, OciEnvelope};
use oci_client::secrets::RegistryAuth;
use reqwest::{header, StatusCode};

use crate::failure::Failure;
use crate::transport::Transport;

/// The largest manifest, index or referrers list kiln reads: 4 MiB, the ceiling of
/// distribution (which stores none larger) and containers/image; real ones are KiBs.
pub const MAX_MANIFEST: u64 = 4 << 20;

/// The slowest a blob may arrive, on average over each `answer_deadline` window:
/// far below any working link, far above a registry dripping bytes to beat the
/// per-read timeout (which alone would let a 1 GB layer take years).
pub const MIN_BLOB_RATE: u64 = 4 << 10;

/// Counts a blob's bytes and fails when a whole window passed below [`MIN_BLOB_RATE`].
pub(crate) struct RateFloor {
    window: Duration,
    started: Instant,
    bytes: u64,
}

impl RateFloor {
    pub fn new(window: Duration) -> Self {
        RateFloor { window, started: Instant::now(), bytes: 0 }
    }

    pub fn add(&mut self, n: usize) -> Result<(), Failure> {
        self.bytes += n as u64;
        let elapsed = self.started.elapsed();
        if elapsed < self.window {
            return Ok(());
        }
        if self.bytes < MIN_BLOB_RATE * elapsed.as_secs().max(1) {
            return Err(Failure::Transient(format!(
                "the blob arrived at {} bytes/s over {}s, below kiln's floor of {MIN_BLOB_RATE} bytes/s",
                self.bytes / elapsed.as_secs().max(1),
                elapsed.as_secs()
            )));
        }
        // A new window: a link that was fast must not carry a later stall.
        self.started = Instant::now();
        self.bytes = 0;
        Ok(())
    }
}

/// A body that came back in full, with the registry's `Docker-Content-Digest`.
pub(crate) struct Body {
    pub bytes: Vec<u8>,
    pub digest_header: Option<String>,
}

/// `GET url` with `accept`, the bearer token kiln got for `repository` (or the Basic
/// credentials), at most `max` bytes within `deadline`. Statuses become the errors
/// oci-client gives for them, so retrying and "not found" work as for its requests.
pub(crate) async fn get(t: &Transport, url: &str, repository: &str, accept: &str, max: u64, deadline: Duration) -> Result<Body, Failure> {
    let started = Instant::now();
    let late = || Failure::Transient(format!("the registry did not send its answer to GET {url} within {}s", deadline.as_secs()));
    let mut rb = t.http.get(url).header(header::ACCEPT, accept);
    rb = match (t.token(repository), &t.auth) {
        (Some(token), _) => rb.bearer_auth(token),
        (None, RegistryAuth::Basic(user, password)) => rb.basic_auth(user, Some(password)),
        _ => rb,
    };
    let mut res = tokio::time::timeout(deadline, rb.send()).await.map_err(|_| late())?.map_err(OciDistributionError::from)?;
    let status = res.status();
    let digest_header = res.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
    // An error body is only read for its message: a few KiB are enough.
    let cap = if status.is_success() { max } else { 64 << 10 };
    if let Some(n) = res.content_length().filter(|n| *n > cap && status.is_success()) {
        return Err(too_big(url, Some(n), max));
    }
    let mut bytes = Vec::new();
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        let chunk = tokio::time::timeout(left, res.chunk()).await.map_err(|_| late())?.map_err(OciDistributionError::from)?;
        let Some(chunk) = chunk else { break };
        if bytes.len() as u64 + chunk.len() as u64 > cap {
            if !status.is_success() {
                bytes.extend_from_slice(&chunk[..(cap as usize).saturating_sub(bytes.len())]);
                break;
            }
            return Err(too_big(url, None, max));
        }
        bytes.extend_from_slice(&chunk);
    }
    check_status(status, &bytes, url)?;
    Ok(Body { bytes, digest_header })
}

fn too_big(url: &str, announced: Option<u64>, max: u64) -> Failure {
    let size = announced.map(|n| format!(" ({n} bytes announced)")).unwrap_or_default();
    Failure::Bad(format!("the answer to GET {url} is larger than {} MiB{size}: kiln reads no manifest, index or referrers list larger than that", max >> 20))
}

/// The error oci-client makes of a status (its `validate_registry_response`).
pub(crate) fn check_status(status: StatusCode, body: &[u8], url: &str) -> Result<(), Failure> {
    let e = match status {
        StatusCode::OK => return Ok(()),
        StatusCode::UNAUTHORIZED => OciDistributionError::UnauthorizedError { url: url.to_string() },
        s if s.is_success() => OciDistributionError::SpecViolationError(format!("expected HTTP status 200, got {s}")),
        s if s.is_client_error() => match serde_json::from_slice::<OciEnvelope>(body) {
            Ok(envelope) => OciDistributionError::RegistryError { envelope, url: url.to_string() },
            Err(_) => server_error(s, body, url),
        },
        s => server_error(s, body, url),
    };
    Err(Failure::Oci(e))
}

fn server_error(s: StatusCode, body: &[u8], url: &str) -> OciDistributionError {
    OciDistributionError::ServerError { code: s.as_u16(), url: url.to_string(), message: String::from_utf8_lossy(body).chars().take(500).collect() }
}

