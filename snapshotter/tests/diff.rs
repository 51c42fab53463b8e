//! write_layer: canonical layers from an overlay upperdir, and the round trip back
//! through apply_layer.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_oci::media::LayerCompression;
use kiln_snapshotter::{apply_layer, write_layer, DiffOptions};

/// mknod with an exact mode (overlay makes whiteouts with mode 0).
fn mknod(p: &Path, kind: libc::mode_t, dev: libc::dev_t) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mknod(c.as_ptr(), kind, dev) }, 0, "mknod {}", p.display());
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

const LONG: &str = "a-very-long-directory-name-that-goes-on-and-on-and-on-for-more-than-fifty-chars";

/// An upperdir as overlayfs (rootless, userxattr) leaves it after a RUN step.
fn make_upper(dir: &Path, reverse: bool) {
    let mut steps: Vec<Box<dyn Fn()>> = Vec::new();
    let d = dir.to_path_buf();
    steps.push(Box::new(move || {
        std::fs::create_dir_all(d.join("app/sub")).unwrap();
        std::fs::write(d.join("app/hello.txt"), b"hello\n").unwrap();
        std::fs::write(d.join("app/suid"), b"#!/bin/sh\n").unwrap();
        symlink("hello.txt", d.join("app/link")).unwrap();
        std::fs::hard_link(d.join("app/hello.txt"), d.join("app/hard")).unwrap();
        mknod(&d.join("app/deleted"), libc::S_IFCHR, 0); // whiteout
        std::fs::create_dir(d.join("opq")).unwrap();
        std::fs::write(d.join("opq/new"), b"n").unwrap();
        set_xattr(&d.join("opq"), "user.overlay.opaque", b"y");
        set_xattr(&d.join("app/hello.txt"), "user.comment", b"hi");
        set_xattr(&d.join("app/hello.txt"), "user.a", b"first");
        mknod(&d.join("app/fifo"), libc::S_IFIFO | 0o640, 0);
        std::fs::create_dir_all(d.join(LONG).join(LONG)).unwrap();
        std::fs::write(d.join(LONG).join(LONG).join("file-with-a-long-name"), b"long").unwrap();
        symlink(format!("/{LONG}/{LONG}/{LONG}"), d.join("longlink")).unwrap();
        // Mount stubs kiln created, to be excluded.
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::write(d.join("etc/hosts"), b"").unwrap();
        std::fs::write(d.join("etc/keep"), b"k").unwrap();
        std::fs::create_dir_all(d.join("proc/self")).unwrap();
        std::fs::write(d.join("proc/self/x"), b"").unwrap();
        chmod(&d.join("app/suid"), 0o4755);
        chmod(&d.join("app/sub"), 0o1777);
    }));
    if reverse {
        steps.reverse();
    }
    for s in steps {
        s();
    }
    if can_chown_any() {
        std::os::unix::fs::lchown(d_join(dir, "app/hello.txt"), Some(1000), Some(1001)).unwrap();
        std::os::unix::fs::lchown(d_join(dir, "app/link"), Some(1002), Some(1003)).unwrap();
    }
}

fn d_join(d: &Path, p: &str) -> PathBuf {
    d.join(p)
}

fn opts() -> DiffOptions {
    DiffOptions { exclude: vec!["etc/hosts".into(), "proc".into()], ..Default::default() }
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b).read_to_end(&mut out).unwrap();
    out
}

struct TarEntry {
    name: String,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    link: Option<String>,
    xattrs: Vec<(String, String)>,
    size: u64,
    uname: Vec<u8>,
}

fn read_tar(tar: &[u8]) -> Vec<TarEntry> {
    let mut a = tar::Archive::new(tar);
    let mut v = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let mut xattrs = Vec::new();
        if let Some(p) = e.pax_extensions().unwrap() {
            for r in p {
                let r = r.unwrap();
                let k = r.key().unwrap();
                if let Some(n) = k.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((n.to_string(), r.value().unwrap().to_string()));
                }
            }
        }
        let h = e.header();
        v.push(TarEntry {
            name: String::from_utf8(e.path_bytes().into_owned()).unwrap(),
            kind: h.entry_type(),
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            link: e.link_name_bytes().map(|l| String::from_utf8(l.into_owned()).unwrap()),
            xattrs,
            size: h.size().unwrap(),
            uname: h.username_bytes().unwrap_or_default().to_vec(),
        });
    }
    v
}

#[test]
fn layer_contents_are_canonical() {
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    std::fs::create_dir(&upper).unwrap();
    make_upper(&upper, false);
    set_xattr(&upper.join("etc/keep"), "user.overlay.origin", b"junk");

    let mut out = Vec::new();
    let digests = write_layer(&upper, &opts(), &mut out).unwrap();
    let tar = gunzip(&out);
    let entries = read_tar(&tar);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let long_dir = format!("{LONG}/");
    let long_dir2 = format!("{LONG}/{LONG}/");
    let long_file = format!("{LONG}/{LONG}/file-with-a-long-name");
    assert_eq!(
        names,
        [
            &long_dir[..],
            &long_dir2,
            &long_file,
            "app/",
            "app/.wh.deleted",
            "app/fifo",
            "app/hard",
            "app/hello.txt",
            "app/link",
            "app/sub/",
            "app/suid",
            "etc/",
            "etc/keep",
            "longlink",
            "opq/",
            "opq/.wh..wh..opq",
            "opq/new",
        ]
    );
    let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
    use tar::EntryType as T;

    let wh = get("app/.wh.deleted");
    assert_eq!((wh.kind, wh.mode, wh.uid, wh.gid, wh.size), (T::Regular, 0, 0, 0, 0));
    let opq = get("opq/.wh..wh..opq");
    assert_eq!((opq.kind, opq.mode, opq.size), (T::Regular, 0, 0));
    assert!(get("opq/").xattrs.is_empty(), "overlay xattrs must not leak");
    assert!(get("etc/keep").xattrs.is_empty(), "overlay xattrs must not leak");

    // Whichever name of the hardlinked pair comes first carries the data.
    let hard = get("app/hard");
    assert_eq!((hard.kind, hard.size), (T::Regular, 6));
    let hello = get("app/hello.txt");
    assert_eq!(hello.kind, T::Link);
    assert_eq!(hello.link.as_deref(), Some("app/hard"));

    assert_eq!(get("app/suid").mode, 0o4755);
    assert_eq!(get("app/sub/").mode, 0o1777);
    assert_eq!(get("app/sub/").kind, T::Directory);
    assert_eq!(get("app/fifo").kind, T::Fifo);
    let link = get("app/link");
    assert_eq!((link.kind, link.link.as_deref()), (T::Symlink, Some("hello.txt")));
    assert_eq!(get("longlink").link.as_deref(), Some(&format!("/{LONG}/{LONG}/{LONG}")[..]));
    assert_eq!(
        hard.xattrs,
        [("user.a".to_string(), "first".to_string()), ("user.comment".to_string(), "hi".to_string())],
        "xattrs sorted"
    );
    if can_chown_any() {
        assert_eq!((hard.uid, hard.gid), (1000, 1001));
        assert_eq!((link.uid, link.gid), (1002, 1003));
    }
    assert!(entries.iter().all(|e| e.uname.is_empty()), "no uname/gname");

    assert_eq!(digests.digest, sha256(&out));
    assert_eq!(digests.size, out.len() as u64);
    assert_eq!(digests.diff_id, sha256(&tar));
}

#[test]
fn round_trip_through_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    std::fs::create_dir(&upper).unwrap();
    make_upper(&upper, false);

    let mut out = Vec::new();
    let digests = write_layer(&upper, &opts(), &mut out).unwrap();

    let back = tmp.path().join("back");
    std::fs::create_dir(&back).unwrap();
    let applied = apply_layer(&out[..], LayerCompression::Gzip, &back).unwrap();
    assert_eq!(applied.diff_id, digests.diff_id);
    assert!(applied.skipped.is_empty(), "{:?}", applied.skipped);

    let mut want: BTreeMap<String, String> = snapshot(&upper);
    want.retain(|k, _| k != "etc/hosts" && k != "proc" && !k.starts_with("proc/"));
    let got = snapshot(&back);
    for (k, v) in &want {
        assert_eq!(got.get(k), Some(v), "{k}");
    }
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());

    // And writing the applied tree again gives the very same layer.
    let mut again = Vec::new();
    let d2 = write_layer(&back, &DiffOptions::default(), &mut again).unwrap();
    assert_eq!(d2, digests);
}

#[test]
fn deterministic_with_source_date_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    make_upper(&a, false);
    std::thread::sleep(std::time::Duration::from_millis(1100)); // different mtimes
    std::fs::create_dir(&b).unwrap();
    make_upper(&b, true); // different creation order, inode numbers, dirent order
    let o = DiffOptions { source_date_epoch: Some(1_700_000_000), ..opts() };
    let (mut oa, mut ob) = (Vec::new(), Vec::new());
    let da = write_layer(&a, &o, &mut oa).unwrap();
    let db = write_layer(&b, &o, &mut ob).unwrap();
    assert_eq!(da, db);
    assert_eq!(oa, ob);
    // mtimes clamped
    let plain = gunzip(&oa);
    let mut ar = tar::Archive::new(&plain[..]);
    for e in ar.entries().unwrap() {
        assert!(e.unwrap().header().mtime().unwrap() <= 1_700_000_000);
    }
    // Same tree again: same bytes (no timestamps or randomness in gzip).
    let mut oc = Vec::new();
    assert_eq!(write_layer(&a, &o, &mut oc).unwrap(), da);
    assert_eq!(oa, oc);
    // A different level is a different blob but the same diffID.
    let mut od = Vec::new();
    let dd = write_layer(&a, &DiffOptions { gzip_level: Some(1), ..o.clone() }, &mut od).unwrap();
    assert_eq!(dd.diff_id, da.diff_id);
}

#[test]
fn digests_match_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("big"), vec![42u8; 300_000]).unwrap();
    let mut out = Vec::new();
    let d = write_layer(tmp.path(), &DiffOptions::default(), &mut out).unwrap();
    assert_eq!(d.digest, sha256(&out));
    assert_eq!(d.size, out.len() as u64);
    let tar = gunzip(&out);
    assert_eq!(d.diff_id, sha256(&tar));
    assert_eq!(tar.len() % 512, 0);
    // gzip header: no name flag, mtime 0.
    assert_eq!(out[3] & 0x08, 0);
    assert_eq!(&out[4..8], &[0, 0, 0, 0]);
}

/// A layer kept uncompressed (it never left the machine) and compressed later is the
/// blob compressing it at once gives, for every compression and level.
#[test]
fn compressing_a_kept_tar_later_gives_the_same_blob() {
    use kiln_snapshotter::diff::compress_tar;
    use kiln_snapshotter::Compression;
    let tmp = tempfile::tempdir().unwrap();
    make_upper(tmp.path(), false);
    // More than one parallel-gzip block, and data that does not compress away.
    let mut x = 1u64;
    let noise: Vec<u8> = (0..3_000_000).map(|_| { x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (x >> 56) as u8 }).collect();
    std::fs::write(tmp.path().join("noise"), &noise).unwrap();
    let mut tar = Vec::new();
    let kept = write_layer(tmp.path(), &DiffOptions { compression: Compression::None, ..Default::default() }, &mut tar).unwrap();
    assert_eq!(kept.digest, kept.diff_id);
    for (compression, level) in [(Compression::Gzip, None), (Compression::Gzip, Some(1)), (Compression::Zstd, None), (Compression::Zstd, Some(9))] {
        let o = DiffOptions { compression, gzip_level: level.map(|l: i32| l as u32), zstd_level: level, ..Default::default() };
        let (mut at_once, mut later) = (Vec::new(), Vec::new());
        let direct = write_layer(tmp.path(), &o, &mut at_once).unwrap();
        let lazy = compress_tar(&tar[..], &o, &mut later).unwrap();
        assert_eq!((lazy.diff_id.clone(), lazy.media_type), (kept.diff_id.clone(), direct.media_type));
        assert_eq!((lazy.digest.clone(), lazy.size), (direct.digest.clone(), direct.size), "{compression:?} {level:?}");
        assert!(at_once == later, "{compression:?} {level:?}: not the same bytes");
    }
}

#[test]
fn excluded_paths_absent() {
    let tmp = tempfile::tempdir().unwrap();
    let u = tmp.path();
    for d in ["proc/1", "run", "etc", "dev"] {
        std::fs::create_dir_all(u.join(d)).unwrap();
    }
    for f in ["etc/hosts", "etc/resolv.conf", "etc/hostsfile", "dev/null", "proc/1/status", "run/x"] {
        std::fs::write(u.join(f), b"").unwrap();
    }
    mknod(&u.join("etc/hostname"), libc::S_IFCHR, 0); // a whiteout of an excluded path
    let o = DiffOptions {
        exclude: vec!["etc/hosts".into(), "etc/resolv.conf".into(), "/proc".into(), "run/".into(), "dev/null".into(), "etc/hostname".into()],
        ..Default::default()
    };
    let mut out = Vec::new();
    write_layer(u, &o, &mut out).unwrap();
    let names: Vec<String> = read_tar(&gunzip(&out)).into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["dev/", "etc/", "etc/hostsfile"]);
}

#[test]
fn empty_upper_is_an_empty_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let d = write_layer(tmp.path(), &DiffOptions::default(), &mut out).unwrap();
    assert_eq!(gunzip(&out), vec![0u8; 1024]);
    assert_eq!(d.diff_id, sha256(&[0u8; 1024]));
}

#[test]
fn missing_upper_names_the_path() {
    let err = write_layer(Path::new("/nonexistent/upper"), &DiffOptions::default(), Vec::new()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/upper"), "{err}");
}
