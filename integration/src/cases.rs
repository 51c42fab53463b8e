//! Data-driven build cases: `testdata/cases/NAME/expect.json` (format in
//! `testdata/README.md`) — how to build a case and what its result must be.
//!
//! [`Expect::load`] reads a case's expectations (with `127.0.0.1:5000`
//! rewritten to the test registry, as the Dockerfiles are);
//! [`Expect::kiln_args`] gives the extra `kiln build` flags it asks for;
//! [`Expect::check_image`] / [`Expect::check_failure`] return every unmet
//! expectation as a line of text (never panicking on a mismatch), so a runner
//! can report all failing cases together.

use crate::image::{Image, Kind, Node, Tree};
use crate::paths;
use serde_json::{Map, Value};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Every directory under `testdata/cases/` (sorted), with or without an expect.json.
pub fn all_case_names() -> Vec<String> {
    let dir = paths::testdata_dir().join("cases");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A case's `expect.json`, parsed.
#[derive(Clone, Debug)]
pub struct Expect {
    pub name: String,
    pub raw: Value,
}

fn obj<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    v.get(key).and_then(Value::as_object)
}

fn str_list(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Parse `"0755"` / `"4755"` (octal text) or a JSON number (taken as octal digits).
fn parse_mode(v: &Value) -> Option<u32> {
    match v {
        Value::String(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).ok(),
        Value::Number(n) => u32::from_str_radix(&n.to_string(), 8).ok(),
        _ => None,
    }
}

/// null, a missing key, `[]` and `{}` all mean "not set".
fn normalize_unset(v: Option<&Value>) -> Value {
    match v {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Array(a)) if a.is_empty() => Value::Null,
        Some(Value::Object(o)) if o.is_empty() => Value::Null,
        Some(v) => v.clone(),
    }
}

impl Expect {
    /// Read `testdata/cases/NAME/expect.json` (None when the case has none),
    /// with `127.0.0.1:5000` replaced by `registry_host`.
    pub fn load(name: &str, registry_host: &str) -> Option<Result<Expect, String>> {
        let p = paths::case_dir(name).join("expect.json");
        if !p.is_file() {
            return None;
        }
        Some(
            std::fs::read_to_string(&p)
                .map_err(|e| format!("{}: {e}", p.display()))
                .and_then(|s| {
                    serde_json::from_str::<Value>(&s.replace("127.0.0.1:5000", registry_host))
                        .map_err(|e| format!("{}: {e}", p.display()))
                })
                .map(|raw| Expect { name: name.to_string(), raw }),
        )
    }

    pub fn description(&self) -> &str {
        self.raw["description"].as_str().unwrap_or("")
    }
    /// `"known_bug": "…"`: the case asserts Docker's behaviour, which kiln does not have yet.
    pub fn known_bug(&self) -> Option<&str> {
        self.raw["known_bug"].as_str()
    }
    /// `"fail": "text"`: the build must fail with this text in stderr.
    pub fn expected_failure(&self) -> Option<&str> {
        self.raw["fail"].as_str()
    }
    /// `"dockerfile": "build.Dockerfile"`, relative to the context.
    pub fn dockerfile(&self) -> Option<&str> {
        self.raw["dockerfile"].as_str()
    }

    /// Extra `kiln build` flags: -f, --build-arg, --target, --label, --secret.
    pub fn kiln_args(&self, ctx: &Path) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(f) = self.dockerfile() {
            a.push("-f".into());
            a.push(ctx.join(f).display().to_string());
        }
        for (k, v) in obj(&self.raw, "args").into_iter().flatten() {
            a.push("--build-arg".into());
            a.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
        if let Some(t) = self.raw["target"].as_str() {
            a.push("--target".into());
            a.push(t.into());
        }
        for (k, v) in obj(&self.raw, "labels").into_iter().flatten() {
            a.push("--label".into());
            a.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
        for (id, file) in obj(&self.raw, "secrets").into_iter().flatten() {
            a.push("--secret".into());
            a.push(format!("id={id},src={}", ctx.join(file.as_str().unwrap_or_default()).display()));
        }
        if let Some(p) = self.raw["platform"].as_str() {
            a.push("--platform".into());
            a.push(p.into());
        }
        a.extend(str_list(&self.raw, "flags"));
        a
    }

    /// `output_contains` / `output_absent`: text kiln's output (stdout and
    /// stderr, RUN output included) must or must not hold.
    pub fn check_output(&self, output: &str) -> Vec<String> {
        let mut errs = Vec::new();
        for s in str_list(&self.raw, "output_contains") {
            if !output.contains(&s) {
                errs.push(format!("kiln's output lacks {s:?}"));
            }
        }
        for s in str_list(&self.raw, "output_absent") {
            if output.contains(&s) {
                errs.push(format!("kiln's output has {s:?}"));
            }
        }
        errs
    }

    /// Strings that must appear in no blob of the output and not in kiln's output.
    pub fn not_in_blobs(&self) -> Vec<String> {
        str_list(&self.raw, "not_in_blobs")
    }

    /// The unmet expectations of a failed build (`fail`), or of a build that
    /// should have failed.
    pub fn check_failure(&self, success: bool, stderr: &str) -> Vec<String> {
        let mut errs = Vec::new();
        let Some(text) = self.expected_failure() else {
            if !success {
                errs.push("the build failed".to_string());
            }
            return errs;
        };
        if success {
            errs.push(format!("the build succeeded; expected a failure containing {text:?}"));
            return errs;
        }
        if !stderr.contains(text) {
            errs.push(format!("stderr lacks {text:?}"));
        }
        if stderr.contains("panicked") {
            errs.push("kiln panicked".to_string());
        }
        errs
    }

    /// Every unmet expectation of a built image (`layout`: its OCI layout dir).
    pub fn check_image(&self, img: &Image, layout: &Path, build_output: &str) -> Vec<String> {
        let mut errs = Vec::new();
        let t = &img.tree;
        let files = obj(&self.raw, "files").cloned().unwrap_or_default();

        // image consistency: one diff_id per layer, equal to the layer's sha256
        let diff_ids: Vec<String> = img.config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let computed: Vec<String> = img.layers.iter().map(|l| l.diff_id.clone()).collect();
        if diff_ids != computed {
            errs.push(format!("rootfs.diff_ids {diff_ids:?} != the layers' sha256 {computed:?}"));
        }
        let history = img.history();
        let non_empty = history.iter().filter(|h| !h["empty_layer"].as_bool().unwrap_or(false)).count();
        if non_empty != img.layers.len() {
            errs.push(format!(
                "{non_empty} history entries without empty_layer but {} layers",
                img.layers.len()
            ));
        }

        // universal: no sandbox artifacts, no overlay xattrs
        for p in ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/run", "/.dockerenv"] {
            if !files.contains_key(p) {
                if let Some(n) = t.get(p) {
                    errs.push(format!("{p}: sandbox artifact in the image: {n}"));
                }
            }
        }
        for d in ["/proc", "/dev", "/sys"] {
            let c = t.children_of(d);
            if !c.is_empty() {
                errs.push(format!("{d} must stay empty, has {c:?}"));
            }
        }
        for (p, n) in &t.0 {
            if n.xattrs.keys().any(|k| k.starts_with("user.overlay.") || k.starts_with("trusted.overlay.")) {
                errs.push(format!("{p}: overlay xattrs leaked: {n}"));
            }
        }

        for (path, want) in &files {
            check_file(t, path, want, &mut errs);
        }
        for p in str_list(&self.raw, "absent") {
            if let Some(n) = t.get(&p) {
                errs.push(format!("{p}: should be absent, is {n}"));
            }
        }

        let cfg = img.cfg();
        for (k, want) in obj(&self.raw, "config").into_iter().flatten() {
            let got = normalize_unset(cfg.get(k));
            let want = normalize_unset(Some(want));
            if got != want {
                errs.push(format!("config.{k}: got {got}, want {want}"));
            }
        }
        let env = img.env();
        for e in str_list(&self.raw, "env") {
            if !env.contains(&e) {
                errs.push(format!("Env lacks {e:?}: {env:?}"));
            }
        }
        for k in str_list(&self.raw, "env_absent") {
            if let Some(e) = env.iter().find(|e| e.split_once('=').map(|x| x.0) == Some(k.as_str())) {
                errs.push(format!("Env must not set {k}: has {e:?}"));
            }
        }
        if let Some(n) = self.raw["layers"].as_u64() {
            if img.layers.len() as u64 != n {
                errs.push(format!("{} layers, want {n}", img.layers.len()));
            }
        }
        if let Some(n) = self.raw["history"].as_u64() {
            if history.len() as u64 != n {
                let c: Vec<String> = history
                    .iter()
                    .map(|h| {
                        format!(
                            "{}{}",
                            h["created_by"].as_str().unwrap_or(""),
                            if h["empty_layer"].as_bool().unwrap_or(false) { " (empty)" } else { "" }
                        )
                    })
                    .collect();
                errs.push(format!("{} history entries, want {n}: {c:?}", history.len()));
            }
        }
        let needles = self.not_in_blobs();
        if !needles.is_empty() {
            for (blob, text) in layout_blobs_text(layout) {
                for s in &needles {
                    if text.contains(s.as_str()) {
                        errs.push(format!("{s:?} found in blob {}", blob.display()));
                    }
                }
            }
            for s in &needles {
                if build_output.contains(s.as_str()) {
                    errs.push(format!("{s:?} printed by kiln"));
                }
            }
        }
        errs
    }
}

fn kind_name(k: &Kind) -> &'static str {
    match k {
        Kind::File | Kind::Hardlink(_) => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
        Kind::Char(..) => "char",
        Kind::Block(..) => "block",
        Kind::Fifo => "fifo",
    }
}

/// The path a hardlink group is known by in the tree (its first name).
fn link_root(n: &Node, path: &str) -> String {
    match &n.kind {
        Kind::Hardlink(t) => t.clone(),
        _ => path.to_string(),
    }
}

fn check_file(t: &Tree, path: &str, want: &Value, errs: &mut Vec<String>) {
    let Some(n) = t.get(path) else {
        let parent = path.rsplit_once('/').map(|x| if x.0.is_empty() { "/" } else { x.0 }).unwrap_or("/");
        let siblings: Vec<&String> = t.children_of(parent).into_iter().take(20).collect();
        errs.push(format!("{path}: missing (under {parent}: {siblings:?})"));
        return;
    };
    if let Some(ty) = want["type"].as_str() {
        if kind_name(&n.kind) != ty {
            errs.push(format!("{path}: type {}, want {ty}: {n}", kind_name(&n.kind)));
        }
    }
    if let Some(m) = want.get("mode").and_then(parse_mode) {
        if n.mode != m {
            errs.push(format!("{path}: mode {:04o}, want {m:04o}: {n}", n.mode));
        }
    }
    for (key, got) in [("uid", n.uid), ("gid", n.gid)] {
        if let Some(w) = want[key].as_u64() {
            if got != w {
                errs.push(format!("{path}: {key} {got}, want {w}: {n}"));
            }
        }
    }
    if let Some(c) = want["content"].as_str() {
        if n.content.as_deref() != Some(c.as_bytes()) {
            errs.push(format!("{path}: content {:?}, want {c:?}", n.text()));
        }
    }
    if let Some(c) = want["contains"].as_str() {
        if !n.text().contains(c) {
            errs.push(format!("{path}: content {:?} lacks {c:?}", n.text()));
        }
    }
    if let Some(l) = want["link"].as_str() {
        if n.link.as_deref() != Some(l) {
            errs.push(format!("{path}: symlink target {:?}, want {l:?}", n.link));
        }
    }
    if let Some(other) = want["hardlink_of"].as_str() {
        match t.get(other) {
            None => errs.push(format!("{path}: hardlink_of {other}, which is missing")),
            Some(o) => {
                if link_root(n, path) != link_root(o, other) {
                    errs.push(format!("{path}: not a hardlink of {other} ({n} / {o})"));
                }
            }
        }
    }
}

/// Each blob of an OCI layout as text (gzip/zstd decompressed when possible).
pub fn layout_blobs_text(layout: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(layout.join("blobs/sha256")) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(raw) = std::fs::read(&p) else { continue };
        let mut plain = Vec::new();
        if raw.starts_with(&[0x1f, 0x8b]) {
            let _ = flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut plain);
        } else if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            if let Some(z) = paths::which("zstd") {
                if let Ok(o) = std::process::Command::new(z)
                    .arg("-dc")
                    .arg(&p)
                    .output()
                {
                    plain = o.stdout;
                }
            }
        } else {
            plain = raw;
        }
        out.push((p, String::from_utf8_lossy(&plain).into_owned()));
    }
    out
}

/// How one case ended.
pub enum Outcome {
    Pass,
    /// known_bug case that failed as expected
    XFail(String, Vec<String>),
    /// known_bug case that passed
    XPass(String),
    Fail(Vec<String>),
}

/// Build `ctx` with kiln as the unprivileged user (`--output type=oci` into
/// the sandbox) and check the result against `expect`. Never panics: a panic
/// in the harness becomes a failure line.
pub fn build_and_check(expect: &Expect, make_ctx: &dyn Fn(&crate::Sandbox) -> PathBuf) -> Outcome {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let sb = crate::Sandbox::new();
        let ctx = make_ctx(&sb);
        let layout = sb.out_path("layout");
        let out = sb.kiln().build().args(expect.kiln_args(&ctx)).output_oci(&layout).arg(&ctx).run();
        let combined = out.combined();
        let mut errs = expect.check_failure(out.status.success(), &out.stderr);
        errs.extend(expect.check_output(&combined));
        if expect.expected_failure().is_none() && out.status.success() {
            let img = Image::from_layout(&layout, None);
            errs.extend(expect.check_image(&img, &layout, &combined));
        }
        if !errs.is_empty() {
            let tail: Vec<&str> = out.stderr.lines().rev().take(12).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            errs.push(format!("kiln stderr (last lines):\n        {}", tail.join("\n        ")));
        }
        errs
    }));
    let errs = match r {
        Ok(e) => e,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            vec![format!("panicked: {msg}")]
        }
    };
    match (expect.known_bug(), errs.is_empty()) {
        (None, true) => Outcome::Pass,
        (None, false) => Outcome::Fail(errs),
        (Some(b), false) => Outcome::XFail(b.to_string(), errs),
        (Some(b), true) => Outcome::XPass(b.to_string()),
    }
}

/// Run `jobs` on `KILN_CASES_JOBS` threads (default 3), print a line per case,
/// and return the results sorted by name with a summary: (results, failures
/// report, number that failed).
pub fn run_pool(jobs: Vec<(String, Box<dyn FnOnce() -> Outcome + Send>)>) -> (Vec<(String, Outcome)>, String, usize) {
    use std::sync::{Arc, Mutex};
    let total = jobs.len();
    let queue = Arc::new(Mutex::new(jobs.into_iter().collect::<std::collections::VecDeque<_>>()));
    let results = Arc::new(Mutex::new(Vec::new()));
    let threads: usize = std::env::var("KILN_CASES_JOBS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let start = std::time::Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (queue, results) = (queue.clone(), results.clone());
            std::thread::spawn(move || loop {
                let Some((name, job)) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else { break };
                let t = std::time::Instant::now();
                let outcome = job();
                let tag = match &outcome {
                    Outcome::Pass => "ok",
                    Outcome::XFail(..) => "known bug",
                    Outcome::XPass(..) => "FIXED? (known_bug passes)",
                    Outcome::Fail(..) => "FAIL",
                };
                eprintln!("case {name:<40} {tag} ({:.1}s)", t.elapsed().as_secs_f64());
                results.lock().unwrap_or_else(|p| p.into_inner()).push((name, outcome));
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let mut results = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let mut report = String::new();
    let (mut pass, mut xfail, mut bad) = (0, 0, 0);
    for (name, o) in &results {
        match o {
            Outcome::Pass => pass += 1,
            Outcome::XFail(bug, errs) => {
                xfail += 1;
                eprintln!("known bug in {name}: {bug}\n    {}", errs.join("\n    "));
            }
            Outcome::XPass(bug) => {
                bad += 1;
                report += &format!("\n{name}: marked known_bug ({bug}) but passes: remove the mark\n");
            }
            Outcome::Fail(errs) => {
                bad += 1;
                report += &format!("\n{name}:\n    {}\n", errs.join("\n    "));
            }
        }
    }
    bad += total - results.len();
    eprintln!("{} cases in {:.0?}: {pass} passed, {xfail} known bugs, {bad} failed", results.len(), start.elapsed());
    (results, report, bad)
}
