//! Layers on top of lowers (symlinked parents, hardlinks into lowers), the native
//! snapshotter against the overlay one (same canonical layer), hardlinks across a
//! copy-up, compression, and deep stacks (new mount API, flattening).
//!
//! Overlay tests mount: run as root (or inside `unshare -Urm`), as the suite does.

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_oci::media::LayerCompression;
use kiln_oci::Digest;
use kiln_snapshotter::{apply_layer, write_layer, Compression, DiffOptions, SnapshotStore, SnapshotterKind};

fn store(kind: SnapshotterKind) -> (tempfile::TempDir, SnapshotStore) {
    let t = tempfile::tempdir().unwrap();
    let s = SnapshotStore::open_with(&t.path().join("snaps"), kind).unwrap();
    (t, s)
}

/// Unpack a plain tar on top of `lowers`; returns its directory.
fn unpack(s: &SnapshotStore, lowers: &[PathBuf], tar: &[u8]) -> PathBuf {
    s.unpack_onto(&Digest::of(tar), lowers, tar, LayerCompression::None).unwrap()
}

fn base_tar() -> Vec<u8> {
    RawTar::new()
        .add(E { mode: 0o750, uid: 0, gid: 0, ..E::dir("usr/") })
        .add(E { mode: 0o755, uid: 0, gid: 7, ..E::dir("usr/lib/") })
        .add(E::file("usr/lib/libc.so", b"libc"))
        .add(E::symlink("lib", "usr/lib"))
        .add(E::symlink("abs", "/usr/lib"))
        .add(E::dir("etc/"))
        .add(E::file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"))
        .add(E::file("etc/shadow", b"secret"))
        .add(E::dir("data/"))
        .add(E::file("data/one", b"1"))
        .add(E::dir("data/sub/"))
        .add(E::file("data/sub/two", b"2"))
        .add(E::file("hl/a", b"linked"))
        .add(E::hardlink("hl/b", "hl/a"))
        .add(E { mode: 0o755, ..E::file("bin/tool", b"#!/bin/sh\n") })
        .finish()
}

#[test]
fn entry_below_a_lower_symlink_lands_where_it_points() {
    let (_t, s) = store(SnapshotterKind::Overlay);
    let base = unpack(&s, &[], &base_tar());
    let top_tar = RawTar::new().add(E::file("lib/x", b"x")).add(E::file("abs/y", b"y")).finish();
    let top = unpack(&s, std::slice::from_ref(&base), &top_tar);
    assert!(top.file_name().unwrap().to_str().unwrap().contains('-'), "kept per stack: {top:?}");
    assert_eq!(fs::read(top.join("usr/lib/x")).unwrap(), b"x");
    assert_eq!(fs::read(top.join("usr/lib/y")).unwrap(), b"y");
    assert!(!top.join("lib").exists(), "no real `lib` directory shadowing the symlink");
    // parents copied up with the lower metadata, not 0755 root
    let usr = fs::metadata(top.join("usr")).unwrap();
    assert_eq!(usr.mode() & 0o7777, 0o750);
    let lib = fs::metadata(top.join("usr/lib")).unwrap();
    assert_eq!((lib.mode() & 0o7777, lib.gid()), (0o755, 7));
    assert_eq!(lib.mtime(), 1_600_000_000);
}

#[test]
fn hardlink_to_a_lower_file_copies_it_up() {
    let (_t, s) = store(SnapshotterKind::Overlay);
    let base = unpack(&s, &[], &base_tar());
    let top_tar = RawTar::new().add(E::hardlink("etc/passwd-", "etc/passwd")).finish();
    let top = unpack(&s, &[base], &top_tar);
    let a = fs::symlink_metadata(top.join("etc/passwd")).unwrap();
    let b = fs::symlink_metadata(top.join("etc/passwd-")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(fs::read(top.join("etc/passwd-")).unwrap(), b"root:x:0:0::/root:/bin/sh\n");
    // without lowers it is still an error naming the entry
    let err = apply_layer(&top_tar[..], LayerCompression::None, tempfile::tempdir().unwrap().path()).unwrap_err();
    assert!(err.to_string().contains("etc/passwd-"), "{err}");
}

#[test]
fn self_contained_layer_is_shared_by_diff_id() {
    let (_t, s) = store(SnapshotterKind::Overlay);
    let base = unpack(&s, &[], &base_tar());
    let tar = RawTar::new().add(E::dir("app/")).add(E::file("app/x", b"x")).finish();
    let top = unpack(&s, &[base], &tar);
    assert_eq!(top.file_name().unwrap().to_str().unwrap(), Digest::of(&tar).hex());
}

/// The same changes made to a rootfs, then diffed.
fn make_changes(root: &Path) {
    fs::remove_file(root.join("etc/shadow")).unwrap();
    fs::remove_dir_all(root.join("data")).unwrap();
    fs::create_dir(root.join("data")).unwrap();
    fs::write(root.join("data/new"), b"fresh").unwrap();
    std::os::unix::fs::chown(root.join("hl/a"), Some(1000), Some(1000)).unwrap();
    fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(root.join("etc/added"), b"added").unwrap();
    std::os::unix::fs::chown(root.join("etc/added"), Some(1000), Some(1000)).unwrap();
}

fn opts(c: Compression) -> DiffOptions {
    DiffOptions { source_date_epoch: Some(1), compression: c, ..Default::default() }
}

/// Build base, prepare, change, diff: (layer bytes, digests) for one kind.
fn layer_after_changes(kind: SnapshotterKind, c: Compression) -> (Vec<u8>, kiln_snapshotter::LayerDigests) {
    let (_t, s) = store(kind);
    let base = unpack(&s, &[], &base_tar());
    let mut active = s.prepare(&[base]).unwrap();
    assert_eq!(active.is_native(), kind == SnapshotterKind::Native);
    make_changes(active.merged());
    let upper = active.diff().unwrap().to_path_buf();
    let mut out = Vec::new();
    let d = write_layer(&upper, &opts(c), &mut out).unwrap();
    (out, d)
}

fn entries(tar: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            format!(
                "{} {:?} {:o} {}:{} {}",
                String::from_utf8_lossy(&e.path_bytes()),
                h.entry_type(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                e.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned()).unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn native_and_overlay_give_the_same_layer() {
    let (ov, dov) = layer_after_changes(SnapshotterKind::Overlay, Compression::None);
    let (na, dna) = layer_after_changes(SnapshotterKind::Native, Compression::None);
    let (eo, en) = (entries(&ov), entries(&na));
    assert_eq!(eo, en, "overlay vs native entries");
    assert_eq!(dov.diff_id, dna.diff_id);
    let want = [
        "bin/ Directory",
        "bin/tool Regular 4755 0:0",
        "data/ Directory",
        "data/.wh..wh..opq Regular 0",
        "data/new Regular 644",
        "etc/ Directory",
        "etc/added Regular 644 1000:1000",
        "etc/.wh.shadow Regular 0",
        "hl/ Directory",
        "hl/a Regular 644 1000:1000",
        "hl/b Link 644 1000:1000 hl/a",
    ];
    assert_eq!(eo.len(), want.len(), "{eo:#?}");
    for (got, w) in eo.iter().zip(want) {
        assert!(got.starts_with(w), "got {got:?}, want {w:?}\n{eo:#?}");
    }
}

#[test]
fn round_trip_of_a_native_diff_reproduces_the_tree() {
    let (_t, s) = store(SnapshotterKind::Native);
    let base = unpack(&s, &[], &base_tar());
    let mut active = s.prepare(std::slice::from_ref(&base)).unwrap();
    make_changes(active.merged());
    let expected = snapshot(active.merged());
    let upper = active.diff().unwrap().to_path_buf();
    let mut out = Vec::new();
    let d = write_layer(&upper, &DiffOptions { compression: Compression::Zstd, ..Default::default() }, &mut out).unwrap();
    assert_eq!(&out[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
    assert_eq!(d.media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
    let top = s.unpack_onto(&d.diff_id, std::slice::from_ref(&base), &out[..], LayerCompression::Zstd).unwrap();
    let again = s.prepare(&[base, top]).unwrap();
    assert_eq!(snapshot(again.merged()), expected);
}

#[test]
fn compressions_share_the_diff_id_and_are_deterministic() {
    let (g, dg) = layer_after_changes(SnapshotterKind::Overlay, Compression::Gzip);
    let (z, dz) = layer_after_changes(SnapshotterKind::Overlay, Compression::Zstd);
    let (n, dn) = layer_after_changes(SnapshotterKind::Native, Compression::None);
    assert_eq!(dg.diff_id, dz.diff_id);
    assert_eq!(dg.diff_id, dn.diff_id);
    assert_eq!(dn.digest, dn.diff_id, "uncompressed: digest = diffID");
    assert_eq!(Digest::of(&g), dg.digest);
    assert_eq!(Digest::of(&z), dz.digest);
    assert_eq!(dz.size, z.len() as u64);
    let (z2, _) = layer_after_changes(SnapshotterKind::Native, Compression::Zstd);
    assert_eq!(z, z2, "zstd output is reproducible");
    assert_eq!(n.len() % 512, 0);
}

#[test]
fn chown_of_one_hardlink_name_is_seen_on_all_names_after_overlay() {
    let (_t, s) = store(SnapshotterKind::Overlay);
    let base = unpack(&s, &[], &base_tar());
    let mut active = s.prepare(std::slice::from_ref(&base)).unwrap();
    std::os::unix::fs::chown(active.merged().join("hl/b"), Some(1000), Some(1000)).unwrap();
    let upper = active.diff().unwrap().to_path_buf();
    let mut out = Vec::new();
    let d = write_layer(&upper, &opts(Compression::None), &mut out).unwrap();
    let e = entries(&out);
    assert!(e.iter().any(|l| l.starts_with("hl/a Regular 644 1000:1000")), "{e:#?}");
    assert!(e.iter().any(|l| l.starts_with("hl/b Link 644 1000:1000 hl/a")), "{e:#?}");
    let top = s.commit(active, &d.diff_id).unwrap();
    let view = s.prepare(&[base, top]).unwrap();
    for n in ["hl/a", "hl/b"] {
        assert_eq!(fs::metadata(view.merged().join(n)).unwrap().uid(), 1000, "{n}");
    }
}

#[test]
fn mount_stubs_leave_nothing_in_native_diffs() {
    let (_t, s) = store(SnapshotterKind::Native);
    let base = unpack(&s, &[], &base_tar());
    let mut active = s.prepare(&[base]).unwrap();
    for (p, dir) in [("proc", true), ("etc/hosts", false), ("etc/hostname", false), ("run/x/y", false)] {
        assert!(active.create_stub(Path::new(p), dir).unwrap());
    }
    fs::write(active.merged().join("new"), b"n").unwrap();
    active.remove_stubs().unwrap();
    let upper = active.diff().unwrap().to_path_buf();
    let mut out = Vec::new();
    write_layer(&upper, &opts(Compression::None), &mut out).unwrap();
    let e = entries(&out);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].starts_with("new Regular"));
}

/// 150 layers, each adding a file and overwriting `top`: too long for the option
/// string, so the new mount API is used; with a low bound the bottom is flattened.
fn deep_stack(s: &SnapshotStore) -> Vec<PathBuf> {
    let mut lowers: Vec<PathBuf> = Vec::new();
    for i in 0..150 {
        let name = format!("f/{i:03}");
        let body = format!("layer {i}");
        let mut t = RawTar::new();
        t.add(E::dir("f/")).add(E::file(&name, body.as_bytes())).add(E::file("top", body.as_bytes()));
        if i == 100 {
            t.add(E::file("f/.wh.050", b""));
        }
        let tar = t.finish();
        let dir = unpack(s, &lowers, &tar);
        lowers.push(dir);
    }
    lowers
}

fn check_deep_view(root: &Path) {
    assert_eq!(fs::read(root.join("top")).unwrap(), b"layer 149", "top-most layer wins");
    let n = fs::read_dir(root.join("f")).unwrap().count();
    assert_eq!(n, 149, "149 files (050 whited out)");
    assert_eq!(fs::read(root.join("f/000")).unwrap(), b"layer 0");
    assert!(!root.join("f/050").exists());
}

#[test]
fn deep_stack_mounts_with_the_new_mount_api() {
    let (_t, s) = store(SnapshotterKind::Overlay);
    let lowers = deep_stack(&s);
    let opts = kiln_snapshotter::overlay::mount_options(&lowers, Path::new("/u"), Path::new("/w")).unwrap();
    assert!(opts.len() > kiln_snapshotter::overlay::MAX_OPTIONS, "the stack must not fit the option string");
    let mut a = s.prepare(&lowers).unwrap();
    check_deep_view(a.merged());
    fs::write(a.merged().join("f/new"), b"x").unwrap();
    let upper = a.diff().unwrap();
    assert!(upper.join("f/new").is_file());
}

#[test]
fn deep_stack_flattens_below_the_bound() {
    let (_t, mut s) = store(SnapshotterKind::Overlay);
    let lowers = deep_stack(&s);
    s.set_max_lowers(20);
    let bounded = s.bounded_lowers(&lowers).unwrap();
    assert_eq!(bounded.len(), 20);
    assert_eq!(bounded[1..], lowers[131..]);
    let a = s.prepare(&lowers).unwrap();
    check_deep_view(a.merged());
    // reused, not rebuilt
    assert_eq!(s.bounded_lowers(&lowers).unwrap()[0], bounded[0]);
    let (_t2, n) = store(SnapshotterKind::Native);
    let nl = deep_stack(&n);
    let na = n.prepare(&nl).unwrap();
    check_deep_view(na.merged());
}

#[test]
fn overlay_probe_succeeds_here() {
    let (_t, s) = store(SnapshotterKind::Overlay);
    s.probe_overlay().unwrap();
}

/// Type changes (dir → file, file → dir, file → symlink), a moved file, an xattr,
/// a new hardlink to an old file: both snapshotters give the same layer.
#[test]
fn replacements_match_between_native_and_overlay() {
    fn changes(root: &Path) {
        fs::remove_dir_all(root.join("data/sub")).unwrap();
        fs::write(root.join("data/sub"), b"now a file").unwrap();
        fs::remove_file(root.join("data/one")).unwrap();
        fs::create_dir(root.join("data/one")).unwrap();
        fs::write(root.join("data/one/inside"), b"i").unwrap();
        fs::remove_file(root.join("etc/shadow")).unwrap();
        std::os::unix::fs::symlink("passwd", root.join("etc/shadow")).unwrap();
        fs::rename(root.join("bin/tool"), root.join("bin/tool2")).unwrap();
        set_xattr(&root.join("etc/passwd"), "user.kiln", b"v");
        fs::hard_link(root.join("usr/lib/libc.so"), root.join("usr/lib/libc.so.6")).unwrap();
    }
    let run = |kind| {
        let (_t, s) = store(kind);
        let base = unpack(&s, &[], &base_tar());
        let mut a = s.prepare(&[base]).unwrap();
        changes(a.merged());
        let up = a.diff().unwrap().to_path_buf();
        let mut out = Vec::new();
        let d = write_layer(&up, &opts(Compression::None), &mut out).unwrap();
        (entries(&out), d.diff_id)
    };
    let (eo, o) = run(SnapshotterKind::Overlay);
    let (en, n) = run(SnapshotterKind::Native);
    assert_eq!(eo, en);
    assert_eq!(o, n);
    for want in ["data/sub Regular", "data/one/ Directory", "data/one/.wh..wh..opq", "etc/shadow Symlink", "bin/.wh.tool ", "bin/tool2 Regular", "usr/lib/libc.so.6 Link"] {
        assert!(eo.iter().any(|e| e.starts_with(want)), "{want}: {eo:#?}");
    }
}

#[test]
fn lower_symlinks_cannot_lead_out_of_the_layer() {
    let (t, s) = store(SnapshotterKind::Overlay);
    let base_tar = RawTar::new()
        .add(E::symlink("up", "../../../../../escaped"))
        .add(E::symlink("abs", "/../../escaped2"))
        .add(E::symlink("loop1", "loop2"))
        .add(E::symlink("loop2", "loop1"))
        .add(E::dir("d/"))
        .add(E::file("gone", b"g"))
        .finish();
    let base = unpack(&s, &[], &base_tar);
    let top_tar = RawTar::new().add(E::file("up/x", b"x")).add(E::file("abs/y", b"y")).finish();
    let top = unpack(&s, std::slice::from_ref(&base), &top_tar);
    assert_eq!(fs::read(top.join("escaped/x")).unwrap(), b"x");
    assert_eq!(fs::read(top.join("escaped2/y")).unwrap(), b"y");
    for p in [t.path().join("escaped"), t.path().parent().unwrap().join("escaped"), PathBuf::from("/escaped"), PathBuf::from("/escaped2")] {
        assert!(!p.exists(), "{p:?} written outside the layer");
    }
    // a symlink loop below is an error naming the entry
    let tar = RawTar::new().add(E::file("loop1/x", b"x")).finish();
    let err = s.unpack_onto(&Digest::of(&tar), std::slice::from_ref(&base), &tar[..], LayerCompression::None).unwrap_err();
    assert!(err.to_string().contains("loop1/x"), "{err}");
    // a hardlink to a lower directory, or to a file a whiteout hid, is refused
    let tar = RawTar::new().add(E::hardlink("l", "d")).finish();
    assert!(s.unpack_onto(&Digest::of(&tar), std::slice::from_ref(&base), &tar[..], LayerCompression::None).is_err());
    let wh = RawTar::new().add(E::file(".wh.gone", b"")).finish();
    let mid = unpack(&s, std::slice::from_ref(&base), &wh);
    let tar = RawTar::new().add(E::hardlink("l", "gone")).finish();
    let err = s.unpack_onto(&Digest::of(&tar), &[base, mid], &tar[..], LayerCompression::None).unwrap_err();
    assert!(err.to_string().contains("gone"), "{err}");
}

/// A native rootfs is kept for the next step on the committed stack (moved, not
/// copied again), and changing it then does not touch the committed layer.
#[test]
fn native_rootfs_is_reused_by_the_next_step_without_sharing_inodes_with_layers() {
    let (_t, s) = store(SnapshotterKind::Native);
    let base = unpack(&s, &[], &base_tar());
    let mut a = s.prepare(std::slice::from_ref(&base)).unwrap();
    fs::write(a.merged().join("etc/added"), b"v1").unwrap();
    let ino_passwd = fs::metadata(a.merged().join("etc/passwd")).unwrap().ino();
    let born = fs::metadata(a.merged().join("etc/passwd")).unwrap().created().unwrap();
    let up = a.diff().unwrap().to_path_buf();
    let mut out = Vec::new();
    let d = write_layer(&up, &opts(Compression::None), &mut out).unwrap();
    let layer = s.commit(a, &d.diff_id).unwrap();
    let stack = vec![base.clone(), layer.clone()];
    let mut b = s.prepare(&stack).unwrap();
    assert_eq!(fs::metadata(b.merged().join("etc/passwd")).unwrap().ino(), ino_passwd, "rootfs reused");
    assert_eq!(fs::read(b.merged().join("etc/added")).unwrap(), b"v1");
    fs::write(b.merged().join("etc/added"), b"v2 in place").unwrap();
    assert_eq!(fs::read(layer.join("etc/added")).unwrap(), b"v1", "the committed layer must not change");
    let up = b.diff().unwrap().to_path_buf();
    assert_eq!(fs::read(up.join("etc/added")).unwrap(), b"v2 in place");
    drop(b);
    // single use: the next prepare on the same stack copies afresh
    let c = s.prepare(&stack).unwrap();
    assert_ne!(fs::metadata(c.merged().join("etc/passwd")).unwrap().created().unwrap(), born, "a fresh copy");
    assert_eq!(fs::read(c.merged().join("etc/added")).unwrap(), b"v1");
}

/// Issue 12: a stack that repeats layers (the same diffID many times: no-op RUNs,
/// the same COPY twice, empty WORKDIR layers) mounts, and its view is the tree
/// made by applying the layers in order (the native snapshotter copies them in
/// order, so it is the reference). Overlayfs alone refuses such a stack (ELOOP).
#[test]
fn repeated_and_empty_layers_mount_as_applied_in_order() {
    let (_t, s) = store(SnapshotterKind::Overlay);
    let (_tn, n) = store(SnapshotterKind::Native);
    let build = |s: &SnapshotStore| -> Vec<PathBuf> {
        let base = unpack(s, &[], &base_tar());
        let empty = unpack(s, &[], &RawTar::new().finish());
        let a_tar = RawTar::new().add(E::dir("data/")).add(E::file("data/one", b"from a")).add(E::file("a", b"a")).finish();
        let a = unpack(s, &[], &a_tar);
        // b removes what a adds and replaces a dir a fills
        let b_tar = RawTar::new()
            .add(E::file(".wh.a", b""))
            .add(E::dir("data/"))
            .add(E::file("data/.wh..wh..opq", b""))
            .add(E::file("data/b", b"b"))
            .finish();
        let b = unpack(s, &[], &b_tar);
        let mut stack = vec![base.clone()];
        // 50 times the same empty layer, 50 times a, then b, a, empty, b, a ...
        stack.extend(std::iter::repeat_n(empty.clone(), 50));
        stack.extend(std::iter::repeat_n(a.clone(), 50));
        for i in 0..20 {
            stack.push([b.clone(), a.clone(), empty.clone()][i % 3].clone());
        }
        stack.push(b.clone());
        stack
    };
    let stack = build(&s);
    assert_eq!(stack.len(), 122);
    let mut over = s.prepare(&stack).expect("a stack with repeated layers mounts");
    let nstack = build(&n);
    let native = n.prepare(&nstack).unwrap();
    assert_eq!(snapshot(over.merged()), snapshot(native.merged()), "overlay view = layers applied in order");
    assert!(!over.merged().join("a").exists(), "the top-most b removed a");
    assert_eq!(fs::read(over.merged().join("data/b")).unwrap(), b"b");
    assert!(!over.merged().join("data/sub").exists(), "b's opaque data/ hides the base's");
    // and a step builds on top of it
    fs::write(over.merged().join("top"), b"t").unwrap();
    let up = over.diff().unwrap().to_path_buf();
    assert_eq!(fs::read_dir(&up).unwrap().count(), 1, "only the new file is in the diff");
    let mut out = Vec::new();
    let d = write_layer(&up, &opts(Compression::None), &mut out).unwrap();
    let top = s.commit(over, &d.diff_id).unwrap();
    let mut again = stack.clone();
    again.push(top.clone());
    again.push(top);
    let v = s.prepare(&again).unwrap();
    assert_eq!(fs::read(v.merged().join("top")).unwrap(), b"t");
}

#[test]
fn mount_stack_keeps_the_top_most_occurrence_and_drops_empty_layers() {
    let t = tempfile::tempdir().unwrap();
    let mk = |n: &str, full: bool| {
        let p = t.path().join(n);
        fs::create_dir(&p).unwrap();
        if full {
            fs::write(p.join("f"), n).unwrap();
        }
        p
    };
    let (a, b, e) = (mk("a", true), mk("b", true), mk("e", false));
    let got = kiln_snapshotter::snapshots::mount_stack(&[a.clone(), e.clone(), b.clone(), a.clone(), e.clone(), b.clone()]);
    assert_eq!(got, vec![a.clone(), b.clone()]);
    let got = kiln_snapshotter::snapshots::mount_stack(&[a.clone(), b.clone(), a.clone()]);
    assert_eq!(got, vec![b, a]);
    assert!(kiln_snapshotter::snapshots::mount_stack(&[e.clone(), e]).is_empty());
}
