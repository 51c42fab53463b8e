//! Small value checks and normalizations used by lowering: EXPOSE ports, WORKDIR
//! paths, stage names and stop signals. Pure functions, kept apart so that they can be
//! tested as tables.

/// Stage names as BuildKit accepts them (after lower-casing).
pub(crate) fn valid_stage_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase())
        && c.all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '-' | '_' | '.'))
}

/// A signal name (`SIGTERM`, `TERM`, `SIGRTMIN+3`) or number (1-64).
pub(crate) fn valid_signal(s: &str) -> bool {
    if s.is_empty() {
        return false;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u32>().is_ok_and(|n| n > 0 && n < 65);
    }
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-')
}

/// `80`, `80/udp`, `8000-8002/tcp` → normalized `port/proto` strings.
pub(crate) fn expand_ports(s: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match s.split_once('/') {
        Some((p, pr)) => (p, pr.to_ascii_lowercase()),
        None => (s, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto {proto:?} in EXPOSE {s:?}"));
    }
    // An "ip:" prefix is accepted by Docker's parser and ignored for EXPOSE.
    let ports = ports.rsplit(':').next().unwrap_or(ports);
    let parse = |p: &str| p.parse::<u16>().map_err(|_| format!("invalid port {p:?} in EXPOSE {s:?}"));
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(format!("invalid port range {ports:?} in EXPOSE"));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// Go's `path.Clean` for the paths WORKDIR produces.
pub(crate) fn clean_path(p: &str) -> String {
    let abs = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !abs {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let j = parts.join("/");
    match (abs, j.is_empty()) {
        (true, _) => format!("/{j}"),
        (false, true) => ".".into(),
        (false, false) => j,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_paths_names_signals() {
        assert_eq!(expand_ports("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(expand_ports("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(expand_ports("8000-8002").unwrap(), vec!["8000/tcp", "8001/tcp", "8002/tcp"]);
        assert!(expand_ports("http").is_err());
        assert!(expand_ports("9-1").is_err());
        assert!(expand_ports("80/icmp").is_err());
        assert_eq!(clean_path("/app/./a/../b/"), "/app/b");
        assert_eq!(clean_path("/../x"), "/x");
        assert_eq!(clean_path("a/../.."), "..");
        assert!(valid_stage_name("build-1.x_y"));
        assert!(!valid_stage_name("1build"));
        assert!(valid_signal("SIGKILL") && valid_signal("9") && valid_signal("SIGRTMIN+3"));
        assert!(!valid_signal("0") && !valid_signal("SIG KILL") && !valid_signal(""));
    }
}
