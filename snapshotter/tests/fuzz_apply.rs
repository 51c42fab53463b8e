//! Fuzzing the layer applier (issue 19): seeded random layers made of hostile
//! entries (names and link targets climbing out, absolute paths to the sibling
//! directory, whiteouts of it, symlinks then files through them, hardlinks to it,
//! PAX paths, devices, setuid modes, odd owners), then byte flips and truncations,
//! plain or gzip, applied alone and onto a lower layer. Every input must end with
//! `Ok` or an error, never a panic, and nothing may change beside the target.
//! `KILN_FUZZ_SECS` (default 2) sets how long it runs, `KILN_FUZZ_SEED` replays one.

mod common;

use std::io::Write;

use common::*;
use kiln_oci::media::LayerCompression;
use kiln_snapshotter::{apply_layer, apply_layer_onto};

#[path = "../../integration/src/fuzzrng.rs"]
mod fuzzrng;
use fuzzrng::Rng;

/// Names and link targets an ordinary layer has (so that most layers get deep into
/// the applier), and hostile ones; `@OUT` becomes the sibling directory's absolute path.
const BENIGN: &[&str] = &["a", "a/b", "a/b/c", "b", "c/d", "./a", "a/", "l", "l/x", "m", ".wh.a", "a/.wh.b", "a/.wh..wh..opq", "é/ü", "a/b/c/d/e/f"];
const HOSTILE: &[&str] = &[
    "../outside/victim", "../../x", "a/../../outside/victim", "/abs", "//a//b", "@OUT/victim", "@OUT", "l/victim", "l/new",
    ".wh..wh..opq", ".wh..wh.plnk", "..", ".", "", "a/b/../../../outside", "dev/null", "proc/self", "x\u{0}y", ".wh.",
];
const KINDS: &[u8] = &[REG, REG, REG, REG, DIR, DIR, DIR, SYMLINK, SYMLINK, LINK, FIFO];
/// Rarer: devices, stray extension headers, GNU long names, unknown types.
const ODD_KINDS: &[u8] = &[CHR, BLK, b'x', b'g', b'L', b'K', b'7', b'Z'];
const MODES: &[u32] = &[0o644, 0o755, 0o4755, 0o2755, 0o1777, 0o000, 0o7777, 0o100644];
const OWNERS: &[u64] = &[0, 1000, 65534];
/// Owners outside a 65,536-id map and beyond.
const ODD_OWNERS: &[u64] = &[65535, 65536, 70000, u32::MAX as u64];

fn layer(r: &mut Rng, out: &str) -> Vec<u8> {
    let mut t = RawTar::new();
    let fix = |s: &str| s.replace("@OUT", out);
    let name_of = |r: &mut Rng| if r.below(6) == 0 { r.pick(HOSTILE) } else { r.pick(BENIGN) };
    for _ in 0..1 + r.below(8) {
        let name = fix(name_of(r));
        let link = fix(name_of(r));
        let kind = if r.below(10) == 0 { ODD_KINDS[r.below(ODD_KINDS.len())] } else { KINDS[r.below(KINDS.len())] };
        let data: Vec<u8> = (0..r.below(700)).map(|_| r.next() as u8).collect();
        if r.below(8) == 0 {
            // A PAX header naming the path or the link target instead.
            let key = if r.below(2) == 0 { "path" } else { "linkpath" };
            let v = fix(name_of(r));
            t.pax(&[(key, v.as_bytes())]);
        }
        if name.len() > 100 || link.len() > 100 {
            continue;
        }
        let data_ref: &[u8] = if kind == REG || kind == b'x' || kind == b'g' || kind == b'L' || kind == b'7' { &data } else { b"" };
        let e = E {
            name: name.as_bytes(),
            kind,
            link: link.as_bytes(),
            mode: MODES[r.below(MODES.len())],
            uid: if r.below(20) == 0 { ODD_OWNERS[r.below(ODD_OWNERS.len())] } else { OWNERS[r.below(OWNERS.len())] },
            gid: OWNERS[r.below(OWNERS.len())],
            mtime: r.next() % (1 << 33),
            data: data_ref,
            dev: (r.below(300) as u32, r.below(300) as u32),
        };
        t.add(e);
    }
    let mut bytes = t.finish();
    // Byte flips and truncation of some inputs.
    match r.below(6) {
        0 => {
            for _ in 0..1 + r.below(8) {
                let i = r.below(bytes.len());
                bytes[i] ^= 1 << r.below(8);
            }
        }
        1 => bytes.truncate(r.below(bytes.len())),
        _ => {}
    }
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn fresh(dir: &std::path::Path) {
    if dir.exists() {
        // Entries may have come out with mode 000 (root ignores it) or immutable-looking modes.
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::create_dir(dir).unwrap();
}

#[test]
fn fuzz_layer_applier() {
    let (seed, secs) = fuzzrng::seed_and_secs(2.0);
    let sb = Sandbox::new();
    let out = sb.outside().display().to_string();
    let (lower, upper) = (sb.root().join("lower"), sb.root().join("upper"));
    let mut r = Rng(seed);
    let start = std::time::Instant::now();
    let (mut n, mut ok) = (0u64, 0u64);
    while start.elapsed().as_secs_f64() < secs {
        let (a, b) = (layer(&mut r, &out), layer(&mut r, &out));
        let (compression, a, b) = if r.below(3) == 0 { (LayerCompression::Gzip, gzip(&a), gzip(&b)) } else { (LayerCompression::None, a, b) };
        fresh(&lower);
        fresh(&upper);
        let res = std::panic::catch_unwind(|| {
            let first = apply_layer(&a[..], compression, &lower);
            let second = apply_layer_onto(&b[..], compression, &upper, std::slice::from_ref(&lower));
            if std::env::var_os("KILN_FUZZ_SHOW").is_some() {
                eprintln!("{:?} / {:?}", first.as_ref().err().map(|e| e.to_string()), second.as_ref().err().map(|e| e.to_string()));
            }
            first.is_ok() && second.is_ok()
        });
        match res {
            Ok(both) => ok += both as u64,
            Err(_) => panic!("the applier panicked (seed {seed}, input #{n})"),
        }
        sb.assert_contained();
        n += 1;
    }
    eprintln!("fuzz_layer_applier: seed {seed}, {n} layer pairs in {:.1}s ({ok} pairs applied without error), nothing escaped", start.elapsed().as_secs_f64());
    assert!(n > 0);
}
