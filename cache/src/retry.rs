//! Bounded retries around registry operations.
//!
//! oci-client has none (DESIGN.md). We retry only what is likely transient —
//! connection failures/timeouts, HTTP 429 and 5xx — `attempts` in all (by default
//! 1 + `RegistryOptions::retries` = 4), sleeping 200ms, 400ms, 800ms, … (capped at
//! 10s). Anything else (404, 401, digest mismatch) fails at once.

use std::future::Future;
use std::time::Duration;

use oci_client::errors::{OciDistributionError, OciErrorCode};

pub const ATTEMPTS: u32 = 3;
pub const BASE_DELAY: Duration = Duration::from_millis(200);
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// Whether an error from the transport is worth another attempt.
pub fn is_transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(r) => {
            r.is_connect()
                || r.is_timeout()
                || r.is_body()
                || r.is_request()
                || r.status().is_some_and(|s| s.as_u16() == 429 || s.is_server_error())
        }
        OciDistributionError::ServerError { code, .. } => *code == 429 || *code >= 500,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::Toomanyrequests)),
        OciDistributionError::IoError(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// Runs `f` up to `attempts` times (at least once) while it fails with a transient
/// error. `what` is only used for the log line.
pub async fn retry<T, E, F, Fut>(attempts: u32, what: &str, classify: impl Fn(&E) -> bool, mut f: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt + 1 < attempts && classify(&e) => {
                let delay = (BASE_DELAY * 2u32.saturating_pow(attempt.min(16))).min(MAX_DELAY);
                tracing::warn!("{what}: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn server(code: u16) -> OciDistributionError {
        OciDistributionError::ServerError { code, url: "u".into(), message: "m".into() }
    }

    #[tokio::test]
    async fn retries_transient_then_succeeds() {
        let n = AtomicU32::new(0);
        let r: Result<u32, _> = retry(ATTEMPTS, "op", is_transient, || async {
            let i = n.fetch_add(1, Ordering::SeqCst);
            if i < 2 { Err(server(503)) } else { Ok(i) }
        })
        .await;
        assert_eq!(r.unwrap(), 2);
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_three() {
        let n = AtomicU32::new(0);
        let r: Result<(), _> = retry(ATTEMPTS, "op", is_transient, || async {
            n.fetch_add(1, Ordering::SeqCst);
            Err(server(429))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(n.load(Ordering::SeqCst), ATTEMPTS);
    }

    #[tokio::test]
    async fn does_not_retry_permanent() {
        let n = AtomicU32::new(0);
        let r: Result<(), _> = retry(ATTEMPTS, "op", is_transient, || async {
            n.fetch_add(1, Ordering::SeqCst);
            Err(server(404))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }
}
