//! What apply_layer must reproduce: overlay-format whiteouts and opaque dirs, links,
//! modes, ownership, xattrs, times, and the diffID.

mod common;
use common::*;

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use kiln_oci::media::LayerCompression;
use kiln_snapshotter::{apply_layer, xattr};

fn apply_ok(tar: &[u8]) -> (Sandbox, kiln_snapshotter::Applied) {
    let sb = Sandbox::new();
    let a = apply_layer(tar, LayerCompression::None, &sb.root()).unwrap();
    sb.assert_contained();
    (sb, a)
}

fn is_whiteout(p: &std::path::Path) -> bool {
    let m = std::fs::symlink_metadata(p).unwrap();
    m.file_type().is_char_device() && m.rdev() == 0
}

#[test]
fn whiteout_becomes_char_device() {
    let tar = RawTar::new()
        .add(E::dir("etc/"))
        .add(E::file("etc/.wh.passwd", b""))
        .add(E::file("gone", b"was here"))
        .add(E::file(".wh.gone", b""))
        .add(E::file("sub/.wh.x", b"")) // parent created on demand
        .finish();
    let (sb, a) = apply_ok(&tar);
    assert_eq!(a.entries, 5);
    assert!(is_whiteout(&sb.root().join("etc/passwd")));
    assert!(is_whiteout(&sb.root().join("gone")), "an earlier entry of the layer is replaced");
    assert!(is_whiteout(&sb.root().join("sub/x")));
    assert!(!sb.root().join("etc/.wh.passwd").exists());
}

#[test]
fn opaque_dir_gets_xattr_and_keeps_layer_entries() {
    let tar = RawTar::new()
        .add(E::dir("d/"))
        .add(E::file("d/before", b"1"))
        .add(E::file("d/.wh..wh..opq", b""))
        .add(E::file("d/after", b"2"))
        .add(E::file("e/.wh..wh..opq", b""))
        .finish();
    let (sb, _) = apply_ok(&tar);
    for d in ["d", "e"] {
        assert_eq!(xattr::lget(&sb.root().join(d), "user.overlay.opaque").unwrap().as_deref(), Some(&b"y"[..]));
    }
    assert!(sb.root().join("d/before").exists());
    assert!(sb.root().join("d/after").exists());
    assert!(!sb.root().join("d/.wh..wh..opq").exists());
}

#[test]
fn hardlink_shares_inode() {
    let tar = RawTar::new()
        .add(E::dir("bin/"))
        .add(E { mode: 0o755, ..E::file("bin/a", b"binary") })
        .add(E::hardlink("bin/b", "bin/a"))
        .add(E::hardlink("c", "/bin/a")) // absolute target: relative to the root
        .finish();
    let (sb, _) = apply_ok(&tar);
    let a = std::fs::metadata(sb.root().join("bin/a")).unwrap();
    let b = std::fs::metadata(sb.root().join("bin/b")).unwrap();
    let c = std::fs::metadata(sb.root().join("c")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.ino(), c.ino());
    assert_eq!(a.nlink(), 3);
}

#[test]
fn hardlink_to_missing_target_is_error() {
    let tar = RawTar::new().add(E::hardlink("b", "lower/file")).finish();
    let sb = Sandbox::new();
    let err = apply_layer(&tar[..], LayerCompression::None, &sb.root()).unwrap_err();
    assert!(matches!(err, kiln_snapshotter::ApplyError::HardlinkTarget { .. }));
    assert!(err.to_string().contains("layer entry \"b\""), "{err}");
}

#[test]
fn symlink_kept_verbatim() {
    let tar = RawTar::new().add(E::symlink("abs", "/etc/passwd")).add(E::symlink("rel", "../x/y")).finish();
    let (sb, _) = apply_ok(&tar);
    assert_eq!(std::fs::read_link(sb.root().join("abs")).unwrap().to_str(), Some("/etc/passwd"));
    assert_eq!(std::fs::read_link(sb.root().join("rel")).unwrap().to_str(), Some("../x/y"));
}

#[test]
fn special_mode_bits_and_ownership() {
    let tar = RawTar::new()
        .add(E { mode: 0o4755, uid: 0, gid: 0, ..E::file("suid", b"x") })
        .add(E { mode: 0o2755, uid: 1000, gid: 50, ..E::file("sgid-owned", b"x") })
        .add(E { mode: 0o1777, ..E::dir("tmp/") })
        .add(E { uid: 1000, gid: 1000, ..E::symlink("lnk", "suid") })
        .finish();
    let (sb, a) = apply_ok(&tar);
    let mode = |p: &str| std::fs::symlink_metadata(sb.root().join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("suid"), 0o4755);
    assert_eq!(mode("tmp"), 0o1777);
    if can_chown_any() {
        // chown must come before chmod, or it would clear setgid.
        assert_eq!(mode("sgid-owned"), 0o2755);
        let m = std::fs::symlink_metadata(sb.root().join("sgid-owned")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 50));
        let l = std::fs::symlink_metadata(sb.root().join("lnk")).unwrap();
        assert_eq!((l.uid(), l.gid()), (1000, 1000));
        assert!(a.skipped.is_empty(), "{:?}", a.skipped);
    } else {
        assert!(a.skipped.iter().any(|s| s.contains("not mapped")), "{:?}", a.skipped);
    }
}

#[test]
fn pax_ownership_and_mtime() {
    let tar = RawTar::new()
        .pax(&[("uid", b"3000000"), ("gid", b"3000001"), ("mtime", b"1234567890.25")])
        .add(E::file("f", b"x"))
        .finish();
    let (sb, _) = apply_ok(&tar);
    let m = std::fs::symlink_metadata(sb.root().join("f")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1234567890, 250_000_000));
    if can_chown_any() {
        assert_eq!((m.uid(), m.gid()), (3000000, 3000001));
    }
}

#[test]
fn xattrs_applied() {
    // security.capability v2: cap_net_raw permitted+effective.
    let mut cap = vec![0u8; 20];
    cap[0..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());
    let tar = RawTar::new()
        .pax(&[("SCHILY.xattr.user.comment", b"hello"), ("SCHILY.xattr.security.capability", &cap)])
        .add(E { mode: 0o755, ..E::file("ping", b"elf") })
        .pax(&[("SCHILY.xattr.user.dir", b"d"), ("SCHILY.xattr.trusted.foo", b"t")])
        .add(E::dir("d/"))
        .finish();
    let (sb, _) = apply_ok(&tar);
    let p = sb.root().join("ping");
    assert_eq!(xattr::lget(&p, "user.comment").unwrap().as_deref(), Some(&b"hello"[..]));
    assert_eq!(xattr::lget(&p, "security.capability").unwrap().as_deref(), Some(&cap[..]));
    assert_eq!(xattr::lget(&sb.root().join("d"), "user.dir").unwrap().as_deref(), Some(&b"d"[..]));
}

#[test]
fn dir_mtime_set_after_children() {
    let tar = RawTar::new()
        .add(E { mtime: 1_000_000_000, ..E::dir("a/") })
        .add(E { mtime: 1_100_000_000, ..E::dir("a/b/") })
        .add(E { mtime: 1_200_000_000, ..E::file("a/b/f", b"x") })
        .add(E { mtime: 1_300_000_000, ..E::file("a/g", b"x") })
        .add(E { mtime: 1_400_000_000, ..E::dir("./") })
        .finish();
    let (sb, _) = apply_ok(&tar);
    let mt = |p: &str| std::fs::symlink_metadata(sb.root().join(p)).unwrap().mtime();
    assert_eq!(mt("a"), 1_000_000_000);
    assert_eq!(mt("a/b"), 1_100_000_000);
    assert_eq!(mt("a/b/f"), 1_200_000_000);
    assert_eq!(mt("a/g"), 1_300_000_000);
    assert_eq!(mt(""), 1_400_000_000);
}

#[test]
fn existing_dir_stays_dir_with_new_metadata() {
    let tar = RawTar::new()
        .add(E::dir("d/"))
        .add(E::file("d/keep", b"x"))
        .add(E { mode: 0o700, ..E::dir("d/") })
        .finish();
    let (sb, _) = apply_ok(&tar);
    assert!(sb.root().join("d/keep").exists());
    assert_eq!(std::fs::metadata(sb.root().join("d")).unwrap().mode() & 0o7777, 0o700);
}

#[test]
fn file_replaces_dir_and_missing_parents_created() {
    let tar = RawTar::new()
        .add(E::dir("x/"))
        .add(E::file("x/y", b"1"))
        .add(E::file("x", b"now a file"))
        .add(E::file("p/q/r", b"deep"))
        .finish();
    let (sb, _) = apply_ok(&tar);
    assert_eq!(std::fs::read(sb.root().join("x")).unwrap(), b"now a file");
    assert_eq!(std::fs::read(sb.root().join("p/q/r")).unwrap(), b"deep");
    assert_eq!(std::fs::metadata(sb.root().join("p/q")).unwrap().mode() & 0o7777, 0o755);
}

#[test]
fn devices_and_fifos() {
    let tar = RawTar::new()
        .add(E { dev: (1, 3), mode: 0o666, ..E::new("null", CHR) })
        .add(E { dev: (7, 0), mode: 0o660, ..E::new("loop0", BLK) })
        .add(E { mode: 0o620, ..E::new("fifo", FIFO) })
        .finish();
    let (sb, a) = apply_ok(&tar);
    let f = std::fs::symlink_metadata(sb.root().join("fifo")).unwrap();
    assert!(f.file_type().is_fifo());
    assert_eq!(f.mode() & 0o7777, 0o620);
    match std::fs::symlink_metadata(sb.root().join("null")) {
        Ok(m) => {
            assert!(m.file_type().is_char_device());
            assert_eq!(m.rdev(), libc::makedev(1, 3));
            assert_eq!(m.mode() & 0o7777, 0o666);
        }
        // Rootless: recorded, not fatal.
        Err(_) => assert!(a.skipped.iter().any(|s| s.starts_with("null:")), "{:?}", a.skipped),
    }
}

#[test]
fn diff_id_is_sha256_of_uncompressed_tar() {
    let mut raw = RawTar::new().add(E::dir("a/")).add(E::file("a/f", &[1u8; 3000])).finish();
    // Pad to a 10 KiB record like GNU tar: the padding is part of the diffID.
    raw.resize(10240, 0);
    let want = sha256(&raw);

    let sb = Sandbox::new();
    let a = apply_layer(&raw[..], LayerCompression::None, &sb.root()).unwrap();
    assert_eq!(a.diff_id, want);
    assert_eq!(a.entries, 2);

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    let gz = gz.finish().unwrap();
    let sb = Sandbox::new();
    let a = apply_layer(&gz[..], LayerCompression::Gzip, &sb.root()).unwrap();
    assert_eq!(a.diff_id, want);
    assert_eq!(std::fs::read(sb.root().join("a/f")).unwrap(), vec![1u8; 3000]);

    let zst = zstd::stream::encode_all(&raw[..], 3).unwrap();
    let sb = Sandbox::new();
    let a = apply_layer(&zst[..], LayerCompression::Zstd, &sb.root()).unwrap();
    assert_eq!(a.diff_id, want);
}

#[test]
fn corrupt_gzip_is_read_error() {
    let sb = Sandbox::new();
    let err = apply_layer(&b"not gzip at all"[..], LayerCompression::Gzip, &sb.root()).unwrap_err();
    assert!(matches!(err, kiln_snapshotter::ApplyError::Read(_)), "{err}");
}
