//! Rust packages: `Cargo.lock` files (`[[package]]` name, version, source) and the
//! dependency list cargo-auditable embeds in binaries (`.dep-v0`, read by `elf`).

use std::path::Path;

use crate::walk::read_host;
use crate::{Ecosystem, Package};

pub fn package(name: &str, version: &str, found_at: &str) -> Package {
    Package {
        ecosystem: Ecosystem::Cargo,
        name: name.to_string(),
        version: version.to_string(),
        purl: crate::purl::purl("cargo", None, name, version, &[]),
        licenses: Vec::new(),
        files: Vec::new(),
        found_at: found_at.to_string(),
        arch: None,
        supplier: None,
    }
}

/// (name, version) of each `[[package]]` of a Cargo.lock.
pub fn lock_packages(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(Option<String>, Option<String>)> = None;
    let flush = |cur: &mut Option<(Option<String>, Option<String>)>, out: &mut Vec<(String, String)>| {
        if let Some((Some(n), Some(v))) = cur.take() {
            out.push((n, v));
        }
    };
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            flush(&mut cur, &mut out);
            if line == "[[package]]" {
                cur = Some((None, None));
            }
            continue;
        }
        let Some(c) = cur.as_mut() else { continue };
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().trim_matches('"').to_string();
            match k.trim() {
                "name" => c.0 = Some(v),
                "version" => c.1 = Some(v),
                _ => {}
            }
        }
    }
    flush(&mut cur, &mut out);
    out
}

pub fn scan_locks(root: &Path, locks: &[String], out: &mut Vec<Package>, warnings: &mut Vec<String>) {
    for path in locks {
        let Some(text) = read_host(&root.join(&path[1..]), path, warnings) else { continue };
        for (n, v) in lock_packages(&text) {
            out.push(package(&n, &v, path));
        }
    }
}

/// cargo-auditable's JSON: `{"packages":[{"name","version",...}]}`.
pub fn auditable_packages(json: &[u8]) -> Vec<(String, String)> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else { return Vec::new() };
    v["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["name"].as_str()?.to_string(), p["version"].as_str()?.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockfile() {
        let lock = "version = 4\n\n[[package]]\nname = \"anyhow\"\nversion = \"1.0.86\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"ab\"\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\ndependencies = [\n \"anyhow\",\n]\n\n[metadata]\nx = 1\n";
        assert_eq!(lock_packages(lock), [("anyhow".to_string(), "1.0.86".to_string()), ("app".to_string(), "0.1.0".to_string())]);
    }

    #[test]
    fn auditable_json() {
        // The shape cargo-auditable documents for its `.dep-v0` payload.
        let json = br#"{"packages":[{"name":"app","version":"0.1.0","source":"local","root":true,"dependencies":[1]},{"name":"serde","version":"1.0.200","source":"crates.io"}]}"#;
        assert_eq!(auditable_packages(json), [("app".to_string(), "0.1.0".to_string()), ("serde".to_string(), "1.0.200".to_string())]);
        assert!(auditable_packages(b"not json").is_empty());
    }
}
