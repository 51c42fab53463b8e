//! Identity tokens: the OAuth2 refresh token that `docker login` stores as
//! `identitytoken` in config.json (Azure Container Registry, and registries whose
//! login goes through an identity provider), or that a credential helper returns
//! with the user name `<token>`.
//!
//! oci-client only knows Basic credentials and ready-made Bearer tokens, so the
//! exchange is done here, as docker does it: the registry's `/v2/` challenge names
//! the token endpoint (realm) and service; a `POST` there with
//! `grant_type=refresh_token` and the scope of one repository and operation answers
//! with an access token, which the transport then uses as a Bearer token for that
//! repository. Access tokens are kept until shortly before they expire.
//!
//! The refresh token and access tokens are never formatted into messages.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why an exchange failed. The texts hold no secret.
#[derive(Debug)]
pub(crate) enum OAuthError {
    /// The connection failed or the server had trouble (5xx): worth retrying.
    Transient(String),
    /// Refused or malformed: retrying would not help.
    Refused(String),
}

/// The `Bearer` challenge of a registry: where to get tokens, for which service.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub realm: String,
    pub service: Option<String>,
}

/// Parse `Bearer realm="…",service="…",scope="…"` (parameter order free, values
/// quoted or not). `None` when it is not a Bearer challenge.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let rest = header.trim();
    let (scheme, params) = rest.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut chars = params.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect::<String>().trim().to_string();
        }
        fields.insert(key.trim().to_ascii_lowercase(), value);
    }
    Some(Challenge { realm: fields.remove("realm")?, service: fields.remove("service") })
}

/// `application/x-www-form-urlencoded` of one value.
fn form_encode(s: &str) -> String {
    kiln_oci::percent::encode_unreserved(s)
}

/// The scope docker asks for: `repository:NAME:pull` or `…:pull,push`.
pub(crate) fn scope(repository: &str, push: bool) -> String {
    format!("repository:{repository}:{}", if push { "pull,push" } else { "pull" })
}

/// A refresh token for one registry, and the access tokens it got.
pub(crate) struct IdentityToken {
    refresh: String,
    http: reqwest::Client,
    /// scope → (access token, usable until).
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

impl IdentityToken {
    pub(crate) fn new(refresh: String, http: reqwest::Client) -> Self {
        IdentityToken { refresh, http, tokens: Mutex::new(HashMap::new()) }
    }

    /// An access token for `repository` on `registry` (`base_url` = scheme://host).
    pub(crate) async fn access_token(&self, base_url: &str, repository: &str, push: bool) -> Result<String, OAuthError> {
        let scope = scope(repository, push);
        if let Some((t, until)) = self.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(&scope) {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        let transient = |what: &str, e: reqwest::Error| OAuthError::Transient(format!("{what}: {e}"));
        let res = self
            .http
            .get(format!("{base_url}/v2/"))
            .send()
            .await
            .map_err(|e| transient("asking the registry for its token endpoint", e))?;
        let header = res
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        let Some(challenge) = header.as_deref().and_then(parse_challenge) else {
            return Err(OAuthError::Refused(format!(
                "the registry did not name a token endpoint (status {}), which an identity token needs",
                res.status()
            )));
        };
        let mut body = format!(
            "grant_type=refresh_token&refresh_token={}&scope={}&client_id=kiln",
            form_encode(&self.refresh),
            form_encode(&scope)
        );
        if let Some(s) = &challenge.service {
            body.push_str(&format!("&service={}", form_encode(s)));
        }
        let realm_host = reqwest::Url::parse(&challenge.realm)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "the token endpoint".into());
        let res = self
            .http
            .post(&challenge.realm)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| transient(&format!("exchanging the identity token at {realm_host}"), e))?;
        let status = res.status();
        if status.is_server_error() {
            return Err(OAuthError::Transient(format!("token endpoint {realm_host} answered {status}")));
        }
        if !status.is_success() {
            return Err(OAuthError::Refused(format!(
                "token endpoint {realm_host} refused the identity token ({status}); log in again (`docker login`)"
            )));
        }
        let bytes = res.bytes().await.map_err(|e| transient(&format!("reading the answer of {realm_host}"), e))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|_| OAuthError::Refused(format!("token endpoint {realm_host} answered something that is not JSON")))?;
        let token = v["access_token"].as_str().or_else(|| v["token"].as_str()).filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(OAuthError::Refused(format!("token endpoint {realm_host} answered without an access token")));
        };
        // The spec's default lifetime is 60 s; renew 10 s early.
        let life = v["expires_in"].as_u64().unwrap_or(60).max(20);
        let until = Instant::now() + Duration::from_secs(life - 10);
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(scope, (token.to_string(), until));
        Ok(token.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#),
            Some(Challenge { realm: "https://auth.example/token".into(), service: Some("registry.example".into()) })
        );
        assert_eq!(
            parse_challenge(r#"bearer service="s", realm="http://127.0.0.1:1/t""#),
            Some(Challenge { realm: "http://127.0.0.1:1/t".into(), service: Some("s".into()) })
        );
        assert_eq!(
            parse_challenge("Bearer realm=https://x/t"),
            Some(Challenge { realm: "https://x/t".into(), service: None })
        );
        assert_eq!(parse_challenge(r#"Basic realm="registry""#), None);
        assert_eq!(parse_challenge(r#"Bearer service="no realm""#), None);
    }

    #[test]
    fn form_values_are_escaped() {
        assert_eq!(form_encode("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
        assert_eq!(form_encode("a+b c&d=e"), "a%2Bb%20c%26d%3De");
        assert_eq!(scope("team/app", true), "repository:team/app:pull,push");
    }
}
