//! The oci-client transport for one registry host spoken to in one [`Mode`]: its
//! scheme, TLS settings (extra CAs, verification, a client identity through the
//! `mtls` relay) and credentials.

use std::sync::Arc;
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

use crate::error::RegistryError;
use crate::hosts::Mode;
use crate::mtls::{error_chain, Relay};
use crate::options::RegistryOptions;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A stalled connection is a dropped connection: retried.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
const USER_AGENT: &str = concat!("kiln/", env!("CARGO_PKG_VERSION"));

/// The oci-client transport for one registry host, with its credentials.
#[derive(Clone)]
pub(crate) struct Transport {
    pub client: oci_client::Client,
    pub auth: RegistryAuth,
    /// With an identity token, `auth` is anonymous and each repository and operation
    /// gets a Bearer token from this (see `oauth.rs`).
    pub identity: Option<Arc<crate::oauth::IdentityToken>>,
    /// `http://host` or `https://host`.
    pub base_url: String,
    /// The mutual-TLS relay oci-client speaks through; stops with the last clone.
    _relay: Option<Arc<Relay>>,
    /// kiln's own requests (`bounded.rs`): the same TLS settings and identity, direct.
    pub http: reqwest::Client,
    /// The bearer tokens oci-client was given or got, per repository, for kiln's own
    /// requests (oci-client keeps its cache to itself).
    tokens: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    /// When each (repository, push?) was last authenticated: `Registry::authenticate`
    /// does not ask again within [`AUTH_REUSE`] (oci-client's auth is a `/v2/`
    /// round trip, twice per cache probe otherwise).
    authed: Arc<std::sync::Mutex<std::collections::HashMap<(String, bool), std::time::Instant>>>,
}

/// How long an authentication is reused without asking the registry: shorter than
/// any bearer token registries hand out (Docker Hub's last 300 s).
pub(crate) const AUTH_REUSE: std::time::Duration = std::time::Duration::from_secs(60);

impl Transport {
    /// The bearer token for `repository`, if one was got.
    pub fn token(&self, repository: &str) -> Option<String> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(repository).cloned()
    }

    /// Whether (repository, push) was authenticated less than [`AUTH_REUSE`] ago.
    pub fn recently_authed(&self, repository: &str, push: bool) -> bool {
        let m = self.authed.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&(repository.to_string(), push)).is_some_and(|t| t.elapsed() < AUTH_REUSE)
    }

    pub fn mark_authed(&self, repository: &str, push: bool) {
        self.authed.lock().unwrap_or_else(|p| p.into_inner()).insert((repository.to_string(), push), std::time::Instant::now());
    }

    /// Keeps `token` for `repository`: a push token also reads, so it replaces a pull one.
    pub fn keep_token(&self, repository: &str, token: String) {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(repository.to_string(), token);
    }

    /// `{scheme}://{registry as oci-client names it}/v2/{repository}/{kind}/{reference}`.
    pub fn url(&self, r: &oci_client::Reference, kind: &str, reference: &str) -> String {
        let scheme = self.base_url.split("://").next().unwrap_or("https");
        format!("{scheme}://{}/v2/{}/{kind}/{reference}", r.resolve_registry(), r.repository())
    }

    /// `e` with the relay's reason when the relay could not reach the registry (its
    /// answer then is a 502, with no body for a HEAD).
    pub fn explain(&self, e: RegistryError) -> RegistryError {
        let Some(why) = self._relay.as_ref().and_then(|r| r.last_error()) else { return e };
        match e {
            RegistryError::Transport { op, target, mut message } if message.contains("502") && !message.contains(&why) => {
                message.push_str(&format!(" ({why})"));
                if let Some(hint) = crate::failure::tls_hint(&why, &target) {
                    message.push_str(&hint);
                }
                RegistryError::Transport { op, target, message }
            }
            e => e,
        }
    }
}

/// A reqwest client with the TLS settings of `mode` and the identity, if any.
fn tls_client(
    registry: &str,
    verify: bool,
    certs: &[reqwest::Certificate],
    identity: Option<reqwest::Identity>,
    what: &str,
) -> Result<reqwest::Client, RegistryError> {
    let mut b = reqwest::Client::builder()
        .danger_accept_invalid_certs(!verify)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(USER_AGENT)
        .tls_certs_merge(certs.to_vec());
    if let Some(id) = identity {
        b = b.identity(id);
    }
    b.build().map_err(|e| RegistryError::Transport {
        op: format!("setting up the {what} for"),
        target: registry.to_string(),
        message: error_chain(&e),
    })
}

/// The transport for `registry` in `mode`.
pub(crate) fn build(opts: &RegistryOptions, registry: &str, mode: Mode) -> Result<Transport, RegistryError> {
    let (tls, verify) = match mode {
        Mode::Http => (false, true),
        Mode::Https { verify } => (true, verify),
    };
    let cert_error = |p: &std::path::Path, message: String| RegistryError::Transport {
        op: "reading registry certificate for".into(),
        target: registry.to_string(),
        message: format!("{}: {message}", p.display()),
    };
    let mut pems = Vec::new();
    for p in &opts.ca_certs {
        pems.push((p, std::fs::read(p).map_err(|e| cert_error(p, e.to_string()))?));
    }
    let mut certs = Vec::new();
    for (p, data) in &pems {
        certs.extend(reqwest::Certificate::from_pem_bundle(data).map_err(|e| cert_error(p, e.to_string()))?);
    }
    let identity = match opts.client_cert(registry).filter(|_| tls) {
        Some(c) => Some(c.identity().map_err(|e| RegistryError::Transport {
            op: "reading the client certificate for".into(),
            target: registry.to_string(),
            message: format!("{}: {}", c.cert.display(), error_chain(&e)),
        })?),
        None => None,
    };
    // oci-client names docker.io's registry `index.docker.io` in its URLs.
    let resolved = oci_client::Reference::with_tag(registry.to_string(), "x".into(), "y".into()).resolve_registry().to_string();
    let hosts: Vec<String> = if resolved == registry { vec![registry.to_string()] } else { vec![registry.to_string(), resolved] };
    let relay = match &identity {
        Some(id) => {
            let upstream = tls_client(registry, verify, &certs, Some(id.clone()), "mutual-TLS client")?;
            let relay = Relay::start(hosts.clone(), upstream).map_err(|message| RegistryError::Transport {
                op: "starting mutual TLS for".into(),
                target: registry.to_string(),
                message,
            })?;
            Some(Arc::new(relay))
        }
        None => None,
    };
    let config = ClientConfig {
        // Through the relay, oci-client speaks plain HTTP (to the relay).
        protocol: if !tls || relay.is_some() { ClientProtocol::HttpsExcept(hosts) } else { ClientProtocol::Https },
        http_proxy: relay.as_ref().map(|r| r.proxy_url.clone()),
        // A streamed monolithic PUT: one request per blob, body read from
        // the store file as it goes (never the whole layer in memory).
        use_monolithic_push: true,
        // We select platforms ourselves (raw manifests).
        platform_resolver: None,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        extra_root_certificates: pems
            .iter()
            .map(|(_, data)| Certificate { encoding: CertificateEncoding::Pem, data: data.clone() })
            .collect(),
        accept_invalid_certificates: tls && !verify,
        user_agent: USER_AGENT,
        ..Default::default()
    };
    let scheme = if tls { "https" } else { "http" };
    let files = opts.auth_files.clone().unwrap_or_else(crate::auth::AuthFiles::from_env);
    let http = tls_client(registry, verify, &certs, identity, "HTTP client")?;
    let (auth, token) = match files.registry_auth(registry) {
        RegistryAuth::Basic(u, refresh) if u == crate::auth::IDENTITY_TOKEN_USER => {
            (RegistryAuth::Anonymous, Some(Arc::new(crate::oauth::IdentityToken::new(refresh, http.clone()))))
        }
        a => (a, None),
    };
    Ok(Transport {
        client: oci_client::Client::new(config),
        auth,
        identity: token,
        base_url: format!("{scheme}://{registry}"),
        _relay: relay,
        http,
        tokens: Default::default(),
        authed: Default::default(),
    })
}
