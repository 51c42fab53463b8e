//! Every `testdata/cases/*` built end to end with kiln as the unprivileged
//! user (`--output type=oci` into the sandbox) and checked against its
//! `expect.json` (format: testdata/README.md). All cases run (3 at a time,
//! one registry), and every failing case is reported together at the end.
//!
//! A case marked `"known_bug"` is an expected failure: it is reported but
//! does not fail the test — unless it passes, which fails the test so that
//! the mark gets removed.
//!
//! `KILN_CASES=a,b` runs only those cases.

use kiln_integration::cases::{all_case_names, Expect};
use kiln_integration::{seed_base_images, Image, Registry, Sandbox};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

enum Outcome {
    Pass,
    /// known_bug case that failed as expected
    XFail(String, Vec<String>),
    /// known_bug case that passed
    XPass(String),
    Fail(Vec<String>),
}

fn run_case(name: &str, registry: &Registry) -> Outcome {
    let expect = match Expect::load(name, &registry.host()) {
        None => return Outcome::Fail(vec!["no expect.json".into()]),
        Some(Err(e)) => return Outcome::Fail(vec![format!("bad expect.json: {e}")]),
        Some(Ok(e)) => e,
    };
    let errs = {
        let expect = expect.clone();
        let registry_host = registry.host();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let sb = Sandbox::new();
            let ctx = sb.context_with_host(&expect.name, &registry_host);
            let layout = sb.out_path("layout");
            let out = sb.kiln().build().args(expect.kiln_args(&ctx)).output_oci(&layout).arg(&ctx).run();
            let mut errs = expect.check_failure(out.status.success(), &out.stderr);
            if expect.expected_failure().is_none() && out.status.success() {
                let img = Image::from_layout(&layout, None);
                errs.extend(expect.check_image(&img, &layout, &out.combined()));
            }
            if !errs.is_empty() {
                let tail: Vec<&str> = out.stderr.lines().rev().take(12).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                errs.push(format!("kiln stderr (last lines):\n        {}", tail.join("\n        ")));
            }
            errs
        }));
        match r {
            Ok(e) => e,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                vec![format!("panicked: {msg}")]
            }
        }
    };
    match (expect.known_bug(), errs.is_empty()) {
        (None, true) => Outcome::Pass,
        (None, false) => Outcome::Fail(errs),
        (Some(b), false) => Outcome::XFail(b.to_string(), errs),
        (Some(b), true) => Outcome::XPass(b.to_string()),
    }
}

#[test]
fn every_case_builds_as_expected() {
    let registry = Arc::new(Registry::start());
    seed_base_images(&registry);
    let only: Option<Vec<String>> =
        std::env::var("KILN_CASES").ok().map(|s| s.split(',').map(str::to_string).collect());
    let names: Vec<String> = all_case_names()
        .into_iter()
        .filter(|n| only.as_ref().map_or(true, |o| o.contains(n)))
        .collect();
    assert!(!names.is_empty(), "no cases selected");
    let queue = Arc::new(Mutex::new(names.iter().cloned().collect::<VecDeque<String>>()));
    let results = Arc::new(Mutex::new(Vec::new()));
    let threads: usize = std::env::var("KILN_CASES_JOBS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (queue, results, registry) = (queue.clone(), results.clone(), registry.clone());
            std::thread::spawn(move || loop {
                let Some(name) = queue.lock().unwrap().pop_front() else { break };
                let t = Instant::now();
                let outcome = run_case(&name, &registry);
                let secs = t.elapsed().as_secs_f64();
                let tag = match &outcome {
                    Outcome::Pass => "ok",
                    Outcome::XFail(..) => "known bug",
                    Outcome::XPass(..) => "FIXED? (known_bug passes)",
                    Outcome::Fail(..) => "FAIL",
                };
                eprintln!("case {name:<28} {tag} ({secs:.1}s)");
                results.lock().unwrap().push((name, outcome));
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut results = std::mem::take(&mut *results.lock().unwrap());
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
                report += &format!(
                    "\n{name}: marked known_bug ({bug}) but passes: remove the mark from its expect.json\n"
                );
            }
            Outcome::Fail(errs) => {
                bad += 1;
                report += &format!("\n{name}:\n    {}\n", errs.join("\n    "));
            }
        }
    }
    eprintln!(
        "{} cases in {:.0?}: {pass} passed, {xfail} known bugs, {bad} failed",
        results.len(),
        start.elapsed()
    );
    assert!(bad == 0, "{bad} of {} cases failed:\n{report}", results.len());
}
