//! Unpacked layers on disk, and the scratch space of running steps.
//!
//! Layout under the snapshot root:
//!   layers/<diffid-hex>/   one unpacked layer in overlay format, shared by every
//!                          build and stage that uses it (keyed by diffID)
//!   active/<id>/{upper,work,merged}   a step in progress
//! A layer directory appears only by rename once complete, so a killed build never
//! leaves a half-unpacked layer that a later build would trust.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_oci::media::LayerCompression;
use kiln_oci::Digest;

use crate::apply::{apply_layer, ApplyError};
use crate::overlay::{self, OverlayError};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot store {path:?}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Overlay(#[from] OverlayError),
    #[error("layer content does not match its diffID: expected {expected}, got {actual}")]
    DiffIdMismatch { expected: Digest, actual: Digest },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io { path: path.to_path_buf(), source }
}

pub struct SnapshotStore {
    root: PathBuf,
    empty: PathBuf,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), nanos)
}

impl SnapshotStore {
    pub fn open(root: &Path) -> Result<Self, SnapshotError> {
        for d in ["layers", "active", "empty"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(SnapshotStore { root: root.to_path_buf(), empty: root.join("empty") })
    }

    fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// The unpacked directory of a layer, if present.
    pub fn layer(&self, diff_id: &Digest) -> Option<PathBuf> {
        let p = self.layer_dir(diff_id);
        p.is_dir().then_some(p)
    }

    /// Unpack a layer blob (unless already there) and return its directory. The
    /// diffID computed while unpacking must equal `diff_id`.
    pub fn unpack<R: Read>(&self, diff_id: &Digest, reader: R, compression: LayerCompression) -> Result<PathBuf, SnapshotError> {
        if let Some(p) = self.layer(diff_id) {
            return Ok(p);
        }
        let tmp = self.root.join("active").join(format!("unpack-{}", unique_name()));
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        let result = apply_layer(reader, compression, &tmp);
        let applied = match result {
            Ok(a) => a,
            Err(e) => {
                remove_tree(&tmp);
                return Err(e.into());
            }
        };
        if &applied.diff_id != diff_id {
            remove_tree(&tmp);
            return Err(SnapshotError::DiffIdMismatch { expected: diff_id.clone(), actual: applied.diff_id });
        }
        self.install(&tmp, diff_id)
    }

    /// Move a finished directory into place as the layer `diff_id`. If another build
    /// got there first, ours is discarded (the contents are the same by definition).
    fn install(&self, dir: &Path, diff_id: &Digest) -> Result<PathBuf, SnapshotError> {
        let dest = self.layer_dir(diff_id);
        match fs::rename(dir, &dest) {
            Ok(()) => Ok(dest),
            Err(_) if dest.is_dir() => {
                remove_tree(dir);
                Ok(dest)
            }
            Err(e) => Err(SnapshotError::Io { path: dest, source: e }),
        }
    }

    /// Mount a writable rootfs over `lowers` (image order, bottom first).
    pub fn prepare(&self, lowers: &[PathBuf]) -> Result<ActiveSnapshot, SnapshotError> {
        let dir = self.root.join("active").join(unique_name());
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        for d in [&dir, &upper, &work, &merged] {
            fs::create_dir(d).map_err(io_err(d))?;
        }
        let lowers: Vec<PathBuf> = if lowers.is_empty() { vec![self.empty.clone()] } else { lowers.to_vec() };
        if let Err(e) = overlay::mount_overlay(&lowers, &upper, &work, &merged) {
            remove_tree(&dir);
            return Err(e.into());
        }
        Ok(ActiveSnapshot { dir, upper, merged, mounted: true, stubs: Vec::new() })
    }

    /// Keep a finished step's upperdir as the layer `diff_id`.
    pub fn commit(&self, mut active: ActiveSnapshot, diff_id: &Digest) -> Result<PathBuf, SnapshotError> {
        active.unmount()?;
        let upper = active.upper.clone();
        let path = self.install(&upper, diff_id)?;
        Ok(path)
    }
}

/// A step's mounted rootfs. Dropping it unmounts and deletes the scratch space.
pub struct ActiveSnapshot {
    dir: PathBuf,
    upper: PathBuf,
    merged: PathBuf,
    mounted: bool,
    stubs: Vec<Stub>,
}

/// A mount target created for a step (e.g. /etc/hosts missing from the image): it
/// must not reach the layer, and neither must the copy-up of its parents that
/// creating it caused.
struct Stub {
    rel: PathBuf,
    created_dirs: Vec<PathBuf>,
    /// Ancestors that existed below, with (mode, uid, gid) before the step.
    existing: Vec<(PathBuf, u32, u32, u32)>,
}

impl ActiveSnapshot {
    /// The rootfs the step sees.
    pub fn merged(&self) -> &Path {
        &self.merged
    }
    /// Only what the step changed, in overlay format.
    pub fn upper(&self) -> &Path {
        &self.upper
    }
    /// Make sure `rel` (relative to the root) exists as a mount target, creating an
    /// empty file or directory if the image lacks it. Returns whether one was made.
    /// Symlinked components are not followed (the image could point them anywhere).
    pub fn create_stub(&mut self, rel: &Path, dir: bool) -> Result<bool, SnapshotError> {
        use std::os::unix::fs::MetadataExt;
        let target = self.merged.join(rel);
        if fs::symlink_metadata(&target).is_ok() {
            return Ok(false);
        }
        let mut stub = Stub { rel: rel.to_path_buf(), created_dirs: Vec::new(), existing: Vec::new() };
        let mut anc = PathBuf::new();
        let comps: Vec<_> = rel.components().collect();
        for c in &comps[..comps.len().saturating_sub(1)] {
            anc.push(c);
            let p = self.merged.join(&anc);
            match fs::symlink_metadata(&p) {
                Ok(md) if md.is_dir() => stub.existing.push((anc.clone(), md.mode(), md.uid(), md.gid())),
                Ok(_) => return Ok(false), // a file or symlink in the way: leave it alone
                Err(_) => {
                    fs::create_dir(&p).map_err(io_err(&p))?;
                    stub.created_dirs.push(anc.clone());
                }
            }
        }
        if dir {
            fs::create_dir(&target).map_err(io_err(&target))?;
        } else {
            fs::File::create(&target).map_err(io_err(&target))?;
        }
        self.stubs.push(stub);
        Ok(true)
    }

    /// After the step (unmounted), take the stubs and their parents' copy-ups out of
    /// the upperdir, unless the step itself changed those parents.
    pub fn remove_stubs(&mut self) -> Result<(), SnapshotError> {
        use std::os::unix::fs::MetadataExt;
        self.unmount()?;
        for stub in self.stubs.drain(..).rev() {
            let p = self.upper.join(&stub.rel);
            match fs::symlink_metadata(&p) {
                Ok(md) if md.is_dir() => {
                    let _ = fs::remove_dir(&p);
                }
                Ok(md) if md.len() == 0 => {
                    let _ = fs::remove_file(&p);
                }
                _ => {}
            }
            for d in stub.created_dirs.iter().rev() {
                let _ = fs::remove_dir(self.upper.join(d)); // fails (keeps it) if the step filled it
            }
            for (d, mode, uid, gid) in stub.existing.iter().rev() {
                let p = self.upper.join(d);
                let unchanged = fs::symlink_metadata(&p)
                    .map(|md| md.is_dir() && md.mode() == *mode && md.uid() == *uid && md.gid() == *gid)
                    .unwrap_or(false);
                let opaque = crate::overlay::is_opaque(&p);
                if unchanged && !opaque {
                    let _ = fs::remove_dir(&p);
                }
            }
        }
        Ok(())
    }

    pub fn unmount(&mut self) -> Result<(), SnapshotError> {
        if self.mounted {
            overlay::unmount(&self.merged)?;
            self.mounted = false;
        }
        Ok(())
    }
}

impl Drop for ActiveSnapshot {
    fn drop(&mut self) {
        let _ = self.unmount();
        remove_tree(&self.dir);
    }
}

/// Best-effort recursive removal that also copes with the 000-mode dirs overlayfs
/// leaves in its workdir.
pub fn remove_tree(p: &Path) {
    if fs::remove_dir_all(p).is_ok() || !p.exists() {
        return;
    }
    fn open_up(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(md) = fs::symlink_metadata(p) {
            if md.is_dir() {
                let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
                if let Ok(rd) = fs::read_dir(p) {
                    for e in rd.flatten() {
                        open_up(&e.path());
                    }
                }
            }
        }
    }
    open_up(p);
    let _ = fs::remove_dir_all(p);
}
