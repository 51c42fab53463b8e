//! Picking a manifest out of an index / manifest list for a platform.
//!
//! We use oci-spec's `Platform` (re-exported as `kiln_oci::Platform`) so that the
//! builder passes the same type it writes into indexes. Matching follows containerd's
//! platform matcher in spirit: os and architecture must match; variants are compared
//! after normalisation (arm64 ≡ arm64/v8; arm defaults to v7); when no variant is
//! asked for, the entry without (or with the default) variant is preferred.

use kiln_oci::{Descriptor, Platform};
use oci_spec::image::{Arch, Os, PlatformBuilder};

/// Builds a platform from `os/arch[/variant]`, e.g. `linux/arm64/v8`.
pub fn parse_platform(s: &str) -> Option<Platform> {
    let mut parts = s.split('/');
    let os = parts.next().filter(|p| !p.is_empty())?;
    let arch = parts.next().filter(|p| !p.is_empty())?;
    let variant = parts.next();
    if parts.next().is_some() {
        return None;
    }
    let mut b = PlatformBuilder::default().os(Os::from(os)).architecture(Arch::from(arch));
    if let Some(v) = variant.filter(|v| !v.is_empty()) {
        b = b.variant(v.to_string());
    }
    b.build().ok()
}

/// `os/arch[/variant]` for messages.
pub fn platform_string(p: &Platform) -> String {
    match p.variant() {
        Some(v) => format!("{}/{}/{}", p.os(), p.architecture(), v),
        None => format!("{}/{}", p.os(), p.architecture()),
    }
}

/// The variant with defaults filled in, so that equal platforms compare equal.
fn normalized_variant(arch: &str, variant: Option<&str>) -> Option<String> {
    match (arch, variant) {
        ("arm64", None) | ("arm64", Some("v8")) | ("arm64", Some("8")) => Some("v8".into()),
        ("arm", None) | ("arm", Some("7")) => Some("v7".into()),
        (_, Some("")) | (_, None) => None,
        (_, Some(v)) if v.chars().all(|c| c.is_ascii_digit()) => Some(format!("v{v}")),
        (_, Some(v)) => Some(v.to_string()),
    }
}

fn normalized_arch(arch: &str) -> &str {
    match arch {
        "aarch64" => "arm64",
        "x86_64" | "x86-64" => "amd64",
        other => other,
    }
}

/// Picks the descriptor for `wanted` from an index's manifests.
pub fn select<'a>(manifests: &'a [Descriptor], wanted: &Platform) -> Option<&'a Descriptor> {
    let w_os = wanted.os().to_string();
    let w_arch_s = wanted.architecture().to_string();
    let w_arch = normalized_arch(&w_arch_s);
    let w_var = normalized_variant(w_arch, wanted.variant().as_deref());
    let mut fallback = None;
    for m in manifests {
        let Some(p) = m.platform() else { continue };
        let arch_s = p.architecture().to_string();
        let arch = normalized_arch(&arch_s);
        if p.os().to_string() != w_os || arch != w_arch {
            continue;
        }
        let var = normalized_variant(arch, p.variant().as_deref());
        if var == w_var {
            return Some(m);
        }
        // No variant asked for (e.g. amd64): accept any variant if nothing matches exactly.
        if wanted.variant().is_none() && fallback.is_none() && !matches!(arch, "arm" | "arm64") {
            fallback = Some(m);
        }
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{DescriptorBuilder, MediaType};

    fn entry(p: &str, n: u8) -> Descriptor {
        let d = kiln_oci::Digest::of(&[n]);
        DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .digest(oci_spec::image::Digest::try_from(d.to_string()).unwrap())
            .size(1u64)
            .platform(parse_platform(p).unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn selects_table() {
        let list = vec![
            entry("linux/amd64", 0),
            entry("linux/arm/v6", 1),
            entry("linux/arm/v7", 2),
            entry("linux/arm64/v8", 3),
            entry("windows/amd64", 4),
            entry("unknown/unknown", 5),
        ];
        let pick = |p: &str| select(&list, &parse_platform(p).unwrap()).map(|d| d.digest().to_string());
        let dg = |n: u8| Some(kiln_oci::Digest::of(&[n]).to_string());
        assert_eq!(pick("linux/amd64"), dg(0));
        assert_eq!(pick("linux/arm64"), dg(3));
        assert_eq!(pick("linux/arm64/v8"), dg(3));
        assert_eq!(pick("linux/arm"), dg(2));
        assert_eq!(pick("linux/arm/v6"), dg(1));
        assert_eq!(pick("windows/amd64"), dg(4));
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(pick("linux/arm/v5"), None);
        // arm64 without variant in the list matches a request for v8.
        let list2 = vec![entry("linux/arm64", 7)];
        assert!(select(&list2, &parse_platform("linux/arm64/v8").unwrap()).is_some());
    }

    #[test]
    fn parses() {
        assert_eq!(platform_string(&parse_platform("linux/arm64/v8").unwrap()), "linux/arm64/v8");
        assert_eq!(platform_string(&parse_platform("linux/amd64").unwrap()), "linux/amd64");
        assert!(parse_platform("linux").is_none());
        assert!(parse_platform("a/b/c/d").is_none());
    }
}
