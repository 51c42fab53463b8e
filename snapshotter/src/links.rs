//! Hardlinks across an overlay copy-up.
//!
//! overlayfs (without `index=on`, which a user-namespace mount does not get)
//! breaks a hardlink when one of its names is copied up: `chown 1000 a` where `a`
//! and `b` share an inode below leaves a new `a` in the upperdir and the old `b`
//! below. On a real filesystem `b` would show the change too, and so it must in the
//! image. So before a diff is written, every upper file that was copied up from a
//! multiply-linked lower file gets its other lower names linked to it in the
//! upperdir (with their parent directories copied up), as long as those names are
//! still the same file in the merged view. The layer then has one file entry and
//! hardlink entries for the other names.
//!
//! A file the step *replaced* (`mv new a`) looks the same as a copy-up here (no
//! `origin` xattr is kept for user-namespace mounts); such a replacement of one
//! name of a hardlink group is also propagated to the other names. That is rare,
//! and the result is still a consistent image.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::fsops;
use crate::merged::{self, lookup};

fn comps(rel: &[u8]) -> Vec<Vec<u8>> {
    rel.split(|&b| b == b'/').filter(|c| !c.is_empty()).map(<[u8]>::to_vec).collect()
}

/// See the module docs. `lowers` are top first.
pub(crate) fn relink_copied_up(upper: &Path, lowers: &[&Path]) -> io::Result<()> {
    if lowers.is_empty() {
        return Ok(());
    }
    let mut candidates: Vec<(Vec<u8>, usize, u64)> = Vec::new(); // (rel, lower layer, lower ino)
    let root_active: Vec<usize> = (0..lowers.len()).collect();
    collect(upper, b"", lowers, &root_active, &mut candidates)?;
    if candidates.is_empty() {
        return Ok(());
    }
    // ino → names, per lower layer directory, built on first need.
    let mut groups: HashMap<usize, HashMap<u64, Vec<Vec<u8>>>> = HashMap::new();
    let mut all: Vec<&Path> = vec![upper];
    all.extend_from_slice(lowers);
    for (rel, layer, ino) in candidates {
        let g = match groups.get(&layer) {
            Some(g) => g,
            None => {
                let mut m = HashMap::new();
                index_links(lowers[layer], b"", &mut m)?;
                groups.entry(layer).or_insert(m)
            }
        };
        let Some(names) = g.get(&ino) else { continue };
        for other in names.iter().filter(|n| **n != rel) {
            let oc = comps(other);
            // Still that same lower file in the merged view (upper included)?
            match lookup(&all, &oc) {
                Some(f) if f.layer == layer + 1 && f.md.ino() == ino => {}
                _ => continue,
            }
            let parent = &oc[..oc.len() - 1];
            copy_up_parents(upper, &all, parent)?;
            let parent_dir = upper.join(rel_path(parent));
            let keep = fs::symlink_metadata(&parent_dir)?;
            fs::hard_link(upper.join(OsStr::from_bytes(&rel)), upper.join(OsStr::from_bytes(other)))?;
            fsops::set_mtime(&parent_dir, keep.mtime(), keep.mtime_nsec())?;
        }
    }
    Ok(())
}

fn rel_path(c: &[Vec<u8>]) -> PathBuf {
    c.iter().map(|c| OsStr::from_bytes(c)).collect()
}

/// Upper regular files with one link whose lower counterpart has several.
/// `active`: the lower layers (indices, top first) in which `dir`'s counterpart is
/// a visible directory, so each file costs one lstat per such layer at most.
fn collect(
    dir: &Path,
    rel: &[u8],
    lowers: &[&Path],
    active: &[usize],
    out: &mut Vec<(Vec<u8>, usize, u64)>,
) -> io::Result<()> {
    if active.is_empty() {
        return Ok(()); // nothing below: every file here is new
    }
    for e in fs::read_dir(dir)? {
        let e = e?;
        let md = e.path().symlink_metadata()?;
        let mut child = rel.to_vec();
        if !child.is_empty() {
            child.push(b'/');
        }
        child.extend_from_slice(e.file_name().as_bytes());
        let child_rel = OsStr::from_bytes(&child);
        if md.is_dir() {
            if crate::overlay::is_opaque(&e.path()) {
                continue;
            }
            let mut next = Vec::new();
            for &l in active {
                let p = lowers[l].join(child_rel);
                match fs::symlink_metadata(&p) {
                    Err(_) => continue,
                    Ok(m) if m.is_dir() => {
                        next.push(l);
                        if crate::overlay::is_opaque(&p) {
                            break;
                        }
                    }
                    Ok(_) => break,
                }
            }
            collect(&e.path(), &child, lowers, &next, out)?;
            continue;
        }
        if !md.is_file() || md.nlink() != 1 {
            continue;
        }
        for &l in active {
            let Ok(m) = fs::symlink_metadata(lowers[l].join(child_rel)) else { continue };
            if m.is_file() && m.nlink() > 1 {
                out.push((child.clone(), l, m.ino()));
            }
            break;
        }
    }
    Ok(())
}

fn index_links(dir: &Path, rel: &[u8], out: &mut HashMap<u64, Vec<Vec<u8>>>) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let md = e.path().symlink_metadata()?;
        let mut child = rel.to_vec();
        if !child.is_empty() {
            child.push(b'/');
        }
        child.extend_from_slice(e.file_name().as_bytes());
        if md.is_dir() {
            index_links(&e.path(), &child, out)?;
        } else if md.is_file() && md.nlink() > 1 {
            out.entry(md.ino()).or_default().push(child);
        }
    }
    Ok(())
}

/// Create the missing directories of `parent` in `upper` (= `all[0]`) with the
/// metadata they have in the merged view.
pub(crate) fn copy_up_parents(upper: &Path, all: &[&Path], parent: &[Vec<u8>]) -> io::Result<()> {
    for i in 1..=parent.len() {
        let dst = upper.join(rel_path(&parent[..i]));
        if fs::symlink_metadata(&dst).is_ok() {
            continue;
        }
        let f = merged::lookup(all, &parent[..i]).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        if !f.md.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        // Creating it moves its parent's mtime; put that back.
        let pdir = upper.join(rel_path(&parent[..i - 1]));
        let pmd = fs::symlink_metadata(&pdir)?;
        fsops::copy_dir(&f.path, &f.md, &dst, true)?;
        if i > 1 {
            fsops::set_mtime(&pdir, pmd.mtime(), pmd.mtime_nsec())?;
        }
    }
    Ok(())
}
