//! Data-driven build cases: `testdata/cases/NAME/expect.json` (format in
//! `testdata/README.md`) — how to build a case and what its result must be.
//!
//! [`Expect::load`] reads a case's expectations (with `127.0.0.1:5000`
//! rewritten to the test registry, as the Dockerfiles are);
//! [`Expect::kiln_args`] gives the extra `kiln build` flags it asks for;
//! [`Expect::check_image`] / [`Expect::check_failure`] return every unmet
//! expectation as a line of text (never panicking on a mismatch), so a runner
//! can report all failing cases together. [`Expect::then_builds`] reads the
//! `then` rebuilds that [`build_and_check`] runs in the same sandbox after the
//! first build and compares with earlier builds.

mod then;
pub use then::Rebuild;

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
/// the sandbox) and check the result against `expect`; then run each of its
/// `then` rebuilds in the same sandbox (same KILN_ROOT, same context
/// directory, changed as the entry says) and check those. Never panics: a
/// panic in the harness becomes a failure line.
pub fn build_and_check(expect: &Expect, make_ctx: &dyn Fn(&crate::Sandbox) -> PathBuf) -> Outcome {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // A malformed `then` is reported before anything is built: a typo must
        // not turn into a rebuild that checks nothing.
        let rebuilds = match expect.then_builds() {
            Ok(r) => r,
            Err(e) => return vec![format!("bad expect.json: {e}")],
        };
        let sb = crate::Sandbox::new();
        let ctx = make_ctx(&sb);
        let mut done: Vec<Built> = Vec::new();
        let mut errs = build_once(&sb, &ctx, expect, &mut done);
        for (i, rb) in rebuilds.iter().enumerate() {
            let n = i + 1;
            let mut step_errs = Vec::new();
            match rb.prepare(&sb, &ctx) {
                Err(e) => step_errs.push(e),
                Ok(()) => step_errs.extend(build_once(&sb, &ctx, &rb.expect, &mut done)),
            }
            errs.extend(step_errs.into_iter().map(|e| format!("build {n} (then[{i}]): {e}")));
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

/// What one build of a case left for later builds to compare with.
pub(crate) struct Built {
    /// None when the build failed (or was meant to).
    pub(crate) image: Option<Image>,
}

/// One build into `layout`, `layout-1`, ... (by how many builds came
/// before), checked against `expect` and the builds in `done`, to which it is
/// then added.
fn build_once(sb: &crate::Sandbox, ctx: &Path, expect: &Expect, done: &mut Vec<Built>) -> Vec<String> {
    let n = done.len();
    let layout = sb.out_path(&if n == 0 { "layout".to_string() } else { format!("layout-{n}") });
    let out = sb.kiln().build().args(expect.kiln_args(ctx)).output_oci(&layout).arg(ctx).run();
    let combined = out.combined();
    let mut errs = expect.check_failure(out.status.success(), &out.stderr);
    errs.extend(expect.check_output(&combined));
    errs.extend(expect.check_steps(&combined));
    let mut image = None;
    if expect.expected_failure().is_none() && out.status.success() {
        let img = Image::from_layout(&layout, None);
        errs.extend(expect.check_image(&img, &layout, &combined));
        image = Some(img);
    }
    errs.extend(expect.check_against(image.as_ref(), done));
    if !errs.is_empty() {
        let tail: Vec<&str> = out.stderr.lines().rev().take(12).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        errs.push(format!("kiln stderr (last lines):\n        {}", tail.join("\n        ")));
    }
    done.push(Built { image });
    errs
}

/// `(steps run, steps cached)` from kiln's last summary line,
/// `built sha256:… in 1.2s (R steps run, C cached)`.
pub fn parse_summary(output: &str) -> Option<(u64, u64)> {
    let line = output.lines().rev().find(|l| l.starts_with("built "))?;
    let inner = line.rsplit_once('(')?.1.strip_suffix(')')?;
    let (ran, cached) = inner.split_once(',')?;
    let ran = ran.trim().strip_suffix("steps run")?.trim().parse().ok()?;
    let cached = cached.trim().strip_suffix("cached")?.trim().parse().ok()?;
    Some((ran, cached))
}

/// Run `jobs` on `KILN_CASES_JOBS` threads (default 3), print a line per case,
/// and return the results sorted by name with a summary: (results, failures
/// report, number that failed).
pub fn run_pool(jobs: Vec<(String, Box<dyn FnOnce() -> Outcome + Send>)>) -> (Vec<(String, Outcome)>, String, usize) {
    use std::sync::{Arc, Mutex};
    let total = jobs.len();
    let queue = Arc::new(Mutex::new(jobs.into_iter().collect::<std::collections::VecDeque<_>>()));
    let results = Arc::new(Mutex::new(Vec::new()));
    // Case lines are printed after the run, failures first: a CI log that keeps only
    // the beginning of a failed test's output then still names what failed.
    let lines = Arc::new(Mutex::new(Vec::new()));
    let threads: usize = std::env::var("KILN_CASES_JOBS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let start = std::time::Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (queue, results, lines) = (queue.clone(), results.clone(), lines.clone());
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
                lines.lock().unwrap_or_else(|p| p.into_inner()).push(format!("case {name:<40} {tag} ({:.1}s)", t.elapsed().as_secs_f64()));
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
    if bad > 0 {
        eprintln!("FAILED cases:{report}");
    }
    for l in lines.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        eprintln!("{l}");
    }
    eprintln!("{} cases in {:.0?}: {pass} passed, {xfail} known bugs, {bad} failed", results.len(), start.elapsed());
    (results, report, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expect(raw: Value) -> Expect {
        Expect { name: "t".into(), raw }
    }

    #[test]
    fn summary_line_is_read_from_the_last_built_line() {
        let out = "step 1/2 ...\nbuilt sha256:aa in 0.1s (9 steps run, 9 cached)\nbuilt sha256:abc in 1.5s (2 steps run, 3 cached)\n";
        assert_eq!(parse_summary(out), Some((2, 3)));
        assert_eq!(parse_summary("built sha256:abc in 1.5s\n"), None);
        assert_eq!(parse_summary("no summary\n"), None);
        assert_eq!(parse_summary("built x in 1s (two steps run, 3 cached)"), None);
    }

    #[test]
    fn steps_are_checked_against_the_summary() {
        let e = expect(json!({"cached_steps": 3, "ran_steps": 0}));
        assert!(e.check_steps("built sha256:a in 1s (0 steps run, 3 cached)").is_empty());
        let errs = e.check_steps("built sha256:a in 1s (1 steps run, 2 cached)");
        assert_eq!(errs, vec!["1 steps run, want 0".to_string(), "2 steps cached, want 3".to_string()]);
        assert_eq!(e.check_steps("nothing").len(), 1);
        assert!(expect(json!({})).check_steps("nothing").is_empty());
    }

    #[test]
    fn then_inherits_build_keys_and_replaces_them_when_given() {
        let e = expect(json!({
            "args": {"A": "1"}, "flags": ["--no-cache"], "files": {"/x": {}}, "known_bug": "k",
            "then": [
                {"write": {"a": "x\n", "d/b": {"content": "y", "mode": "0600"}}, "remove": ["old"],
                 "rename": {"f1": "f2"}, "same_image_as": 0, "prune": true, "sleep": 1},
                {"flags": [], "args": {"A": "2"}, "fail": "boom", "different_content": {"/u": 1}}
            ]
        }));
        let r = e.then_builds().expect("valid");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].remove, vec!["old".to_string()]);
        assert_eq!(r[0].rename, vec![("f1".to_string(), "f2".to_string())]);
        assert_eq!(
            r[0].write,
            vec![("a".to_string(), b"x\n".to_vec(), None), ("d/b".to_string(), b"y".to_vec(), Some(0o600))]
        );
        assert!(r[0].prune && !r[1].prune);
        assert_eq!(r[0].sleep, Some(std::time::Duration::from_secs(1)));
        let ctx = Path::new("/c");
        assert_eq!(r[0].expect.kiln_args(ctx), vec!["--build-arg", "A=1", "--no-cache"]);
        // the first build's expectations and known_bug do not carry over
        assert!(r[0].expect.raw.get("files").is_none() && r[0].expect.known_bug().is_none());
        assert!(r[0].expect.raw.get("write").is_none());
        assert_eq!(r[1].expect.kiln_args(ctx), vec!["--build-arg", "A=2"]);
        assert_eq!(r[1].expect.expected_failure(), Some("boom"));
        assert!(expect(json!({})).then_builds().expect("no then").is_empty());
    }

    #[test]
    fn bad_then_entries_are_refused() {
        let bad = [
            (json!({"then": {}}), "list"),
            (json!({"then": [1]}), "then[0]: not an object"),
            (json!({"then": [{"same_image": 0}]}), "unknown key \"same_image\""),
            (json!({"then": [{"same_image_as": 1}]}), "earlier build"),
            (json!({"then": [{}, {"different_image_from": 2}]}), "then[1]: different_image_from"),
            (json!({"then": [{"same_content": {"/a": 1}}]}), "same_content /a"),
            (json!({"then": [{"write": {"../x": "y"}}]}), "not a path inside"),
            (json!({"then": [{"write": {"/x": "y"}}]}), "not a path inside"),
            (json!({"then": [{"remove": ["a/../../b"]}]}), "not a path inside"),
            (json!({"then": [{"write": {"x": {"mode": "0600"}}}]}), "no \"content\""),
            (json!({"then": [{"write": {"x": {"content": "", "mode": "9"}}}]}), "bad mode"),
            (json!({"then": [{"rename": {"a": 1}}]}), "new name"),
            (json!({"then": [{"cached_steps": "2"}]}), "cached_steps"),
            (json!({"then": [{"sleep": 100}]}), "sleep"),
            (json!({"then": [{"prune": "yes"}]}), "prune"),
        ];
        for (raw, want) in bad {
            match expect(raw.clone()).then_builds() {
                Ok(_) => panic!("{raw} accepted"),
                Err(e) => assert!(e.contains(want), "{raw}: {e:?} lacks {want:?}"),
            }
        }
    }
}
