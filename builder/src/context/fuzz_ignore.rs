//! Fuzzing the `.dockerignore` matcher (issue 19): seeded random pattern files made
//! of glob pieces (`*`, `**`, `?`, classes, escapes, `!` exceptions, `..`, slashes)
//! and random paths. Every pattern file must parse or give an error, never panic;
//! every match must end; and the walker's pruning must agree with matching: when a
//! directory is excluded and `could_contain_included` says nothing below it can be
//! included, no path below it may be included. `KILN_FUZZ_SECS` (default 2) sets how
//! long it runs, `KILN_FUZZ_SEED` replays one.

use super::dockerignore::Matcher;

#[path = "../../../integration/src/fuzzrng.rs"]
mod fuzzrng;
use fuzzrng::Rng;

const PIECES: &[&str] = &[
    "a", "b", "c", "node_modules", ".git", ".env", "*", "**", "?", "/", "/", "/", ".", "..", "[a-c]", "[^a]", "[!b]", "[", "]", "\\",
    "\\*", "*.txt", "**/", "/**", "-", "^", " ", "é", "[]a]", "[a-]", "[\\]]", "{", "}", "$",
];
const PATH_PIECES: &[&str] = &["a", "b", "c", "node_modules", ".git", ".env", "x.txt", "a.txt", "é", "-", "]", "[", "*", " "];

fn pattern(r: &mut Rng) -> String {
    let mut p = String::new();
    if r.below(4) == 0 {
        p.push('!');
    }
    for _ in 0..1 + r.below(6) {
        p.push_str(PIECES[r.below(PIECES.len())]);
    }
    p
}

fn path(r: &mut Rng, depth: usize) -> String {
    (0..depth).map(|_| PATH_PIECES[r.below(PATH_PIECES.len())]).collect::<Vec<_>>().join("/")
}

#[test]
fn fuzz_dockerignore_matcher() {
    let (seed, secs) = fuzzrng::seed_and_secs(2.0);
    let mut r = Rng(seed);
    let start = std::time::Instant::now();
    let (mut files, mut parsed, mut matches) = (0u64, 0u64, 0u64);
    while start.elapsed().as_secs_f64() < secs {
        let lines: Vec<String> = (0..1 + r.below(6)).map(|_| pattern(&mut r)).collect();
        let text = lines.join(if r.below(2) == 0 { "\n" } else { "\r\n" });
        files += 1;
        let m = match std::panic::catch_unwind(|| Matcher::parse(&text)) {
            Err(_) => panic!("Matcher::parse panicked (seed {seed}) on {text:?}"),
            Ok(Err(_)) => continue,
            Ok(Ok(m)) => m,
        };
        parsed += 1;
        for _ in 0..20 {
            let (d1, d2) = (1 + r.below(3), 1 + r.below(3));
            let dir = path(&mut r, d1);
            let below = format!("{dir}/{}", path(&mut r, d2));
            let res = std::panic::catch_unwind(|| (m.matches(&dir, true), m.could_contain_included(&dir), m.matches(&below, false)));
            let Ok((dir_excluded, may_include, below_excluded)) = res else {
                panic!("matching panicked (seed {seed}): patterns {text:?}, paths {dir:?} {below:?}");
            };
            matches += 3;
            if dir_excluded && !may_include {
                assert!(below_excluded, "seed {seed}: patterns {text:?} exclude {dir:?} and say nothing below is included, but {below:?} is included");
            }
        }
    }
    eprintln!(
        "fuzz_dockerignore_matcher: seed {seed}, {files} pattern files ({parsed} valid), {matches} matches in {:.1}s, no panic, pruning agrees",
        start.elapsed().as_secs_f64()
    );
    assert!(parsed > 0);
}
