//! Two images compared file by file and config field by config field, inside the
//! repository (the tests once reached for a script outside it).
//!
//! Trees: paths, type, permission bits, owner, size and sha256 of regular files,
//! symlink targets, device numbers, xattrs; not mtimes and not which names of a
//! file are hard links of each other (a hard link compares as the file it names).
//! Config: the runtime fields of `config` plus os/architecture/variant.

use crate::image::{Image, Kind, Node, Tree};
use serde_json::Value;

/// What a comparison leaves out.
#[derive(Clone, Debug, Default)]
pub struct CompareOptions {
    /// Paths to skip: exact, or `PREFIX/*` for everything below PREFIX.
    pub ignore_paths: Vec<String>,
    /// xattrs whose name starts with one of these are dropped.
    pub ignore_xattr_prefixes: Vec<String>,
    /// Labels dropped before the configs are compared.
    pub ignore_labels: Vec<String>,
}

const CONFIG_FIELDS: [&str; 12] = [
    "Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Labels", "Volumes", "StopSignal",
    "Healthcheck", "Shell", "OnBuild",
];

impl CompareOptions {
    fn skips(&self, path: &str) -> bool {
        self.ignore_paths.iter().any(|p| match p.strip_suffix("/*") {
            Some(prefix) => path.starts_with(&format!("{prefix}/")),
            None => p == path,
        })
    }
}

/// A node as compared: hard links resolved to the file they name.
fn describe(tree: &Tree, n: &Node, opts: &CompareOptions) -> String {
    let n = match &n.kind {
        Kind::Hardlink(target) => tree.get(target).unwrap_or(n),
        _ => n,
    };
    let kind = match &n.kind {
        Kind::Hardlink(_) | Kind::File => "file".to_string(),
        k => k.to_string(),
    };
    let xattrs: Vec<String> = n
        .xattrs
        .iter()
        .filter(|(k, _)| !opts.ignore_xattr_prefixes.iter().any(|p| k.starts_with(p.as_str())))
        .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
        .collect();
    let mut s = format!("{kind} {:04o} {}:{}", n.mode, n.uid, n.gid);
    if kind == "file" {
        s += &format!(" size={} {}", n.size, n.sha256.as_deref().unwrap_or("?"));
    }
    if let Some(l) = &n.link {
        s += &format!(" -> {l}");
    }
    if !xattrs.is_empty() {
        s += &format!(" xattrs={xattrs:?}");
    }
    s
}

/// Every difference between `a` and `b`, one line each (empty: the same).
pub fn compare_images(a: &Image, b: &Image, opts: &CompareOptions) -> Vec<String> {
    let mut out = Vec::new();
    let paths: std::collections::BTreeSet<&String> = a.tree.paths().chain(b.tree.paths()).collect();
    for p in paths {
        if opts.skips(p) {
            continue;
        }
        match (a.tree.get(p), b.tree.get(p)) {
            (Some(x), None) => out.push(format!("{p}: only in A ({})", describe(&a.tree, x, opts))),
            (None, Some(y)) => out.push(format!("{p}: only in B ({})", describe(&b.tree, y, opts))),
            (Some(x), Some(y)) => {
                let (dx, dy) = (describe(&a.tree, x, opts), describe(&b.tree, y, opts));
                if dx != dy {
                    out.push(format!("{p}: A {dx} | B {dy}"));
                }
            }
            (None, None) => {}
        }
    }
    let cfg = |img: &Image, k: &str| -> Value {
        let mut v = img.cfg().get(k).cloned().unwrap_or(Value::Null);
        if k == "Labels" {
            if let Value::Object(m) = &mut v {
                for l in &opts.ignore_labels {
                    m.remove(l);
                }
            }
        }
        match v {
            Value::Array(ref x) if x.is_empty() => Value::Null,
            Value::Object(ref x) if x.is_empty() => Value::Null,
            v => v,
        }
    };
    for k in CONFIG_FIELDS {
        let (x, y) = (cfg(a, k), cfg(b, k));
        if x != y {
            out.push(format!("config.{k}: A {x} | B {y}"));
        }
    }
    for k in ["os", "architecture", "variant"] {
        let (x, y) = (&a.config[k], &b.config[k]);
        if x != y {
            out.push(format!("{k}: A {x} | B {y}"));
        }
    }
    out
}
