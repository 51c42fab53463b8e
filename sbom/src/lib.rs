//! kiln-sbom: what a root filesystem contains, as an SBOM.
//!
//! `scan` walks a directory (an image's merged rootfs, a build context) and reads
//! every package record it knows; `spdx_json` and `cyclonedx_json` write the
//! inventory as one document whose described element is the image. Pure: no
//! network, no subprocess; the only I/O is reading below `root`, never following a
//! symlink out of it.

use std::path::Path;

/// Where a package record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ecosystem {
    Deb,
    Apk,
    Rpm,
    Python,
    Npm,
    Go,
    Cargo,
    Maven,
}

/// One package found in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// Package URL (purl spec), e.g. `pkg:deb/debian/bash@5.2.15-2?arch=amd64&distro=debian-12`.
    pub purl: String,
    /// Licences as recorded (SPDX identifiers or expressions where the record has them).
    pub licenses: Vec<String>,
    /// Absolute paths inside the root that the package owns, sorted.
    pub files: Vec<String>,
    /// Absolute path of the record the package was read from (dpkg status, a dist-info dir, a binary...).
    pub found_at: String,
    /// Architecture where the record names one (dpkg, apk, rpm).
    pub arch: Option<String>,
    /// Supplier / maintainer where recorded.
    pub supplier: Option<String>,
}

/// The operating system of the tree (`/etc/os-release`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Distro {
    pub id: String,
    pub version_id: String,
    pub pretty_name: String,
}

/// Everything `scan` found, packages sorted by (ecosystem, name, version, found_at).
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub distro: Option<Distro>,
    pub packages: Vec<Package>,
    /// Regular files looked at (for the benchmark and the progress line).
    pub files_seen: u64,
    /// SHA-1 (hex) of every regular file a package owns, by path: SPDX 2.3 requires
    /// a SHA-1 on each File element.
    pub checksums: std::collections::BTreeMap<String, String>,
    /// Records that could not be read (too big, not UTF-8, malformed): skipped.
    pub warnings: Vec<String>,
}

/// What the document describes: the image (one platform of it).
#[derive(Debug, Clone)]
pub struct Subject {
    /// The image's name (first tag), or a name for an untagged build.
    pub name: String,
    /// The platform manifest's digest (`sha256:...`), when known.
    pub digest: Option<String>,
    /// `linux/amd64`, ...
    pub platform: String,
}

/// Document metadata.
#[derive(Debug, Clone)]
pub struct DocumentInfo {
    pub subject: Subject,
    /// RFC 3339 UTC creation time (SOURCE_DATE_EPOCH when set: same build, same bytes).
    pub created: String,
    /// The generating tool, e.g. `kiln-0.1.0`.
    pub tool: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

mod cyclonedx;
mod dpkg;
mod apk;
mod cargo;
mod elf;
mod java;
mod license;
mod npm;
mod purl;
mod python;
mod rpm;
mod spdx;
mod walk;

/// Scans the tree below `root` for packages of every ecosystem.
pub fn scan(root: &Path) -> Result<Inventory, ScanError> {
    walk::scan(root)
}

/// SPDX 2.3 JSON of `inv`, the image as the described element.
pub fn spdx_json(inv: &Inventory, doc: &DocumentInfo) -> Vec<u8> {
    spdx::write(inv, doc)
}

/// CycloneDX 1.6 JSON of `inv`, the image as `metadata.component`.
pub fn cyclonedx_json(inv: &Inventory, doc: &DocumentInfo) -> Vec<u8> {
    cyclonedx::write(inv, doc)
}
