//! What one attempt of a registry operation can fail with: whether it is retried,
//! and the error the user finally sees (naming the operation and repository, with a
//! hint for denied access and TLS trouble).

use std::future::Future;
use std::io;

use oci_client::errors::{OciDistributionError, OciErrorCode};

use crate::error::{RegistryError, StoreError};
use crate::reference::Reference;
use crate::retry::{is_transient, retry};

/// What one attempt of an operation can fail with; decides retrying and the final error.
#[derive(Debug)]
pub(crate) enum Failure {
    /// From oci-client: retried if transient.
    Oci(OciDistributionError),
    /// A body stream broke mid-way: retried.
    Stream(io::Error),
    /// Local store trouble: not retried.
    Store(StoreError),
    /// The registry sent something wrong (size mismatch, bad JSON): not retried.
    Bad(String),
    /// A failure worth retrying that did not come from oci-client.
    Transient(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Oci(e) => {
                // reqwest's message alone ("error sending request") hides the cause
                // (refused, reset, TLS: unknown issuer…): add the chain of sources.
                write!(f, "{e}")?;
                let mut src = std::error::Error::source(e);
                let mut last = e.to_string();
                while let Some(s) = src {
                    let m = s.to_string();
                    if !last.contains(&m) {
                        write!(f, ": {m}")?;
                    }
                    last = m;
                    src = s.source();
                }
                Ok(())
            }
            Failure::Stream(e) => write!(f, "{e}"),
            Failure::Store(e) => write!(f, "{e}"),
            Failure::Bad(m) | Failure::Transient(m) => write!(f, "{m}"),
        }
    }
}

impl From<OciDistributionError> for Failure {
    fn from(e: OciDistributionError) -> Self {
        Failure::Oci(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

fn transient(f: &Failure) -> bool {
    match f {
        Failure::Oci(e) => is_transient(e),
        Failure::Stream(_) | Failure::Transient(_) => true,
        Failure::Store(_) | Failure::Bad(_) => false,
    }
}

pub(crate) fn into_error(op: String, target: String, f: Failure) -> RegistryError {
    match f {
        Failure::Store(source) => RegistryError::Store { op, target, source },
        Failure::Bad(message) => RegistryError::BadContent { op, target, message },
        other if is_not_found(&other) => RegistryError::NotFound { op, target, message: other.to_string() },
        other => {
            let mut message = other.to_string();
            if is_denied(&other) {
                // Say what to do: credentials come from docker's config.json.
                let host = target.split('/').next().unwrap_or(&target);
                message.push_str(&format!(
                     " (access denied: check the credentials for {host} in docker's config.json — `docker login {host}` — or in $REGISTRY_AUTH_FILE)"
                ));
            }
            let plain_http_to_tls = (message.contains("400 Bad Request") || message.contains("HTTP request to an HTTPS server")) && message.contains("http://");
            if plain_http_to_tls && !message.contains("certificate") {
                // A loopback registry is spoken to over HTTP unless told otherwise;
                // a 400 there usually means it speaks TLS.
                message.push_str(" (the registry may speak TLS:");
                message.push_str(" give its CA with --registry-certificate FILE, or --insecure-registry to skip verification)");
            } else if let Some(hint) = tls_hint(&message, &target) {
                message.push_str(&hint);
            }
            RegistryError::Transport { op, target, message }
        }
    }
}

/// Kaniko's known tag-immutability refusals (`pkg/executor/push.go` errTagImmutable,
/// with the fork's wording of ECR's).
const TAG_IMMUTABLE: &[&str] = &[
    "The repository has enabled tag immutability",
    "cannot be overwritten because the repository is immutable",
    "cannot be overwritten because the tag is immutable",
];

/// Whether a registry's refusal is one of [`TAG_IMMUTABLE`].
pub(crate) fn is_tag_immutable(message: &str) -> bool {
    TAG_IMMUTABLE.iter().any(|m| message.contains(m))
}

/// What to do about a TLS failure in `message` with `target` (`registry/repository`).
pub(crate) fn tls_hint(message: &str, target: &str) -> Option<String> {
    let host = target.split('/').next().unwrap_or(target);
    // The server's alerts when it wants a client certificate (none, or one it does
    // not trust): Go sends bad_certificate or certificate_required.
    if ["alert: BadCertificate", "alert: CertificateRequired", "alert: UnknownCA"].iter().any(|a| message.contains(a)) {
        return Some(format!(
            " (the registry refused the TLS handshake: it may require a client certificate; give one with --registry-client-cert {host}=CERT,KEY, signed by a CA it trusts)"
        ));
    }
    if message.contains("certificate") {
        return Some(format!(" (TLS: trust the registry's CA with --registry-certificate FILE, or use --insecure-registry {host})"));
    }
    // With TLS 1.3 the client's side of the handshake ends before the server has
    // judged its certificate: a registry that wants one then just drops the
    // connection, and all that is left is that it went away.
    const DROPPED: &[&str] = &["connection was not ready", "connection closed before message completed", "Connection reset by peer", "unexpected EOF"];
    (message.contains("https://") && DROPPED.iter().any(|d| message.contains(d))).then(|| {
        format!(" (the registry closed the TLS connection: it may require a client certificate; give one with --registry-client-cert {host}=CERT,KEY, signed by a CA it trusts)")
    })
}

fn is_not_found(f: &Failure) -> bool {
    match f {
        Failure::Oci(OciDistributionError::ImageManifestNotFoundError(_)) => true,
        Failure::Oci(OciDistributionError::ServerError { code, .. }) => *code == 404,
        Failure::Oci(OciDistributionError::RequestError(e)) => e.status().is_some_and(|s| s.as_u16() == 404),
        Failure::Oci(OciDistributionError::RegistryError { envelope, .. }) => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::BlobUnknown | OciErrorCode::NotFound
            )
        }),
        _ => false,
    }
}

fn is_denied(f: &Failure) -> bool {
    match f {
        Failure::Oci(OciDistributionError::UnauthorizedError { .. })
        | Failure::Oci(OciDistributionError::AuthenticationFailure(_)) => true,
        Failure::Oci(OciDistributionError::ServerError { code, .. }) => *code == 401 || *code == 403,
        Failure::Oci(OciDistributionError::RequestError(e)) => {
            e.status().is_some_and(|s| s.as_u16() == 401 || s.as_u16() == 403)
        }
        Failure::Oci(OciDistributionError::RegistryError { envelope, .. }) => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)),
        _ => false,
    }
}

/// Runs `f` with retries; on final failure, an error naming `op` and `r`'s repository.
pub(crate) async fn attempt<T, F, Fut>(attempts: u32, op: String, r: &Reference, f: F) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let what = format!("{op} {}", r.name());
    retry(attempts, &what, transient, f).await.map_err(|e| into_error(op, r.name(), e))
}

#[cfg(test)]
mod tests {
    use super::tls_hint;

    #[test]
    fn tls_failures_get_the_flag_that_helps() {
        let t = "reg:5000/app";
        let alert = "error sending request: received fatal alert: CertificateRequired";
        assert!(tls_hint(alert, t).is_some_and(|h| h.contains("--registry-client-cert reg:5000=")));
        let unknown = "error sending request: invalid peer certificate: UnknownIssuer";
        assert!(tls_hint(unknown, t).is_some_and(|h| h.contains("--registry-certificate")));
        // TLS 1.3: the server drops the connection after the handshake (seen from a
        // registry that requires a client certificate).
        let dropped = "error sending request for url (https://reg:5000/v2/): client error (Canceled): operation was canceled: connection was not ready";
        assert!(tls_hint(dropped, t).is_some_and(|h| h.contains("--registry-client-cert")));
        // Plain HTTP that went away is not a TLS matter.
        assert_eq!(tls_hint("error sending request for url (http://reg:5000/v2/): connection was not ready", t), None);
        assert_eq!(tls_hint("manifest unknown", t), None);
    }
}
