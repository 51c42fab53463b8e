//! Debian and Ubuntu packages: the dpkg status database (`/var/lib/dpkg/status`, or
//! distroless images' one-file-per-package `/var/lib/dpkg/status.d/`), the files of
//! each package (`/var/lib/dpkg/info/NAME[:ARCH].list`) and its licences where the
//! copyright file is machine-readable (DEP-5 `License:` fields).

use std::path::Path;

use crate::walk::{read_record, resolve};
use crate::{Distro, Ecosystem, Package};

/// Stanzas of a deb822 file: fields with continuation lines joined by `\n`.
pub fn stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut cur: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if line.starts_with(' ') || line.starts_with('\t') {
            if let Some((_, v)) = cur.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn field<'a>(s: &'a [(String, String)], k: &str) -> Option<&'a str> {
    s.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str())
}

/// DEP-5 `License:` short names of a machine-readable copyright file.
fn licenses(root: &Path, name: &str, warnings: &mut Vec<String>) -> Vec<String> {
    let path = format!("/usr/share/doc/{name}/copyright");
    let Some(text) = read_record(root, &path, warnings) else { return Vec::new() };
    if !text.starts_with("Format:") {
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("License:") {
            let v = v.trim();
            if !v.is_empty() && !out.iter().any(|o| o == v) {
                out.push(v.to_string());
            }
        }
    }
    out
}

fn files(root: &Path, name: &str, arch: &str, warnings: &mut Vec<String>) -> Vec<String> {
    for list in [format!("/var/lib/dpkg/info/{name}:{arch}.list"), format!("/var/lib/dpkg/info/{name}.list")] {
        if let Some(text) = read_record(root, &list, warnings) {
            return text
                .lines()
                .filter(|l| l.starts_with('/') && *l != "/.")
                .filter(|l| resolve(root, l).and_then(|h| std::fs::symlink_metadata(h).ok()).is_some_and(|m| !m.is_dir()))
                .map(str::to_string)
                .collect();
        }
    }
    Vec::new()
}

fn package(root: &Path, s: &[(String, String)], distro: Option<&Distro>, found_at: &str, warnings: &mut Vec<String>) -> Option<Package> {
    let name = field(s, "Package")?;
    let version = field(s, "Version")?;
    // status.d entries of distroless images have no Status field: installed.
    if let Some(st) = field(s, "Status") {
        if !st.ends_with(" installed") || st.contains("not-installed") {
            return None;
        }
    }
    let arch = field(s, "Architecture").unwrap_or("").to_string();
    let id = distro.map(|d| d.id.as_str()).filter(|i| !i.is_empty()).unwrap_or("debian");
    let mut q = vec![("arch", arch.clone())];
    if let Some(d) = distro {
        q.push(("distro", format!("{}-{}", d.id, d.version_id)));
    }
    if let Some(src) = field(s, "Source") {
        let src = src.split_whitespace().next().unwrap_or(src);
        if src != name {
            q.push(("upstream", src.to_string()));
        }
    }
    Some(Package {
        ecosystem: Ecosystem::Deb,
        name: name.to_string(),
        version: version.to_string(),
        purl: crate::purl::purl("deb", Some(id), name, version, &q),
        licenses: licenses(root, name, warnings),
        files: files(root, name, &arch, warnings),
        found_at: found_at.to_string(),
        arch: Some(arch).filter(|a| !a.is_empty()),
        supplier: field(s, "Maintainer").map(str::to_string),
    })
}

pub fn scan(root: &Path, distro: Option<&Distro>, out: &mut Vec<Package>, warnings: &mut Vec<String>) {
    const STATUS: &str = "/var/lib/dpkg/status";
    if let Some(text) = read_record(root, STATUS, warnings) {
        for s in stanzas(&text) {
            out.extend(package(root, &s, distro, STATUS, warnings));
        }
    }
    const STATUS_D: &str = "/var/lib/dpkg/status.d";
    let Some(dir) = resolve(root, STATUS_D) else { return };
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let mut names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !n.ends_with(".md5sums")).collect();
    names.sort();
    for n in names {
        let path = format!("{STATUS_D}/{n}");
        if let Some(text) = read_record(root, &path, warnings) {
            for s in stanzas(&text) {
                out.extend(package(root, &s, distro, &path, warnings));
            }
        }
    }
}
