//! SIGKILL at random points (issue 19): a build on one state directory is killed
//! again and again at seeded random moments, as a CI system cancelling jobs does
//! (only the kiln the user started is killed; what it started must die with it).
//! Every build that gets to finish, and the builds after the last kill (cached and
//! not), must give bit-for-bit the image of a clean build on a fresh state
//! directory, and `kiln prune --all` must then leave nothing of the killed builds.
//! The seed is printed; `KILN_KILL_SEED=N` replays a run.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use kiln_integration::registry::seed_base_images;
use kiln_integration::{KilnCmd, Registry, Sandbox};

/// Builds killed before the state directory is checked.
const KILLS: usize = 24;

/// splitmix64: small, seeded, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The manifest digest of the image in the OCI layout at `dir`.
fn image_digest(dir: &Path) -> String {
    let index: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"].as_str().unwrap().to_string()
}

fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                _ => out.push(p.strip_prefix(root).unwrap().display().to_string()),
            }
        }
    }
    out.sort();
    out
}

fn oci_build<'a>(sb: &'a Sandbox, ctx: &Path, dest: &Path, no_cache: bool) -> KilnCmd<'a> {
    let mut k = sb.kiln().build().env("SOURCE_DATE_EPOCH", "1700000000").arg("--output").arg(format!("type=oci,dest={}", dest.display()));
    if no_cache {
        k = k.arg("--no-cache");
    }
    k.arg(ctx)
}

#[test]
fn builds_killed_at_random_points_leave_a_correct_store() {
    let seed = std::env::var("KILN_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x6b69_6c6e_u64);
    eprintln!("kill seed: {seed} (KILN_KILL_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let registry = Registry::start();
    seed_base_images(&registry);
    let clean = Sandbox::new();
    let df = format!(
        "FROM {}/base/busybox:latest\nCOPY big /data/big\nRUN mkdir /gen && i=0 && while [ $i -lt 300 ]; do echo $i > /gen/f$i; i=$((i+1)); done\nRUN cp /data/big /data/copy && rm /data/big\nCOPY small/ /small/\nRUN cat /small/* > /all\n",
        registry.host()
    );
    // 3 MiB that do not compress, and 200 small files: steps that take a while.
    let mut big = Vec::with_capacity(3 << 20);
    while big.len() < 3 << 20 {
        big.extend_from_slice(&rng.next().to_le_bytes());
    }
    let mut ctx = clean.new_context("killed").file("Dockerfile", &df).file("big", &big);
    for i in 0..200 {
        ctx = ctx.file(&format!("small/s{i:03}"), format!("small file {i}\n"));
    }
    let ctx = ctx.build();

    // The reference: a clean build on a fresh state directory, and how long it takes.
    let reference_dir = clean.out_path("reference");
    let started = Instant::now();
    oci_build(&clean, &ctx, &reference_dir, true).run().assert_success();
    let span = started.elapsed().as_millis() as u64;
    let want = image_digest(&reference_dir);
    eprintln!("a clean build takes {span} ms");

    let sb = Sandbox::new();
    // Kill points are drawn within how long a build of that kind (cached or not)
    // last took here, so that they fall inside builds that get faster as they cache.
    let mut spans = [span, span];
    let (mut killed, mut finished) = (0, 0);
    let mut i = 0;
    while killed < KILLS {
        assert!(i < 5 * KILLS, "{killed} kills in {i} tries (seed {seed}): the kill points miss the build");
        let no_cache = rng.next() % 2 == 0;
        let delay = Duration::from_millis(rng.next() % spans[no_cache as usize].max(1));
        let dest = sb.out_path(&format!("try{i}"));
        let started = Instant::now();
        match oci_build(&sb, &ctx, &dest, no_cache).spawn().kill_after(delay) {
            None => killed += 1,
            Some((status, stderr)) => {
                assert!(status.success(), "try {i} (seed {seed}, after earlier kills) failed:\n{stderr}");
                assert_eq!(image_digest(&dest), want, "try {i} (seed {seed}) built another image");
                spans[no_cache as usize] = started.elapsed().as_millis() as u64;
                finished += 1;
            }
        }
        i += 1;
    }
    eprintln!("{killed} builds killed, {finished} finished");

    // After the last kill: the cached build and a build of every step again.
    for (name, no_cache) in [("after-cached", false), ("after-uncached", true)] {
        let dest = sb.out_path(name);
        oci_build(&sb, &ctx, &dest, no_cache).run().assert_success();
        assert_eq!(image_digest(&dest), want, "{name} (seed {seed}): not the clean build's image");
    }

    // Nothing of the killed builds outlives prune: no scratch, no snapshot, no blob;
    // what is left is what is left of the one clean build.
    sb.kiln().arg("prune").arg("--all").run().assert_success();
    clean.kiln().arg("prune").arg("--all").run().assert_success();
    let skeleton = files_under(&clean.kiln_root());
    assert!(skeleton.iter().all(|p| !p.contains("blobs/") && !p.contains("snapshots/")), "{skeleton:?}");
    assert_eq!(files_under(&sb.kiln_root()), skeleton, "kiln prune --all left more of the killed builds (seed {seed})");
}
