//! How a registry host is spoken to: plain HTTP (named insecure, or loopback) or
//! TLS, with the `host[:port]` parsing and the probe for a server that answers TLS.

use std::net::IpAddr;
use std::time::Duration;

/// Whether `registry` (`host[:port]`) is spoken to over plain HTTP, given the
/// `--insecure-registry` list.
pub(crate) fn is_insecure(insecure: &[String], registry: &str) -> bool {
    let host = host_of(registry);
    if insecure.iter().any(|i| i == registry || i == host) {
        return true;
    }
    if host == "localhost" {
        return true;
    }
    host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
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
}
