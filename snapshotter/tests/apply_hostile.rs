//! Hostile layers: each must leave everything outside the target untouched, and
//! the ones that try to climb out must be rejected with an error naming the entry.

mod common;
use common::*;

use kiln_oci::media::LayerCompression;
use kiln_snapshotter::{apply_layer, ApplyError};

fn apply(sb: &Sandbox, tar: &[u8]) -> Result<kiln_snapshotter::Applied, ApplyError> {
    apply_layer(tar, LayerCompression::None, &sb.root())
}

/// Apply, expect an error whose message names `entry`, and check containment.
fn expect_rejected(tar: Vec<u8>, entry: &str) {
    let sb = Sandbox::new();
    let err = apply(&sb, &tar).expect_err("hostile layer was accepted");
    let msg = err.to_string();
    assert!(msg.contains(&format!("{entry:?}")), "error {msg:?} does not name {entry:?}");
    sb.assert_contained();
}

/// Apply (error or not: either is fine) and check containment.
fn expect_contained(tar: Vec<u8>) -> (Sandbox, Result<kiln_snapshotter::Applied, ApplyError>) {
    let sb = Sandbox::new();
    let r = apply(&sb, &tar);
    sb.assert_contained();
    (sb, r)
}

#[test]
fn dotdot_file_rejected() {
    let tar = RawTar::new().add(E::file("../outside/pwned", b"x")).finish();
    expect_rejected(tar, "../outside/pwned");
}

#[test]
fn nested_dotdot_file_rejected() {
    let tar = RawTar::new().add(E::dir("a/")).add(E::file("a/../../outside/pwned", b"x")).finish();
    expect_rejected(tar, "a/../../outside/pwned");
}

#[test]
fn absolute_dotdot_rejected() {
    let tar = RawTar::new().add(E::file("/../outside/pwned", b"x")).finish();
    expect_rejected(tar, "/../outside/pwned");
}

#[test]
fn dotdot_dir_rejected() {
    let tar = RawTar::new().add(E::dir("../outside/newdir/")).finish();
    expect_rejected(tar, "../outside/newdir/");
}

#[test]
fn dotdot_device_and_fifo_rejected() {
    let tar = RawTar::new().add(E { dev: (1, 3), ..E::new("../outside/null", CHR) }).finish();
    expect_rejected(tar, "../outside/null");
    let tar = RawTar::new().add(E::new("../outside/fifo", FIFO)).finish();
    expect_rejected(tar, "../outside/fifo");
}

#[test]
fn absolute_name_is_relative_to_target() {
    let (sb, r) = expect_contained(RawTar::new().add(E::file("/outside/pwned", b"x")).finish());
    r.unwrap();
    assert_eq!(std::fs::read(sb.root().join("outside/pwned")).unwrap(), b"x");
}

#[test]
fn pax_path_dotdot_rejected() {
    // The header name is harmless; the PAX record replaces it.
    let tar = RawTar::new().pax(&[("path", b"../outside/pwned")]).add(E::file("harmless", b"x")).finish();
    expect_rejected(tar, "../outside/pwned");
}

#[test]
fn relative_symlink_parent_stays_inside() {
    let tar = RawTar::new().add(E::symlink("link", "../outside")).add(E::file("link/pwned", b"x")).finish();
    let (sb, _r) = expect_contained(tar);
    // Resolved in-root: `../outside` from the root is `/outside` of the root.
    assert!(!sb.outside().join("pwned").exists());
}

#[test]
fn absolute_symlink_parent_stays_inside() {
    let tar = RawTar::new().add(E::symlink("link", "/")).add(E::file("link/outside/pwned", b"x")).finish();
    let (sb, r) = expect_contained(tar);
    r.unwrap();
    assert_eq!(std::fs::read(sb.root().join("outside/pwned")).unwrap(), b"x");
}

#[test]
fn symlink_to_host_path_stays_inside() {
    let sb = Sandbox::new();
    let host = sb.outside();
    let target = host.to_str().unwrap().to_string();
    let tar = RawTar::new().add(E::symlink("link", &target)).add(E::file("link/pwned", b"x")).finish();
    let _ = apply(&sb, &tar);
    sb.assert_contained();
    // Precreate the in-root path the symlink means, and it lands there.
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .add(E::dir(&target[1..]))
        .add(E::symlink("link", &target))
        .add(E::file("link/pwned", b"x"))
        .finish();
    apply(&sb, &tar).unwrap();
    sb.assert_contained();
    assert_eq!(std::fs::read(sb.root().join(&target[1..]).join("pwned")).unwrap(), b"x");
}

#[test]
fn chained_symlinks_stay_inside() {
    let tar = RawTar::new()
        .add(E::symlink("a", "b"))
        .add(E::symlink("b", "c/../../../outside"))
        .add(E::dir("c/"))
        .add(E::file("a/pwned", b"x"))
        .finish();
    let _ = expect_contained(tar);
}

#[test]
fn hardlink_dotdot_rejected() {
    let tar = RawTar::new().add(E::hardlink("evil", "../outside/victim")).finish();
    expect_rejected(tar, "evil");
}

#[test]
fn hardlink_absolute_host_path_rejected() {
    let sb = Sandbox::new();
    let victim = sb.outside().join("victim");
    let tar = RawTar::new().add(E::hardlink("evil", victim.to_str().unwrap())).finish();
    let err = apply(&sb, &tar).unwrap_err();
    assert!(matches!(err, ApplyError::HardlinkTarget { .. }), "{err}");
    assert!(err.to_string().contains("\"evil\""));
    sb.assert_contained();
}

#[test]
fn hardlink_through_symlink_parent_rejected() {
    let tar = RawTar::new().add(E::symlink("link", "../outside")).add(E::hardlink("evil", "link/victim")).finish();
    let (_sb, r) = expect_contained(tar);
    assert!(matches!(r.unwrap_err(), ApplyError::HardlinkTarget { .. }));
}

#[test]
fn hardlink_to_symlink_links_the_symlink() {
    let tar = RawTar::new().add(E::symlink("s", "../outside/victim")).add(E::hardlink("h", "s")).finish();
    let (sb, r) = expect_contained(tar);
    r.unwrap();
    assert!(std::fs::symlink_metadata(sb.root().join("h")).unwrap().file_type().is_symlink());
}

#[test]
fn file_over_symlink_replaces_symlink() {
    let tar = RawTar::new().add(E::symlink("evil", "../outside/victim")).add(E::file("evil", b"new")).finish();
    let (sb, r) = expect_contained(tar);
    r.unwrap();
    let m = std::fs::symlink_metadata(sb.root().join("evil")).unwrap();
    assert!(m.is_file());
    assert_eq!(std::fs::read(sb.root().join("evil")).unwrap(), b"new");
}

#[test]
fn dir_over_symlink_replaces_symlink() {
    let tar = RawTar::new()
        .add(E::symlink("evil", "../outside"))
        .add(E { mode: 0o777, ..E::dir("evil/") })
        .add(E::file("evil/pwned", b"x"))
        .finish();
    let (sb, r) = expect_contained(tar);
    r.unwrap();
    assert!(std::fs::symlink_metadata(sb.root().join("evil")).unwrap().is_dir());
}

#[test]
fn whiteout_through_symlink_parent_stays_inside() {
    let tar = RawTar::new().add(E::symlink("link", "../outside")).add(E::file("link/.wh.victim", b"")).finish();
    let _ = expect_contained(tar);
    let tar = RawTar::new().add(E::file("../outside/.wh.victim", b"")).finish();
    expect_rejected(tar, "../outside/.wh.victim");
}

#[test]
fn opaque_through_symlink_parent_stays_inside() {
    let tar = RawTar::new().add(E::symlink("link", "../outside")).add(E::file("link/.wh..wh..opq", b"")).finish();
    let _ = expect_contained(tar);
    let tar = RawTar::new().add(E::file("../outside/.wh..wh..opq", b"")).finish();
    expect_rejected(tar, "../outside/.wh..wh..opq");
}

#[test]
fn dir_replaced_by_symlink_invalidates_parent() {
    // `d` is a real dir, then becomes a symlink out; later entries under `d` must
    // follow the new symlink in-root, not a stale handle, and never escape.
    let tar = RawTar::new()
        .add(E::dir("d/"))
        .add(E::file("d/f", b"1"))
        .add(E::symlink("d", "../../outside"))
        .add(E::file("d/pwned", b"x"))
        .finish();
    let (sb, _r) = expect_contained(tar);
    assert!(std::fs::symlink_metadata(sb.root().join("d")).unwrap().file_type().is_symlink());
}

#[test]
fn symlink_to_proc_magic_link_stays_inside() {
    let tar = RawTar::new().add(E::symlink("p", "/proc/self/cwd")).add(E::file("p/pwned", b"x")).finish();
    let _ = expect_contained(tar);
}

#[test]
fn overlay_xattrs_from_layer_not_applied() {
    let tar = RawTar::new()
        .pax(&[("SCHILY.xattr.user.overlay.redirect", b"/etc"), ("SCHILY.xattr.user.overlay.opaque", b"y")])
        .add(E::dir("d/"))
        .finish();
    let (sb, r) = expect_contained(tar);
    let applied = r.unwrap();
    assert!(list_xattrs(&sb.root().join("d")).is_empty());
    assert_eq!(applied.skipped.len(), 2, "{:?}", applied.skipped);
}

#[test]
fn truncated_layer_is_an_error() {
    let mut tar = RawTar::new().add(E::file("f", &[7u8; 2000])).finish();
    tar.truncate(1024);
    let sb = Sandbox::new();
    assert!(matches!(apply(&sb, &tar).unwrap_err(), ApplyError::Read(_)));
    sb.assert_contained();
}

#[test]
fn replacing_dir_with_outward_symlinks_does_not_follow_them() {
    let sb = Sandbox::new();
    let host = sb.outside();
    let tar = RawTar::new()
        .add(E::dir("d/"))
        .add(E::symlink("d/rel", "../../outside"))
        .add(E::symlink("d/abs", host.to_str().unwrap()))
        .add(E::symlink("d/victim", "../../outside/victim"))
        .add(E::file("d/sub/f", b"x"))
        .add(E::file("d", b"now a file")) // removes the whole tree d/
        .add(E::dir("w/"))
        .add(E::symlink("w/abs", host.to_str().unwrap()))
        .add(E::file(".wh.w", b"")) // a whiteout removes w/ too
        .finish();
    apply(&sb, &tar).unwrap();
    sb.assert_contained();
    assert_eq!(std::fs::read(sb.root().join("d")).unwrap(), b"now a file");
}

#[test]
fn aufs_metadata_ignored() {
    let tar = RawTar::new().add(E::dir(".wh..wh.plnk/")).add(E::file(".wh..wh.plnk/123.456", b"x")).finish();
    let (sb, r) = expect_contained(tar);
    let a = r.unwrap();
    assert!(!a.skipped.is_empty());
    // Nothing named .wh..wh.* is ever created as a file of the image.
    assert!(std::fs::read_dir(sb.root()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with(".wh.")));
}
