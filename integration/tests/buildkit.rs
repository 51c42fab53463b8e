//! BuildKit's Dockerfile frontend integration tests, translated into
//! `testdata/buildkit/*.txt` (format: testdata/buildkit/README.md), each built
//! end to end by kiln as the unprivileged user and checked like
//! `testdata/cases`. A case marked `known_bug` says why kiln differs; it must
//! keep failing (a pass fails this test so the mark gets removed).
//!
//! `KILN_BK=testA,testB` runs only those cases (a prefix before `/` selects
//! every variant). At the end it prints how many BuildKit test functions the
//! table translates and how many of them pass.

use kiln_integration::bkcases::load_all;
use kiln_integration::cases::{build_and_check, run_pool, Outcome};
use kiln_integration::{seed_base_images, Registry};
use std::collections::BTreeMap;
use std::sync::Arc;

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
                build_and_check(&c.expect, &|sb| {
                    let dir = sb.path().join("ctx").join(c.name.replace('/', "_"));
                    c.materialize(&dir, &host).unwrap_or_else(|e| panic!("{}: context: {e}", c.origin));
                    sb.user.chown_tree(&dir);
                    dir
                })
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
