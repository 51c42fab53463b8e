//! Registry credentials from the CI environment.
//!
//! Before a build (or `kiln index create`), credentials given by the environment are
//! merged with the user's own and handed to the registry client through a private
//! docker config:
//!
//! | source (later wins) | form |
//! |---|---|
//! | `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` | docker's config.json |
//! | `$REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json` | podman's auth.json (same shape) |
//! | `CI_REGISTRY` + `CI_REGISTRY_USER` + `CI_REGISTRY_PASSWORD` | GitLab CI's predefined variables |
//! | `KILN_AUTH` | a path to a docker-style config.json, or that JSON inline (`{"auths":{…}}`) |
//! | `--authfile FILE` | a docker-style config.json |
//!
//! When any of the last three is present, the merged config is written to a fresh
//! 0700 directory under `$KILN_ROOT/tmp/` (file 0600) and the registry client is
//! given that one file (`RegistryOptions::auth_files`, no environment change: the
//! child re-executed inside the user namespace merges again from the same inputs);
//! the directory is removed when the returned guard drops. Entries are merged per
//! registry host (an entry replaces every key of the same host and any
//! `credHelpers` entry for it). Credentials are never printed: messages name the
//! variable or file, never what it holds.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};

/// The merged config; removes its private directory on drop.
pub struct Guard {
    dir: PathBuf,
}

impl Guard {
    /// The credential files for the registry client: the merged config alone.
    pub fn auth_files(&self) -> kiln_cache::auth::AuthFiles {
        kiln_cache::auth::AuthFiles { files: vec![self.dir.join("config.json")] }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The host part of a config key: `https://host/v1/` → `host`.
fn key_host(key: &str) -> &str {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// A config.json `auth` value: standard alphabet, padded (as docker writes it).
fn b64(input: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(input)
}

fn read_config(path: &Path, what: &str) -> Result<Option<Value>> {
    match std::fs::read(path) {
        Ok(b) => {
            let v: Value = serde_json::from_slice(&b)
                .map_err(|e| anyhow!("{what} {}: not valid JSON (line {})", path.display(), e.line()))?;
            if !v.is_object() {
                bail!("{what} {}: expected a JSON object like {{\"auths\":{{…}}}}", path.display());
            }
            Ok(Some(v))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!("{what} {}: {e}", path.display())),
    }
}

/// Merges `over` into `base` (docker config shape), `over` winning per registry host.
fn merge(base: &mut Value, over: &Value) {
    if !base.is_object() {
        *base = json!({});
    }
    if let Some(auths) = over.get("auths").and_then(Value::as_object) {
        for (k, v) in auths {
            let host = key_host(k).to_string();
            if let Some(b) = base.get_mut("auths").and_then(Value::as_object_mut) {
                b.retain(|bk, _| key_host(bk) != host);
            }
            if let Some(h) = base.get_mut("credHelpers").and_then(Value::as_object_mut) {
                h.retain(|bk, _| key_host(bk) != host);
            }
            let b = base.as_object_mut().expect("object").entry("auths").or_insert_with(|| json!({}));
            if !b.is_object() {
                *b = json!({});
            }
            b.as_object_mut().expect("object").insert(k.clone(), v.clone());
        }
    }
    if let Some(helpers) = over.get("credHelpers").and_then(Value::as_object) {
        for (k, v) in helpers {
            let host = key_host(k).to_string();
            if let Some(b) = base.get_mut("auths").and_then(Value::as_object_mut) {
                b.retain(|bk, _| key_host(bk) != host);
            }
            let h = base.as_object_mut().expect("object").entry("credHelpers").or_insert_with(|| json!({}));
            if !h.is_object() {
                *h = json!({});
            }
            h.as_object_mut().expect("object").insert(k.clone(), v.clone());
        }
    }
    // Other settings (proxies, …): kept from the first file that has them.
    if let Some(o) = over.as_object() {
        for (k, v) in o {
            if !["auths", "credHelpers", "credsStore"].contains(&k.as_str()) {
                base.as_object_mut().expect("object").entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    if let Some(s) = over.get("credsStore").filter(|s| s.is_string()) {
        base.as_object_mut().expect("object").insert("credsStore".into(), s.clone());
    }
}

/// An `auths` entry for `user:password`.
fn entry(user: &str, password: &str) -> Value {
    json!({"auth": b64(format!("{user}:{password}").as_bytes())})
}

/// What the environment and `--authfile` add, in order (later wins); empty when there
/// is nothing CI-specific. Each with a name for messages.
fn extra_sources(authfile: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    let (reg, user, pw) = (env("CI_REGISTRY"), env("CI_REGISTRY_USER"), env("CI_REGISTRY_PASSWORD"));
    match (&reg, &user, &pw) {
        (Some(r), Some(u), Some(p)) => {
            let host = key_host(r).to_string();
            let mut auths = Map::new();
            auths.insert(host, entry(u, p));
            out.push(("CI_REGISTRY_USER/CI_REGISTRY_PASSWORD".to_string(), json!({"auths": auths})));
        }
        (None, None, None) => {}
        _ => {
            let missing: Vec<&str> = [("CI_REGISTRY", &reg), ("CI_REGISTRY_USER", &user), ("CI_REGISTRY_PASSWORD", &pw)]
                .iter()
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| *k)
                .collect();
            tracing::warn!("ignoring GitLab registry credentials: {} not set", missing.join(", "));
            if reg.is_some() {
                crate::progress::get().warn(&format!("CI_REGISTRY is set but {} is not: no credentials taken from it", missing.join(" and ")));
            }
        }
    }
    if let Some(a) = env("KILN_AUTH") {
        let t = a.trim();
        let v = if t.starts_with('{') {
            let v: Value = serde_json::from_str(t).map_err(|e| {
                anyhow!("KILN_AUTH holds inline JSON that does not parse (line {}, column {})", e.line(), e.column())
            })?;
            if !v.is_object() {
                bail!("KILN_AUTH: expected a JSON object like {{\"auths\":{{…}}}}");
            }
            v
        } else {
            read_config(Path::new(t), "KILN_AUTH")?.ok_or_else(|| anyhow!("KILN_AUTH names {t}, which does not exist"))?
        };
        out.push(("KILN_AUTH".to_string(), v));
    }
    if let Some(f) = authfile {
        let v = read_config(f, "--authfile")?.ok_or_else(|| anyhow!("--authfile {}: no such file", f.display()))?;
        out.push((format!("--authfile {}", f.display()), v));
    }
    Ok(out)
}

/// The user's own config files, lowest priority first.
fn user_files(env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(d) = env("DOCKER_CONFIG") {
        files.push(PathBuf::from(d).join("config.json"));
    } else if let Some(h) = env("HOME") {
        files.push(PathBuf::from(h).join(".docker/config.json"));
    }
    if let Some(f) = env("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(f));
    } else if let Some(r) = env("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(r).join("containers/auth.json"));
    }
    files
}

/// Builds the merged config, or None when the environment adds nothing.
fn merged(authfile: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Value>> {
    let extra = extra_sources(authfile, env)?;
    if extra.is_empty() {
        return Ok(None);
    }
    let mut base = json!({});
    for f in user_files(env) {
        match read_config(&f, "credentials file") {
            Ok(Some(v)) => merge(&mut base, &v),
            Ok(None) => {}
            // The user's own file is broken: say so and go on with the CI ones.
            Err(e) => crate::progress::get().warn(&format!("{e:#}: ignored")),
        }
    }
    for (_, v) in &extra {
        merge(&mut base, v);
    }
    Ok(Some(base))
}

fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// Writes the merged config (module docs), if the environment or `--authfile` gives
/// anything to merge.
pub fn install(authfile: Option<&Path>) -> Result<Option<Guard>> {
    let Some(config) = merged(authfile, &env_var)? else { return Ok(None) };
    let tmp = crate::options::state_dir()?.join("tmp");
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    remove_stale(&tmp);
    let dir = make_private_dir(&tmp)?;
    let guard = Guard { dir: dir.clone() };
    let file = dir.join("config.json");
    write_private(&file, &serde_json::to_vec_pretty(&config)?).with_context(|| format!("writing {}", file.display()))?;
    tracing::debug!("registry credentials merged into {}", file.display());
    Ok(Some(guard))
}

/// Removes `auth-PID-…` directories left by a kiln that was killed (its PID gone), so
/// credentials do not linger on disk longer than one more run.
fn remove_stale(tmp: &Path) {
    let Ok(rd) = std::fs::read_dir(tmp) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("auth-").and_then(|r| r.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn make_private_dir(parent: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let pid = std::process::id();
    for n in 0..1000u32 {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let p = parent.join(format!("auth-{pid}-{nanos:x}-{n}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(anyhow!("creating {}: {e}", p.display())),
        }
    }
    bail!("could not create a private directory under {}", parent.display())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("u:p", "dTpw")] {
            assert_eq!(b64(i.as_bytes()), o);
        }
    }

    #[test]
    fn nothing_without_ci_sources() {
        assert!(merged(None, &env_of(&[("HOME", "/nonexistent")])).unwrap().is_none());
        // Partial GitLab variables: ignored (with a warning), not an error.
        assert!(merged(None, &env_of(&[("CI_REGISTRY_USER", "u")])).unwrap().is_none());
    }

    #[test]
    fn merges_by_host_later_wins() {
        let t = tempfile::tempdir().unwrap();
        let dc = t.path().join("dc");
        std::fs::create_dir_all(&dc).unwrap();
        std::fs::write(
            dc.join("config.json"),
            r#"{"auths":{"https://reg.example:5000/v1/":{"auth":"b2xkOm9sZA=="},"keep.example":{"auth":"a2VlcDpr"}},"credHelpers":{"reg.example:5000":"x"},"proxies":{"a":1}}"#,
        )
        .unwrap();
        let authfile = t.path().join("a.json");
        std::fs::write(&authfile, r#"{"auths":{"other.example":{"username":"o","password":"p"}}}"#).unwrap();
        let env = env_of(&[
            ("DOCKER_CONFIG", dc.to_str().unwrap()),
            ("CI_REGISTRY", "reg.example:5000"),
            ("CI_REGISTRY_USER", "gitlab-ci-token"),
            ("CI_REGISTRY_PASSWORD", "s3cret"),
            ("KILN_AUTH", r#"{"auths":{"inline.example":{"auth":"aTpp"}}}"#),
        ]);
        let v = merged(Some(&authfile), &env).unwrap().unwrap();
        let auths = v["auths"].as_object().unwrap();
        assert_eq!(auths["reg.example:5000"]["auth"], b64(b"gitlab-ci-token:s3cret"));
        assert!(!auths.contains_key("https://reg.example:5000/v1/"));
        assert!(v["credHelpers"].as_object().unwrap().is_empty());
        assert!(auths.contains_key("keep.example"));
        assert!(auths.contains_key("inline.example"));
        assert!(auths.contains_key("other.example"));
        assert_eq!(v["proxies"]["a"], 1);
    }

    #[test]
    fn bad_inputs_name_the_source_not_the_secret() {
        let e = merged(None, &env_of(&[("KILN_AUTH", "{\"auths\": {\"x\": {\"auth\": \"hunter2\"")])).unwrap_err();
        let s = format!("{e:#}");
        assert!(s.contains("KILN_AUTH") && !s.contains("hunter2"), "{s}");
        let e = merged(None, &env_of(&[("KILN_AUTH", "/nonexistent/auth.json")])).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/auth.json"));
    }
}
