//! Target platforms: parsing, normalisation and the host's own platform.
//!
//! Normalisation follows containerd's rules so that `linux/arm64` and
//! `linux/arm64/v8` are the same target, `arm` means `arm/v7`, and `x86_64`/`aarch64`
//! spellings are accepted.

use anyhow::{bail, Result};
use kiln_frontend::Platform;

/// Parse `os/arch[/variant]` (or just `arch`, meaning linux) into a normalised platform.
pub fn parse(s: &str) -> Result<Platform> {
    let parts: Vec<&str> = s.trim().split('/').collect();
    let (os, arch, variant) = match parts.as_slice() {
        [arch] if !arch.is_empty() => ("linux", *arch, None),
        [os, arch] if !os.is_empty() && !arch.is_empty() => (*os, *arch, None),
        [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => (*os, *arch, Some(*v)),
        _ => bail!("invalid platform {s:?}: expected os/arch[/variant], e.g. linux/arm64"),
    };
    if os.contains('(') {
        bail!("unsupported platform {s:?}: an OS version (os(version)/arch) is not supported yet");
    }
    let (arch, variant) = normalize(arch, variant);
    // Any OS is a valid target, as in BuildKit: a FROM scratch image (or one whose
    // RUN steps run on the build platform) needs nothing from it. A RUN for a
    // platform this machine cannot run is refused before the build starts.
    const KNOWN: &[&str] = &["amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64"];
    if os == "linux" && !KNOWN.contains(&arch.as_str()) {
        bail!("unknown architecture {arch:?} in platform {s:?} (known: {})", KNOWN.join(", "));
    }
    Ok(Platform { os: os.to_string(), architecture: arch, variant })
}

/// Parse a comma-separated `--platform` list, dropping duplicates (after normalisation).
pub fn parse_list(s: &str) -> Result<Vec<Platform>> {
    let mut out: Vec<Platform> = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let p = parse(part)?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    if out.is_empty() {
        bail!("--platform needs at least one os/arch");
    }
    Ok(out)
}

fn normalize(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.map(str::to_ascii_lowercase);
    match arch.as_str() {
        "x86_64" | "x86-64" | "amd64" => ("amd64".into(), variant.filter(|v| v != "v1")),
        "i386" | "i686" | "386" => ("386".into(), None),
        "aarch64" | "arm64" => {
            // v8 is the default arm64 variant: written without it, as Docker does.
            let v = variant.filter(|v| v != "v8" && v != "8");
            ("arm64".into(), v)
        }
        "armhf" | "armv7l" | "armv7" => ("arm".into(), Some("v7".into())),
        "armel" | "armv6l" => ("arm".into(), Some("v6".into())),
        "arm" => {
            let v = match variant.as_deref() {
                None | Some("7") | Some("v7") => "v7",
                Some("6") | Some("v6") => "v6",
                Some("5") | Some("v5") => "v5",
                Some("8") | Some("v8") => "v8",
                Some(other) => return ("arm".into(), Some(other.to_string())),
            };
            ("arm".into(), Some(v.into()))
        }
        _ => (arch, variant),
    }
}

/// The platform kiln runs on.
pub fn host() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "arm" => "arm",
        other => other,
    };
    let (architecture, variant) = normalize(arch, None);
    Platform { os: "linux".into(), architecture, variant }
}

/// `linux/arm64`, `linux/arm/v7`.
pub fn display(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{}", p.os, p.architecture, v),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(p: &str) -> String {
        display(&parse(p).unwrap())
    }

    #[test]
    fn normalises_like_containerd() {
        let table = [
            ("linux/arm64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/aarch64", "linux/arm64"),
            ("arm64", "linux/arm64"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/7", "linux/arm/v7"),
            ("linux/arm/v6", "linux/arm/v6"),
            ("linux/x86_64", "linux/amd64"),
            ("linux/amd64", "linux/amd64"),
            ("linux/386", "linux/386"),
            ("linux/i386", "linux/386"),
            ("linux/ppc64le", "linux/ppc64le"),
            ("linux/s390x", "linux/s390x"),
            ("linux/riscv64", "linux/riscv64"),
        ];
        for (input, want) in table {
            assert_eq!(s(input), want, "{input}");
        }
    }

    #[test]
    fn rejects_bad_platforms() {
        for bad in ["", "linux/", "/amd64", "windows(1.2)/amd64", "linux/sparc", "a/b/c/d"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lists_dedupe() {
        let l = parse_list("linux/amd64,linux/arm64,linux/arm64/v8").unwrap();
        assert_eq!(l.iter().map(display).collect::<Vec<_>>(), ["linux/amd64", "linux/arm64"]);
        assert!(parse_list(",").is_err());
    }
}
