//! Picking a manifest out of an index / manifest list for a platform.
//!
//! Matching follows containerd's platform matcher in spirit, on platforms
//! normalised by `kiln_oci::Platform` (the one normaliser): os and architecture
//! must match, then the variant (arm64 ≡ arm64/v8; arm means arm/v7); when no
//! variant is asked for, an entry with another variant is taken only if nothing
//! matches exactly (not for arm, where variants are not interchangeable).

use kiln_oci::{Descriptor, Platform};

/// Builds a platform from `os/arch[/variant]`, e.g. `linux/arm64/v8`, without
/// checking that the architecture is one kiln knows.
pub fn parse_platform(s: &str) -> Option<Platform> {
    let mut parts = s.split('/');
    let os = parts.next().filter(|p| !p.is_empty())?;
    let arch = parts.next().filter(|p| !p.is_empty())?;
    let variant = parts.next();
    if parts.next().is_some() {
        return None;
    }
    Some(Platform::new(os, arch, variant))
}

/// An index entry's platform as the registry wrote it, for messages.
pub fn as_written(p: &oci_spec::image::Platform) -> String {
    match p.variant() {
        Some(v) => format!("{}/{}/{}", p.os(), p.architecture(), v),
        None => format!("{}/{}", p.os(), p.architecture()),
    }
}

/// Picks the descriptor for `wanted` from an index's manifests.
pub fn select<'a>(manifests: &'a [Descriptor], wanted: &Platform) -> Option<&'a Descriptor> {
    let mut fallback = None;
    for m in manifests {
        let Some(p) = m.platform() else { continue };
        let p = Platform::from_spec(p);
        if p.os != wanted.os || p.architecture != wanted.architecture {
            continue;
        }
        if p.variant == wanted.variant {
            return Some(m);
        }
        if wanted.variant.is_none() && fallback.is_none() && !matches!(p.architecture.as_str(), "arm" | "arm64") {
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
            .platform(parse_platform(p).unwrap().to_spec())
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
        assert_eq!(parse_platform("linux/arm64/v8").unwrap().to_string(), "linux/arm64");
        assert_eq!(parse_platform("linux/amd64").unwrap().to_string(), "linux/amd64");
        assert!(parse_platform("linux").is_none());
        assert!(parse_platform("a/b/c/d").is_none());
    }
}
