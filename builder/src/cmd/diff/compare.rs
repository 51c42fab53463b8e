//! What differs between two images for `kiln diff`: their trees path by path and
//! their configs field by field, with the ignore options, as a list of
//! [`Difference`]s that render as text lines or JSON.
//!
//! Per path: type (a device's numbers are part of it), permission bits, owner,
//! size and sha256 of files, symlink target, each xattr. Not compared: mtimes,
//! and which names of a file are hard links of each other (a hard link is the file
//! it names). A type change is reported alone (its mode, content … follow from it).
//!
//! Config: `os`, `architecture`, `variant` and the runtime fields of `config`
//! ([`CONFIG_FIELDS`]); labels key by key. An absent field, `null`, `""`, `[]` and
//! `{}` are the same (builders write either); `ExposedPorts` and `Volumes` compare
//! as sets of keys. With `--history`: the number of history entries and each
//! entry's `created_by`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::cmd::diff::tree::{Kind, Node, Tree};

/// The fields of the config's `config` object that are compared.
pub const CONFIG_FIELDS: [&str; 12] =
    ["User", "Env", "Entrypoint", "Cmd", "WorkingDir", "Labels", "ExposedPorts", "Volumes", "StopSignal", "Healthcheck", "Shell", "OnBuild"];
const PLATFORM_FIELDS: [&str; 3] = ["os", "architecture", "variant"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
    Changed,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Changed => "changed",
        }
    }
    fn sign(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Changed => '~',
        }
    }
}

/// What about a path or field differs; `Entry` is a whole path only in one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    Entry,
    Type,
    Mode,
    Owner,
    Size,
    Content,
    Target,
    Xattr,
    Config,
}

impl What {
    fn as_str(self) -> &'static str {
        match self {
            What::Entry => "entry",
            What::Type => "type",
            What::Mode => "mode",
            What::Owner => "owner",
            What::Size => "size",
            What::Content => "content",
            What::Target => "target",
            What::Xattr => "xattr",
            What::Config => "config",
        }
    }
}

/// One difference: of a path (`/etc/passwd`) or of a config field (`Env`); `key`
/// is the xattr name or label key, `index` the history entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub path: Option<String>,
    pub field: Option<String>,
    pub key: Option<String>,
    pub index: Option<usize>,
    pub kind: Change,
    pub what: What,
    pub a: Value,
    pub b: Value,
}

impl Difference {
    fn of_path(path: &str, kind: Change, what: What, a: Value, b: Value) -> Difference {
        Difference { path: Some(path.to_string()), field: None, key: None, index: None, kind, what, a, b }
    }

    fn of_field(field: &str, a: Value, b: Value) -> Difference {
        let kind = match (&a, &b) {
            (Value::Null, _) => Change::Added,
            (_, Value::Null) => Change::Removed,
            _ => Change::Changed,
        };
        Difference { path: None, field: Some(field.to_string()), key: None, index: None, kind, what: What::Config, a, b }
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({"kind": self.kind.as_str(), "what": self.what.as_str(), "a": self.a, "b": self.b});
        for (k, x) in [("path", self.path.clone()), ("field", self.field.clone()), ("key", self.key.clone())] {
            if let Some(x) = x {
                v[k] = json!(x);
            }
        }
        if let Some(i) = self.index {
            v["index"] = json!(i);
        }
        v
    }

    /// `~ /etc/passwd: content sha256:… → sha256:…`, `+ /new (file, 0644, 0:0, 3 bytes)`,
    /// `~ config Env: [...] → [...]`.
    pub fn line(&self) -> String {
        let sign = self.kind.sign();
        if let Some(path) = &self.path {
            if self.what == What::Entry {
                let node = if self.kind == Change::Added { &self.b } else { &self.a };
                return format!("{sign} {path} ({})", describe_json(node));
            }
            let what = match &self.key {
                Some(k) => format!("{} {k}", self.what.as_str()),
                None => self.what.as_str().to_string(),
            };
            return format!("{sign} {path}: {what} {} → {}", plain(&self.a), plain(&self.b));
        }
        let mut field = self.field.clone().unwrap_or_default();
        if let Some(k) = &self.key {
            field = format!("{field}[{k}]");
        }
        if let Some(i) = self.index {
            field = format!("{field}[{i}]");
        }
        match self.kind {
            Change::Added => format!("{sign} config {field}: {}", self.b),
            Change::Removed => format!("{sign} config {field}: {}", self.a),
            Change::Changed => format!("{sign} config {field}: {} → {}", self.a, self.b),
        }
    }
}

/// A value for a text line: strings bare, absence as `(none)`.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "(none)".into(),
        v => v.to_string(),
    }
}

/// `file, 0644, 0:0, 12 bytes` from a node's JSON.
fn describe_json(n: &Value) -> String {
    let mut s = format!("{}", plain(&n["type"]));
    if let Some(t) = n["target"].as_str() {
        s += &format!(" → {t}");
    }
    s += &format!(", {}, {}:{}", plain(&n["mode"]), n["uid"], n["gid"]);
    if n["type"] == "file" {
        s += &format!(", {} bytes", n["size"]);
    }
    if let Some(h) = n["hardlink"].as_str() {
        s += &format!(", hard link to {h}");
    }
    if let Some(x) = n["xattrs"].as_object().filter(|x| !x.is_empty()) {
        s += &format!(", xattrs {}", x.keys().cloned().collect::<Vec<_>>().join(" "));
    }
    s
}

fn xattr_value(v: &[u8]) -> Value {
    match std::str::from_utf8(v) {
        Ok(s) if !s.chars().any(char::is_control) => json!(s),
        _ => json!(format!("0x{}", hex::encode(v))),
    }
}

/// What the ignore options leave out.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Patterns without a leading `/` (see [`glob`]).
    pub ignore_paths: Vec<String>,
    pub ignore_labels: BTreeSet<String>,
    pub ignore_xattrs: Vec<String>,
    /// Canonical names ([`CONFIG_FIELDS`], os, architecture, variant, history).
    pub ignore_config: BTreeSet<String>,
    pub history: bool,
}

impl Options {
    /// Checks the `--ignore-config` names (any case) and normalises the patterns.
    pub fn new(paths: &[String], labels: &[String], xattrs: &[String], config: &[String], history: bool) -> Result<Options> {
        let known: Vec<&str> = CONFIG_FIELDS.iter().chain(PLATFORM_FIELDS.iter()).chain(["history"].iter()).copied().collect();
        let mut ignore_config = BTreeSet::new();
        for c in config {
            match known.iter().find(|k| k.eq_ignore_ascii_case(c)) {
                Some(k) => ignore_config.insert(k.to_string()),
                None => bail!("--ignore-config {c:?}: not a compared field (one of {})", known.join(", ")),
            };
        }
        Ok(Options {
            ignore_paths: paths.iter().map(|p| p.trim_matches('/').to_string()).collect(),
            ignore_labels: labels.iter().cloned().collect(),
            ignore_xattrs: xattrs.to_vec(),
            ignore_config,
            history,
        })
    }

    /// Whether `path` (`/a/b`) or one of its parents matches an ignore pattern.
    pub fn skips_path(&self, path: &str) -> bool {
        let rel = path.trim_start_matches('/');
        let prefixes = rel.match_indices('/').map(|(i, _)| &rel[..i]).chain(std::iter::once(rel));
        prefixes.into_iter().any(|p| self.ignore_paths.iter().any(|pat| glob(pat.as_bytes(), p.as_bytes())))
    }

    fn ignores(&self, field: &str) -> bool {
        self.ignore_config.contains(field)
    }
}

/// Shell-style match: `*` within a name, `**` across names (`**/` also matches
/// no directory), `?` one character of a name; everything else literally.
pub fn glob(p: &[u8], t: &[u8]) -> bool {
    match p {
        [] => t.is_empty(),
        [b'*', b'*', rest @ ..] => {
            (rest.first() == Some(&b'/') && glob(&rest[1..], t)) || (0..=t.len()).any(|i| glob(rest, &t[i..]))
        }
        [b'*', rest @ ..] => (0..=t.len()).take_while(|&i| i == 0 || t[i - 1] != b'/').any(|i| glob(rest, &t[i..])),
        [b'?', rest @ ..] => t.first().is_some_and(|c| *c != b'/') && glob(rest, &t[1..]),
        [c, rest @ ..] => t.first() == Some(c) && glob(rest, &t[1..]),
    }
}

/// A node as JSON (the `a`/`b` of an `entry` difference).
pub fn node_json(n: &Node, o: &Options) -> Value {
    let mut v = json!({"type": n.kind.to_string(), "mode": format!("{:04o}", n.mode), "uid": n.uid, "gid": n.gid});
    if n.kind == Kind::File {
        v["size"] = json!(n.size);
        v["digest"] = json!(n.digest.as_ref().map(|d| d.to_string()));
    }
    if let Some(t) = &n.target {
        v["target"] = json!(t);
    }
    if let Some(h) = &n.hardlink {
        v["hardlink"] = json!(h);
    }
    let x = xattrs(n, o);
    if !x.is_empty() {
        v["xattrs"] = Value::Object(x.into_iter().map(|(k, val)| (k.to_string(), xattr_value(val))).collect());
    }
    v
}

fn xattrs<'a>(n: &'a Node, o: &Options) -> BTreeMap<&'a str, &'a [u8]> {
    n.xattrs
        .iter()
        .filter(|(k, _)| !o.ignore_xattrs.iter().any(|p| k.starts_with(p.as_str())))
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect()
}

fn compare_nodes(path: &str, x: &Node, y: &Node, o: &Options, out: &mut Vec<Difference>) {
    let mut push = |what: What, a: Value, b: Value| out.push(Difference::of_path(path, Change::Changed, what, a, b));
    if x.kind != y.kind {
        push(What::Type, json!(x.kind.to_string()), json!(y.kind.to_string()));
        return;
    }
    if x.mode != y.mode {
        push(What::Mode, json!(format!("{:04o}", x.mode)), json!(format!("{:04o}", y.mode)));
    }
    if (x.uid, x.gid) != (y.uid, y.gid) {
        push(What::Owner, json!(format!("{}:{}", x.uid, x.gid)), json!(format!("{}:{}", y.uid, y.gid)));
    }
    if x.kind == Kind::File {
        if x.size != y.size {
            push(What::Size, json!(x.size), json!(y.size));
        }
        if x.digest != y.digest {
            let d = |n: &Node| json!(n.digest.as_ref().map(|d| d.to_string()));
            push(What::Content, d(x), d(y));
        }
    }
    if x.target != y.target {
        push(What::Target, json!(x.target), json!(y.target));
    }
    let (xa, ya) = (xattrs(x, o), xattrs(y, o));
    for k in xa.keys().chain(ya.keys()).collect::<BTreeSet<_>>() {
        let (va, vb) = (xa.get(k), ya.get(k));
        if va != vb {
            let mut d = Difference::of_path(path, Change::Changed, What::Xattr, va.map_or(Value::Null, |v| xattr_value(v)), vb.map_or(Value::Null, |v| xattr_value(v)));
            d.key = Some(k.to_string());
            out.push(d);
        }
    }
}

/// Path by path, in path order.
pub fn compare_trees(a: &Tree, b: &Tree, o: &Options) -> Vec<Difference> {
    let mut out = Vec::new();
    let paths: BTreeSet<&String> = a.nodes.keys().chain(b.nodes.keys()).collect();
    for p in paths {
        if o.skips_path(p) {
            continue;
        }
        match (a.nodes.get(p), b.nodes.get(p)) {
            (Some(x), None) => out.push(Difference::of_path(p, Change::Removed, What::Entry, node_json(x, o), Value::Null)),
            (None, Some(y)) => out.push(Difference::of_path(p, Change::Added, What::Entry, Value::Null, node_json(y, o))),
            (Some(x), Some(y)) => compare_nodes(p, x, y, o, &mut out),
            (None, None) => {}
        }
    }
    out
}

/// Absent, null, "", [] and {} are all "not set".
fn set(v: Option<&Value>) -> Value {
    match v {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) if s.is_empty() => Value::Null,
        Some(Value::Array(a)) if a.is_empty() => Value::Null,
        Some(Value::Object(m)) if m.is_empty() => Value::Null,
        Some(v) => v.clone(),
    }
}

/// `{"80/tcp": {}}` → `["80/tcp"]` (the values carry nothing).
fn key_set(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Array(m.keys().map(|k| json!(k)).collect()),
        v => v,
    }
}

/// Field by field: platform, runtime config (labels per key), history if asked.
pub fn compare_configs(a: &Value, b: &Value, o: &Options) -> Vec<Difference> {
    let mut out = Vec::new();
    for f in PLATFORM_FIELDS {
        let (x, y) = (set(a.get(f)), set(b.get(f)));
        if !o.ignores(f) && x != y {
            out.push(Difference::of_field(f, x, y));
        }
    }
    let (ca, cb) = (&a["config"], &b["config"]);
    for f in CONFIG_FIELDS {
        if o.ignores(f) {
            continue;
        }
        if f == "Labels" {
            compare_labels(ca, cb, o, &mut out);
            continue;
        }
        let (mut x, mut y) = (set(ca.get(f)), set(cb.get(f)));
        if matches!(f, "ExposedPorts" | "Volumes") {
            (x, y) = (key_set(x), key_set(y));
        }
        if x != y {
            out.push(Difference::of_field(f, x, y));
        }
    }
    if o.history && !o.ignores("history") {
        let list = |v: &Value| v["history"].as_array().cloned().unwrap_or_default();
        let (ha, hb) = (list(a), list(b));
        if ha.len() != hb.len() {
            out.push(Difference::of_field("history.length", json!(ha.len()), json!(hb.len())));
        }
        for i in 0..ha.len().max(hb.len()) {
            let by = |h: &[Value]| set(h.get(i).and_then(|e| e.get("created_by")));
            let (x, y) = (by(&ha), by(&hb));
            if x != y {
                let mut d = Difference::of_field("history.created_by", x, y);
                d.index = Some(i);
                out.push(d);
            }
        }
    }
    out
}

fn compare_labels(ca: &Value, cb: &Value, o: &Options, out: &mut Vec<Difference>) {
    let labels = |c: &Value| -> BTreeMap<String, Value> {
        c["Labels"].as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
    };
    let (la, lb) = (labels(ca), labels(cb));
    for k in la.keys().chain(lb.keys()).collect::<BTreeSet<_>>() {
        if o.ignore_labels.contains(k) {
            continue;
        }
        let (x, y) = (la.get(k).cloned().unwrap_or(Value::Null), lb.get(k).cloned().unwrap_or(Value::Null));
        if x != y {
            let mut d = Difference::of_field("Labels", x, y);
            d.key = Some(k.clone());
            out.push(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_oci::Digest;

    fn file(content: &[u8]) -> Node {
        Node {
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: content.len() as u64,
            digest: Some(Digest::of(content)),
            target: None,
            hardlink: None,
            xattrs: BTreeMap::new(),
            layer: 0,
            implicit: false,
        }
    }

    fn tree(nodes: &[(&str, Node)]) -> Tree {
        Tree { nodes: nodes.iter().map(|(p, n)| (p.to_string(), n.clone())).collect() }
    }

    fn lines(d: &[Difference]) -> Vec<String> {
        d.iter().map(Difference::line).collect()
    }

    fn opts() -> Options {
        Options::default()
    }

    #[test]
    fn each_kind_of_tree_difference() {
        let mut link_a = file(b"");
        link_a.kind = Kind::Symlink;
        link_a.mode = 0o777;
        link_a.size = 0;
        link_a.digest = None;
        link_a.target = Some("/a".into());
        let mut link_b = link_a.clone();
        link_b.target = Some("/b".into());
        let mut owned = file(b"x");
        owned.uid = 1000;
        owned.gid = 1000;
        let mut setuid = file(b"x");
        setuid.mode = 0o4755;
        let mut xa = file(b"x");
        xa.xattrs.insert("user.k".into(), b"1".to_vec());
        let mut xb = file(b"x");
        xb.xattrs.insert("user.k".into(), b"\x00\x01".to_vec());
        // A hard link with the same attributes is the same file.
        let mut hl = file(b"same");
        hl.hardlink = Some("/other".into());
        let a = tree(&[
            ("/content", file(b"one")),
            ("/gone", file(b"g")),
            ("/link", link_a.clone()),
            ("/mode", file(b"x")),
            ("/owner", file(b"x")),
            ("/same", file(b"same")),
            ("/type", file(b"x")),
            ("/xattr", xa),
        ]);
        let b = tree(&[
            ("/content", file(b"three")),
            ("/link", link_b),
            ("/mode", setuid),
            ("/new", file(b"hello")),
            ("/owner", owned),
            ("/same", hl),
            ("/type", link_a),
            ("/xattr", xb),
        ]);
        let d = compare_trees(&a, &b, &opts());
        assert_eq!(
            lines(&d),
            [
                "~ /content: size 3 → 5".to_string(),
                format!("~ /content: content {} → {}", Digest::of(b"one"), Digest::of(b"three")),
                "- /gone (file, 0644, 0:0, 1 bytes)".into(),
                "~ /link: target /a → /b".into(),
                "~ /mode: mode 0644 → 4755".into(),
                "+ /new (file, 0644, 0:0, 5 bytes)".into(),
                "~ /owner: owner 0:0 → 1000:1000".into(),
                "~ /type: type file → symlink".into(),
                "~ /xattr: xattr user.k 1 → 0x0001".into(),
            ]
        );
        let j = d[2].to_json();
        assert_eq!(j["path"], "/gone");
        assert_eq!((j["kind"].as_str(), j["what"].as_str()), (Some("removed"), Some("entry")));
        assert_eq!(j["a"]["digest"], Digest::of(b"g").to_string());
        assert_eq!(j["b"], Value::Null);
        assert_eq!(d[8].to_json()["key"], "user.k");
    }

    #[test]
    fn ignore_paths_and_xattrs() {
        let mut x = file(b"x");
        x.xattrs.insert("user.overlay.origin".into(), b"o".to_vec());
        let a = tree(&[("/run", file(b"")), ("/etc/hosts", file(b"a")), ("/var/cache/apt/x", file(b"1")), ("/var/cache", file(b"")), ("/f", x), ("/deep/a/b.pyc", file(b"1"))]);
        let b = tree(&[("/etc/hosts", file(b"b")), ("/var/cache", file(b"")), ("/f", file(b"x"))]);
        let o = Options::new(&["/run".into(), "etc/hosts".into(), "var/cache/*".into(), "**/*.pyc".into()], &[], &["user.overlay.".into()], &[], false).unwrap();
        assert_eq!(lines(&compare_trees(&a, &b, &o)), Vec::<String>::new());
        // Without them, every one of those shows.
        assert_eq!(compare_trees(&a, &b, &opts()).len(), 5);
        // A prefix is a whole name: /etc/hosts does not hide /etc/hostsfile.
        let o = Options::new(&["etc/hosts".into()], &[], &[], &[], false).unwrap();
        assert!(!o.skips_path("/etc/hostsfile") && o.skips_path("/etc/hosts") && o.skips_path("/etc/hosts/x"));
    }

    #[test]
    fn globs() {
        assert!(glob(b"var/*", b"var/log"));
        assert!(!glob(b"var/*", b"var/log/x"));
        assert!(!glob(b"var/*", b"var"));
        assert!(glob(b"**/*.pyc", b"a/b/c.pyc") && glob(b"**/*.pyc", b"c.pyc"));
        assert!(glob(b"usr/**/doc", b"usr/share/x/doc"));
        assert!(glob(b"a?c", b"abc") && !glob(b"a?c", b"a/c"));
    }

    fn config(c: Value) -> Value {
        json!({"architecture": "amd64", "os": "linux", "config": c, "history": [{"created_by": "a"}, {"created_by": "b"}]})
    }

    #[test]
    fn config_fields_labels_and_history() {
        let a = config(json!({"Env": ["A=1"], "Labels": {"keep": "1", "team": "x", "io.buildah.version": "1.28"}, "ExposedPorts": {"80/tcp": {}}, "Volumes": {}, "WorkingDir": ""}));
        let mut b = config(json!({"Env": ["A=2"], "Labels": {"keep": "1", "team": "y", "new": "n"}, "ExposedPorts": {"80/tcp": {"x": 1}}, "Cmd": ["sh"]}));
        b["history"] = json!([{"created_by": "a"}, {"created_by": "B"}, {"created_by": "c"}]);
        b["variant"] = json!("v2");
        let d = compare_configs(&a, &b, &opts());
        assert_eq!(
            lines(&d),
            [
                r#"+ config variant: "v2""#,
                r#"~ config Env: ["A=1"] → ["A=2"]"#,
                r#"+ config Cmd: ["sh"]"#,
                r#"- config Labels[io.buildah.version]: "1.28""#,
                r#"+ config Labels[new]: "n""#,
                r#"~ config Labels[team]: "x" → "y""#,
            ]
        );
        assert_eq!(d[5].to_json(), json!({"field": "Labels", "key": "team", "kind": "changed", "what": "config", "a": "x", "b": "y"}));
        let o = Options::new(&[], &["io.buildah.version".into(), "new".into()], &[], &["env".into(), "Cmd".into(), "VARIANT".into(), "Labels".into()], true).unwrap();
        assert_eq!(
            lines(&compare_configs(&a, &b, &o)),
            ["~ config history.length: 2 → 3", r#"~ config history.created_by[1]: "b" → "B""#, r#"+ config history.created_by[2]: "c""#]
        );
        let o = Options::new(&[], &["io.buildah.version".into()], &[], &["Env".into(), "Cmd".into(), "variant".into()], false).unwrap();
        assert_eq!(lines(&compare_configs(&a, &b, &o)), [r#"+ config Labels[new]: "n""#, r#"~ config Labels[team]: "x" → "y""#]);
        let err = Options::new(&[], &[], &[], &["Envv".into()], false).unwrap_err();
        assert!(err.to_string().contains("--ignore-config \"Envv\""), "{err}");
    }
}
