//! The merged view of a stack of overlay-format layer directories, computed without
//! mounting anything: lookups (for applying a layer on top of its lowers) and
//! materializing the whole view into one directory (the native snapshotter's
//! rootfs, and flattening when a stack is too deep to mount).
//!
//! Overlay rules: a 0/0 character device hides the name below; a directory with
//! `user.overlay.opaque=y` hides the directories below it; a non-directory hides
//! everything below it; directories merge.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::fsops;
use crate::overlay::is_opaque;

/// A found entry: which layer (index into the top-first list), its path, lstat.
pub(crate) struct Found {
    pub layer: usize,
    pub path: PathBuf,
    pub md: fs::Metadata,
}

fn rel_path(comps: &[Vec<u8>]) -> PathBuf {
    let mut p = PathBuf::new();
    for c in comps {
        p.push(OsStr::from_bytes(c));
    }
    p
}

/// Look `rel` up in `layers` (top first). Every proper prefix must be a directory
/// in the merged view (symlinks in it are not followed: see [`resolve_dir`]).
pub(crate) fn lookup(layers: &[&Path], rel: &[Vec<u8>]) -> Option<Found> {
    let mut active: Vec<usize> = (0..layers.len()).collect();
    if rel.is_empty() {
        let l = *active.first()?;
        let md = fs::symlink_metadata(layers[l]).ok()?;
        return Some(Found { layer: l, path: layers[l].to_path_buf(), md });
    }
    for i in 0..rel.len() {
        let prefix = rel_path(&rel[..=i]);
        let mut next = Vec::new();
        let mut found: Option<Found> = None;
        for &l in &active {
            let p = layers[l].join(&prefix);
            let Ok(md) = fs::symlink_metadata(&p) else { continue };
            if fsops::is_whiteout(&md) {
                break;
            }
            if md.is_dir() {
                if found.as_ref().is_some_and(|f| !f.md.is_dir()) {
                    break;
                }
                let opaque = is_opaque(&p);
                if found.is_none() {
                    found = Some(Found { layer: l, path: p, md });
                }
                next.push(l);
                if opaque {
                    break;
                }
            } else {
                if found.is_none() {
                    found = Some(Found { layer: l, path: p, md });
                }
                break;
            }
        }
        if i + 1 == rel.len() {
            return found;
        }
        match found {
            Some(f) if f.md.is_dir() => active = next,
            _ => return None,
        }
    }
    None
}

/// Resolve the directory path `comps` in the merged view of `layers` (top first),
/// following symlinks as if the layers' root were `/` (absolute targets and `..`
/// stay inside). Returns the resolved components and how many of them exist as
/// directories (the rest are to be created).
pub(crate) fn resolve_dir(layers: &[&Path], comps: &[Vec<u8>]) -> io::Result<(Vec<Vec<u8>>, usize)> {
    let mut todo: std::collections::VecDeque<Vec<u8>> = comps.iter().cloned().collect();
    let mut resolved: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        match c.as_slice() {
            b"" | b"." => continue,
            b".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        resolved.push(c);
        match lookup(layers, &resolved) {
            None => {
                let existing = resolved.len() - 1;
                resolved.extend(todo.into_iter().filter(|c| !c.is_empty() && c != b"."));
                if resolved.iter().any(|c| c == b"..") {
                    return Err(io::Error::new(io::ErrorKind::InvalidInput, "\"..\" below a missing directory"));
                }
                return Ok((resolved, existing));
            }
            Some(f) if f.md.is_dir() => {}
            Some(f) if f.md.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = fs::read_link(&f.path)?;
                let t = target.as_os_str().as_bytes();
                resolved.pop();
                if t.starts_with(b"/") {
                    resolved.clear();
                }
                for part in t.split(|&b| b == b'/').rev() {
                    todo.push_front(part.to_vec());
                }
            }
            Some(_) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        }
    }
    let n = resolved.len();
    Ok((resolved, n))
}

/// How `materialize` puts non-directories into the destination.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fill {
    /// Copy data: the result may be modified in place (a native rootfs).
    Copy,
    /// Copy data and keep what hides lower content (whiteouts, opaque
    /// directories): the result is one overlay-format layer equal to the stack
    /// (`--squash`), to be placed on the layers below it.
    Squash,
}

/// Write the merged view of `layers` (bottom first) into the empty directory
/// `dst`: apply each layer in turn with overlay semantics, keeping hardlinks
/// within a layer as hardlinks.
pub(crate) fn materialize(layers: &[PathBuf], dst: &Path, fill: Fill) -> io::Result<()> {
    let mut dir_times: Vec<(PathBuf, i64, i64)> = Vec::new();
    for layer in layers {
        let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
        let md = fs::symlink_metadata(layer)?;
        if is_opaque(layer) {
            for n in fsops::names(dst)? {
                fsops::remove_any(&dst.join(n))?;
            }
        }
        // The root takes the metadata of the top-most layer, as in overlay.
        fsops::copy_meta(layer, &md, dst, false)?;
        dir_times.push((dst.to_path_buf(), md.mtime(), md.mtime_nsec()));
        apply_dir(layer, dst, fill, &mut links, &mut dir_times)?;
    }
    // Parents after children, last writer wins: later entries were pushed later.
    let mut seen = std::collections::HashSet::new();
    for (p, s, ns) in dir_times.into_iter().rev() {
        if seen.insert(p.clone()) && fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            fsops::set_mtime(&p, s, ns)?;
        }
    }
    Ok(())
}

fn apply_dir(
    src: &Path,
    dst: &Path,
    fill: Fill,
    links: &mut HashMap<(u64, u64), PathBuf>,
    dir_times: &mut Vec<(PathBuf, i64, i64)>,
) -> io::Result<()> {
    for name in fsops::names(src)? {
        let s = src.join(&name);
        let d = dst.join(&name);
        let md = fs::symlink_metadata(&s)?;
        let keep = fill == Fill::Squash;
        if fsops::is_whiteout(&md) {
            fsops::remove_any(&d)?;
            if keep {
                fsops::mkwhiteout(&d)?;
            }
            continue;
        }
        let existing = fs::symlink_metadata(&d).ok();
        if md.is_dir() {
            // A directory made where a lower one was deleted (or replaced by
            // opaque): in a squashed layer it must hide what lies below it.
            let hides = is_opaque(&s) || existing.as_ref().is_some_and(|e| fsops::is_whiteout(e));
            match existing {
                Some(e) if e.is_dir() => {
                    if is_opaque(&s) {
                        for n in fsops::names(&d)? {
                            fsops::remove_any(&d.join(n))?;
                        }
                    }
                    fsops::copy_meta(&s, &md, &d, false)?;
                }
                Some(_) => {
                    fs::remove_file(&d)?;
                    fsops::copy_dir(&s, &md, &d, false)?;
                }
                None => fsops::copy_dir(&s, &md, &d, false)?,
            }
            if keep && hides {
                let name = std::ffi::CString::new(crate::xattr::OPAQUE_XATTR).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                crate::xattr::lset(&d, &name, b"y")?;
            }
            dir_times.push((d.clone(), md.mtime(), md.mtime_nsec()));
            apply_dir(&s, &d, fill, links, dir_times)?;
            continue;
        }
        if existing.is_some() {
            fsops::remove_any(&d)?;
        }
        if md.nlink() > 1 {
            if let Some(first) = links.get(&(md.dev(), md.ino())) {
                fs::hard_link(first, &d)?;
                continue;
            }
            links.insert((md.dev(), md.ino()), d.clone());
        }
        fsops::copy_node(&s, &md, &d)?;
    }
    Ok(())
}
