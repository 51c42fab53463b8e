//! Image references, parsed the way docker does (distribution/reference's
//! `ParseNormalizedNamed`): a first path component that looks like a host (has a `.`
//! or `:`, or is `localhost`) is the registry, otherwise the registry is `docker.io`
//! and single-component names get `library/`. No tag and no digest means `:latest`.

use std::fmt;
use std::str::FromStr;

use kiln_oci::Digest;

pub use crate::error::ReferenceError;

pub const DOCKER_HUB: &str = "docker.io";

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Builds a reference from parts (validated like a parsed one).
    pub fn new(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<Digest>,
    ) -> Result<Self, ReferenceError> {
        let mut s = format!("{registry}/{repository}");
        if let Some(t) = tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s.parse()
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }
    pub fn repository(&self) -> &str {
        &self.repository
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, the form used in error messages.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository pinned to `digest` (tag dropped).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Reference { digest: Some(digest), tag: None, ..self.clone() }
    }

    /// The same repository with `tag` (digest dropped).
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        Reference::new(&self.registry, &self.repository, Some(tag), None)
    }

    /// Another repository on the same registry.
    pub fn with_repository(&self, repository: &str) -> Result<Self, ReferenceError> {
        Reference::new(&self.registry, repository, self.tag(), self.digest.clone())
    }

    /// The oci-client form. Digest wins over tag, as a digest pins content.
    pub(crate) fn to_oci(&self) -> oci_client::Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                d.to_string(),
            ),
            (None, Some(t)) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                t.clone(),
            ),
            (None, None) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                "latest".into(),
            ),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| ReferenceError { input: input.to_string(), reason: reason.to_string() };
        if input.is_empty() {
            return Err(err("empty reference"));
        }
        if input.len() > 4096 || input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("contains whitespace or control characters"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                let d: Digest = d.parse().map_err(|_| {
                    err("digest must be sha256: followed by 64 lowercase hex digits")
                })?;
                (r, Some(d))
            }
            None => (input, None),
        };
        // A tag is after the last ':' that follows the last '/' (a ':' before that
        // is a registry port).
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(err("tag must be 1-128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'"));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if registry.is_empty() || !valid_registry(&registry) {
            return Err(err("invalid registry host"));
        }
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        if repository.is_empty() {
            return Err(err("missing repository name"));
        }
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(err("repository name must be lowercase"));
        }
        if !repository.split('/').all(valid_component) {
            return Err(err(
                "repository path components must be [a-z0-9] separated by '.', '_', '__' or '-'",
            ));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if registry.len() + 1 + repository.len() > 255 {
            return Err(err("name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference { registry, repository, tag, digest })
    }
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && !t.starts_with('.')
        && !t.starts_with('-')
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_registry(r: &str) -> bool {
    // host[:port], host may be a bracketed IPv6 literal.
    let (host, port) = if let Some(rest) = r.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, p)) => {
                if h.is_empty() || !h.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
                    return false;
                }
                let port = if p.is_empty() {
                    None
                } else {
                    match p.strip_prefix(':') {
                        Some(x) => Some(x),
                        None => return false,
                    }
                };
                (None, port)
            }
            None => return false,
        }
    } else {
        match r.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(r), None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    match host {
        None => true,
        Some(h) => {
            !h.is_empty()
                && h.split('.').all(|l| {
                    !l.is_empty()
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        }
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run.
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_table() {
        // input, registry, repository, tag, digest?, display
        let dg = format!("busybox@{D}");
        let tg = format!("ghcr.io/o/r:v1@{D}");
        let cases: Vec<(&str, &str, &str, Option<&str>, bool, String)> = vec![
            ("busybox", "docker.io", "library/busybox", Some("latest"), false, "docker.io/library/busybox:latest".into()),
            ("busybox:1.36", "docker.io", "library/busybox", Some("1.36"), false, "docker.io/library/busybox:1.36".into()),
            ("library/busybox", "docker.io", "library/busybox", Some("latest"), false, "docker.io/library/busybox:latest".into()),
            ("docker.io/busybox", "docker.io", "library/busybox", Some("latest"), false, "docker.io/library/busybox:latest".into()),
            ("index.docker.io/library/busybox", "docker.io", "library/busybox", Some("latest"), false, "docker.io/library/busybox:latest".into()),
            ("user/app:dev", "docker.io", "user/app", Some("dev"), false, "docker.io/user/app:dev".into()),
            ("host:5000/a/b:tag", "host:5000", "a/b", Some("tag"), false, "host:5000/a/b:tag".into()),
            ("host:5000/a/b", "host:5000", "a/b", Some("latest"), false, "host:5000/a/b:latest".into()),
            ("localhost/x", "localhost", "x", Some("latest"), false, "localhost/x:latest".into()),
            ("localhost:5000/x:1", "localhost:5000", "x", Some("1"), false, "localhost:5000/x:1".into()),
            ("127.0.0.1:5000/demo/hello", "127.0.0.1:5000", "demo/hello", Some("latest"), false, "127.0.0.1:5000/demo/hello:latest".into()),
            ("[::1]:5000/x", "[::1]:5000", "x", Some("latest"), false, "[::1]:5000/x:latest".into()),
            ("quay.io/a.b/c_d/e__f/g-h--i", "quay.io", "a.b/c_d/e__f/g-h--i", Some("latest"), false, "quay.io/a.b/c_d/e__f/g-h--i:latest".into()),
            (&dg, "docker.io", "library/busybox", None, true, format!("docker.io/library/busybox@{D}")),
            (&tg, "ghcr.io", "o/r", Some("v1"), true, format!("ghcr.io/o/r:v1@{D}")),
        ];
        for (input, reg, repo, tag, has_digest, display) in cases {
            let r: Reference = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.registry(), reg, "{input}");
            assert_eq!(r.repository(), repo, "{input}");
            assert_eq!(r.tag(), tag, "{input}");
            assert_eq!(r.digest().is_some(), has_digest, "{input}");
            assert_eq!(r.to_string(), display, "{input}");
            // Display round-trips.
            assert_eq!(r.to_string().parse::<Reference>().unwrap(), r, "{input}");
        }
    }

    #[test]
    fn rejects_table() {
        let cases = [
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("busybox:", "tag"),
            ("busybox:-x", "tag"),
            ("busybox@sha256:abc", "digest"),
            ("busybox@md5:abc", "digest"),
            ("a//b", "components"),
            ("a/b/", "components"),
            ("-a", "components"),
            ("a..b", "components"),
            ("a___b", "components"),
            ("host:5000/", "missing repository"),
            ("host:abc/x", "registry"),
            ("bad_host.io/x", "registry"),
            ("a b", "whitespace"),
        ];
        for (input, why) in cases {
            let e = input.parse::<Reference>().expect_err(input);
            assert!(e.to_string().contains(why), "{input}: {e}");
            assert!(e.to_string().contains(&format!("{input:?}")), "{input}: {e}");
        }
    }

    #[test]
    fn helpers() {
        let r: Reference = "127.0.0.1:5000/a/one:v1".parse().unwrap();
        assert_eq!(r.name(), "127.0.0.1:5000/a/one");
        let d: Digest = D.parse().unwrap();
        assert_eq!(r.with_digest(d.clone()).to_string(), format!("127.0.0.1:5000/a/one@{D}"));
        assert_eq!(r.with_repository("a/two").unwrap().to_string(), "127.0.0.1:5000/a/two:v1");
        assert_eq!(r.with_tag("v2").unwrap().to_string(), "127.0.0.1:5000/a/one:v2");
        let o = r.with_digest(d).to_oci();
        assert_eq!(o.registry(), "127.0.0.1:5000");
        assert_eq!(o.digest(), Some(D));
    }
}
