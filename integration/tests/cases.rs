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

use kiln_integration::cases::{all_case_names, build_and_check, run_pool, Expect, Outcome};
use kiln_integration::{seed_base_images, Registry};
use std::sync::Arc;

fn run_case(name: &str, registry: &Registry) -> Outcome {
    let expect = match Expect::load(name, &registry.host()) {
        None => return Outcome::Fail(vec!["no expect.json".into()]),
        Some(Err(e)) => return Outcome::Fail(vec![format!("bad expect.json: {e}")]),
        Some(Ok(e)) => e,
    };
    let host = registry.host();
    build_and_check(&expect, &|sb| sb.context_with_host(name, &host))
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
    let jobs = names
        .into_iter()
        .map(|n| {
            let registry = registry.clone();
            let job: Box<dyn FnOnce() -> Outcome + Send> = Box::new({
                let n = n.clone();
                move || run_case(&n, &registry)
            });
            (n, job)
        })
        .collect();
    let (results, report, bad) = run_pool(jobs);
    assert!(bad == 0, "{bad} of {} cases failed:\n{report}", results.len());
}
