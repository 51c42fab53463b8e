//! A case's `then` list: rebuilds in the same sandbox after its first build, each
//! changing the context (write/remove/rename files, prune, wait) and checking
//! its build against the case's earlier builds (same/different image or content,
//! steps run and cached).

use super::{obj, parse_mode, parse_summary, Built, Expect};
use crate::image::Image;
use serde_json::{Map, Value};
use std::path::Path;

/// Keys of a `then` entry that say how to build (the first build's are used
/// when the entry has none).
const BUILD_KEYS: &[&str] = &["dockerfile", "args", "target", "labels", "secrets", "platform", "flags"];
/// Keys of a `then` entry that change the sandbox before its build.
const CHANGE_KEYS: &[&str] = &["write", "remove", "rename", "prune", "sleep"];
/// Keys of a `then` entry that say what its build must give.
const CHECK_KEYS: &[&str] = &[
    "description",
    "fail",
    "files",
    "absent",
    "config",
    "env",
    "env_absent",
    "layers",
    "history",
    "not_in_blobs",
    "output_contains",
    "output_absent",
    "same_image_as",
    "different_image_from",
    "same_content",
    "different_content",
    "cached_steps",
    "ran_steps",
];

/// One entry of `then`: how to change the sandbox, and the build that follows.
#[derive(Clone, Debug)]
pub struct Rebuild {
    /// Context paths removed (files or whole directories), first.
    pub remove: Vec<String>,
    /// Context paths renamed (from, to), next.
    pub rename: Vec<(String, String)>,
    /// Context files written (created or replaced, parents made): path,
    /// bytes, mode (None: an existing file keeps its mode, as os.WriteFile
    /// does; a new one is 0644).
    pub write: Vec<(String, Vec<u8>, Option<u32>)>,
    /// `kiln prune --all` before the build (BuildKit's ensurePruneAll).
    pub prune: bool,
    /// Wait this long before the build (so that a timestamp taken from the
    /// clock would differ).
    pub sleep: Option<std::time::Duration>,
    /// The build's flags and expectations: the entry's keys over the first
    /// build's build keys.
    pub expect: Expect,
}

/// A context-relative path: not absolute, no `..`, not empty.
fn rel_path(p: &str) -> Result<String, String> {
    let path = Path::new(p);
    if p.is_empty()
        || path.is_absolute()
        || path.components().any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
    {
        return Err(format!("{p:?} is not a path inside the context"));
    }
    Ok(p.to_string())
}

impl Rebuild {
    /// Change the context (as root, then handed to the build user), prune, sleep.
    pub(super) fn prepare(&self, sb: &crate::Sandbox, ctx: &Path) -> Result<(), String> {
        for p in &self.remove {
            let full = ctx.join(p);
            let md = std::fs::symlink_metadata(&full).map_err(|e| format!("remove {p}: {e}"))?;
            let r = if md.is_dir() { std::fs::remove_dir_all(&full) } else { std::fs::remove_file(&full) };
            r.map_err(|e| format!("remove {p}: {e}"))?;
        }
        for (from, to) in &self.rename {
            std::fs::rename(ctx.join(from), ctx.join(to)).map_err(|e| format!("rename {from} to {to}: {e}"))?;
        }
        for (p, data, mode) in &self.write {
            use std::os::unix::fs::PermissionsExt;
            let full = ctx.join(p);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("write {p}: {e}"))?;
            }
            let existed = full.is_file();
            std::fs::write(&full, data).map_err(|e| format!("write {p}: {e}"))?;
            let mode = match mode {
                Some(m) => Some(*m),
                None if existed => None,
                None => Some(0o644),
            };
            if let Some(m) = mode {
                std::fs::set_permissions(&full, std::fs::Permissions::from_mode(m))
                    .map_err(|e| format!("write {p}: {e}"))?;
            }
        }
        sb.user.chown_tree(ctx);
        if self.prune {
            let out = sb.kiln().args(["prune", "--all"]).run();
            if !out.status.success() {
                return Err(format!("kiln prune --all failed: {}", out.stderr.trim()));
            }
        }
        if let Some(d) = self.sleep {
            std::thread::sleep(d);
        }
        Ok(())
    }
}

impl Expect {
    /// `"then": [...]`, parsed and checked: every key known, every path inside
    /// the context, every build number naming an earlier build.
    pub fn then_builds(&self) -> Result<Vec<Rebuild>, String> {
        let entries = match self.raw.get("then") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(a)) => a,
            Some(_) => return Err("\"then\" must be a list of objects".into()),
        };
        let mut out = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let n = i + 1; // build 0 is the first one
            let ctx = |e: String| format!("then[{i}]: {e}");
            let Some(o) = entry.as_object() else { return Err(ctx("not an object".into())) };
            for k in o.keys() {
                if !BUILD_KEYS.contains(&k.as_str()) && !CHANGE_KEYS.contains(&k.as_str()) && !CHECK_KEYS.contains(&k.as_str()) {
                    return Err(ctx(format!("unknown key {k:?}")));
                }
            }
            let remove = match o.get("remove") {
                None => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_str().ok_or_else(|| "remove: not a string".to_string()).and_then(rel_path))
                    .collect::<Result<_, _>>()
                    .map_err(ctx)?,
                Some(_) => return Err(ctx("remove: must be a list of paths".into())),
            };
            let mut rename = Vec::new();
            for (from, to) in obj(entry, "rename").into_iter().flatten() {
                let to = to.as_str().ok_or_else(|| ctx(format!("rename {from}: the new name must be a string")))?;
                rename.push((rel_path(from).map_err(ctx)?, rel_path(to).map_err(ctx)?));
            }
            let mut write = Vec::new();
            for (p, v) in obj(entry, "write").into_iter().flatten() {
                let p = rel_path(p).map_err(ctx)?;
                let (content, mode) = match v {
                    Value::String(s) => (s.as_str(), None),
                    Value::Object(f) => {
                        let content = f.get("content").and_then(Value::as_str);
                        let content = content.ok_or_else(|| ctx(format!("write {p}: no \"content\" string")))?;
                        let mode = match f.get("mode") {
                            None => None,
                            Some(m) => Some(parse_mode(m).ok_or_else(|| ctx(format!("write {p}: bad mode {m}")))?),
                        };
                        (content, mode)
                    }
                    _ => return Err(ctx(format!("write {p}: a string or {{\"content\", \"mode\"}}"))),
                };
                write.push((p, content.as_bytes().to_vec(), mode));
            }
            let prune = match o.get("prune") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(ctx("prune: true or false".into())),
            };
            let sleep = match o.get("sleep") {
                None => None,
                Some(v) => match v.as_f64() {
                    Some(s) if (0.0..=30.0).contains(&s) => Some(std::time::Duration::from_secs_f64(s)),
                    _ => return Err(ctx("sleep: seconds, 0 to 30".into())),
                },
            };
            for key in ["same_image_as", "different_image_from"] {
                if let Some(v) = o.get(key) {
                    match v.as_u64() {
                        Some(k) if (k as usize) < n => {}
                        _ => return Err(ctx(format!("{key}: must name an earlier build (0..{})", n - 1))),
                    }
                }
            }
            for key in ["same_content", "different_content"] {
                for (p, v) in obj(entry, key).into_iter().flatten() {
                    match v.as_u64() {
                        Some(k) if (k as usize) < n => {}
                        _ => return Err(ctx(format!("{key} {p}: must name an earlier build (0..{})", n - 1))),
                    }
                }
            }
            for key in ["cached_steps", "ran_steps"] {
                if o.get(key).is_some_and(|v| v.as_u64().is_none()) {
                    return Err(ctx(format!("{key}: must be a number")));
                }
            }
            let mut raw = Map::new();
            for k in BUILD_KEYS {
                if let Some(v) = self.raw.get(*k) {
                    raw.insert(k.to_string(), v.clone());
                }
            }
            for (k, v) in o {
                if !CHANGE_KEYS.contains(&k.as_str()) {
                    raw.insert(k.clone(), v.clone());
                }
            }
            out.push(Rebuild {
                remove,
                rename,
                write,
                prune,
                sleep,
                expect: Expect { name: format!("{}#{n}", self.name), raw: Value::Object(raw) },
            });
        }
        Ok(out)
    }

    /// `cached_steps` / `ran_steps` against kiln's summary line.
    pub fn check_steps(&self, output: &str) -> Vec<String> {
        let want_cached = self.raw["cached_steps"].as_u64();
        let want_ran = self.raw["ran_steps"].as_u64();
        if want_cached.is_none() && want_ran.is_none() {
            return Vec::new();
        }
        let Some((ran, cached)) = parse_summary(output) else {
            return vec!["no `built … (N steps run, M cached)` line in kiln's output".into()];
        };
        let mut errs = Vec::new();
        if want_ran.is_some_and(|w| w != ran) {
            errs.push(format!("{ran} steps run, want {}", want_ran.unwrap_or_default()));
        }
        if want_cached.is_some_and(|w| w != cached) {
            errs.push(format!("{cached} steps cached, want {}", want_cached.unwrap_or_default()));
        }
        errs
    }

    /// `same_image_as` / `different_image_from` (manifest digests) and
    /// `same_content` / `different_content` (one file's bytes) against
    /// earlier builds.
    pub(super) fn check_against(&self, img: Option<&Image>, done: &[Built]) -> Vec<String> {
        let mut errs = Vec::new();
        let earlier = |k: u64, errs: &mut Vec<String>| -> Option<&Image> {
            match done.get(k as usize).map(|b| b.image.as_ref()) {
                Some(Some(i)) => Some(i),
                _ => {
                    errs.push(format!("build {k} made no image to compare with"));
                    None
                }
            }
        };
        for (key, same) in [("same_image_as", true), ("different_image_from", false)] {
            let Some(k) = self.raw[key].as_u64() else { continue };
            let (Some(other), Some(img)) = (earlier(k, &mut errs), img) else {
                if img.is_none() {
                    errs.push(format!("{key}: this build made no image"));
                }
                continue;
            };
            if (img.manifest_digest == other.manifest_digest) != same {
                errs.push(format!(
                    "manifest {} {} build {k}'s ({})",
                    img.manifest_digest,
                    if same { "differs from" } else { "is the same as" },
                    other.manifest_digest
                ));
            }
        }
        for (key, same) in [("same_content", true), ("different_content", false)] {
            for (path, k) in obj(&self.raw, key).into_iter().flatten() {
                let Some(k) = k.as_u64() else { continue };
                let (Some(other), Some(img)) = (earlier(k, &mut errs), img) else {
                    if img.is_none() {
                        errs.push(format!("{key} {path}: this build made no image"));
                    }
                    continue;
                };
                let mine = img.tree.get(path).and_then(|n| n.content.clone());
                let theirs = other.tree.get(path).and_then(|n| n.content.clone());
                match (mine, theirs) {
                    (None, _) => errs.push(format!("{path}: not a file in this build's image")),
                    (_, None) => errs.push(format!("{path}: not a file in build {k}'s image")),
                    (Some(a), Some(b)) if (a == b) != same => errs.push(format!(
                        "{path}: content {:?} {} build {k}'s ({:?})",
                        String::from_utf8_lossy(&a),
                        if same { "differs from" } else { "is the same as" },
                        String::from_utf8_lossy(&b)
                    )),
                    _ => {}
                }
            }
        }
        errs
    }
}
