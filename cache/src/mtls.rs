//! Mutual TLS (`--registry-client-cert REGISTRY=CERT,KEY`): the client identity,
//! read and checked from PEM files, and the loopback relay that presents it.
//!
//! oci-client builds its own HTTP client and cannot be given an identity. So a
//! registry with one is spoken to through a relay: oci-client sends plain HTTP for
//! `http://REGISTRY/…` to it as its HTTP proxy, and the relay sends each request on
//! to `https://REGISTRY/…` with the identity (and the registry's CA and verification
//! setting), streaming both bodies. The registry's absolute `https://REGISTRY` URLs
//! (upload locations, token realms) are turned back into `http://` ones so that they
//! come back through it. The relay listens on 127.0.0.1 only, takes a per-process
//! secret as proxy credentials (another local user cannot borrow the identity), and
//! forwards to this registry only.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};

/// A client identity for one registry: a PEM certificate (chain) and its key.
#[derive(Clone)]
pub struct ClientCert {
    /// `host[:port]` (or `host`, for every port) as given.
    pub registry: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificates of `cert` and the key of `key`, as one PEM text.
    pem: Vec<u8>,
}

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        write!(f, "ClientCert({}={},{})", self.registry, self.cert.display(), self.key.display())
    }
}

/// A client certificate or key file that cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ClientCertError {
    pub path: PathBuf,
    pub message: String,
}

/// The PEM blocks (`-----BEGIN LABEL-----` … `-----END LABEL-----`) of `text`, with their labels.
fn pem_blocks(text: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("-----BEGIN ") {
        let after = &rest[i + 11..];
        let Some(j) = after.find("-----") else { break };
        let label = &after[..j];
        let end = format!("-----END {label}-----");
        let Some(k) = rest[i..].find(&end) else { break };
        out.push((label, &rest[i..i + k + end.len()]));
        rest = &rest[i + k + end.len()..];
    }
    out
}

impl ClientCert {
    /// Reads `cert` (PEM certificates, the leaf first) and `key` (a PEM private key:
    /// PKCS#8, PKCS#1 RSA or SEC1 EC, unencrypted) for `registry`.
    pub fn load(registry: &str, cert: &Path, key: &Path) -> Result<ClientCert, ClientCertError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| ClientCertError { path: p.to_path_buf(), message: e.to_string() })
        };
        let bad = |p: &Path, m: &str| ClientCertError { path: p.to_path_buf(), message: m.to_string() };
        let (cert_text, key_text) = (read(cert)?, read(key)?);
        let certs: Vec<&str> = pem_blocks(&cert_text).into_iter().filter(|(l, _)| *l == "CERTIFICATE").map(|(_, b)| b).collect();
        if certs.is_empty() {
            return Err(bad(cert, "no PEM certificate (-----BEGIN CERTIFICATE-----) in it"));
        }
        let keys = pem_blocks(&key_text);
        if keys.iter().any(|(l, _)| *l == "ENCRYPTED PRIVATE KEY") {
            return Err(bad(key, "the private key is encrypted; give it unencrypted (openssl pkey -in KEY -out PLAIN)"));
        }
        let Some((_, key_block)) = keys.iter().find(|(l, _)| matches!(*l, "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY")) else {
            return Err(bad(key, "no PEM private key (-----BEGIN PRIVATE KEY-----) in it"));
        };
        let mut pem = certs.join("\n").into_bytes();
        pem.push(b'\n');
        pem.extend_from_slice(key_block.as_bytes());
        pem.push(b'\n');
        let c = ClientCert { registry: registry.to_string(), cert: cert.to_path_buf(), key: key.to_path_buf(), pem };
        // A client built with it checks that the key is one rustls can sign with.
        reqwest::Client::builder()
            .identity(c.identity().map_err(|e| bad(key, &e.to_string()))?)
            .build()
            .map_err(|e| bad(key, &format!("not a usable key for {}: {}", cert.display(), error_chain(&e))))?;
        Ok(c)
    }

    pub(crate) fn identity(&self) -> reqwest::Result<reqwest::Identity> {
        reqwest::Identity::from_pem(&self.pem)
    }
}

/// An error with its sources (reqwest's own message hides the cause).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

/// A running relay for one registry; stops when dropped.
pub(crate) struct Relay {
    /// `http://kiln:SECRET@127.0.0.1:PORT`: oci-client's HTTP proxy.
    pub proxy_url: String,
    task: tokio::task::AbortHandle,
    shared: Arc<Shared>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    /// The names the registry's requests carry (`registry`, and oci-client's
    /// resolved form of it, e.g. docker.io's `index.docker.io`).
    hosts: Vec<String>,
    /// `Basic base64(kiln:SECRET)`.
    proxy_auth: HeaderValue,
    upstream: reqwest::Client,
    /// The last failure to reach the registry: oci-client sees a 502 (without a
    /// body for HEAD), the error message gets this (`Relay::last_error`). Kept, not
    /// taken: requests run in parallel, and each failed one must be explained.
    last_error: std::sync::Mutex<Option<String>>,
}

const HOP_BY_HOP: &[&str] =
    &["connection", "proxy-connection", "keep-alive", "proxy-authorization", "proxy-authenticate", "te", "trailer", "transfer-encoding", "upgrade"];

fn secret() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl Relay {
    /// Listens on a free 127.0.0.1 port, in the current tokio runtime; `upstream`
    /// holds the identity and the TLS settings.
    pub fn start(hosts: Vec<String>, upstream: reqwest::Client) -> Result<Relay, String> {
        use base64::Engine as _;
        let rt = tokio::runtime::Handle::try_current().map_err(|e| format!("no async runtime for the mutual-TLS relay: {e}"))?;
        let secret = secret().map_err(|e| format!("reading /dev/urandom: {e}"))?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding the mutual-TLS relay: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("kiln:{secret}"));
        let shared = Arc::new(Shared {
            hosts,
            proxy_auth: HeaderValue::from_str(&format!("Basic {auth}")).map_err(|e| e.to_string())?,
            upstream,
            last_error: std::sync::Mutex::new(None),
        });
        let task = {
            let _guard = rt.enter();
            let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
            rt.spawn(accept_loop(listener, shared.clone())).abort_handle()
        };
        Ok(Relay { proxy_url: format!("http://kiln:{secret}@{addr}"), task, shared })
    }

    /// Why the registry could not be reached, the last time it could not.
    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    // Connections end with the relay: their tasks are aborted with it.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: let connections end rather than spin.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        conns.spawn(async move {
            let service = hyper::service::service_fn(move |req| forward(req, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
        while conns.try_join_next().is_some() {}
    }
}

fn plain(status: StatusCode, message: String) -> Response<reqwest::Body> {
    let mut r = Response::new(reqwest::Body::from(message));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Turns `https://HOST` into `http://HOST` in `value` for the relayed hosts.
fn downgrade(value: &HeaderValue, hosts: &[String]) -> Option<HeaderValue> {
    let v = value.to_str().ok()?;
    let mut out = v.to_string();
    for h in hosts {
        out = out.replace(&format!("https://{h}/"), &format!("http://{h}/")).replace(&format!("https://{h}\""), &format!("http://{h}\""));
    }
    (out != v).then(|| HeaderValue::from_str(&out).ok()).flatten()
}

async fn forward(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<reqwest::Body>, Infallible> {
    if req.headers().get(header::PROXY_AUTHORIZATION) != Some(&shared.proxy_auth) {
        let mut r = plain(StatusCode::PROXY_AUTHENTICATION_REQUIRED, "kiln's mutual-TLS relay: wrong proxy credentials".into());
        r.headers_mut().insert(header::PROXY_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"kiln\""));
        return Ok(r);
    }
    let uri = req.uri().clone();
    let host = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_default();
    if uri.scheme_str() != Some("http") || !shared.hosts.contains(&host) {
        return Ok(plain(StatusCode::FORBIDDEN, format!("kiln's mutual-TLS relay for {} does not forward to {uri}", shared.hosts[0])));
    }
    let url = format!("https://{host}{}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let (parts, body) = req.into_parts();
    let has_body = parts.headers.contains_key(header::CONTENT_LENGTH) || parts.headers.contains_key(header::TRANSFER_ENCODING);
    let mut headers: HeaderMap = parts.headers;
    for h in HOP_BY_HOP.iter().chain(&["host"]) {
        headers.remove(*h);
    }
    let mut rb = shared.upstream.request(parts.method, &url).headers(headers);
    if has_body {
        rb = rb.body(reqwest::Body::wrap(body));
    }
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) => {
            let message = format!("mutual TLS to https://{host} failed: {}", error_chain(&e));
            *shared.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(message.clone());
            return Ok(plain(StatusCode::BAD_GATEWAY, message));
        }
    };
    let mut out: Response<reqwest::Body> = resp.into();
    let h = out.headers_mut();
    for name in HOP_BY_HOP {
        h.remove(*name);
    }
    for name in [header::LOCATION, header::WWW_AUTHENTICATE] {
        let values: Vec<HeaderValue> = h.get_all(&name).iter().map(|v| downgrade(v, &shared.hosts).unwrap_or_else(|| v.clone())).collect();
        if !values.is_empty() {
            h.remove(&name);
            for v in values {
                h.append(&name, v);
            }
        }
    }
    Ok(out)
}
