//! BuildKit's Dockerfile frontend integration tests, translated into
//! `testdata/buildkit/*.txt` (format: testdata/buildkit/README.md), each built
//! end to end by kiln as the unprivileged user and checked like
//! `testdata/cases`. A case marked `known_bug` says why kiln differs; it must
//! keep failing (a pass fails this test so the mark gets removed).
//!
//! `KILN_BK=testA,testB` runs only those cases (a prefix before `/` selects
//! every variant). At the end it prints how many BuildKit test functions the
//! table translates and how many of them pass.
//!
//! A case with `-- http:/path --` sections (or naming `127.0.0.1:5001`) gets its
//! own [`FileServer`]; two expect.json keys are checked here rather than by
//! `cases::Expect`, since they are about that server and about building twice:
//! `"rebuild": true` builds the context once, unchecked, in the same sandbox
//! (so the same cache) before the checked build, and `"http_requests"` is the
//! list of `METHOD /path` requests the server must have received over both
//! builds, in any order (stages may fetch concurrently) but each as many times
//! as listed.

use kiln_integration::bkcases::load_all;
use kiln_integration::cases::{build_and_check, run_pool, Expect, Outcome};
use kiln_integration::fileserver::FileServer;
use kiln_integration::{seed_base_images, Registry};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `http_requests` against what the server saw: an empty list when they agree.
fn check_requests(expect: &Expect, server: Option<&FileServer>) -> Vec<String> {
    let Some(want) = expect.raw.get("http_requests") else { return Vec::new() };
    let Some(want) = want.as_array().and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<&str>>>()) else {
        return vec![format!("http_requests must be a list of \"METHOD /path\" strings, is {want}")];
    };
    let got = server.map(FileServer::request_lines).unwrap_or_default();
    let (mut w, mut g) = (want.clone(), got.iter().map(String::as_str).collect::<Vec<_>>());
    w.sort_unstable();
    g.sort_unstable();
    if w == g {
        Vec::new()
    } else {
        vec![format!("the HTTP server got {got:?}, want {want:?} (in any order)")]
    }
}

/// Add the runner's own failures to a case's outcome.
fn with_errors(o: Outcome, extra: Vec<String>) -> Outcome {
    if extra.is_empty() {
        return o;
    }
    match o {
        Outcome::Pass => Outcome::Fail(extra),
        Outcome::Fail(mut e) => {
            e.extend(extra);
            Outcome::Fail(e)
        }
        Outcome::XPass(bug) => Outcome::XFail(bug, extra),
        Outcome::XFail(bug, mut e) => {
            e.extend(extra);
            Outcome::XFail(bug, e)
        }
    }
}

#[test]
fn buildkit_frontend_tests_pass() {
    let registry = Arc::new(Registry::start());
    seed_base_images(&registry);
    let host = registry.host();
    let cases = load_all(&host).unwrap_or_else(|e| panic!("testdata/buildkit: {e}"));
    let only: Option<Vec<String>> = std::env::var("KILN_BK").ok().map(|s| s.split(',').map(str::to_string).collect());
    let selected: Vec<_> = cases
        .into_iter()
        .filter(|c| {
            only.as_ref()
                .map_or(true, |o| o.iter().any(|x| *x == c.name || c.name.split('/').next() == Some(x.as_str())))
        })
        .collect();
    assert!(!selected.is_empty(), "no BuildKit cases selected");
    let functions: BTreeMap<String, String> = selected.iter().map(|c| (c.name.clone(), c.from.clone())).collect();
    let jobs = selected
        .into_iter()
        .map(|c| {
            let host = host.clone();
            let name = c.name.clone();
            let job: Box<dyn FnOnce() -> Outcome + Send> = Box::new(move || {
                let server = match c.uses_http().then(|| FileServer::start(c.served.clone())).transpose() {
                    Ok(s) => s,
                    Err(e) => return Outcome::Fail(vec![format!("starting the HTTP server: {e}")]),
                };
                let http_host = server.as_ref().map(FileServer::host);
                let expect = match &http_host {
                    Some(h) => match c.expect_for(&host, h) {
                        Ok(e) => e,
                        Err(e) => return Outcome::Fail(vec![e]),
                    },
                    None => c.expect.clone(),
                };
                let rebuild = expect.raw["rebuild"].as_bool().unwrap_or(false);
                let outcome = build_and_check(&expect, &|sb| {
                    let dir = sb.path().join("ctx").join(c.name.replace('/', "_"));
                    c.materialize(&dir, &host, http_host.as_deref())
                        .unwrap_or_else(|e| panic!("{}: context: {e}", c.origin));
                    sb.user.chown_tree(&dir);
                    if rebuild {
                        let out = sb.kiln().build().args(expect.kiln_args(&dir)).output_oci(&sb.out_path("first")).arg(&dir).run();
                        if !out.status.success() {
                            panic!("the first of two builds failed:\n{}", out.stderr);
                        }
                    }
                    dir
                });
                with_errors(outcome, check_requests(&expect, server.as_ref()))
            });
            (name, job)
        })
        .collect();
    let (results, report, bad) = run_pool(jobs);
    // Per BuildKit test function: passes only if every variant passes.
    let mut per_fn: BTreeMap<&str, (bool, bool)> = BTreeMap::new(); // (all pass, any known bug)
    for (name, o) in &results {
        let f = functions.get(name).map(String::as_str).unwrap_or(name);
        let e = per_fn.entry(f).or_insert((true, false));
        match o {
            Outcome::Pass => {}
            Outcome::XFail(..) => e.1 = true,
            _ => e.0 = false,
        }
    }
    let passing = per_fn.values().filter(|(ok, kb)| *ok && !*kb).count();
    eprintln!(
        "BuildKit test functions translated: {}, passing: {passing}, with a known difference: {}",
        per_fn.len(),
        per_fn.values().filter(|(_, kb)| *kb).count()
    );
    assert!(bad == 0, "{bad} of {} BuildKit cases failed:\n{report}", results.len());
}
