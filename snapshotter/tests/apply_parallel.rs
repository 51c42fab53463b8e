//! Files created by worker threads must give exactly the tree the sequential unpack
//! gives: same nodes, contents, modes, owners, times, xattrs, same diffID and notes,
//! and the same failures. Fixed tricky layers, then many random ones over a small
//! set of names (so that names collide, get replaced, linked and whited out).

mod common;
use common::*;

use kiln_oci::media::LayerCompression;
use kiln_snapshotter::apply_layer_onto_with_workers;

/// Apply with `workers` threads into a fresh sandbox: the tree, or the error text.
fn run(tar: &[u8], workers: usize) -> Result<(std::collections::BTreeMap<String, String>, String, Vec<String>), String> {
    let sb = Sandbox::new();
    let r = apply_layer_onto_with_workers(tar, LayerCompression::None, &sb.root(), &[], workers);
    sb.assert_contained();
    match r {
        Ok(a) => Ok((without_clock(snapshot(&sb.root())), a.diff_id.to_string(), a.skipped)),
        Err(e) => Err(e.to_string()),
    }
}

/// Implicitly created directories get the time of the run; entries here use
/// 2020 times. Two runs may straddle a second.
fn without_clock(mut t: std::collections::BTreeMap<String, String>) -> std::collections::BTreeMap<String, String> {
    for v in t.values_mut() {
        if let Some(i) = v.find(" mtime=") {
            let rest = &v[i + 7..];
            let end = rest.find(' ').unwrap_or(rest.len());
            if rest[..end].parse::<u64>().is_ok_and(|m| m > 1_700_000_000) {
                *v = format!("{} mtime=now{}", &v[..i], &rest[end..]);
            }
        }
    }
    t
}

#[track_caller]
fn same(tar: &[u8]) -> Result<std::collections::BTreeMap<String, String>, String> {
    same_as(tar, "")
}

#[track_caller]
fn same_as(tar: &[u8], what: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let seq = run(tar, 0);
    for workers in [1, 3] {
        let par = run(tar, workers);
        match (&seq, &par) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{workers} workers; layer:\n{what}"),
            (Err(_), Err(_)) => {}
            _ => panic!("sequential {seq:?}\n{workers} workers {par:?}\nlayer:\n{what}"),
        }
    }
    seq.map(|(t, _, _)| t)
}

#[test]
fn many_files_with_metadata() {
    let big = vec![7u8; (1 << 20) + 3]; // above the queued-job size: written inline
    let names: Vec<String> = (0..600).map(|i| format!("d{}/f{i}", i % 7)).collect();
    let mut t = RawTar::new();
    for d in 0..7 {
        t.add(E { mode: 0o750 + d, ..E::dir(Box::leak(format!("d{d}/").into_boxed_str())) });
    }
    for (i, n) in names.iter().enumerate() {
        t.add(E { mode: [0o644, 0o755, 0o4755, 0o600, 0o444][i % 5], mtime: 1_600_000_000 + i as u64, ..E::file(n, n.as_bytes()) });
    }
    t.pax(&[("SCHILY.xattr.user.k", b"v")]).add(E::file("d0/x", b"with xattr"));
    t.add(E::file("d1/big", &big));
    let tree = same(&t.finish()).unwrap();
    assert_eq!(tree.len(), 7 + 600 + 2);
    assert!(tree["d0/f0"].contains("mode=644"), "{}", tree["d0/f0"]);
    assert!(tree["d2/f2"].contains("mode=4755"), "{}", tree["d2/f2"]);
    assert!(tree["d0/x"].contains("user.k"), "{}", tree["d0/x"]);
}

#[test]
fn later_entries_win_whatever_path_led_there() {
    let tar = RawTar::new()
        .add(E::file("a/f", b"one"))
        .add(E::file("a/f", b"two")) // duplicate: later wins
        .add(E::dir("usr/lib/"))
        .add(E::symlink("lib", "usr/lib"))
        .add(E::file("usr/lib/x", b"direct"))
        .add(E::file("lib/x", b"through the link")) // same file, reached another way
        .add(E::file("lib/y", b"through the link"))
        .add(E::file("usr/lib/y", b"direct"))
        .add(E::file("p/q/deep", b"implicit parents"))
        .add(E::dir("p/")) // explicit over implicit: metadata only
        .add(E::file("r/s/deep", b"implicit parents"))
        .add(E::file("r", b"a file replaces the implicit directory"))
        .add(E::file("d", b"file first"))
        .add(E::dir("d/"))
        .add(E::file("d/z", b"inside the directory that replaced a file"))
        .add(E::file("h/a", b"linked"))
        .add(E::hardlink("h/b", "h/a"))
        .add(E::file("w/x", b"whited out"))
        .add(E::file("w/.wh.x", b""))
        .add(E::file("o/old", b"hidden by opaque"))
        .add(E::file("o/.wh..wh..opq", b""))
        .add(E::file("o/new", b"kept"))
        .finish();
    let t = same(&tar).unwrap();
    assert!(t["a/f"].contains("\"two\""), "{}", t["a/f"]);
    assert!(t["usr/lib/x"].contains("through the link"), "{}", t["usr/lib/x"]);
    assert!(t["usr/lib/y"].contains("\"direct\""), "{}", t["usr/lib/y"]);
    assert!(t["r"].starts_with("file:"), "{}", t["r"]);
    assert!(!t.contains_key("r/s/deep"));
    assert!(t["d/z"].starts_with("file:"));
    assert!(t["h/b"].contains("nlink=2"), "{}", t["h/b"]);
    assert!(t["w/x"].starts_with("special"), "{}", t["w/x"]);
    assert!(t.contains_key("o/new"));
}

/// xorshift: reproducible without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
}

#[test]
fn random_layers_agree() {
    let dirs = ["", "a/", "b/", "a/c/", "l/"];
    let names = ["x", "y", "z", "x", "y", "z", "x", "y", "z", "c", "l", "a"];
    let dir_ops = ["a/", "b/", "a/c/", "l/", "a/c/x/", "y/"];
    let (mut failed, mut total) = (0, 0);
    for seed in 1..=250u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e3779b97f4a7c15) | 1);
        let mut t = RawTar::new();
        let mut files: Vec<&'static str> = Vec::new();
        let mut what = String::new();
        let n = 5 + rng.next() % 40;
        for i in 0..n {
            let path: &'static str = Box::leak(format!("{}{}", rng.pick(&dirs), rng.pick(&names)).into_boxed_str());
            let data: &'static [u8] = Box::leak(format!("{seed}-{i}").into_bytes().into_boxed_slice());
            let op = rng.next() % 10;
            match op {
                0..=4 => {
                    files.push(path);
                    t.add(E { mode: 0o600 + (rng.next() % 0o200) as u32, ..E::file(path, data) });
                    what.push_str(&format!("file {path}\n"));
                }
                5 | 6 => {
                    let d = rng.pick(&dir_ops);
                    t.add(E::dir(d));
                    what.push_str(&format!("dir {d}\n"));
                }
                7 => {
                    let target = rng.pick(&["a", "b", "a/c", "nowhere", "../a"]);
                    t.add(E::symlink(path, target));
                    what.push_str(&format!("symlink {path} -> {target}\n"));
                }
                8 if !files.is_empty() => {
                    let target = files[(rng.next() % files.len() as u64) as usize];
                    t.add(E::hardlink(path, target));
                    what.push_str(&format!("hardlink {path} -> {target}\n"));
                }
                _ => {
                    let (p, name) = path.rsplit_once('/').map(|(p, n)| (format!("{p}/"), n)).unwrap_or((String::new(), path));
                    t.add(E::file(Box::leak(format!("{p}.wh.{name}").into_boxed_str()), b""));
                    what.push_str(&format!("whiteout {path}\n"));
                }
            }
        }
        total += 1;
        if same_as(&t.finish(), &what).is_err() {
            failed += 1;
        }
    }
    // Some random layers are invalid (a parent that is a file, a link to a file
    // removed since); both ways must agree on those too, but most must apply.
    assert!(total - failed >= 100, "{failed} of {total} random layers failed both ways");
}
