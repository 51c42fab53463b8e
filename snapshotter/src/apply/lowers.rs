//! The entries that reach below this layer: parents resolved through the merged
//! view of the lowers (and copied up), and hardlinks, whose target may be a lower
//! file that is copied up first. See the rules in the parent module's docs.

use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{lossy, State};
use crate::error::{io_err, unsafe_err, ApplyError};
use crate::safepath::{normalize, Components};
use crate::sys::{self, cstr, errno};

impl State {
    /// Where an entry's parent directory is. `None`: as named (it is in this layer,
    /// or there are no lowers and it will be created). `Some(resolved)`: resolved
    /// through the merged view of this layer and its lowers; the directories that
    /// exist below have been copied up into this layer.
    pub(super) fn place_parent(&mut self, parent: &[Vec<u8>], path: &str) -> Result<Option<Components>, ApplyError> {
        if parent.is_empty() || self.root.dir(parent, false).is_ok() {
            return Ok(None);
        }
        self.depends_on_lowers = true;
        if self.lowers.is_empty() {
            return Ok(None);
        }
        self.barrier()?;
        let mut all: Vec<&Path> = vec![self.target.as_path()];
        all.extend(self.lowers.iter().map(|p| p.as_path()));
        let (resolved, existing) = crate::merged::resolve_dir(&all, parent)
            .map_err(|e| unsafe_err(path, format!("parent directory cannot be resolved in the lower layers: {e}")))?;
        self.quick = false;
        crate::links::copy_up_parents(&self.target, &all, &resolved[..existing])
            .map_err(io_err(path, "copy up parent directory from a lower layer"))?;
        // Copied-up parents keep the mtime they have below once the entries are in.
        use std::os::unix::fs::MetadataExt;
        let mut p = self.target.clone();
        for (i, c) in resolved[..existing].iter().enumerate() {
            p.push(std::ffi::OsStr::from_bytes(c));
            if let Ok(md) = std::fs::symlink_metadata(&p) {
                self.dir_times.push((resolved[..=i].to_vec(), (md.mtime(), md.mtime_nsec() as u32)));
            }
        }
        self.root.invalidate();
        Ok(Some(resolved))
    }

    /// A hardlink whose target is not in this layer but in a lower one: copy the
    /// target up (at its merged-view location) so the link can be made. Returns the
    /// resolved parent of the target when it did so.
    pub(super) fn copy_up_link_target(
        &mut self,
        tparent: &[Vec<u8>],
        tname: &[u8],
        tcname: &std::ffi::CStr,
        path: &str,
    ) -> Result<Option<Components>, ApplyError> {
        if self.lowers.is_empty() {
            return Ok(None);
        }
        if let Ok(fd) = self.root.dir_owned(tparent, false) {
            if let Ok(Some(_)) = sys::fstatat_nofollow(fd.as_fd(), tcname) {
                return Ok(None);
            }
        }
        let mut all: Vec<&Path> = vec![self.target.as_path()];
        all.extend(self.lowers.iter().map(|p| p.as_path()));
        let Ok((resolved, existing)) = crate::merged::resolve_dir(&all, tparent) else { return Ok(None) };
        if existing != resolved.len() {
            return Ok(None);
        }
        let mut full = resolved.clone();
        full.push(tname.to_vec());
        let Some(found) = crate::merged::lookup(&all, &full) else { return Ok(None) };
        if found.layer == 0 || found.md.is_dir() {
            return Ok(None);
        }
        self.depends_on_lowers = true;
        // (Hardlinks are never quick: the barrier has been passed.)
        self.quick = false;
        crate::links::copy_up_parents(&self.target, &all, &resolved)
            .map_err(io_err(path, "copy up parent directory from a lower layer"))?;
        let mut dst = self.target.clone();
        for c in &full {
            dst.push(std::ffi::OsStr::from_bytes(c));
        }
        let pdir = dst.parent().map(Path::to_path_buf).unwrap_or_else(|| self.target.clone());
        let pmd = std::fs::symlink_metadata(&pdir).map_err(io_err(path, "stat"))?;
        crate::fsops::copy_node(&found.path, &found.md, &dst).map_err(io_err(path, "copy up hardlink target"))?;
        use std::os::unix::fs::MetadataExt;
        if dst.parent() != Some(self.target.as_path()) {
            crate::fsops::set_mtime(&pdir, pmd.mtime(), pmd.mtime_nsec()).map_err(io_err(path, "set mtime"))?;
        }
        self.root.invalidate();
        Ok(Some(resolved))
    }

    /// A hardlink at parent/name (`comps`) to `target`, an earlier entry of this
    /// layer or (copied up) a file of the lowers.
    pub(super) fn make_hardlink(
        &mut self,
        parent: &[Vec<u8>],
        cname: &std::ffi::CStr,
        comps: &Components,
        target: &[u8],
        path: &str,
    ) -> Result<(), ApplyError> {
        let tpath = lossy(target);
        let tcomps = normalize(target).map_err(|_| {
            unsafe_err(path, format!("hardlink target {tpath:?} climbs out of the root"))
        })?;
        let Some((tname, tparent)) = tcomps.split_last() else {
            return Err(unsafe_err(path, "hardlink to the root directory"));
        };
        if tcomps == *comps {
            return Ok(()); // a link to itself: nothing to do
        }
        let link_err = || ApplyError::HardlinkTarget { path: path.to_string(), target: tpath.clone() };
        let tcname = cstr(tname).map_err(io_err(path, "hardlink target"))?;
        let lower_target = self.copy_up_link_target(tparent, tname, &tcname, path)?;
        let tparent: &[Vec<u8>] = lower_target.as_deref().unwrap_or(tparent);
        let tpfd = match self.root.dir_owned(tparent, false) {
            Ok(fd) => fd,
            Err(e) if matches!(errno(&e), libc::ENOENT | libc::ENOTDIR) => return Err(link_err()),
            Err(e) => return Err(io_err(path, "open hardlink target directory")(e)),
        };
        match sys::fstatat_nofollow(tpfd.as_fd(), &tcname).map_err(io_err(path, "stat hardlink target"))? {
            None => return Err(link_err()),
            Some(st) if sys::is_dir(&st) => {
                return Err(unsafe_err(path, format!("hardlink target {tpath:?} is a directory")))
            }
            Some(_) => {}
        }
        self.remove_existing(parent, cname, path)?;
        let pfd = self.root.dir(parent, true).map_err(io_err(path, "open parent directory"))?;
        match sys::linkat(tpfd.as_fd(), &tcname, pfd, cname) {
            Ok(()) => {}
            // Removing the old `path` may have removed the target (a link into
            // a directory that this entry replaced).
            Err(e) if errno(&e) == libc::ENOENT => return Err(link_err()),
            Err(e) => return Err(io_err(path, "hardlink")(e)),
        }
        Ok(())
    }
}
