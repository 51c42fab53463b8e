//! Why a step missed the cache (issue 17, part 3): every record carries what its key
//! was made of ([`StepInputs`]: the step's position, its parent, and per input a digest
//! or a value — build arg values only where they cannot be credentials, context files
//! by path); when a step has to run although a record exists for its position (in the
//! local cache, or in a `--cache-from` cache a fresh runner imported), the two are
//! compared and the inputs that changed are named: one line per miss, a `cache_miss`
//! event in JSON, every part with `--explain`.

use std::collections::BTreeMap;

use kiln_cache::layercache::{CacheKey, StepInputs};
use kiln_frontend::{Base, StepInput, StepKind};

use super::*;
use crate::options::ExplainMode;

/// What a record keeps of a build arg that looks like a credential.
const HIDDEN: &str = "set (value not kept)";

fn sha(s: &str) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(s.as_bytes())))
}

use sha2::Digest as _;

/// Build args whose value is kept only as a digest (never in a record that may be
/// pushed to a registry), unless `--explain=values`.
fn looks_like_credential(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL", "APIKEY", "API_KEY", "PRIVATE_KEY", "AUTH", "KEY"].iter().any(|w| n.contains(w))
}

/// What step `i` of `job` is made of, as its record keeps it.
pub(super) fn step_inputs(cx: &Ctx, job_id: JobId, job: &Job, i: usize, pulled: &PulledMap) -> StepInputs {
    let stage = &job.stage;
    let step = &stage.steps[i];
    let keys = &cx.keys[&job_id];
    let stage_name = stage.name.clone().unwrap_or_else(|| format!("stage {}", stage.index));
    // The Dockerfile as the context names it: another runner checks out elsewhere.
    let df = cx.opts.dockerfile.strip_prefix(&cx.opts.context).unwrap_or(&cx.opts.dockerfile);
    let position = format!("{}\n{stage_name}\n{i}\n{}", df.display(), job.platform);
    let mut parts = BTreeMap::new();
    // The instruction without the build args it sees (those are named one by one).
    let mut kind = step.kind.clone();
    if let StepKind::Run { build_env, .. } = &mut kind {
        build_env.clear();
    }
    parts.insert("instruction".to_string(), sha(&serde_json::to_string(&kind).unwrap_or_default()));
    let values = cx.opts.explain == ExplainMode::Values;
    // The config-only steps (ARG, ENV, USER, ...) right before this one are links of
    // its key chain: what they hold is named here, as they get no line of their own.
    let mut declared: Vec<(String, Option<String>)> = Vec::new();
    // The first of those config steps: its parent is the step before that changes
    // files (or the base), which is what "an earlier step changed" is about.
    let mut first = i;
    for before in stage.steps[..i].iter().rev() {
        let fs = matches!(before.kind, StepKind::Run { .. } | StepKind::Copy(_) | StepKind::Add(_)) || super::rootfs::workdir_layer(&before.kind);
        if fs {
            break;
        }
        first -= 1;
        match &before.kind {
            // An ARG holds its values: named one by one below, as a RUN's are.
            StepKind::Arg(args) => declared.extend(args.iter().cloned()),
            kind => {
                parts.insert(format!("config {}", one_line(&before.source)), sha(&serde_json::to_string(kind).unwrap_or_default()));
            }
        }
    }
    for (name, value) in declared.iter().chain(&step.args_used) {
        let shown = match value {
            None => "unset".to_string(),
            Some(v) if values || !looks_like_credential(name) => format!("value {v}"),
            // Not even a digest: a hash of a short token can be checked by guessing,
            // and records travel to registries. A change shows in the key alone.
            Some(_) => HIDDEN.to_string(),
        };
        parts.insert(format!("arg {name}"), shown);
    }
    let mut files = BTreeMap::new();
    let mut files_truncated = false;
    for (n, input) in step.inputs.iter().enumerate() {
        let part = keys.parts[i].get(n + 1);
        let digest = match part {
            Some(crate::plan::keys::Part::Fixed(d)) => d.clone(),
            Some(crate::plan::keys::Part::Stage { key, .. }) => key.hex().to_string(),
            None => String::new(),
        };
        let label = match input {
            StepInput::Context { sources } => {
                if let Some(list) = cx.context_files.get(&sources.join("\n")) {
                    if list.len() > crate::context::hasher::LISTED_FILES {
                        files_truncated = true;
                    } else {
                        files.extend(list.iter().cloned());
                    }
                }
                format!("context {}", sources.join(" "))
            }
            StepInput::Stage(j) => format!("stage {j}"),
            StepInput::Image(r) => format!("image {r}"),
        };
        parts.insert(label, digest);
    }
    for url in crate::plan::keys::resolved_urls(&step.kind) {
        parts.insert(format!("url {url}"), cx.urls.get(url).map(|r| r.digest.to_string()).unwrap_or_default());
    }
    if first == 0 {
        let base = match &stage.base {
            Base::Scratch => "scratch".to_string(),
            Base::Image(r) => format!(
                "{r}@{}",
                pulled.get(&(r.clone(), job.platform.to_string())).map(|p| p.manifest_digest.to_string()).unwrap_or_default()
            ),
            Base::Stage(j) => format!("stage {j} {}", keys.base.hex()),
        };
        parts.insert("base".to_string(), base);
    }
    StepInputs { position, parent: keys.parent_of(first).hex().to_string(), parts, files, files_truncated }
}

/// One changed input, as the miss line names it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Change {
    /// `instruction`, `arg`, `context`, `stage`, `image`, `base`, `url`, `parent`, `other`.
    pub input: &'static str,
    pub name: String,
    pub detail: String,
}

/// What differs between the record a step missed and what it is now.
pub(super) fn compare(before: &StepInputs, now: &StepInputs) -> Vec<Change> {
    let mut out = Vec::new();
    let labels: std::collections::BTreeSet<&String> = before.parts.keys().chain(now.parts.keys()).collect();
    for label in labels {
        let (b, n) = (before.parts.get(label), now.parts.get(label));
        if b == n {
            continue;
        }
        let (kind, name) = label.split_once(' ').unwrap_or((label.as_str(), ""));
        let change = match kind {
            "instruction" => Change { input: "instruction", name: String::new(), detail: "the instruction changed".into() },
            "arg" => {
                let detail = match (b.map(String::as_str), n.map(String::as_str)) {
                    (Some(b), Some(n)) if b.starts_with("value ") && n.starts_with("value ") => format!("build arg {name} changed: {} → {}", &b[6..], &n[6..]),
                    (None, _) => format!("build arg {name} is used now"),
                    (_, None) => format!("build arg {name} is no longer used"),
                    _ => format!("build arg {name} changed (value not shown)"),
                };
                Change { input: "arg", name: name.to_string(), detail }
            }
            "context" => {
                let files = changed_files(before, now);
                let detail = if files.is_empty() {
                    format!("the context files of {name} changed")
                } else {
                    let shown: Vec<String> = files.iter().take(5).cloned().collect();
                    let more = if files.len() > 5 { format!(" and {} more", files.len() - 5) } else { String::new() };
                    format!("context file {}{more}", shown.join(", "))
                };
                Change { input: "context", name: files.first().cloned().unwrap_or_else(|| name.to_string()), detail }
            }
            "stage" => Change { input: "stage", name: name.to_string(), detail: format!("stage {name} (read with --from) changed") },
            "image" => Change { input: "image", name: name.to_string(), detail: format!("image {name} is another image now") },
            "url" => Change { input: "url", name: name.to_string(), detail: format!("the content behind {name} changed") },
            "base" => Change {
                input: "base",
                name: n.cloned().unwrap_or_default(),
                detail: format!("the base changed: {} → {}", b.map(String::as_str).unwrap_or("?"), n.map(String::as_str).unwrap_or("?")),
            },
            "config" => Change { input: "config", name: name.to_string(), detail: format!("the step before it changed: {name}") },
            _ => Change { input: "other", name: label.clone(), detail: format!("{label} changed") },
        };
        out.push(change);
    }
    if out.is_empty() && before.parent != now.parent {
        out.push(Change { input: "parent", name: String::new(), detail: "an earlier step of the stage changed".into() });
    }
    // Nothing kept differs: a value that is not kept did.
    let hidden: Vec<&str> = now.parts.iter().filter(|(_, v)| *v == HIDDEN).filter_map(|(k, _)| k.strip_prefix("arg ")).collect();
    if out.is_empty() && !hidden.is_empty() {
        let detail = match hidden.as_slice() {
            [one] => format!("build arg {one} changed (value not shown)"),
            many => format!("one of the build args {} changed (their values are not kept)", many.join(", ")),
        };
        out.push(Change { input: "arg", name: hidden.join(","), detail });
    }
    if out.is_empty() {
        out.push(Change { input: "other", name: String::new(), detail: "kiln's own key material changed (--ignore-path, or another kiln version)".into() });
    }
    out
}

/// Context paths whose digest differs, appeared or went away.
fn changed_files(before: &StepInputs, now: &StepInputs) -> Vec<String> {
    let mut out = Vec::new();
    for (p, d) in &now.files {
        match before.files.get(p) {
            Some(b) if b == d => {}
            Some(_) => out.push(p.clone()),
            None => out.push(format!("{p} (new)")),
        }
    }
    for p in before.files.keys() {
        if !now.files.contains_key(p) {
            out.push(format!("{p} (gone)"));
        }
    }
    out
}

/// A step is about to run although it is cacheable: if a record exists for its
/// position, say what changed.
pub(super) fn explain_miss(cx: &Ctx, sref: &progress::StepRef<'_>, key: &CacheKey, now: &StepInputs) {
    let mut found = None;
    for cache in &cx.caches {
        if let Some(rec) = cx.rt.block_on(cache.previous(now)) {
            if rec.key != key.hex() {
                found = Some(rec);
                break;
            }
        }
    }
    let Some(prev) = found else { return };
    let Some(before) = &prev.inputs else { return };
    let changes = compare(before, now);
    let full = (cx.opts.explain != ExplainMode::Summary).then(|| full_comparison(before, now));
    progress::get().cache_miss(sref, &changes.iter().map(|c| (c.input, c.name.as_str(), c.detail.as_str())).collect::<Vec<_>>(), full.as_deref());
}

fn full_comparison(before: &StepInputs, now: &StepInputs) -> String {
    let mut s = String::new();
    let labels: std::collections::BTreeSet<&String> = before.parts.keys().chain(now.parts.keys()).collect();
    for label in labels {
        let b = before.parts.get(label).map(String::as_str).unwrap_or("-");
        let n = now.parts.get(label).map(String::as_str).unwrap_or("-");
        let mark = if b == n { " " } else { "*" };
        s.push_str(&format!("  {mark} {label}: {b} → {n}\n"));
    }
    let mark = if before.parent == now.parent { " " } else { "*" };
    s.push_str(&format!("  {mark} parent: {} → {}\n", &before.parent[..12.min(before.parent.len())], &now.parent[..12.min(now.parent.len())]));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(parts: &[(&str, &str)], files: &[(&str, &str)], parent: &str) -> StepInputs {
        StepInputs {
            position: "Dockerfile\nstage 0\n1\nlinux/amd64".into(),
            parent: parent.into(),
            parts: parts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            files: files.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            files_truncated: false,
        }
    }

    #[test]
    fn changes_are_named() {
        let before = inputs(&[("instruction", "i1"), ("arg V", "value 1"), ("arg TOKEN", HIDDEN), ("context src/", "c1")], &[("src/a", "1"), ("src/b", "2")], "p");
        let rows: Vec<(StepInputs, &str)> = vec![
            (inputs(&[("instruction", "i2"), ("arg V", "value 1"), ("arg TOKEN", HIDDEN), ("context src/", "c1")], &[("src/a", "1"), ("src/b", "2")], "p"), "the instruction changed"),
            (inputs(&[("instruction", "i1"), ("arg V", "value 2"), ("arg TOKEN", HIDDEN), ("context src/", "c1")], &[("src/a", "1"), ("src/b", "2")], "p"), "build arg V changed: 1 → 2"),
            (inputs(&[("instruction", "i1"), ("arg V", "value 1"), ("arg TOKEN", HIDDEN), ("context src/", "c2")], &[("src/a", "1"), ("src/b", "3"), ("src/c", "4")], "p"), "context file src/b, src/c (new)"),
            (inputs(&[("instruction", "i1"), ("arg V", "value 1"), ("arg TOKEN", HIDDEN), ("context src/", "c1")], &[("src/a", "1"), ("src/b", "2")], "q"), "an earlier step of the stage changed"),
            (inputs(&[("instruction", "i1"), ("arg V", "value 1"), ("arg TOKEN", HIDDEN), ("context src/", "c1")], &[("src/a", "1"), ("src/b", "2")], "p"), "build arg TOKEN changed (value not shown)"),
            (inputs(&[("instruction", "i1"), ("arg V", "value 1"), ("arg TOKEN", HIDDEN), ("context src/", "c1"), ("arg NEW", "value x")], &[("src/a", "1"), ("src/b", "2")], "p"), "build arg NEW is used now"),
        ];
        for (now, want) in rows {
            let got: Vec<String> = compare(&before, &now).into_iter().map(|c| c.detail).collect();
            assert!(got.iter().any(|d| d == want), "want {want:?}, got {got:?}");
        }
    }

    #[test]
    fn credential_like_names() {
        for n in ["NPM_TOKEN", "DB_PASSWORD", "aws_secret_access_key", "GITHUB_AUTH", "API_KEY"] {
            assert!(looks_like_credential(n), "{n}");
        }
        for n in ["VERSION", "BASE_IMAGE", "TARGETARCH"] {
            assert!(!looks_like_credential(n), "{n}");
        }
    }
}
