//! How a registry host is spoken to: plain HTTP, verified TLS or TLS without
//! verification, per purpose (pulls, pushes) as Kaniko's switches set it, with the
//! `host[:port]` parsing and the probe for a server that answers TLS.

use std::net::IpAddr;
use std::time::Duration;

/// Registries named as `host[:port]` or `host`, or all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hosts {
    pub all: bool,
    pub names: Vec<String>,
}

impl Hosts {
    pub fn every() -> Hosts {
        Hosts { all: true, names: Vec::new() }
    }

    pub fn named<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Hosts {
        Hosts { all: false, names: names.into_iter().map(Into::into).collect() }
    }

    pub fn contains(&self, registry: &str) -> bool {
        self.all || names_registry(&self.names, registry)
    }
}

fn names_registry(names: &[String], registry: &str) -> bool {
    let host = host_of(registry);
    names.iter().any(|n| n == registry || n == host)
}

/// Where a registry may be spoken to less strictly than over verified TLS, for
/// one purpose (Kaniko's switches: `pkg/executor/push.go`, `pkg/image/remote/remote.go`,
/// `pkg/util/transport_util.go`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leniency {
    /// Plain HTTP when the registry does not answer TLS (TLS, verified, when it
    /// does): `--insecure`, `--insecure-pull`, `--insecure-registry`.
    pub plain_http: Hosts,
    /// TLS without certificate verification: `--skip-tls-verify`,
    /// `--skip-tls-verify-pull`, `--skip-tls-verify-registry`.
    pub skip_verify: Hosts,
}

/// What a registry is spoken to for: reading (base images, `--cache-from`) or
/// writing (destinations; Kaniko's `--cache-repo` both ways, as Kaniko does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    Pull,
    Push,
}

/// How one registry is spoken to for one purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Mode {
    Http,
    Https { verify: bool },
}

/// What decides a registry's [`Mode`]: `--insecure-registry` (Docker's meaning:
/// plain HTTP, or TLS without verification if it speaks TLS, both purposes), the
/// per-purpose leniencies, and whether TLS material (CA, client certificate) is given.
pub(crate) struct Policy<'a> {
    pub insecure: &'a [String],
    pub pull: &'a Leniency,
    pub push: &'a Leniency,
    pub ca_certs: bool,
    pub client_cert: bool,
}

impl Policy<'_> {
    /// `speaks_tls` is asked only where plain HTTP is allowed and TLS is plausible.
    pub fn mode(&self, registry: &str, purpose: Purpose, speaks_tls: impl FnOnce() -> bool) -> Mode {
        let l = match purpose {
            Purpose::Pull => self.pull,
            Purpose::Push => self.push,
        };
        let docker_insecure = names_registry(self.insecure, registry);
        let verify = !(docker_insecure || l.skip_verify.contains(registry));
        let named_plain = docker_insecure || l.plain_http.contains(registry);
        if !named_plain && !is_loopback(registry) {
            return Mode::Https { verify };
        }
        // Loopback registries are plain HTTP by default (as the Docker daemon has
        // them) and most local ones are: probe only where TLS is plausible — plain
        // HTTP named explicitly, or TLS material or leniency given for this registry
        // for either purpose (so a verified push is refused by its certificate, not
        // by a 400, when only pulls skip verification) — a probe costs a connection.
        let tls_named = [self.pull, self.push]
            .iter()
            .any(|l| l.skip_verify.contains(registry) || l.plain_http.contains(registry));
        let plausible = named_plain || tls_named || self.ca_certs || self.client_cert;
        if plausible && speaks_tls() {
            Mode::Https { verify }
        } else {
            Mode::Http
        }
    }
}

/// `localhost`, 127.0.0.0/8 and ::1.
pub(crate) fn is_loopback(registry: &str) -> bool {
    let host = host_of(registry);
    host == "localhost" || host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// Whether `registry` (`host[:port]`) may be spoken to over plain HTTP, given the
/// `--insecure-registry` list.
pub(crate) fn is_insecure(insecure: &[String], registry: &str) -> bool {
    names_registry(insecure, registry) || is_loopback(registry)
}

/// Whether the server at `host[:port]` (443 if none) answers a TLS ClientHello with
/// a TLS record: a short blocking probe, done once per registry and process.
pub(crate) fn speaks_tls(registry: &str) -> bool {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    let addr = if registry.rsplit_once(':').is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())) && !registry.ends_with(']') {
        registry.to_string()
    } else {
        format!("{registry}:443")
    };
    let Some(sock) = addr.to_socket_addrs().ok().and_then(|mut a| a.next()) else { return false };
    let Ok(mut s) = TcpStream::connect_timeout(&sock, Duration::from_secs(3)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    // A minimal TLS 1.2 ClientHello (one cipher suite, no extensions): any TLS
    // server answers with a handshake (0x16) or alert (0x15) record; an HTTP server
    // answers "HTTP/1.x 400" once it sees a line end.
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0xc0, 0x2f]); // cipher suites
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    let mut hs = vec![0x01, 0x00, (body.len() >> 8) as u8, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut hello = vec![0x16, 0x03, 0x01, (hs.len() >> 8) as u8, hs.len() as u8];
    hello.extend_from_slice(&hs);
    // An HTTP server reads up to the end of a request line before it answers: end one,
    // so a plain-HTTP registry replies 400 at once instead of waiting (a TLS server
    // has answered the hello before it looks at these bytes).
    hello.extend_from_slice(b"\r\n\r\n");
    if s.write_all(&hello).is_err() {
        return false;
    }
    let mut first = [0u8; 1];
    matches!(s.read(&mut first), Ok(1) if first[0] == 0x16 || first[0] == 0x15)
}

/// `host` of `host[:port]` / `[v6]:port`.
pub(crate) fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_hosts() {
        let o: Vec<String> = vec!["myreg:5000".into(), "plain.example".into()];
        for (r, want) in [
            ("localhost", true),
            ("localhost:5000", true),
            ("127.0.0.1:5000", true),
            ("127.1.2.3", true),
            ("[::1]:5000", true),
            ("myreg:5000", true),
            ("myreg:5001", false),
            ("plain.example:8080", true),
            ("docker.io", false),
            ("10.0.0.1:5000", false),
        ] {
            assert_eq!(is_insecure(&o, r), want, "{r}");
        }
    }

    #[test]
    fn modes_per_purpose() {
        let none = Leniency::default();
        let skip_pull = Leniency { skip_verify: Hosts::every(), ..Default::default() };
        let plain_push = Leniency { plain_http: Hosts::named(["reg.example:5000"]), ..Default::default() };
        let p = Policy { insecure: &[], pull: &skip_pull, push: &plain_push, ca_certs: false, client_cert: false };
        let tls = || true;
        let http = || false;
        let unasked = || -> bool { panic!("probed") };
        // Remote registries: TLS, verified unless skipped for that purpose.
        assert_eq!(p.mode("quay.io", Purpose::Pull, unasked), Mode::Https { verify: false });
        assert_eq!(p.mode("quay.io", Purpose::Push, unasked), Mode::Https { verify: true });
        // Plain HTTP allowed: HTTP unless it speaks TLS, which is then verified.
        assert_eq!(p.mode("reg.example:5000", Purpose::Push, http), Mode::Http);
        assert_eq!(p.mode("reg.example:5000", Purpose::Push, tls), Mode::Https { verify: true });
        assert_eq!(p.mode("reg.example:5000", Purpose::Pull, unasked), Mode::Https { verify: false });
        // Loopback: probed since a purpose skips verification; a push stays verified.
        assert_eq!(p.mode("127.0.0.1:5000", Purpose::Push, tls), Mode::Https { verify: true });
        assert_eq!(p.mode("127.0.0.1:5000", Purpose::Pull, tls), Mode::Https { verify: false });
        assert_eq!(p.mode("127.0.0.1:5000", Purpose::Pull, http), Mode::Http);
        // Nothing TLS-related for a loopback registry: plain HTTP, no probe.
        let q = Policy { insecure: &[], pull: &none, push: &none, ca_certs: false, client_cert: false };
        assert_eq!(q.mode("localhost:5000", Purpose::Push, unasked), Mode::Http);
        // --insecure-registry (Docker's): unverified TLS when it speaks TLS, for both.
        let named = vec!["myreg:5000".to_string()];
        let d = Policy { insecure: &named, pull: &none, push: &none, ca_certs: false, client_cert: false };
        assert_eq!(d.mode("myreg:5000", Purpose::Push, tls), Mode::Https { verify: false });
        assert_eq!(d.mode("myreg:5000", Purpose::Pull, http), Mode::Http);
        assert_eq!(d.mode("other:5000", Purpose::Pull, unasked), Mode::Https { verify: true });
        // A client certificate or a CA makes a loopback registry worth probing.
        let c = Policy { insecure: &[], pull: &none, push: &none, ca_certs: false, client_cert: true };
        assert_eq!(c.mode("127.0.0.1:5000", Purpose::Push, tls), Mode::Https { verify: true });
    }
}
