//! `RUN --mount=...` option parsing.
//!
//! The value is a CSV record (as Go's `encoding/csv` reads it) of `key=value` fields.
//! Aliases are normalized and BuildKit's defaults made explicit, so that the builder
//! reads effective values and two spellings of one mount give one cache key.

use std::collections::BTreeMap;

/// Parse an (already expanded) mount spec into its type and normalized options.
pub(crate) fn parse_mount_spec(v: &str) -> Result<(String, BTreeMap<String, String>), String> {
    let bad = |m: String| m;
    let mut kind = "bind".to_string();
    let mut options = BTreeMap::new();
    for field in split_csv(v)? {
        let (k, val) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_string())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let key = match k.as_str() {
            "type" => {
                kind = val.clone().unwrap_or_default();
                continue;
            }
            "target" | "dst" | "destination" => "target",
            "source" | "src" => "source",
            "from" => "from",
            "readonly" | "ro" => "readonly",
            "rw" | "readwrite" => {
                let b = parse_bool(val.as_deref()).ok_or_else(|| bad(format!("invalid value for {k}: {val:?}")))?;
                options.insert("readonly".into(), (!b).to_string());
                continue;
            }
            "id" | "sharing" | "mode" | "uid" | "gid" | "required" | "size" | "env" => k.as_str(),
            _ => return Err(bad(format!("unexpected key '{k}' in mount option {field:?}"))),
        };
        let value = match key {
            "readonly" | "required" => {
                parse_bool(val.as_deref()).ok_or_else(|| bad(format!("invalid value for {k}: {val:?}")))?.to_string()
            }
            _ => val.ok_or_else(|| bad(format!("mount option {k} requires a value")))?,
        };
        options.insert(key.to_string(), value);
    }
    if !matches!(kind.as_str(), "bind" | "cache" | "tmpfs" | "secret" | "ssh") {
        return Err(bad(format!("unsupported mount type {kind:?}")));
    }
    if matches!(kind.as_str(), "bind" | "cache" | "tmpfs") && !options.contains_key("target") {
        return Err(bad(format!("mount type={kind} requires a target")));
    }
    if let Some(s) = options.get("sharing") {
        if !matches!(s.as_str(), "shared" | "private" | "locked") {
            return Err(bad(format!("unsupported sharing value {s:?}")));
        }
    }
    for key in ["uid", "gid"] {
        if let Some(v) = options.get(key) {
            if v.parse::<u32>().is_err() {
                return Err(bad(format!("invalid {key} {v:?}: expected a number")));
            }
        }
    }
    if let Some(v) = options.get("mode") {
        if u32::from_str_radix(v, 8).map_or(true, |m| m > 0o7777) {
            return Err(bad(format!("invalid mode {v:?}: expected octal permissions")));
        }
    }
    fill_mount_defaults(&kind, &mut options)?;
    Ok((kind, options))
}

/// Make BuildKit's defaults explicit, so the builder reads effective values and two
/// spellings of the same mount give the same cache key.
fn fill_mount_defaults(kind: &str, o: &mut BTreeMap<String, String>) -> Result<(), String> {
    let mut def = |k: &str, v: String| {
        o.entry(k.to_string()).or_insert(v);
    };
    match kind {
        "bind" => def("readonly", "true".into()),
        "cache" => {
            let target = o.get("target").cloned().unwrap_or_default();
            let mut def = |k: &str, v: String| {
                o.entry(k.to_string()).or_insert(v);
            };
            def("id", crate::values::clean_path(&target)); // BuildKit: path.Clean(target)
            def("sharing", "shared".into());
            def("readonly", "false".into());
            def("mode", "0755".into());
            def("uid", "0".into());
            def("gid", "0".into());
        }
        "tmpfs" => {}
        "secret" => {
            let id = o.get("id").cloned();
            let target = o.get("target").cloned();
            let env = o.contains_key("env");
            match (id, target) {
                (None, None) if !env => return Err("secret mount requires an id or a target".into()),
                (None, None) => return Err("secret mount with env= requires an id".into()),
                (None, Some(t)) => {
                    let base = t.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string();
                    o.insert("id".into(), base);
                }
                (Some(id), None) if !env => {
                    o.insert("target".into(), format!("/run/secrets/{id}"));
                }
                _ => {}
            }
            let mut def = |k: &str, v: String| {
                o.entry(k.to_string()).or_insert(v);
            };
            def("required", "false".into());
            def("mode", "0400".into());
            def("uid", "0".into());
            def("gid", "0".into());
        }
        "ssh" => {
            def("id", "default".into());
            def("required", "false".into());
            def("mode", "0600".into());
            def("uid", "0".into());
            def("gid", "0".into());
        }
        _ => {}
    }
    Ok(())
}

fn parse_bool(v: Option<&str>) -> Option<bool> {
    match v.map(|s| s.to_ascii_lowercase()) {
        None => Some(true),
        Some(s) if s == "true" || s == "1" => Some(true),
        Some(s) if s == "false" || s == "0" => Some(false),
        _ => None,
    }
}

/// CSV fields as Go's encoding/csv reads one record: commas separate, `"` quotes.
fn split_csv(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut inq = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if inq && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => inq = !inq,
            ',' if !inq => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if inq {
        return Err(format!("unterminated quote in mount option {s:?}"));
    }
    out.push(cur);
    Ok(out.into_iter().filter(|f| !f.trim().is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_aliases() {
        assert_eq!(split_csv("type=cache,target=\"/a,b\"").unwrap(), vec!["type=cache", "target=/a,b"]);
        assert!(split_csv("a=\"b").is_err());
        let (kind, o) = parse_mount_spec("dst=/x,src=y,rw").unwrap();
        assert_eq!(kind, "bind");
        assert_eq!(o.get("target").map(String::as_str), Some("/x"));
        assert_eq!(o.get("source").map(String::as_str), Some("y"));
        assert_eq!(o.get("readonly").map(String::as_str), Some("false"));
    }
}
