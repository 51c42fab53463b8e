//! The Bearer token flow: `docker-registry` configured for token auth, and a tiny
//! token server on 127.0.0.1 (std threads) that checks Basic credentials and signs
//! RS256 JWTs with `openssl`. Credentials come from docker's config.json; the client
//! must fetch tokens for the right scopes, push and pull, and never show the password.
//! Its own test binary: it sets `DOCKER_CONFIG`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine;
use common::*;
use kiln_cache::{parse_platform, ContentStore, Registry, RegistryOptions};

const USER: &str = "tok";
const PASSWORD: &str = "bearer-pw-7731";
const SERVICE: &str = "kiln-test-registry";
const ISSUER: &str = "kiln-test-issuer";
/// The identity (OAuth2 refresh) token the token server accepts.
const REFRESH: &str = "refresh-tok/+=9913";

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn openssl(args: &[&str], dir: &Path) -> Vec<u8> {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is missing");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Signs a token granting `scopes` (`repository:NAME:ACTIONS`).
fn token(dir: &Path, scopes: &[String]) -> String {
    let der = std::fs::read(dir.join("cert.der")).unwrap();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(&der)]});
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut p = s.splitn(3, ':');
            let (t, name, actions) = (p.next()?, p.next()?, p.next()?);
            Some(serde_json::json!({"type": t, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let claims = serde_json::json!({"iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 300,
        "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", scopes.len()), "access": access});
    let signing_input = format!(
        "{}.{}",
        b64url(&serde_json::to_vec(&header).unwrap()),
        b64url(&serde_json::to_vec(&claims).unwrap())
    );
    let input = dir.join(format!("input-{}", std::process::id()));
    let f = tempfile::NamedTempFile::new_in(dir).unwrap();
    std::fs::write(f.path(), &signing_input).unwrap();
    let _ = input;
    let sig = openssl(&["dgst", "-sha256", "-sign", "key.pem", f.path().to_str().unwrap()], dir);
    format!("{signing_input}.{}", b64url(&sig))
}

/// `%XX` and `+` of a form or query value.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// The token server: `GET /token?service=…&scope=…` with Basic auth, and the OAuth2
/// `POST /token` with `grant_type=refresh_token` (identity tokens).
fn start_token_server(dir: &Path, log: Arc<Mutex<Vec<String>>>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let dir = dir.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let target = line.split(' ').nth(1).unwrap_or("").to_string();
                let mut authz = String::new();
                let mut length = 0usize;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            authz = v.trim().to_string();
                        }
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                if line.starts_with("POST ") {
                    let mut body = vec![0u8; length];
                    std::io::Read::read_exact(&mut r, &mut body).unwrap();
                    let body = String::from_utf8(body).unwrap();
                    let field = |k: &str| {
                        body.split('&').find_map(|kv| kv.strip_prefix(&format!("{k}="))).map(unescape).unwrap_or_default()
                    };
                    let ok = field("grant_type") == "refresh_token" && field("refresh_token") == REFRESH && field("service") == SERVICE;
                    let scopes: Vec<String> = field("scope").split(' ').map(str::to_string).collect();
                    log.lock().unwrap().push(format!("{} {}", if ok { "refresh-ok" } else { "refresh-denied" }, scopes.join(" ")));
                    let resp = if ok {
                        let t = token(&dir, &scopes);
                        let body = serde_json::json!({"access_token": t, "expires_in": 300, "scope": scopes.join(" ")}).to_string();
                        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    } else {
                        let body = r#"{"error":"invalid_grant"}"#;
                        format!("HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    };
                    let _ = conn.write_all(resp.as_bytes());
                    return;
                }
                let want = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
                );
                let query = target.split_once('?').map(|x| x.1).unwrap_or("");
                let scopes: Vec<String> = query
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("scope="))
                    .map(|s| s.replace("%3A", ":").replace("%2F", "/").replace("%2C", ",").replace('+', " "))
                    .flat_map(|s| s.split(' ').map(str::to_string).collect::<Vec<_>>())
                    .collect();
                log.lock().unwrap().push(format!("{} {}", if authz == want { "ok" } else { "denied" }, scopes.join(" ")));
                let resp = if authz == want {
                    let t = token(&dir, &scopes);
                    let body = serde_json::json!({"token": t, "access_token": t, "expires_in": 300}).to_string();
                    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                } else {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                };
                let _ = conn.write_all(resp.as_bytes());
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    openssl(
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=kiln-token-issuer"],
        dir,
    );
    std::fs::write(dir.join("cert.der"), openssl(&["x509", "-in", "cert.pem", "-outform", "DER"], dir)).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let port = start_token_server(dir, log.clone());
    let reg = TestRegistry::start_with_auth_config(&format!(
        "  token:\n    realm: http://127.0.0.1:{port}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        dir.join("cert.pem").display()
    ));

    let store = ContentStore::open(&dir.join("s")).unwrap();
    let img = make_image(&store, "linux/amd64", 4000, false);
    let r = reg.reference("team/tokened:v1");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let cfg = dir.join("docker");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("config.json"), format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host)).unwrap();
    std::env::set_var("DOCKER_CONFIG", &cfg);

    let client = Registry::new(RegistryOptions::default());
    let rep = client.push_image(&r, &store, &img.manifest, img.manifest_type, &img.blobs, &[]).await.unwrap();
    assert_eq!(rep.uploaded.len(), 2);
    let dst = ContentStore::open(&dir.join("d")).unwrap();
    let pulled = Registry::new(RegistryOptions::default())
        .pull_image(&r, &parse_platform("linux/amd64").unwrap(), &dst)
        .await
        .unwrap();
    assert_eq!(pulled.manifest_bytes, img.manifest);
    let seen = log.lock().unwrap().clone();
    eprintln!("token requests: {seen:#?}");
    assert!(seen.iter().any(|l| l.starts_with("ok ") && l.contains("repository:team/tokened:") && l.contains("push")), "{seen:?}");
    assert!(seen.iter().any(|l| l == "ok repository:team/tokened:pull"), "{seen:?}");

    // Wrong password: the token server refuses; the error names the registry and
    // repository, and holds no secret.
    let wrong = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}x"));
    std::fs::write(cfg.join("config.json"), format!(r#"{{"auths":{{"{}":{{"auth":"{wrong}"}}}}}}"#, reg.host)).unwrap();
    let err = Registry::new(RegistryOptions::default())
        .pull_image(&r, &parse_platform("linux/amd64").unwrap(), &dst)
        .await
        .unwrap_err();
    let msg = format!("{err} {err:?}");
    eprintln!("{err}");
    assert!(msg.contains(&format!("{}/team/tokened", reg.host)), "{msg}");
    assert!(!msg.contains(PASSWORD) && !msg.contains(&wrong) && !msg.contains(&auth), "{msg}");
    assert!(log.lock().unwrap().iter().any(|l| l.starts_with("denied")));

    // An identity token, stored as `docker login` does for ACR (an all-zero user with
    // an empty password in `auth`, and the refresh token): exchanged for access
    // tokens per repository and operation, never sent as Basic credentials.
    let zero = base64::engine::general_purpose::STANDARD.encode("00000000-0000-0000-0000-000000000000:");
    std::fs::write(
        cfg.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{zero}","identitytoken":"{REFRESH}"}}}}}}"#, reg.host),
    )
    .unwrap();
    log.lock().unwrap().clear();
    let r2 = reg.reference("team/identity:v1");
    let rep = Registry::new(RegistryOptions::default())
        .push_image(&r2, &store, &img.manifest, img.manifest_type, &img.blobs, &[])
        .await
        .unwrap();
    assert_eq!(rep.uploaded.len(), 2);
    let dst2 = ContentStore::open(&dir.join("d2")).unwrap();
    let pulled = Registry::new(RegistryOptions::default())
        .pull_image(&r2, &parse_platform("linux/amd64").unwrap(), &dst2)
        .await
        .unwrap();
    assert_eq!(pulled.manifest_bytes, img.manifest);
    let seen = log.lock().unwrap().clone();
    eprintln!("token requests with an identity token: {seen:#?}");
    assert!(seen.contains(&"refresh-ok repository:team/identity:pull,push".to_string()), "{seen:?}");
    assert!(seen.contains(&"refresh-ok repository:team/identity:pull".to_string()), "{seen:?}");
    assert!(seen.iter().all(|l| l.starts_with("refresh-")), "no Basic token request: {seen:?}");

    // A refresh token the server does not accept: a clear error, no token in it.
    std::fs::write(
        cfg.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"identitytoken":"stale-{REFRESH}"}}}}}}"#, reg.host),
    )
    .unwrap();
    let err = Registry::new(RegistryOptions::default())
        .pull_image(&r2, &parse_platform("linux/amd64").unwrap(), &dst2)
        .await
        .unwrap_err();
    let msg = format!("{err} {err:?}");
    eprintln!("{err}");
    assert!(msg.contains(&format!("{}/team/identity", reg.host)), "{msg}");
    assert!(msg.contains("refused the identity token"), "{msg}");
    assert!(!msg.contains(REFRESH), "{msg}");
}
