//! THE platform type of kiln (every crate uses it): parsing, containerd's
//! normalisation, the host's platform, its text and its JSON.
//!
//! Normalisation follows containerd's `platforms.Normalize` as Docker prints it:
//! `linux/arm64/v8` is `linux/arm64` (v8 is arm64's default and not written),
//! `arm` means `arm/v7`, `x86_64`/`aarch64`/`armhf` spellings are accepted, and
//! `amd64/v1` is `amd64`. An OS version is written `os(version)/arch` as BuildKit
//! takes it (`windows(10.0.17763)/amd64`); it goes into `os.version` in JSON and
//! into `TARGETOSVERSION`.

use std::fmt;

use serde::Serialize;
use serde_json::{json, Value};

/// An OS/architecture/variant (and OS version) of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub os_version: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlatformError {
    #[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/arm64")]
    Syntax(String),
    #[error("unknown architecture {arch:?} in platform {input:?} (known: {known})")]
    UnknownArch { arch: String, input: String, known: String },
}

/// Linux architectures kiln knows (a typo there gets the list, not a build that
/// cannot run); other OSes take any, as BuildKit does.
const KNOWN_LINUX_ARCHS: &[&str] = &["amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64"];

impl Platform {
    /// `linux/amd64` etc. without an OS version, normalised.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let (architecture, variant) = normalize(architecture, variant);
        Platform { os: os.to_string(), architecture, variant, os_version: None }
    }

    /// Parse `os[(version)]/arch[/variant]`, or just `arch` (meaning linux).
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let syntax = || PlatformError::Syntax(s.to_string());
        let parts: Vec<&str> = s.trim().split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [arch] if !arch.is_empty() => ("linux", *arch, None),
            [os, arch] if !os.is_empty() && !arch.is_empty() => (*os, *arch, None),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => (*os, *arch, Some(*v)),
            _ => return Err(syntax()),
        };
        let (os, os_version) = match os.split_once('(') {
            Some((o, rest)) => {
                let v = rest.strip_suffix(')').filter(|v| !v.is_empty() && !v.contains(['(', ')'])).ok_or_else(syntax)?;
                (o, Some(v.to_string()))
            }
            None if os.contains(')') => return Err(syntax()),
            None => (os, None),
        };
        if os.is_empty() {
            return Err(syntax());
        }
        let os = os.to_ascii_lowercase();
        let mut p = Platform::new(&os, arch, variant);
        p.os_version = os_version;
        if p.os == "linux" && !KNOWN_LINUX_ARCHS.contains(&p.architecture.as_str()) {
            return Err(PlatformError::UnknownArch {
                arch: p.architecture,
                input: s.to_string(),
                known: KNOWN_LINUX_ARCHS.join(", "),
            });
        }
        Ok(p)
    }

    /// Parse a comma-separated `--platform` list, dropping duplicates (after
    /// normalisation). An empty list is an error.
    pub fn parse_list(s: &str) -> Result<Vec<Platform>, PlatformError> {
        let mut out: Vec<Platform> = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let p = Platform::parse(part)?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        if out.is_empty() {
            return Err(PlatformError::Syntax(s.to_string()));
        }
        Ok(out)
    }

    /// The platform kiln runs on.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform::new("linux", arch, None)
    }

    /// `os/arch[/variant]` without the OS version (BuildKit's `platforms.Format`,
    /// used for BUILDPLATFORM).
    pub fn without_version(&self) -> String {
        Platform { os_version: None, ..self.clone() }.to_string()
    }

    /// The platform object of an image index entry or image config.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"architecture": self.architecture, "os": self.os});
        if let Some(x) = &self.variant {
            v["variant"] = json!(x);
        }
        if let Some(x) = &self.os_version {
            v["os.version"] = json!(x);
        }
        v
    }

    /// The same platform as oci-spec's type (registry and index code).
    pub fn to_spec(&self) -> oci_spec::image::Platform {
        let mut b = oci_spec::image::PlatformBuilder::default()
            .os(oci_spec::image::Os::from(self.os.as_str()))
            .architecture(oci_spec::image::Arch::from(self.architecture.as_str()));
        if let Some(v) = &self.variant {
            b = b.variant(v.clone());
        }
        if let Some(v) = &self.os_version {
            b = b.os_version(v.clone());
        }
        b.build().expect("os and architecture are set")
    }

    /// From oci-spec's type, normalised.
    pub fn from_spec(p: &oci_spec::image::Platform) -> Platform {
        let mut out = Platform::new(&p.os().to_string(), &p.architecture().to_string(), p.variant().as_deref());
        out.os_version = p.os_version().clone();
        out
    }
}

impl fmt::Display for Platform {
    /// `linux/amd64`, `linux/arm/v7`, `windows(10.0.17763)/amd64` (BuildKit's
    /// `platforms.FormatAll`); empty for the empty (default) platform.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.os.is_empty() && self.architecture.is_empty() {
            return Ok(());
        }
        write!(f, "{}", self.os)?;
        if let Some(v) = &self.os_version {
            write!(f, "({v})")?;
        }
        write!(f, "/{}", self.architecture)?;
        if let Some(v) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// containerd's architecture and variant normalisation, as Docker writes them.
pub fn normalize(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.map(str::to_ascii_lowercase).filter(|v| !v.is_empty());
    match arch.as_str() {
        "x86_64" | "x86-64" | "amd64" => ("amd64".into(), variant.filter(|v| v != "v1")),
        "i386" | "i686" | "386" => ("386".into(), None),
        "aarch64" | "arm64" => ("arm64".into(), variant.filter(|v| v != "v8" && v != "8")),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn s(p: &str) -> String {
        Platform::parse(p).unwrap().to_string()
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
            ("linux/armhf", "linux/arm/v7"),
            ("linux/x86_64", "linux/amd64"),
            ("linux/amd64", "linux/amd64"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("linux/386", "linux/386"),
            ("linux/i386", "linux/386"),
            ("linux/ppc64le", "linux/ppc64le"),
            ("linux/s390x", "linux/s390x"),
            ("linux/riscv64", "linux/riscv64"),
            ("darwin/ppc64le", "darwin/ppc64le"),
            ("windows(1.2.3)/bar", "windows(1.2.3)/bar"),
            ("windows(10.0.17763)/amd64", "windows(10.0.17763)/amd64"),
        ];
        for (input, want) in table {
            assert_eq!(s(input), want, "{input}");
        }
    }

    #[test]
    fn os_version_is_kept_apart() {
        let p = Platform::parse("windows(10.0.17763)/amd64").unwrap();
        assert_eq!((p.os.as_str(), p.os_version.as_deref()), ("windows", Some("10.0.17763")));
        assert_eq!(p.without_version(), "windows/amd64");
        assert_eq!(p.to_json()["os.version"], "10.0.17763");
        assert_eq!(Platform::from_spec(&p.to_spec()), p);
    }

    #[test]
    fn rejects_bad_platforms() {
        for bad in ["", "linux/", "/amd64", "linux/sparc", "a/b/c/d", "windows()/amd64", "windows(1/amd64", "(1)/amd64"] {
            assert!(Platform::parse(bad).is_err(), "{bad:?}");
        }
        let e = Platform::parse("linux/amd46").unwrap_err().to_string();
        assert!(e.contains("known: amd64"), "{e}");
    }

    #[test]
    fn lists_dedupe() {
        let l = Platform::parse_list("linux/amd64,linux/arm64,linux/arm64/v8").unwrap();
        assert_eq!(l.iter().map(Platform::to_string).collect::<Vec<_>>(), ["linux/amd64", "linux/arm64"]);
        assert!(Platform::parse_list(",").is_err());
    }

    #[test]
    fn spec_round_trip_normalises() {
        let spec = oci_spec::image::PlatformBuilder::default()
            .os(oci_spec::image::Os::Linux)
            .architecture(oci_spec::image::Arch::ARM64)
            .variant("v8".to_string())
            .build()
            .unwrap();
        assert_eq!(Platform::from_spec(&spec), Platform::parse("linux/arm64").unwrap());
    }
}
