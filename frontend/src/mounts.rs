//! `RUN --mount=...` option parsing.
//!
//! The value is a CSV record (as Go's `encoding/csv` reads it) of `key=value` fields.
//! They are validated here, once, into a typed [`RunMount`]: aliases resolved and
//! BuildKit's defaults made explicit, so that the builder reads effective values and
//! two spellings of one mount give one cache key.

use crate::graph::{MountKind, RunMount, Sharing};
use crate::suggest;

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

/// A mount spec parsed; `from` is still the stage or image name as written, for
/// lowering to resolve (`mount.from` is `None`).
#[derive(Debug)]
pub(crate) struct ParsedMount {
    pub mount: RunMount,
    pub from: Option<String>,
}

/// The fields as given, before the type's checks and defaults.
#[derive(Default)]
struct Given {
    target: Option<String>,
    source: Option<String>,
    from: Option<String>,
    id: Option<String>,
    env: Option<String>,
    size: Option<String>,
    readonly: Option<bool>,
    required: Option<bool>,
    sharing: Option<Sharing>,
    /// The value and its text (the range error quotes the text).
    mode: Option<(u32, String)>,
    uid: Option<u32>,
    gid: Option<u32>,
}

/// Parse a mount spec as written into a [`RunMount`] with BuildKit's defaults filled
/// in. The spec is split into fields first and `expand` applied to each value alone
/// (as BuildKit does), so a variable can supply a value but never a key or a whole
/// field. Later fields override earlier ones.
pub(crate) fn parse_mount_spec<E>(
    v: &str,
    mut expand: impl FnMut(&str) -> Result<String, E>,
) -> Result<ParsedMount, MountError<E>> {
    let mut kind = MountKind::Bind;
    let mut g = Given::default();
    for field in split_csv(v)? {
        let Some((k, raw)) = field.split_once('=') else {
            match field.trim().to_ascii_lowercase().as_str() {
                "readonly" | "ro" => g.readonly = Some(true),
                "readwrite" | "rw" => g.readonly = Some(false),
                "required" => {
                    check_type_allows(kind, "required")?;
                    g.required = Some(true);
                }
                _ => return Err(MountError::Spec(format!("invalid field '{field}' must be a key=value pair"))),
            }
            continue;
        };
        let k = k.trim().to_ascii_lowercase();
        let val = expand(raw).map_err(MountError::Expand)?;
        match k.as_str() {
            "type" => kind = parse_kind(&val)?,
            "target" | "dst" | "destination" => g.target = Some(val),
            "source" | "src" => g.source = Some(val),
            "from" => g.from = Some(val),
            "id" => g.id = Some(val),
            "env" => g.env = Some(val),
            "readonly" | "ro" => g.readonly = Some(parse_bool(&k, &val)?),
            "readwrite" | "rw" => g.readonly = Some(!parse_bool(&k, &val)?),
            "required" => {
                check_type_allows(kind, "required")?;
                g.required = Some(parse_bool(&k, &val)?);
            }
            "size" => {
                check_type_allows(kind, "size")?;
                g.size = Some(val);
            }
            "sharing" => g.sharing = Some(parse_sharing(&val)?),
            "mode" => {
                let m = u32::from_str_radix(&val, 8).map_err(|_| format!("invalid value {val} for mode"))?;
                g.mode = Some((m, val));
            }
            "uid" => g.uid = Some(parse_id(&k, &val)?),
            "gid" => g.gid = Some(parse_id(&k, &val)?),
            _ => {
                let m = format!("unexpected key '{k}' in '{field}'");
                return Err(MountError::Spec(suggest::with_suggestion(m, &k, MOUNT_KEYS, true)));
            }
        }
    }
    check_given(kind, &g)?;
    let from = g.from.clone();
    Ok(ParsedMount { mount: with_defaults(kind, g)?, from })
}

fn parse_kind(val: &str) -> Result<MountKind, String> {
    let t = val.to_ascii_lowercase();
    MountKind::ALL.into_iter().find(|k| k.as_str() == t).ok_or_else(|| {
        let m = format!("unsupported mount type {}", crate::gofmt::quote(val));
        suggest::with_suggestion(m, val, MOUNT_TYPES, true)
    })
}

fn parse_sharing(val: &str) -> Result<Sharing, String> {
    let s = val.to_ascii_lowercase();
    Sharing::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| {
        let m = format!("unsupported sharing value {}", crate::gofmt::quote(val));
        suggest::with_suggestion(m, val, SHARING_MODES, true)
    })
}

fn parse_bool(k: &str, val: &str) -> Result<bool, String> {
    go_parse_bool(val).ok_or_else(|| format!("invalid value for {k}: {val}"))
}

fn parse_id(k: &str, val: &str) -> Result<u32, String> {
    val.parse::<u32>().map_err(|_| format!("invalid value {val} for {k}"))
}

/// The checks BuildKit makes once all fields are read, in its order.
fn check_given(kind: MountKind, g: &Given) -> Result<(), String> {
    let quoted = crate::gofmt::quote(kind.as_str());
    if !matches!(kind, MountKind::Secret | MountKind::Ssh | MountKind::Cache) {
        for (key, given) in [("mode", g.mode.is_some()), ("uid", g.uid.is_some()), ("gid", g.gid.is_some())] {
            if given {
                return Err(format!("{key} not allowed for {quoted} type mounts"));
            }
        }
    }
    if kind == MountKind::Secret {
        if g.from.is_some() {
            return Err("secret mount should not have a from".into());
        }
        if g.sharing.is_some() {
            return Err("secret mount should not define sharing".into());
        }
    }
    if g.sharing.is_some() && kind != MountKind::Cache {
        return Err(format!("invalid cache sharing set for {} mount", kind.as_str()));
    }
    if matches!(kind, MountKind::Bind | MountKind::Cache | MountKind::Tmpfs) && g.target.is_none() {
        return Err(format!("mount type={} requires a target", kind.as_str()));
    }
    if let Some((m, text)) = &g.mode {
        if *m > 0o7777 {
            return Err(format!("invalid mode {text:?}: expected octal permissions"));
        }
    }
    Ok(())
}

/// BuildKit reads `required` only for secret and ssh mounts and `size` only for
/// tmpfs, judging by the type given so far (so `type=` has to come first).
fn check_type_allows(kind: MountKind, key: &str) -> Result<(), String> {
    let ok = match key {
        "required" => matches!(kind, MountKind::Secret | MountKind::Ssh),
        "size" => kind == MountKind::Tmpfs,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("unexpected key '{key}' for mount type '{}'", kind.as_str()))
    }
}

/// Make BuildKit's defaults explicit, so the builder reads effective values and two
/// spellings of the same mount are equal (and give the same cache key).
fn with_defaults(kind: MountKind, g: Given) -> Result<RunMount, String> {
    let mut m = RunMount {
        kind,
        target: g.target,
        source: g.source,
        from: None,
        readonly: g.readonly.unwrap_or(kind == MountKind::Bind),
        id: g.id,
        sharing: g.sharing.unwrap_or_default(),
        mode: g.mode.map(|(m, _)| m),
        uid: g.uid,
        gid: g.gid,
        required: g.required.unwrap_or(false),
        env: g.env,
        size: g.size,
    };
    let default_mode = match kind {
        MountKind::Bind | MountKind::Tmpfs => return Ok(m),
        MountKind::Cache => {
            // BuildKit: path.Clean(target)
            let target = m.target.as_deref().unwrap_or_default();
            m.id.get_or_insert_with(|| crate::values::clean_path(target));
            0o755
        }
        MountKind::Secret => {
            match (&m.id, &m.target) {
                (None, None) if m.env.is_none() => return Err("secret mount requires an id or a target".into()),
                (None, None) => return Err("secret mount with env= requires an id".into()),
                (None, Some(t)) => {
                    m.id = Some(t.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string());
                }
                (Some(id), None) if m.env.is_none() => m.target = Some(format!("/run/secrets/{id}")),
                _ => {}
            }
            0o400
        }
        MountKind::Ssh => {
            m.id.get_or_insert_with(|| "default".into());
            0o600
        }
    };
    m.mode.get_or_insert(default_mode);
    m.uid.get_or_insert(0);
    m.gid.get_or_insert(0);
    Ok(m)
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
    fn csv() {
        assert_eq!(split_csv("type=cache,target=\"/a,b\"").unwrap(), vec!["type=cache", "target=/a,b"]);
        assert!(split_csv("a=\"b").is_err());
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
            Ok(r) => format!("ok: {:?}", r.mount),
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
            ("type=cache,target=/c,mode=17777", "invalid mode \"17777\": expected octal permissions"),
            ("type=cache,target=/c,gid=-1", "invalid value -1 for gid"),
            ("type=cache,target=/c,required", "unexpected key 'required' for mount type 'cache'"),
            ("type=bind,target=/x,size=1m", "unexpected key 'size' for mount type 'bind'"),
            ("type=secret,id=a,sharing=locked", "secret mount should not define sharing"),
            ("type=tmpfs,sharing=locked,target=/t", "invalid cache sharing set for tmpfs mount"),
            ("type=tmpfs", "mount type=tmpfs requires a target"),
            ("src=x", "mount type=bind requires a target"),
            ("type=secret", "secret mount requires an id or a target"),
            ("type=secret,env=A", "secret mount with env= requires an id"),
            ("type=ssh,required=maybe", "invalid value for required: maybe"),
            ("type=secret,id=a,from=b", "secret mount should not have a from"),
        ];
        for (spec, want) in table {
            assert_eq!(spec_err(spec), *want, "{spec}");
        }
    }

    fn mount(v: &str) -> RunMount {
        parse_mount_spec(v, env).unwrap().mount
    }

    /// A mount of `kind` with nothing set (no defaults either).
    fn bare(kind: MountKind) -> RunMount {
        RunMount {
            kind,
            target: None,
            source: None,
            from: None,
            readonly: false,
            id: None,
            sharing: Sharing::Shared,
            mode: None,
            uid: None,
            gid: None,
            required: false,
            env: None,
            size: None,
        }
    }

    fn owned(kind: MountKind, mode: u32) -> RunMount {
        RunMount { mode: Some(mode), uid: Some(0), gid: Some(0), ..bare(kind) }
    }

    #[test]
    fn kinds_options_and_defaults() {
        let s = |v: &str| Some(v.to_string());
        let table: Vec<(&str, RunMount)> = vec![
            ("target=/x", RunMount { target: s("/x"), readonly: true, ..bare(MountKind::Bind) }),
            ("dst=/x,src=y,rw", RunMount { target: s("/x"), source: s("y"), ..bare(MountKind::Bind) }),
            ("destination=/x,readwrite=true", RunMount { target: s("/x"), ..bare(MountKind::Bind) }),
            ("type=bind,target=/x,rw=false", RunMount { target: s("/x"), readonly: true, ..bare(MountKind::Bind) }),
            ("type=bind,target=/x,ro,rw", RunMount { target: s("/x"), ..bare(MountKind::Bind) }),
            (
                "type=bind,from=img,source=/s,target=/x,id=ignored",
                RunMount {
                    target: s("/x"),
                    source: s("/s"),
                    readonly: true,
                    id: s("ignored"),
                    ..bare(MountKind::Bind)
                },
            ),
            (
                "type=cache,target=/root/.cache/",
                RunMount { target: s("/root/.cache/"), id: s("/root/.cache"), ..owned(MountKind::Cache, 0o755) },
            ),
            (
                "type=CACHE,target=/m/$X,id=$X,sharing=Locked,ro=True,mode=0700,uid=1000,gid=+5",
                RunMount {
                    target: s("/m/x-value"),
                    id: s("x-value"),
                    sharing: Sharing::Locked,
                    readonly: true,
                    mode: Some(0o700),
                    uid: Some(1000),
                    gid: Some(5),
                    ..bare(MountKind::Cache)
                },
            ),
            (
                "type=cache,target=/c,sharing=private,from=b,source=seed",
                RunMount {
                    target: s("/c"),
                    id: s("/c"),
                    sharing: Sharing::Private,
                    source: s("seed"),
                    ..owned(MountKind::Cache, 0o755)
                },
            ),
            ("type=tmpfs,target=/t,size=1m", RunMount { target: s("/t"), size: s("1m"), ..bare(MountKind::Tmpfs) }),
            ("type=tmpfs,dst=/t", RunMount { target: s("/t"), ..bare(MountKind::Tmpfs) }),
            (
                "type=secret,id=tok",
                RunMount { id: s("tok"), target: s("/run/secrets/tok"), ..owned(MountKind::Secret, 0o400) },
            ),
            (
                "type=secret,target=/a/b.txt,required",
                RunMount { id: s("b.txt"), target: s("/a/b.txt"), required: true, ..owned(MountKind::Secret, 0o400) },
            ),
            (
                "type=secret,id=tok,env=TOKEN",
                RunMount { id: s("tok"), env: s("TOKEN"), ..owned(MountKind::Secret, 0o400) },
            ),
            (
                "type=secret,id=tok,env=TOKEN,target=/t,required=false,mode=0440,uid=1,gid=2",
                RunMount {
                    id: s("tok"),
                    env: s("TOKEN"),
                    target: s("/t"),
                    mode: Some(0o440),
                    uid: Some(1),
                    gid: Some(2),
                    ..bare(MountKind::Secret)
                },
            ),
            ("type=ssh", RunMount { id: s("default"), ..owned(MountKind::Ssh, 0o600) }),
            (
                "type=ssh,id=gh,target=/sock,required=1,mode=0666",
                RunMount { id: s("gh"), target: s("/sock"), required: true, ..owned(MountKind::Ssh, 0o666) },
            ),
        ];
        for (spec, want) in table {
            assert_eq!(mount(spec), want, "{spec}");
        }
    }

    #[test]
    fn from_is_kept_as_written() {
        let from = |v: &str| parse_mount_spec(v, env).unwrap().from;
        assert_eq!(from("from=build,target=/x"), Some("build".to_string()));
        assert_eq!(from("type=cache,from=$X,target=/x"), Some("x-value".to_string()));
        assert_eq!(from("target=/x"), None);
        assert_eq!(mount("from=build,target=/x").from, None, "resolved by lowering");
    }

    #[test]
    fn spellings_of_one_mount_are_equal() {
        let same: &[(&str, &str)] = &[
            ("type=cache,target=/c", "type=cache,dst=/c,id=/c,sharing=shared,rw,mode=755,uid=0,gid=0"),
            ("type=bind,target=/x", "target=/x,ro"),
            ("type=secret,id=a", "type=secret,id=a,target=/run/secrets/a,required=false,mode=0400"),
            ("type=ssh", "type=ssh,id=default"),
        ];
        for (a, b) in same {
            assert_eq!(mount(a), mount(b), "{a} vs {b}");
        }
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
