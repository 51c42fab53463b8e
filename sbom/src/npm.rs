//! npm packages: every `node_modules/[@scope/]NAME/package.json` in the tree, and
//! the `packages` of `package-lock.json` files (lockfile v2/v3) outside
//! `node_modules`. A package both installed and locked is listed once (installed).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::walk::read_host;
use crate::{Ecosystem, Package};

/// `license` as npm records it: a string, `{type}`, or a `licenses` array.
fn licenses(v: &Value) -> Vec<String> {
    let one = |l: &Value| l.as_str().map(str::to_string).or_else(|| l["type"].as_str().map(str::to_string));
    let mut out: Vec<String> = one(&v["license"]).into_iter().collect();
    if out.is_empty() {
        out.extend(v["licenses"].as_array().into_iter().flatten().filter_map(one));
    }
    out
}

fn purl(name: &str, version: &str) -> String {
    match name.strip_prefix('@').and_then(|n| n.split_once('/')) {
        Some((scope, n)) => crate::purl::purl("npm", Some(&format!("@{scope}")), n, version, &[]),
        None => crate::purl::purl("npm", None, name, version, &[]),
    }
}

fn package(name: &str, version: &str, v: &Value, found_at: &str, files: Vec<String>) -> Package {
    Package {
        ecosystem: Ecosystem::Npm,
        name: name.to_string(),
        version: version.to_string(),
        purl: purl(name, version),
        licenses: licenses(v),
        files,
        found_at: found_at.to_string(),
        arch: None,
        supplier: v["author"].as_str().or(v["author"]["name"].as_str()).map(str::to_string),
    }
}

pub fn scan(root: &Path, installed: &[String], locks: &[String], out: &mut Vec<Package>, warnings: &mut Vec<String>) {
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for path in installed {
        let Some(text) = read_host(&root.join(&path[1..]), path, warnings) else { continue };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            warnings.push(format!("{path}: not JSON; skipped"));
            continue;
        };
        let (Some(name), Some(version)) = (v["name"].as_str(), v["version"].as_str()) else { continue };
        seen.insert((name.to_string(), version.to_string()));
        out.push(package(name, version, &v, path, vec![path.clone()]));
    }
    for path in locks {
        let Some(text) = read_host(&root.join(&path[1..]), path, warnings) else { continue };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            warnings.push(format!("{path}: not JSON; skipped"));
            continue;
        };
        for (key, p) in v["packages"].as_object().into_iter().flatten() {
            // "" is the project itself; links point at workspace members.
            let Some(at) = key.rfind("node_modules/") else { continue };
            if p["link"].as_bool() == Some(true) {
                continue;
            }
            let name = p["name"].as_str().unwrap_or(&key[at + "node_modules/".len()..]);
            let Some(version) = p["version"].as_str() else { continue };
            if seen.insert((name.to_string(), version.to_string())) {
                out.push(package(name, version, p, path, Vec::new()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_and_locked_once() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("app/node_modules");
        std::fs::create_dir_all(m.join("@types/node")).unwrap();
        std::fs::create_dir_all(m.join("left-pad")).unwrap();
        std::fs::write(m.join("@types/node/package.json"), r#"{"name":"@types/node","version":"20.1.0","license":"MIT"}"#).unwrap();
        std::fs::write(m.join("left-pad/package.json"), r#"{"name":"left-pad","version":"1.3.0","license":{"type":"WTFPL"}}"#).unwrap();
        std::fs::write(
            d.path().join("app/package-lock.json"),
            r#"{"lockfileVersion":3,"packages":{"":{"name":"app"},"node_modules/left-pad":{"version":"1.3.0"},"node_modules/is-number":{"version":"7.0.0","license":"MIT"}}}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        let installed = vec!["/app/node_modules/@types/node/package.json".to_string(), "/app/node_modules/left-pad/package.json".to_string()];
        scan(d.path(), &installed, &["/app/package-lock.json".to_string()], &mut out, &mut Vec::new());
        let got: Vec<(&str, &str)> = out.iter().map(|p| (p.name.as_str(), p.purl.as_str())).collect();
        assert_eq!(got, [("@types/node", "pkg:npm/%40types/node@20.1.0"), ("left-pad", "pkg:npm/left-pad@1.3.0"), ("is-number", "pkg:npm/is-number@7.0.0")]);
        assert_eq!(out[1].licenses, ["WTFPL"]);
    }
}
