//! The chroot copy-in/take-out, without root: a "step" is whatever the test does
//! between `place` and `finish`.

use super::*;
use std::os::unix::fs::MetadataExt;

fn tree() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("rootfs");
    fs::create_dir(&root).unwrap();
    (t, root)
}

fn write(p: &Path, s: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

fn old(p: &Path, secs: i64) {
    set_times(p, (secs, 0), (secs, 7)).unwrap();
}

fn mtime(p: &Path) -> Time {
    mtime_of(&fs::symlink_metadata(p).unwrap())
}

fn mount(target: &str, fill: Fill) -> Mount {
    Mount { target: target.into(), fill }
}

fn no_hook() -> impl FnMut(&Path) -> Result<()> {
    |_: &Path| Ok(())
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn an_existing_directory_target_is_moved_aside_and_put_back_exactly() {
    let (t, root) = tree();
    write(&root.join("a/dir/f"), "image file");
    old(&root.join("a/dir"), 1000);
    old(&root.join("a"), 2000);
    let ino = fs::metadata(root.join("a/dir")).unwrap().ino();
    let src = t.path().join("ctx");
    write(&src.join("bound"), "from the context");
    let placed = place(&root, &[mount("/a/dir", Fill::Copy { source: src.clone() })]).unwrap();
    assert_eq!(names(&root.join("a/dir")), ["bound"]);
    fs::write(root.join("a/dir/scribble"), "x").unwrap(); // the step writes
    placed.finish(&mut no_hook()).unwrap();
    assert_eq!(names(&root.join("a/dir")), ["f"]);
    assert_eq!(fs::metadata(root.join("a/dir")).unwrap().ino(), ino, "the same directory, not a copy");
    assert_eq!(mtime(&root.join("a/dir")), (1000, 7));
    assert_eq!(mtime(&root.join("a")), (2000, 7), "the parent's time is put back");
    assert_eq!(names(&src), ["bound"], "writes never reach the source");
    assert_eq!(names(t.path()), ["ctx", "rootfs"], "the stash is gone");
}

#[test]
fn a_missing_target_and_the_parents_made_for_it_vanish() {
    let (_t, root) = tree();
    old(&root, 3000);
    let placed = place(&root, &[mount("/x/y/z", Fill::Empty { mode: 0o1777, uid: nix::unistd::getuid().as_raw(), gid: nix::unistd::getgid().as_raw() })]).unwrap();
    let md = fs::metadata(root.join("x/y/z")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o1777, "tmpfs is world-writable and sticky");
    fs::write(root.join("x/y/z/tmp"), "gone with the mount").unwrap();
    placed.finish(&mut no_hook()).unwrap();
    assert!(names(&root).is_empty(), "{:?}", names(&root));
    assert_eq!(mtime(&root), (3000, 7));

    // A parent the step wrote into stays (as a stub directory does); the
    // directory above it keeps the time it had.
    let placed = place(&root, &[mount("/x/y/z", Fill::Empty { mode: 0o755, uid: nix::unistd::getuid().as_raw(), gid: nix::unistd::getgid().as_raw() })]).unwrap();
    fs::write(root.join("x/y/mine"), "the step's").unwrap();
    placed.finish(&mut no_hook()).unwrap();
    assert_eq!(names(&root.join("x/y")), ["mine"]);
    assert_eq!(mtime(&root), (3000, 7));
}

#[test]
fn a_step_that_changes_the_parent_keeps_its_change() {
    let (_t, root) = tree();
    fs::create_dir(root.join("p")).unwrap();
    old(&root.join("p"), 4000);
    let placed = place(&root, &[mount("/p/m", Fill::Empty { mode: 0o755, uid: nix::unistd::getuid().as_raw(), gid: nix::unistd::getgid().as_raw() })]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(root.join("p/new"), "").unwrap();
    let stepped = mtime(&root.join("p"));
    placed.finish(&mut no_hook()).unwrap();
    assert_eq!(names(&root.join("p")), ["new"]);
    assert_eq!(mtime(&root.join("p")), stepped, "the step's own change of /p stays");
}

#[test]
fn a_file_put_back_is_reported_and_keeps_its_inode() {
    let (t, root) = tree();
    write(&root.join("etc/app.conf"), "image");
    let ino = fs::metadata(root.join("etc/app.conf")).unwrap().ino();
    let src = t.path().join("conf");
    write(&src, "bound");
    let placed = place(&root, &[mount("/etc/app.conf", Fill::Copy { source: src })]).unwrap();
    assert_eq!(fs::read_to_string(root.join("etc/app.conf")).unwrap(), "bound");
    let mut seen = Vec::new();
    placed.finish(&mut |rel: &Path| {
        seen.push(rel.to_path_buf());
        Ok(())
    }).unwrap();
    assert_eq!(seen, [PathBuf::from("etc/app.conf")]);
    assert_eq!(fs::read_to_string(root.join("etc/app.conf")).unwrap(), "image");
    assert_eq!(fs::metadata(root.join("etc/app.conf")).unwrap().ino(), ino);
}

#[test]
fn a_cache_moves_in_and_back_with_the_steps_changes() {
    let (t, root) = tree();
    let data = t.path().join("cache/data");
    write(&data.join("old"), "1");
    write(&data.join("drop"), "2");
    let placed = place(&root, &[mount("/var/cache/c", Fill::Cache { data: data.clone(), copy: false })]).unwrap();
    assert!(!data.exists(), "moved, not copied");
    fs::write(root.join("var/cache/c/new"), "3").unwrap();
    fs::remove_file(root.join("var/cache/c/drop")).unwrap();
    placed.finish(&mut no_hook()).unwrap();
    assert_eq!(names(&data), ["new", "old"]);
    assert!(names(&root).is_empty());

    // A step that removes the cache directory itself leaves an empty cache.
    fs::set_permissions(&data, fs::Permissions::from_mode(0o750)).unwrap();
    let placed = place(&root, &[mount("/c", Fill::Cache { data: data.clone(), copy: false })]).unwrap();
    fs::remove_dir_all(root.join("c")).unwrap();
    placed.finish(&mut no_hook()).unwrap();
    assert!(names(&data).is_empty());
    assert_eq!(fs::metadata(&data).unwrap().mode() & 0o7777, 0o750);
}

#[test]
fn a_copied_cache_gets_the_steps_changes_merged_and_keeps_others() {
    let (t, root) = tree();
    let data = t.path().join("data");
    write(&data.join("same"), "keep");
    write(&data.join("edit"), "aaaa");
    write(&data.join("gone"), "x");
    write(&data.join("d/inner"), "y");
    let placed = place(&root, &[mount("/c", Fill::Cache { data: data.clone(), copy: true })]).unwrap();
    assert!(data.join("same").exists(), "copied, the cache stays");
    fs::write(root.join("c/edit"), "bbbb").unwrap(); // same size: found by ctime
    fs::remove_file(root.join("c/gone")).unwrap();
    fs::remove_dir_all(root.join("c/d")).unwrap();
    fs::write(root.join("c/d"), "now a file").unwrap();
    fs::write(root.join("c/added"), "z").unwrap();
    // Another writer of the same cache meanwhile.
    fs::write(data.join("theirs"), "t").unwrap();
    placed.finish(&mut no_hook()).unwrap();
    assert_eq!(names(&data), ["added", "d", "edit", "same", "theirs"]);
    assert_eq!(fs::read_to_string(data.join("edit")).unwrap(), "bbbb");
    assert_eq!(fs::read_to_string(data.join("d")).unwrap(), "now a file");
    assert!(names(&root).is_empty());
}

#[test]
fn the_same_cache_twice_in_one_step_keeps_both_writes() {
    let (t, root) = tree();
    let data = t.path().join("data");
    fs::create_dir(&data).unwrap();
    let mounts = [mount("/one", Fill::Cache { data: data.clone(), copy: true }), mount("/two", Fill::Cache { data: data.clone(), copy: true })];
    let placed = place(&root, &mounts).unwrap();
    fs::write(root.join("one/x"), "1").unwrap();
    fs::write(root.join("two/y"), "2").unwrap();
    placed.finish(&mut no_hook()).unwrap();
    assert_eq!(names(&data), ["x", "y"]);
}

#[test]
fn a_secret_is_wiped_wherever_the_step_put_it() {
    let (t, root) = tree();
    let staged = t.path().join("staged");
    fs::write(&staged, "hunter2").unwrap();
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o440)).unwrap();
    let placed = place(&root, &[mount("/run/secrets/tok", Fill::Secret { source: staged })]).unwrap();
    let p = root.join("run/secrets/tok");
    assert_eq!(fs::read_to_string(&p).unwrap(), "hunter2");
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o440);
    // The step keeps a second name of it and moves the first.
    fs::hard_link(&p, root.join("kept")).unwrap();
    fs::rename(&p, root.join("moved")).unwrap();
    placed.finish(&mut no_hook()).unwrap();
    assert!(!root.join("moved").exists(), "removed where the step moved it");
    assert!(!root.join("run").exists());
    assert_eq!(fs::read(root.join("kept")).unwrap(), b"", "every name of it is emptied");
}

#[test]
fn a_failing_step_still_takes_everything_out() {
    let (t, root) = tree();
    let staged = t.path().join("staged");
    fs::write(&staged, "hunter2").unwrap();
    let placed = place(&root, &[mount("/s", Fill::Secret { source: staged }), mount("/e", Fill::Empty { mode: 0o755, uid: nix::unistd::getuid().as_raw(), gid: nix::unistd::getgid().as_raw() })]).unwrap();
    drop(placed); // the step could not run: no finish
    assert!(names(&root).is_empty());
}

#[test]
fn a_failed_setup_takes_out_what_it_had_placed() {
    let (t, root) = tree();
    let mounts = [
        mount("/ok", Fill::Empty { mode: 0o755, uid: nix::unistd::getuid().as_raw(), gid: nix::unistd::getgid().as_raw() }),
        mount("/bad/x", Fill::Copy { source: t.path().join("missing") }),
    ];
    let err = place(&root, &mounts).err().expect("a missing source fails");
    assert!(format!("{err:#}").contains("/bad/x"), "{err:#}");
    assert!(names(&root).is_empty(), "{:?}", names(&root));
}

#[test]
fn a_parent_swapped_for_a_symlink_cannot_redirect_the_take_out() {
    let (t, root) = tree();
    fs::create_dir(root.join("a")).unwrap();
    let victim = t.path().join("outside");
    write(&victim.join("t/precious"), "host file");
    let placed = place(&root, &[mount("/a/t", Fill::Empty { mode: 0o755, uid: nix::unistd::getuid().as_raw(), gid: nix::unistd::getgid().as_raw() })]).unwrap();
    fs::rename(root.join("a"), root.join("a.old")).unwrap();
    std::os::unix::fs::symlink(&victim, root.join("a")).unwrap();
    placed.finish(&mut no_hook()).unwrap();
    assert_eq!(fs::read_to_string(victim.join("t/precious")).unwrap(), "host file");
    assert!(names(&root.join("a.old")).is_empty(), "the mount left the directory it was in");
}

#[test]
fn copies_keep_modes_times_links_and_hardlinks() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write(&src.join("sub/f"), "data");
    fs::set_permissions(src.join("sub/f"), fs::Permissions::from_mode(0o751)).unwrap();
    fs::hard_link(src.join("sub/f"), src.join("h")).unwrap();
    std::os::unix::fs::symlink("sub/f", src.join("l")).unwrap();
    old(&src.join("sub/f"), 5000);
    old(&src.join("sub"), 6000);
    let dst = t.path().join("dst");
    copy_tree(&src, &dst).unwrap();
    let f = fs::symlink_metadata(dst.join("sub/f")).unwrap();
    assert_eq!(f.mode() & 0o7777, 0o751);
    assert_eq!(mtime(&dst.join("sub/f")), (5000, 7));
    assert_eq!(mtime(&dst.join("sub")), (6000, 7));
    assert_eq!(fs::metadata(dst.join("h")).unwrap().ino(), f.ino());
    assert_eq!(fs::read_link(dst.join("l")).unwrap(), PathBuf::from("sub/f"));
    assert_ne!(f.ino(), fs::metadata(src.join("sub/f")).unwrap().ino());
}

/// The guarantee itself: with the native snapshotter's diff after `finish`, no
/// mount leaves anything in the layer, over existing and missing targets.
#[test]
fn the_native_diff_sees_nothing_of_any_mount() {
    use kiln_snapshotter::snapshots::{SnapshotStore, SnapshotterKind};
    let t = tempfile::tempdir().unwrap();
    let lower = t.path().join("lower");
    write(&lower.join("etc/app.conf"), "image");
    write(&lower.join("var/cache/apt/keep"), "image");
    write(&lower.join("src/main.c"), "int main;");
    let store = SnapshotStore::open_with(&t.path().join("snaps"), SnapshotterKind::Native).unwrap();
    let changed = |hook: bool| {
        let mut active = store.prepare(std::slice::from_ref(&lower)).unwrap();
        let root = active.merged().to_path_buf();
        let ctx = t.path().join("ctx");
        write(&ctx.join("conf"), "bound");
        let staged = t.path().join("secret");
        fs::write(&staged, "hunter2").unwrap();
        let data = t.path().join(format!("data-{hook}"));
        write(&data.join("pkg.deb"), "cached");
        let me = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
        let mounts = [
            mount("/etc/app.conf", Fill::Copy { source: ctx.join("conf") }),
            mount("/src", Fill::Copy { source: ctx.clone() }),
            mount("/var/cache/apt", Fill::Cache { data: data.clone(), copy: false }),
            mount("/run/secrets/s", Fill::Secret { source: staged }),
            mount("/tmp/scratch", Fill::Empty { mode: 0o1777, uid: me.0, gid: me.1 }),
        ];
        let placed = place(&root, &mounts).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(root.join("var/cache/apt/new.deb"), "downloaded").unwrap();
        fs::write(root.join("src/out.o"), "built").unwrap();
        fs::write(root.join("tmp/scratch/x"), "tmp").unwrap();
        fs::write(root.join("made-by-step"), "layer").unwrap();
        placed.finish(&mut |rel: &Path| {
            if hook {
                active.moved_back(rel)?;
            }
            Ok(())
        }).unwrap();
        assert_eq!(names(&data), ["new.deb", "pkg.deb"]);
        let upper = active.diff().unwrap().to_path_buf();
        let mut all = Vec::new();
        for (rel, _) in stamps(&upper).unwrap() {
            if !rel.as_os_str().is_empty() {
                all.push(rel.to_string_lossy().into_owned());
            }
        }
        all.sort();
        all
    };
    assert_eq!(changed(true), ["made-by-step"]);
    // Without telling the snapshotter, the file put back would look changed: the
    // hook is what keeps it out.
    assert_eq!(changed(false), ["etc", "etc/app.conf", "made-by-step"]);
}
