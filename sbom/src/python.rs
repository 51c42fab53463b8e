//! Python distributions: `*.dist-info` (`METADATA`, files from `RECORD`) and
//! `*.egg-info` (a directory with `PKG-INFO`, or a single file) anywhere in the tree.

use std::path::Path;

use crate::walk::{join_image_path, read_host};
use crate::{Ecosystem, Package};

/// PyPI's normalised name (PEP 503): lower case, runs of `-_.` as `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

fn headers(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

pub fn scan(root: &Path, records: &[String], out: &mut Vec<Package>, warnings: &mut Vec<String>) {
    for rec in records {
        let host = root.join(&rec[1..]);
        let is_dir = std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir());
        let meta = if rec.ends_with(".dist-info") { "METADATA" } else { "PKG-INFO" };
        let (text, meta_path) = if is_dir {
            (read_host(&host.join(meta), &format!("{rec}/{meta}"), warnings), format!("{rec}/{meta}"))
        } else {
            (read_host(&host, rec, warnings), rec.clone())
        };
        let Some(text) = text else { continue };
        let h = headers(&text);
        let get = |k: &str| h.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
        let (Some(name), Some(version)) = (get("Name"), get("Version")) else { continue };
        let mut licenses: Vec<String> = Vec::new();
        if let Some(e) = get("License-Expression") {
            licenses.push(e);
        } else if let Some(l) = get("License").filter(|l| !l.is_empty() && l != "UNKNOWN" && l.len() < 100 && !l.contains('\n')) {
            licenses.push(l);
        }
        if licenses.is_empty() {
            licenses.extend(h.iter().filter(|(k, _)| k == "Classifier").filter_map(|(_, v)| crate::license::from_classifier(v)).map(str::to_string));
        }
        let mut files = vec![meta_path];
        if is_dir && rec.ends_with(".dist-info") {
            let site = rec.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            if let Some(record) = read_host(&host.join("RECORD"), &format!("{rec}/RECORD"), warnings) {
                for line in record.lines() {
                    let mut parts = line.rsplitn(3, ',');
                    let (_size, _hash, path) = (parts.next(), parts.next(), parts.next());
                    if let Some(p) = path.filter(|p| !p.is_empty()) {
                        files.push(join_image_path(site, p.trim_matches('"')));
                    }
                }
            }
        }
        out.push(Package {
            ecosystem: Ecosystem::Python,
            purl: crate::purl::purl("pypi", None, &normalize(&name), &version, &[]),
            name,
            version,
            licenses,
            files,
            found_at: rec.clone(),
            arch: None,
            supplier: get("Author").filter(|a| !a.is_empty()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pep503_names() {
        assert_eq!(normalize("Flask_SQLAlchemy"), "flask-sqlalchemy");
        assert_eq!(normalize("zope.interface"), "zope-interface");
        assert_eq!(normalize("six"), "six");
    }
}
