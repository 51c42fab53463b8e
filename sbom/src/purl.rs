//! Package URLs (github.com/package-url/purl-spec): `pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS`,
//! each part percent-encoded outside the unreserved characters (so a Debian
//! version's `+` is `%2B` and an epoch's `:` is `%3A`, as syft writes them).

/// `s` percent-encoded except `A-Z a-z 0-9 . - _ ~`.
pub fn encode(s: &str) -> String {
    kiln_oci::percent::encode_unreserved(s)
}

/// A purl from its parts; `namespace` may hold `/`-separated segments (each encoded).
pub fn purl(ty: &str, namespace: Option<&str>, name: &str, version: &str, qualifiers: &[(&str, String)]) -> String {
    let mut p = format!("pkg:{ty}/");
    if let Some(ns) = namespace.filter(|n| !n.is_empty()) {
        let segs: Vec<String> = ns.split('/').map(encode).collect();
        p.push_str(&segs.join("/"));
        p.push('/');
    }
    p.push_str(&encode(name));
    if !version.is_empty() {
        p.push('@');
        p.push_str(&encode(version));
    }
    let mut q: Vec<(&str, &String)> = qualifiers.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (*k, v)).collect();
    q.sort();
    if !q.is_empty() {
        p.push('?');
        p.push_str(&q.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect::<Vec<_>>().join("&"));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_the_spec_and_syft_write_them() {
        assert_eq!(
            purl("deb", Some("debian"), "libc6", "2.36-9+deb12u4", &[("arch", "amd64".into()), ("distro", "debian-12".into())]),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12"
        );
        assert_eq!(purl("deb", Some("debian"), "perl", "1:5.36", &[]), "pkg:deb/debian/perl@1%3A5.36");
        assert_eq!(purl("npm", Some("@types"), "node", "20.1.0", &[]), "pkg:npm/%40types/node@20.1.0");
        assert_eq!(purl("golang", Some("github.com/containers"), "image", "v5.0.0", &[]), "pkg:golang/github.com/containers/image@v5.0.0");
        assert_eq!(purl("pypi", None, "six", "1.16.0", &[]), "pkg:pypi/six@1.16.0");
    }
}
