//! Layers unpacked side by side (`SnapshotStore::unpack_alone`, issue 18 part 1):
//! a stack unpacked that way, then completed in order, holds exactly the directories
//! unpacking in order makes; the layers that lean on their lowers are left to the
//! ordered pass; a lying diffID keeps nothing.

mod common;
use common::*;

use std::path::PathBuf;

use kiln_oci::media::LayerCompression;
use kiln_oci::Digest;
use kiln_snapshotter::{SnapshotStore, SnapshotterKind};

fn stack() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "base",
            RawTar::new()
                .add(E { mode: 0o750, uid: 0, gid: 0, ..E::dir("usr/") })
                .add(E { mode: 0o755, uid: 0, gid: 7, ..E::dir("usr/lib/") })
                .add(E::file("usr/lib/libc.so", b"libc"))
                .add(E::symlink("lib", "usr/lib"))
                .add(E::dir("etc/"))
                .add(E::file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"))
                .finish(),
        ),
        (
            "self-contained, its parents in it",
            RawTar::new()
                .add(E { mode: 0o700, ..E::dir("usr/") })
                .add(E::dir("usr/share/"))
                .add(E::file("usr/share/doc", b"doc"))
                .add(E::file("usr/share/doc2", b"doc2"))
                .add(E::hardlink("usr/share/doc-link", "usr/share/doc"))
                .finish(),
        ),
        ("through a lower symlink", RawTar::new().add(E::file("lib/x", b"x")).finish()),
        ("a hard link to a lower file", RawTar::new().add(E::dir("etc/")).add(E::hardlink("etc/passwd-", "etc/passwd")).finish()),
        ("a parent from below", RawTar::new().add(E::file("usr/lib/y", b"y")).finish()),
        ("whiteouts only", RawTar::new().add(E::dir("usr/")).add(E::dir("usr/share/")).add(E::file("usr/share/.wh.doc2", b"")).finish()),
    ]
}

fn in_order(s: &SnapshotStore, layers: &[(&str, Vec<u8>)]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (_, tar) in layers {
        let d = s.unpack_onto(&Digest::of(tar), &dirs, &tar[..], LayerCompression::None).unwrap();
        dirs.push(d);
    }
    dirs
}

#[test]
fn side_by_side_then_in_order_is_in_order() {
    let layers = stack();
    let a = tempfile::tempdir().unwrap();
    let sa = SnapshotStore::open_with(&a.path().join("snaps"), SnapshotterKind::Overlay).unwrap();
    let alone: Vec<bool> = std::thread::scope(|sc| {
        let handles: Vec<_> = layers
            .iter()
            .map(|(_, tar)| sc.spawn(|| sa.unpack_alone(&Digest::of(tar), &tar[..], LayerCompression::None).unwrap().is_some()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let names: Vec<&str> = layers.iter().map(|(n, _)| *n).collect();
    assert_eq!(alone, [true, true, false, false, false, true], "{names:?}");
    let side = in_order(&sa, &layers);

    let b = tempfile::tempdir().unwrap();
    let sb = SnapshotStore::open_with(&b.path().join("snaps"), SnapshotterKind::Overlay).unwrap();
    let ordered = in_order(&sb, &layers);
    for ((n, x), y) in names.iter().zip(&side).zip(&ordered) {
        // Per-stack names hash the lower paths, which differ between the two stores.
        let kind = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().split('-').count();
        assert_eq!(kind(x), kind(y), "{n}: shared in one store, per stack in the other");
        assert_eq!(snapshot(x), snapshot(y), "{n}: another tree");
    }
    // Nothing of the layers thrown away is left behind.
    assert_eq!(std::fs::read_dir(a.path().join("snaps/active")).unwrap().count(), 0);
}

#[test]
fn a_lying_diff_id_keeps_nothing() {
    let t = tempfile::tempdir().unwrap();
    let s = SnapshotStore::open_with(&t.path().join("snaps"), SnapshotterKind::Overlay).unwrap();
    let tar = RawTar::new().add(E::dir("app/")).add(E::file("app/x", b"x")).finish();
    let err = s.unpack_alone(&Digest::of(b"another layer"), &tar[..], LayerCompression::None).unwrap_err();
    assert!(err.to_string().contains(&Digest::of(b"another layer").to_string()), "{err}");
    assert!(s.layer(&Digest::of(&tar)).is_none() && s.layer(&Digest::of(b"another layer")).is_none());
    assert_eq!(std::fs::read_dir(t.path().join("snaps/active")).unwrap().count(), 0);
}

/// Skeletons (`kiln_snapshotter::skeleton`) made side by side, then in order, are the
/// skeletons made in order: the same trees and the same lists of nodes left out.
#[test]
fn skeletons_side_by_side_then_in_order_are_in_order() {
    let layers = stack();
    let make = |side: bool| {
        let t = tempfile::tempdir().unwrap();
        let s = SnapshotStore::open_with(&t.path().join("snaps"), SnapshotterKind::Overlay).unwrap();
        let mut paths: Vec<PathBuf> = Vec::new();
        for (_, tar) in &layers {
            paths.push(s.skeleton_path(&Digest::of(tar), &paths));
        }
        let alone: Vec<bool> = if side {
            std::thread::scope(|sc| {
                let handles: Vec<_> = layers
                    .iter()
                    .enumerate()
                    .map(|(i, (_, tar))| {
                        let (s, below) = (&s, &paths[..i]);
                        sc.spawn(move || s.skeleton_alone(&Digest::of(tar), below, &tar[..], LayerCompression::None, None).unwrap().is_some())
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            })
        } else {
            Vec::new()
        };
        let mut made: Vec<PathBuf> = Vec::new();
        for (_, tar) in &layers {
            let (dir, _) = s.skeleton_onto(&Digest::of(tar), &made, &tar[..], LayerCompression::None, None).unwrap();
            made.push(dir);
        }
        assert_eq!(made, paths, "skeletons kept where they were named");
        let trees: Vec<_> = made
            .iter()
            .map(|d| {
                let mut list = d.as_os_str().to_owned();
                list.push(".list");
                (snapshot(d), std::fs::read(PathBuf::from(list)).unwrap())
            })
            .collect();
        assert_eq!(std::fs::read_dir(t.path().join("snaps/active")).unwrap().count(), 0);
        (alone, trees)
    };
    let (alone, side) = make(true);
    // A skeleton only lists a hard link (by where it lands), so the link to a lower
    // file needs nothing below; parents from below still do.
    assert_eq!(alone, [true, true, false, true, false, true]);
    let (_, ordered) = make(false);
    for (((n, _), a), b) in layers.iter().zip(&side).zip(&ordered) {
        assert_eq!(a, b, "{n}: another skeleton");
    }
}
