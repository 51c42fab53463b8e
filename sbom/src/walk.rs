//! The scan: well-known OS databases read through a resolver that keeps every
//! symlink inside the root (a hostile image's `/var/lib/dpkg -> /etc` reads the
//! image's `/etc`, never the host's), and one walk of the tree that never follows a
//! symlink, collecting what the language scanners read.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::{Distro, Inventory, Package, ScanError};

/// Largest record file read (a dpkg status of thousands of packages is a few MiB).
pub const MAX_RECORD: u64 = 64 << 20;
/// Symlinks followed while resolving one path.
const MAX_LINKS: usize = 40;

/// `path` (absolute inside the image) resolved on the host below `root`: symlinks
/// are followed as a chroot would, `..` stops at the root. `None` if it does not exist.
pub fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let mut todo: Vec<String> = path.split('/').filter(|c| !c.is_empty()).rev().map(str::to_string).collect();
    let mut cur: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let host = root.join(cur.join("/")).join(&c);
        let md = std::fs::symlink_metadata(&host).ok()?;
        if md.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return None;
            }
            let target = std::fs::read_link(&host).ok()?;
            let t = target.to_string_lossy();
            if t.starts_with('/') {
                cur.clear();
            }
            for part in t.split('/').filter(|p| !p.is_empty()).rev() {
                todo.push(part.to_string());
            }
            continue;
        }
        cur.push(c);
    }
    Some(root.join(cur.join("/")))
}

/// A record file of the image (through [`resolve`]), at most [`MAX_RECORD`] bytes.
pub fn read_record(root: &Path, path: &str, warnings: &mut Vec<String>) -> Option<String> {
    let host = resolve(root, path)?;
    read_host(&host, path, warnings)
}

/// A file the walk found (no symlink on its way), at most [`MAX_RECORD`] bytes.
pub fn read_host(host: &Path, shown: &str, warnings: &mut Vec<String>) -> Option<String> {
    let md = std::fs::metadata(host).ok()?;
    if !md.is_file() {
        return None;
    }
    if md.len() > MAX_RECORD {
        warnings.push(format!("{shown}: {} bytes, more than the {} MiB read of a record; skipped", md.len(), MAX_RECORD >> 20));
        return None;
    }
    let mut buf = Vec::new();
    std::fs::File::open(host).ok()?.take(MAX_RECORD).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// What the walk found for the language scanners (image paths, absolute).
#[derive(Default)]
pub struct Found {
    pub python: Vec<String>,
    pub npm_packages: Vec<String>,
    pub npm_locks: Vec<String>,
    pub cargo_locks: Vec<String>,
    pub jars: Vec<String>,
    pub executables: Vec<String>,
}

/// Walks the tree below `root` without following symlinks; `/proc`, `/sys` and
/// `/dev` are not entered.
fn walk(root: &Path, found: &mut Found) -> Result<u64, ScanError> {
    let mut files = 0u64;
    let mut stack: Vec<String> = vec![String::new()];
    while let Some(dir) = stack.pop() {
        let host = if dir.is_empty() { root.to_path_buf() } else { root.join(&dir[1..]) };
        let entries = match std::fs::read_dir(&host) {
            Ok(e) => e,
            // An unreadable directory of the image is not a failed scan.
            Err(_) if !dir.is_empty() => continue,
            Err(e) => return Err(ScanError::Io { path: root.display().to_string(), source: e }),
        };
        let mut names: Vec<(String, std::fs::FileType)> = Vec::new();
        for e in entries.flatten() {
            if let Ok(t) = e.file_type() {
                names.push((e.file_name().to_string_lossy().into_owned(), t));
            }
        }
        names.sort_by(|a, b| b.0.cmp(&a.0));
        let in_node_modules = dir.ends_with("/node_modules") || dir.rsplit('/').nth(1) == Some("node_modules") && dir.rsplit('/').next().is_some_and(|s| s.starts_with('@'));
        for (name, t) in names {
            let path = format!("{dir}/{name}");
            if t.is_dir() {
                if dir.is_empty() && matches!(name.as_str(), "proc" | "sys" | "dev") {
                    continue;
                }
                if name.ends_with(".dist-info") || name.ends_with(".egg-info") {
                    found.python.push(path);
                    continue;
                }
                stack.push(path);
            } else if t.is_file() {
                files += 1;
                match name.as_str() {
                    "package.json" if parent_is_node_module(&dir) => found.npm_packages.push(path),
                    "package-lock.json" if !in_node_modules && !dir.contains("/node_modules/") => found.npm_locks.push(path),
                    "Cargo.lock" => found.cargo_locks.push(path),
                    n if n.ends_with(".egg-info") => found.python.push(path),
                    n if n.ends_with(".jar") || n.ends_with(".war") || n.ends_with(".ear") => found.jars.push(path),
                    _ => {
                        if let Ok(md) = std::fs::symlink_metadata(root.join(&path[1..])) {
                            if md.permissions().mode() & 0o111 != 0 && md.len() > 64 {
                                found.executables.push(path);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(files)
}

/// `.../node_modules/NAME` or `.../node_modules/@SCOPE/NAME`.
fn parent_is_node_module(dir: &str) -> bool {
    let mut parts = dir.rsplit('/');
    let _name = parts.next();
    match parts.next() {
        Some("node_modules") => true,
        Some(s) if s.starts_with('@') => parts.next() == Some("node_modules"),
        _ => false,
    }
}

/// `/etc/os-release` (else `/usr/lib/os-release`).
fn os_release(root: &Path, warnings: &mut Vec<String>) -> Option<Distro> {
    let text = read_record(root, "/etc/os-release", warnings).or_else(|| read_record(root, "/usr/lib/os-release", warnings))?;
    let mut d = Distro::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
        match k.trim() {
            "ID" => d.id = v,
            "VERSION_ID" => d.version_id = v,
            "PRETTY_NAME" => d.pretty_name = v,
            _ => {}
        }
    }
    (!d.id.is_empty()).then_some(d)
}

/// SHA-1 of every regular file a package owns (streamed, through the resolver).
fn checksums(root: &Path, packages: &[Package]) -> BTreeMap<String, String> {
    use sha1::Digest as _;
    let mut out = BTreeMap::new();
    let mut buf = vec![0u8; 256 * 1024];
    for f in packages.iter().flat_map(|p| p.files.iter()) {
        if out.contains_key(f) {
            continue;
        }
        let Some(host) = resolve(root, f) else { continue };
        let Ok(md) = std::fs::symlink_metadata(&host) else { continue };
        if !md.is_file() {
            continue;
        }
        let Ok(mut file) = std::fs::File::open(&host) else { continue };
        let mut h = sha1::Sha1::new();
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => h.update(&buf[..n]),
                Err(_) => break,
            }
        }
        out.insert(f.clone(), hex::encode(h.finalize()));
    }
    out
}

pub fn scan(root: &Path) -> Result<Inventory, ScanError> {
    let mut inv = Inventory::default();
    let mut warnings = Vec::new();
    inv.distro = os_release(root, &mut warnings);
    let mut packages = Vec::new();
    crate::dpkg::scan(root, inv.distro.as_ref(), &mut packages, &mut warnings);
    crate::apk::scan(root, inv.distro.as_ref(), &mut packages, &mut warnings);
    crate::rpm::scan(root, inv.distro.as_ref(), &mut packages, &mut warnings);
    let mut found = Found::default();
    inv.files_seen = walk(root, &mut found)?;
    crate::python::scan(root, &found.python, &mut packages, &mut warnings);
    crate::npm::scan(root, &found.npm_packages, &found.npm_locks, &mut packages, &mut warnings);
    crate::cargo::scan_locks(root, &found.cargo_locks, &mut packages, &mut warnings);
    crate::java::scan(root, &found.jars, &mut packages);
    crate::elf::scan(root, &found.executables, &mut packages, &mut warnings);
    for p in &mut packages {
        p.files.sort();
        p.files.dedup();
    }
    packages.sort_by(|a, b| (a.ecosystem, &a.name, &a.version, &a.found_at).cmp(&(b.ecosystem, &b.name, &b.version, &b.found_at)));
    packages.dedup_by(|a, b| a.ecosystem == b.ecosystem && a.name == b.name && a.version == b.version && a.found_at == b.found_at);
    inv.checksums = checksums(root, &packages);
    inv.packages = packages;
    inv.warnings = warnings;
    Ok(inv)
}

/// `base` (an image directory) joined with a relative path, `..` resolved lexically.
pub fn join_image_path(base: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for c in Path::new(rel).components() {
        match c {
            Component::ParentDir => {
                parts.pop();
            }
            Component::Normal(n) => parts.push(n.to_str().unwrap_or("")),
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("var/lib")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/inside"), "image").unwrap();
        std::fs::write(d.path().join("outside"), "host").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("var/lib/dpkg")).unwrap();
        std::os::unix::fs::symlink("../../../../outside", root.join("etc/escape")).unwrap();
        assert_eq!(resolve(&root, "/var/lib/dpkg/inside"), Some(root.join("etc/inside")));
        // `..` stops at the root: the escape names the image's /outside, which is absent.
        assert_eq!(resolve(&root, "/etc/escape"), None);
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(resolve(&root, "/loop"), None);
        assert_eq!(join_image_path("/usr/lib/python3/site-packages", "../../../bin/x"), "/usr/bin/x");
    }
}
