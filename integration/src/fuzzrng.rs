//! The seeded generator and run length every fuzzer in the project shares (the
//! frontend's, the layer applier's, the `.dockerignore` matcher's, the registry
//! parsers'), included by `#[path]` where a crate cannot depend on
//! `kiln-integration`: xorshift64, reproducible without a dependency.
#![allow(dead_code)]

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

/// `KILN_FUZZ_SEED` (else the clock; never 0, which xorshift cannot leave) and
/// `KILN_FUZZ_SECS` (else `default_secs`).
pub fn seed_and_secs(default_secs: f64) -> (u64, f64) {
    let secs = std::env::var("KILN_FUZZ_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(default_secs);
    let seed: u64 = std::env::var("KILN_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    }) | 1;
    (seed, secs)
}
