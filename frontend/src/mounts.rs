//! `RUN --mount=...` option parsing.
//!
//! The value is a CSV record (as Go's `encoding/csv` reads it) of `key=value` fields.
//! Aliases are normalized and BuildKit's defaults made explicit, so that the builder
//! reads effective values and two spellings of one mount give one cache key.

use crate::suggest;
use std::collections::BTreeMap;

const MOUNT_TYPES: [&str; 5] = ["bind", "cache", "tmpfs", "secret", "ssh"];
const SHARING_MODES: [&str; 3] = ["shared", "private", "locked"];
/// The keys BuildKit's parseMount knows, in its order (its "did you mean" candidates).
const MOUNT_KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// Why a mount spec was refused.
#[derive(Debug)]
pub(crate) enum MountError<E> {
    /// The spec itself is wrong (message in BuildKit's words).
    Spec(String),
    /// Expanding a value failed.
    Expand(E),
}

impl<E> From<String> for MountError<E> {
    fn from(m: String) -> Self {
        MountError::Spec(m)
    }
}

/// The check BuildKit makes when it parses the Dockerfile, before any expansion:
/// the spec must be valid CSV, and `from=` must name a stage or image literally, as
/// the stage graph is fixed before variables are known.
pub(crate) fn check_unexpanded(v: &str) -> Result<(), String> {
    for field in split_csv(v)? {
        if let Some((k, val)) = field.split_once('=') {
            // A `$` at the very end expands to itself, so BuildKit lets it through.
            if k.trim().eq_ignore_ascii_case("from") && val.find('$').is_some_and(|i| i + 1 != val.len()) {
                return Err("'from' doesn't support variable expansion, define alias stage instead".into());
            }
        }
    }
    Ok(())
}

/// Parse a mount spec as written into its type and normalized options. The spec is
/// split into fields first and `expand` applied to each value alone (as BuildKit
/// does), so a variable can supply a value but never a key or a whole field.
pub(crate) fn parse_mount_spec<E>(
    v: &str,
    mut expand: impl FnMut(&str) -> Result<String, E>,
) -> Result<(String, BTreeMap<String, String>), MountError<E>> {
    let mut kind = "bind".to_string();
    let mut options = BTreeMap::new();
    for field in split_csv(v)? {
        let Some((k, raw)) = field.split_once('=') else {
            let k = field.trim().to_ascii_lowercase();
            let key = match k.as_str() {
                "readonly" | "ro" => {
                    options.insert("readonly".into(), "true".into());
                    continue;
                }
                "readwrite" | "rw" => {
                    options.insert("readonly".into(), "false".into());
                    continue;
                }
                "required" => "required",
                _ => return Err(MountError::Spec(format!("invalid field '{field}' must be a key=value pair"))),
            };
            check_type_allows(&kind, key)?;
            options.insert(key.into(), "true".into());
            continue;
        };
        let k = k.trim().to_ascii_lowercase();
        let val = expand(raw).map_err(MountError::Expand)?;
        let key = match k.as_str() {
            "type" => {
                let t = val.to_ascii_lowercase();
                if !MOUNT_TYPES.contains(&t.as_str()) {
                    let m = format!("unsupported mount type {}", crate::gofmt::quote(&val));
                    return Err(MountError::Spec(suggest::with_suggestion(m, &val, MOUNT_TYPES, true)));
                }
                kind = t;
                continue;
            }
            "target" | "dst" | "destination" => "target",
            "source" | "src" => "source",
            "from" => "from",
            "id" | "env" => k.as_str(),
            "readonly" | "ro" | "readwrite" | "rw" => {
                let b = go_parse_bool(&val).ok_or_else(|| format!("invalid value for {k}: {val}"))?;
                let readonly = if matches!(k.as_str(), "readonly" | "ro") { b } else { !b };
                options.insert("readonly".into(), readonly.to_string());
                continue;
            }
            "required" => {
                check_type_allows(&kind, "required")?;
                let b = go_parse_bool(&val).ok_or_else(|| format!("invalid value for {k}: {val}"))?;
                options.insert("required".into(), b.to_string());
                continue;
            }
            "size" => {
                check_type_allows(&kind, "size")?;
                "size"
            }
            "sharing" => {
                let s = val.to_ascii_lowercase();
                if !SHARING_MODES.contains(&s.as_str()) {
                    let m = format!("unsupported sharing value {}", crate::gofmt::quote(&val));
                    return Err(MountError::Spec(suggest::with_suggestion(m, &val, SHARING_MODES, true)));
                }
                options.insert("sharing".into(), s);
                continue;
            }
            "mode" => {
                if u32::from_str_radix(&val, 8).is_err() {
                    return Err(MountError::Spec(format!("invalid value {val} for mode")));
                }
                "mode"
            }
            "uid" | "gid" => {
                if val.parse::<u32>().is_err() {
                    return Err(MountError::Spec(format!("invalid value {val} for {k}")));
                }
                k.as_str()
            }
            _ => {
                let m = format!("unexpected key '{k}' in '{field}'");
                return Err(MountError::Spec(suggest::with_suggestion(m, &k, MOUNT_KEYS, true)));
            }
        };
        options.insert(key.to_string(), val);
    }
    if !matches!(kind.as_str(), "secret" | "ssh" | "cache") {
        for key in ["mode", "uid", "gid"] {
            if options.contains_key(key) {
                return Err(MountError::Spec(format!(
                    "{key} not allowed for {} type mounts",
                    crate::gofmt::quote(&kind)
                )));
            }
        }
    }
    if kind == "secret" {
        if options.contains_key("from") {
            return Err(MountError::Spec("secret mount should not have a from".into()));
        }
        if options.contains_key("sharing") {
            return Err(MountError::Spec("secret mount should not define sharing".into()));
        }
    }
    if options.contains_key("sharing") && kind != "cache" {
        return Err(MountError::Spec(format!("invalid cache sharing set for {kind} mount")));
    }
    if matches!(kind.as_str(), "bind" | "cache" | "tmpfs") && !options.contains_key("target") {
        return Err(MountError::Spec(format!("mount type={kind} requires a target")));
    }
    if let Some(v) = options.get("mode") {
        if u32::from_str_radix(v, 8).map_or(true, |m| m > 0o7777) {
            return Err(MountError::Spec(format!("invalid mode {v:?}: expected octal permissions")));
        }
    }
    fill_mount_defaults(&kind, &mut options)?;
    Ok((kind, options))
}

/// BuildKit reads `required` only for secret and ssh mounts and `size` only for
/// tmpfs, judging by the type given so far (so `type=` has to come first).
fn check_type_allows(kind: &str, key: &str) -> Result<(), String> {
    let ok = match key {
        "required" => matches!(kind, "secret" | "ssh"),
        "size" => kind == "tmpfs",
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("unexpected key '{key}' for mount type '{kind}'"))
    }
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

/// Go's strconv.ParseBool, which BuildKit uses for mount flags.
fn go_parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
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
        let (kind, o) = parse_mount_spec("dst=/x,src=y,rw", |v| Ok::<_, ()>(v.to_string())).unwrap();
        assert_eq!(kind, "bind");
        assert_eq!(o.get("target").map(String::as_str), Some("/x"));
        assert_eq!(o.get("source").map(String::as_str), Some("y"));
        assert_eq!(o.get("readonly").map(String::as_str), Some("false"));
    }

    /// Expands `$X` to `x-value`, `$SPEC` to a whole field, and fails on `$BAD`.
    fn env(v: &str) -> Result<String, String> {
        if v.contains("$BAD") {
            return Err("bad".into());
        }
        Ok(v.replace("$SPEC", "type=cache").replace("$X", "x-value"))
    }

    fn spec_err(v: &str) -> String {
        match parse_mount_spec(v, env) {
            Err(MountError::Spec(m)) => m,
            Err(MountError::Expand(m)) => format!("expand: {m}"),
            Ok(r) => format!("ok: {r:?}"),
        }
    }

    #[test]
    fn errors_as_buildkit() {
        let table: &[(&str, &str)] = &[
            // only values expand, after splitting
            ("$SPEC,target=/c", "invalid field '$SPEC' must be a key=value pair"),
            ("type=cache,bogus", "invalid field 'bogus' must be a key=value pair"),
            ("type=cache,target=/c,id=$BAD", "expand: bad"),
            ("typ=tmpfs", "unexpected key 'typ' in 'typ=tmpfs' (did you mean type?)"),
            ("colour=red,target=/x", "unexpected key 'colour' in 'colour=red'"),
            ("type=tmp,target=/x", "unsupported mount type \"tmp\" (did you mean tmpfs?)"),
            ("type=volume,target=/x", "unsupported mount type \"volume\""),
            ("type=cache,target=/c,sharing=share", "unsupported sharing value \"share\" (did you mean shared?)"),
            ("type=cache,target=/c,sharing=all", "unsupported sharing value \"all\""),
            // required/size are judged by the type given before them
            ("required,type=secret,id=a", "unexpected key 'required' for mount type 'bind'"),
            ("size=1m,type=tmpfs,target=/t", "unexpected key 'size' for mount type 'bind'"),
            ("type=bind,target=/x,mode=0700", "mode not allowed for \"bind\" type mounts"),
            ("type=tmpfs,target=/x,uid=1", "uid not allowed for \"tmpfs\" type mounts"),
            ("type=cache,target=/c,uid=x", "invalid value x for uid"),
            ("type=cache,target=/c,mode=999", "invalid value 999 for mode"),
            ("type=bind,target=/x,ro=yes", "invalid value for ro: yes"),
            ("type=bind,target=/x,sharing=locked", "invalid cache sharing set for bind mount"),
            ("type=secret,id=a,from=b", "secret mount should not have a from"),
        ];
        for (spec, want) in table {
            assert_eq!(spec_err(spec), *want, "{spec}");
        }
    }

    #[test]
    fn values_expand_alone() {
        let (kind, o) = parse_mount_spec("type=CACHE,target=/m/$X,id=$X,sharing=Locked,ro=True", env).unwrap();
        assert_eq!(kind, "cache");
        assert_eq!(o.get("target").map(String::as_str), Some("/m/x-value"));
        assert_eq!(o.get("id").map(String::as_str), Some("x-value"));
        assert_eq!(o.get("sharing").map(String::as_str), Some("locked"));
        assert_eq!(o.get("readonly").map(String::as_str), Some("true"));
        let (_, o) = parse_mount_spec("type=tmpfs,target=/t,size=1m", env).unwrap();
        assert_eq!(o.get("size").map(String::as_str), Some("1m"));
    }

    #[test]
    fn from_takes_no_variables() {
        let refused = "'from' doesn't support variable expansion, define alias stage instead";
        let table: &[(&str, Result<(), &str>)] = &[
            ("from=$ttt,target=/t", Err(refused)),
            ("from=${STAGE},target=/t", Err(refused)),
            ("FROM=a$b,target=/t", Err(refused)),
            // a final `$` is literal
            ("from=stage$,target=/t", Ok(())),
            ("from=stage,target=/$X", Ok(())),
            ("$SPEC,target=/t", Ok(())),
            ("target=\"/a", Err("unterminated quote in mount option \"target=\\\"/a\"")),
        ];
        for (spec, want) in table {
            assert_eq!(check_unexpanded(spec).map_err(|e| e.to_string()), want.map_err(str::to_string), "{spec}");
        }
    }
}
