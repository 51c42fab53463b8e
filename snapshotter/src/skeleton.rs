//! Skeletons: a layer without its files, as the lower of a step that only adds files.
//!
//! A COPY, ADD or WORKDIR onto a base reads the base only to resolve where things go:
//! which directories exist (and their owners, modes, times, xattrs, which a copy-up
//! keeps), which symlinks redirect a path, what `/etc/passwd` and `/etc/group` say.
//! A skeleton layer holds exactly that — every directory, symlink, whiteout and
//! opaque marker of the layer, made by the same code as an unpacked layer
//! (`apply::apply_skeleton_onto`), plus those two files — and lists every other node
//! (regular files, hard links, devices) in `<dir>.list` instead of creating it. The
//! whole stream is still read and its diffID checked, so a lying layer is refused as
//! when unpacking.
//!
//! A step run on skeletons gives the upper an unpacked base would give **unless** it
//! touched a path where the full layers have a listed node (a file it replaced, a
//! hard link whose copy-up the full base would repair): [`listed_node_in`] finds
//! such a path, and the caller then runs the step again on the unpacked layers.
//! Skeletons are kept per stack (`skeletons/<diffid>-<stack>`), never shared with
//! unpacked layers.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use kiln_oci::media::LayerCompression;
use kiln_oci::Digest;

use crate::diff::{write_layer, DiffOptions, LayerDigests};
use crate::snapshots::{chain_key, io_err, remove_tree, unique_name, SnapshotError, SnapshotStore};

impl SnapshotStore {
    fn skeleton_dir(&self, diff_id: &Digest, below: &[PathBuf]) -> PathBuf {
        self.root.join("skeletons").join(format!("{}-{}", diff_id.hex(), chain_key(below)))
    }

    /// The skeleton of `diff_id` on the skeletons `below` (bottom first), if made.
    pub fn skeleton(&self, diff_id: &Digest, below: &[PathBuf]) -> Option<PathBuf> {
        let p = self.skeleton_dir(diff_id, below);
        (p.is_dir() && list_path(&p).is_file()).then_some(p)
    }

    /// Where the skeleton of `diff_id` on `below` is kept, made or not (so that the
    /// skeletons of a stack can be named before any is made).
    pub fn skeleton_path(&self, diff_id: &Digest, below: &[PathBuf]) -> PathBuf {
        self.skeleton_dir(diff_id, below)
    }

    /// Make (unless there) the skeleton of the layer `reader` holds on `below`. With
    /// `blob`, a new skeleton is also written there as a layer of its own (`tree/` and
    /// `list`, see [`SnapshotStore::restore_skeleton`]), for caches that travel:
    /// `Some` digests then.
    pub fn skeleton_onto<R: Read>(
        &self,
        diff_id: &Digest,
        below: &[PathBuf],
        reader: R,
        compression: LayerCompression,
        blob: Option<(&DiffOptions, &mut dyn Write)>,
    ) -> Result<(PathBuf, Option<LayerDigests>), SnapshotError> {
        let made = self.make_skeleton(diff_id, below, below, reader, compression, blob)?;
        made.ok_or_else(|| SnapshotError::Io { path: self.skeleton_dir(diff_id, below), source: io::Error::other("skeleton not made") })
    }

    /// The skeleton of the layer made on nothing, kept as its skeleton on `below`
    /// (the skeletons below, named by [`SnapshotStore::skeleton_path`], need not be
    /// made yet) when it does not reach below itself: then it is the skeleton made on
    /// `below`, by `side_by_side`'s rule, and the skeletons of a stack can be made at
    /// once. `None`: it reaches below (or cannot be made alone); nothing is kept.
    pub fn skeleton_alone<R: Read>(
        &self,
        diff_id: &Digest,
        below: &[PathBuf],
        reader: R,
        compression: LayerCompression,
        blob: Option<(&DiffOptions, &mut dyn Write)>,
    ) -> Result<Option<(PathBuf, Option<LayerDigests>)>, SnapshotError> {
        self.make_skeleton(diff_id, &[], below, reader, compression, blob)
    }

    /// The skeleton made on `apply_on` (everything below it, or nothing: then `None`
    /// when it reaches below), kept as the skeleton on `below`.
    fn make_skeleton<R: Read>(
        &self,
        diff_id: &Digest,
        apply_on: &[PathBuf],
        below: &[PathBuf],
        reader: R,
        compression: LayerCompression,
        blob: Option<(&DiffOptions, &mut dyn Write)>,
    ) -> Result<Option<(PathBuf, Option<LayerDigests>)>, SnapshotError> {
        if let Some(p) = self.skeleton(diff_id, below) {
            return Ok(Some((p, None)));
        }
        let alone = apply_on.is_empty() && !below.is_empty();
        let tmp = self.scratch("skeleton")?;
        let tree = tmp.join("tree");
        let made = fs::create_dir(&tree)
            .map_err(io_err(&tree))
            .and_then(|()| crate::apply::apply_skeleton_onto(reader, compression, &tree, apply_on).map_err(SnapshotError::from));
        let (applied, listed) = match made {
            Ok(m) => m,
            Err(e) => {
                remove_tree(&tmp);
                if alone {
                    tracing::debug!(layer = %diff_id, error = %e, "skeleton not made alone");
                    return Ok(None);
                }
                return Err(e);
            }
        };
        if &applied.diff_id != diff_id {
            remove_tree(&tmp);
            return Err(SnapshotError::DiffIdMismatch { expected: diff_id.clone(), actual: applied.diff_id });
        }
        if alone && applied.depends_on_lowers {
            remove_tree(&tmp);
            return Ok(None);
        }
        let list = tmp.join("list");
        let written = fs::write(&list, listed.join(&0u8)).map_err(io_err(&list)).and_then(|()| match blob {
            Some((opts, w)) => write_layer(&tmp, opts, w).map(Some).map_err(|e| SnapshotError::Io {
                path: tmp.clone(),
                source: io::Error::other(e.to_string()),
            }),
            None => Ok(None),
        });
        let digests = match written {
            Ok(d) => d,
            Err(e) => {
                remove_tree(&tmp);
                return Err(e);
            }
        };
        let dir = self.install_skeleton(&tmp, diff_id, below)?;
        Ok(Some((dir, digests)))
    }

    /// A skeleton from a layer [`SnapshotStore::skeleton_onto`] wrote (from a cache):
    /// unpacked as any layer, checked against `blob_diff_id`, installed as the
    /// skeleton of `diff_id` on `below`.
    pub fn restore_skeleton<R: Read>(
        &self,
        diff_id: &Digest,
        below: &[PathBuf],
        reader: R,
        compression: LayerCompression,
        blob_diff_id: &Digest,
    ) -> Result<PathBuf, SnapshotError> {
        if let Some(p) = self.skeleton(diff_id, below) {
            return Ok(p);
        }
        let tmp = self.scratch("skeleton-restore")?;
        let checked = crate::apply::apply_layer(reader, compression, &tmp).map_err(SnapshotError::from).and_then(|a| {
            if &a.diff_id != blob_diff_id {
                return Err(SnapshotError::DiffIdMismatch { expected: blob_diff_id.clone(), actual: a.diff_id });
            }
            let (tree, list) = (tmp.join("tree"), tmp.join("list"));
            if !tree.is_dir() || !list.is_file() {
                return Err(SnapshotError::Io { path: tmp.clone(), source: io::Error::other("not a skeleton layer") });
            }
            Ok(())
        });
        if let Err(e) = checked {
            remove_tree(&tmp);
            return Err(e);
        }
        self.install_skeleton(&tmp, diff_id, below)
    }

    fn scratch(&self, what: &str) -> Result<PathBuf, SnapshotError> {
        let parent = self.root.join("skeletons");
        fs::create_dir_all(&parent).map_err(io_err(&parent))?;
        let tmp = self.root.join("active").join(format!("{what}-{}", unique_name()));
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        Ok(tmp)
    }

    /// `tmp/list` then `tmp/tree` into place: a skeleton counts as made only when
    /// both are there (a concurrent build's equal one may win; it is the same).
    fn install_skeleton(&self, tmp: &Path, diff_id: &Digest, below: &[PathBuf]) -> Result<PathBuf, SnapshotError> {
        let dest = self.skeleton_dir(diff_id, below);
        let list = list_path(&dest);
        let moved = fs::rename(tmp.join("list"), &list).map_err(io_err(&list));
        let installed = moved.and_then(|()| self.install_at(&tmp.join("tree"), dest));
        remove_tree(tmp);
        installed
    }
}

fn list_path(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(".list");
    PathBuf::from(s)
}

/// What one skeleton layer says about a path.
enum Says {
    /// The full layer has a node there that the skeleton only lists.
    Listed,
    /// The skeleton has it (made, or whited out): the lower layers do not matter.
    Shown,
    /// An ancestor hides the lower layers (whiteout, non-directory, opaque directory).
    Hides,
    /// Nothing there: ask the layer below.
    Nothing,
}

fn says(dir: &Path, listed: &HashSet<Vec<u8>>, rel: &[u8]) -> Says {
    use std::os::unix::ffi::OsStrExt;
    if listed.contains(rel) {
        return Says::Listed;
    }
    let at = |p: &[u8]| dir.join(std::ffi::OsStr::from_bytes(p));
    if fs::symlink_metadata(at(rel)).is_ok() {
        return Says::Shown;
    }
    let mut end = 0;
    while let Some(i) = rel[end..].iter().position(|b| *b == b'/') {
        let anc = at(&rel[..end + i]);
        match fs::symlink_metadata(&anc) {
            Ok(m) if !m.is_dir() => return Says::Hides,
            Ok(_) if matches!(crate::xattr::lget(&anc, crate::xattr::OPAQUE_XATTR), Ok(Some(v)) if v == b"y") => {
                return Says::Hides
            }
            _ => {}
        }
        end += i + 1;
    }
    Says::Nothing
}

/// The first path of `upper` (an overlay upper made over `skeletons`, bottom first,
/// and possibly full layers above them) where the full layers of the skeletons have
/// a node the skeletons do not: there the step may have done something else on the
/// unpacked base. `None`: the upper is the one the unpacked base gives.
pub fn listed_node_in(upper: &Path, skeletons: &[PathBuf]) -> io::Result<Option<String>> {
    let mut lists = Vec::with_capacity(skeletons.len());
    for s in skeletons {
        let bytes = fs::read(list_path(s))?;
        let set: HashSet<Vec<u8>> = bytes.split(|b| *b == 0).filter(|p| !p.is_empty()).map(|p| p.to_vec()).collect();
        lists.push(set);
    }
    let mut stack = vec![Vec::<u8>::new()];
    while let Some(rel) = stack.pop() {
        use std::os::unix::ffi::OsStrExt;
        let dir = upper.join(std::ffi::OsStr::from_bytes(&rel));
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let mut p = rel.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(e.file_name().as_bytes());
            for (s, listed) in skeletons.iter().zip(&lists).rev() {
                match says(s, listed, &p) {
                    Says::Listed => return Ok(Some(String::from_utf8_lossy(&p).into_owned())),
                    Says::Shown | Says::Hides => break,
                    Says::Nothing => {}
                }
            }
            if e.file_type()?.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok(None)
}
