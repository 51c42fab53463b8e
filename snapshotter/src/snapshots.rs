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

use crate::apply::{apply_layer_onto, ApplyError};
use crate::{links, merged, native};
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

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io { path: path.to_path_buf(), source }
}

/// Which way a step's rootfs is made and diffed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotterKind {
    /// overlayfs mounted in the user namespace; the upperdir is the diff.
    Overlay,
    /// A copied rootfs and a walk-and-compare diff (works everywhere, costs a copy
    /// of the image per step).
    Native,
}

impl std::str::FromStr for SnapshotterKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "overlay" | "overlayfs" => Ok(SnapshotterKind::Overlay),
            "native" => Ok(SnapshotterKind::Native),
            o => Err(format!("unknown snapshotter {o:?} (expected overlay, native or auto)")),
        }
    }
}

pub struct SnapshotStore {
    pub(crate) root: PathBuf,
    empty: PathBuf,
    kind: SnapshotterKind,
    max_lowers: usize,
    /// The kind chosen by [`SnapshotStore::select`] (auto-detection runs once).
    selected: std::sync::OnceLock<SnapshotterKind>,
    /// Native rootfs kept for the next step of this build (removed on drop).
    kept: std::sync::Mutex<Vec<PathBuf>>,
}

impl Drop for SnapshotStore {
    fn drop(&mut self) {
        for p in self.kept.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default() {
            remove_tree(&p);
        }
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

pub(crate) fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), nanos)
}

/// A short key for a stack of layer directories (bottom first): their paths.
pub(crate) fn chain_key(lowers: &[PathBuf]) -> String {
    let mut h = kiln_oci::Sha256Writer::new(std::io::sink());
    for l in lowers {
        use std::io::Write;
        let _ = h.write_all(l.as_os_str().as_encoded_bytes());
        let _ = h.write_all(b"\n");
    }
    let (_, d, _) = h.finish();
    d.hex()[..16].to_string()
}

impl SnapshotStore {
    /// Open (creating) a store using overlayfs.
    pub fn open(root: &Path) -> Result<Self, SnapshotError> {
        Self::open_with(root, SnapshotterKind::Overlay)
    }

    pub fn open_with(root: &Path, kind: SnapshotterKind) -> Result<Self, SnapshotError> {
        for d in ["layers", "active", "empty", "flat"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(SnapshotStore {
            root: root.to_path_buf(),
            empty: root.join("empty"),
            kind,
            max_lowers: overlay::MAX_LOWERS,
            selected: std::sync::OnceLock::new(),
            kept: std::sync::Mutex::new(Vec::new()),
        })
    }

    pub fn kind(&self) -> SnapshotterKind {
        self.selected.get().copied().unwrap_or(self.kind)
    }

    /// Settle which snapshotter this store uses: `want` if given, else overlay if
    /// an overlay mount works here (probed once), else native. Returns the kind and,
    /// the first time auto-detection falls back, a one-line notice for the user.
    pub fn select(&self, want: Option<SnapshotterKind>) -> (SnapshotterKind, Option<String>) {
        if let Some(k) = self.selected.get() {
            return (*k, None);
        }
        let (kind, notice) = match want {
            Some(k) => (k, None),
            None => match self.probe_overlay() {
                Ok(()) => (SnapshotterKind::Overlay, None),
                Err(why) => (
                    SnapshotterKind::Native,
                    Some(format!(
                        "overlayfs is not available here ({why}); using the native snapshotter (copies the rootfs per step)"
                    )),
                ),
            },
        };
        match self.selected.set(kind) {
            Ok(()) => (kind, notice),
            // Another thread chose first: its choice stands.
            Err(_) => (self.selected.get().copied().unwrap_or(kind), None),
        }
    }

    /// At most this many lowerdirs are mounted; deeper stacks have their bottom
    /// layers flattened into one cached directory. (Default: overlay's limit, 500.)
    pub fn set_max_lowers(&mut self, n: usize) {
        self.max_lowers = n.max(2);
    }

    /// Can overlayfs be mounted here (in this user namespace)? Tries once, with a
    /// two-layer stack, and says why not.
    pub fn probe_overlay(&self) -> Result<(), String> {
        let dir = self.root.join("active").join(format!("probe-{}", unique_name()));
        let r = (|| -> Result<(), String> {
            let (l1, l2, u, w, m) = (dir.join("l1"), dir.join("l2"), dir.join("u"), dir.join("w"), dir.join("m"));
            for d in [&dir, &l1, &l2, &u, &w, &m] {
                fs::create_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
            }
            overlay::mount_overlay(&[l1, l2], &u, &w, &m).map_err(|e| e.to_string())?;
            let ok = fs::write(m.join("x"), b"x").map_err(|e| format!("writing through overlay: {e}"));
            overlay::unmount(&m).map_err(|e| e.to_string())?;
            ok
        })();
        remove_tree(&dir);
        r
    }

    pub(crate) fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// The unpacked directory of a layer, if present.
    pub fn layer(&self, diff_id: &Digest) -> Option<PathBuf> {
        let p = self.layer_dir(diff_id);
        p.is_dir().then_some(p)
    }

    /// The unpacked directory of a layer applied on `lowers`: the shared one when
    /// the layer does not depend on what is below it, else the one made for this
    /// stack.
    pub fn layer_on(&self, diff_id: &Digest, lowers: &[PathBuf]) -> Option<PathBuf> {
        self.layer(diff_id).or_else(|| {
            let p = self.root.join("layers").join(format!("{}-{}", diff_id.hex(), chain_key(lowers)));
            p.is_dir().then_some(p)
        })
    }

    /// Unpack a layer blob (unless already there) and return its directory. The
    /// diffID computed while unpacking must equal `diff_id`.
    pub fn unpack<R: Read>(&self, diff_id: &Digest, reader: R, compression: LayerCompression) -> Result<PathBuf, SnapshotError> {
        self.unpack_onto(diff_id, &[], reader, compression)
    }

    /// Unpack a layer that goes on top of `lowers` (bottom first): entries whose
    /// parent directories come from below (through a symlink such as
    /// `lib -> usr/lib`) and hardlinks to files below are resolved in the merged
    /// view, as Docker does. A layer that needed its lowers is kept for this stack
    /// only; a self-contained one is shared by diffID.
    pub fn unpack_onto<R: Read>(
        &self,
        diff_id: &Digest,
        lowers: &[PathBuf],
        reader: R,
        compression: LayerCompression,
    ) -> Result<PathBuf, SnapshotError> {
        if let Some(p) = self.layer_on(diff_id, lowers) {
            return Ok(p);
        }
        let tmp = self.root.join("active").join(format!("unpack-{}", unique_name()));
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        let applied = match apply_layer_onto(reader, compression, &tmp, lowers) {
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
        // What the layer asked for and could not get here (owners outside the id map,
        // privileges dropped with them): said once per layer, the first few by name.
        const SHOWN: usize = 20;
        for note in applied.skipped.iter().take(SHOWN) {
            tracing::warn!("layer {}: {note}", diff_id.short());
        }
        if applied.skipped.len() > SHOWN {
            tracing::warn!("layer {}: {} more such entries", diff_id.short(), applied.skipped.len() - SHOWN);
        }
        if applied.depends_on_lowers {
            let dest = self.root.join("layers").join(format!("{}-{}", diff_id.hex(), chain_key(lowers)));
            return self.install_at(&tmp, dest);
        }
        self.install(&tmp, diff_id)
    }

    /// Move a finished directory into place as the layer `diff_id`. If another build
    /// got there first, ours is discarded (the contents are the same by definition).
    fn install(&self, dir: &Path, diff_id: &Digest) -> Result<PathBuf, SnapshotError> {
        self.install_at(dir, self.layer_dir(diff_id))
    }

    pub(crate) fn install_at(&self, dir: &Path, dest: PathBuf) -> Result<PathBuf, SnapshotError> {
        match fs::rename(dir, &dest) {
            Ok(()) => Ok(dest),
            Err(_) if dest.is_dir() => {
                remove_tree(dir);
                Ok(dest)
            }
            Err(e) => Err(SnapshotError::Io { path: dest, source: e }),
        }
    }

    /// Keep the stack mountable: when there are more than `max_lowers` layers,
    /// merge the bottom ones into one directory under `flat/`, keyed by the layers
    /// it holds (so the next step on the same base reuses it).
    pub fn bounded_lowers(&self, lowers: &[PathBuf]) -> Result<Vec<PathBuf>, SnapshotError> {
        self.bounded_to(lowers, self.max_lowers)
    }

    fn bounded_to(&self, lowers: &[PathBuf], max: usize) -> Result<Vec<PathBuf>, SnapshotError> {
        if lowers.len() <= max {
            return Ok(lowers.to_vec());
        }
        let keep = max.max(2) - 1;
        let (bottom, top) = lowers.split_at(lowers.len() - keep);
        let dest = self.root.join("flat").join(chain_key(bottom));
        if !dest.is_dir() {
            let tmp = self.root.join("active").join(format!("flat-{}", unique_name()));
            fs::create_dir(&tmp).map_err(io_err(&tmp))?;
            if let Err(e) = merged::materialize(bottom, &tmp, merged::Fill::Copy) {
                remove_tree(&tmp);
                return Err(SnapshotError::Io { path: tmp, source: e });
            }
            self.install_at(&tmp, dest.clone())?;
        }
        let mut out = vec![dest];
        out.extend_from_slice(top);
        Ok(out)
    }

    /// `--squash`: the unpacked `layers` (bottom first) merged into one overlay-format
    /// directory that, placed on the layers below them, gives the same rootfs
    /// (whiteouts and opaque directories kept). The caller writes it as a layer with
    /// `diff::write_layer` and removes it with [`SnapshotStore::remove_scratch`].
    pub fn squash(&self, layers: &[PathBuf]) -> Result<PathBuf, SnapshotError> {
        let tmp = self.root.join("active").join(format!("squash-{}", unique_name()));
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        if let Err(e) = merged::materialize(layers, &tmp, merged::Fill::Squash) {
            remove_tree(&tmp);
            return Err(SnapshotError::Io { path: tmp, source: e });
        }
        Ok(tmp)
    }

    /// Removes a directory [`SnapshotStore::squash`] made.
    pub fn remove_scratch(&self, dir: &Path) {
        if dir.starts_with(self.root.join("active")) {
            remove_tree(dir);
        }
    }

    /// How many lowers (the top ones, plus one flattened dir) fit the legacy option
    /// string.
    fn layers_fitting_options(&self, lowers: &[PathBuf], upper: &Path, work: &Path) -> usize {
        let flat_len = self.root.join("flat").join("0123456789abcdef").as_os_str().len() + 1;
        let mut budget = overlay::MAX_OPTIONS
            .saturating_sub(upper.as_os_str().len() + work.as_os_str().len() + 64 + flat_len);
        let mut n = 1;
        for l in lowers.iter().rev() {
            let need = l.as_os_str().len() + 1;
            if need > budget {
                break;
            }
            budget -= need;
            n += 1;
        }
        n.max(2)
    }

    /// A writable rootfs over `lowers` (image order, bottom first), made the way
    /// this store's kind says.
    pub fn prepare(&self, lowers: &[PathBuf]) -> Result<ActiveSnapshot, SnapshotError> {
        let dir = self.root.join("active").join(unique_name());
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        match self.kind() {
            SnapshotterKind::Overlay => {
                for d in [&dir, &upper, &work, &merged] {
                    fs::create_dir(d).map_err(io_err(d))?;
                }
                let lowers = mount_stack(lowers);
                let lowers: Vec<PathBuf> =
                    if lowers.is_empty() { vec![self.empty.clone()] } else { self.bounded_lowers(&lowers)? };
                let mut lowers = lowers;
                if let Err(e) = overlay::mount_overlay_any(&lowers, &upper, &work, &merged) {
                    // No new mount API (kernel < 6.8) and too long for the option
                    // string: flatten until the rest fits in a page.
                    let fits = self.layers_fitting_options(&lowers, &upper, &work);
                    let retry = (fits < lowers.len()).then(|| self.bounded_to(&lowers, fits));
                    match retry {
                        Some(Ok(l)) if overlay::mount_overlay(&l, &upper, &work, &merged).is_ok() => lowers = l,
                        _ => {
                            remove_tree(&dir);
                            return Err(e.into());
                        }
                    }
                }
                Ok(ActiveSnapshot {
                    dir,
                    upper,
                    merged,
                    mounted: true,
                    stubs: Vec::new(),
                    native: None,
                    lowers,
                    diffed: false,
                })
            }
            SnapshotterKind::Native => {
                fs::create_dir(&dir).map_err(io_err(&dir))?;
                let r = if self.take_rootfs(lowers, &merged) {
                    native::Manifest::record(&merged, &dir)
                } else {
                    fs::create_dir(&merged)
                        .and_then(|()| merged::materialize(lowers, &merged, merged::Fill::Copy))
                        .and_then(|()| native::Manifest::record(&merged, &dir))
                };
                match r {
                    Ok(m) => Ok(ActiveSnapshot {
                        dir,
                        upper,
                        merged,
                        mounted: false,
                        stubs: Vec::new(),
                        native: Some(m),
                        lowers: lowers.to_vec(),
                        diffed: false,
                    }),
                    Err(e) => {
                        remove_tree(&dir);
                        Err(SnapshotError::Io { path: merged, source: e })
                    }
                }
            }
        }
    }

    /// Keep a finished step's diff (upperdir) as the layer `diff_id`.
    pub fn commit(&self, mut active: ActiveSnapshot, diff_id: &Digest) -> Result<PathBuf, SnapshotError> {
        active.diff()?;
        let upper = active.upper.clone();
        let path = self.install(&upper, diff_id)?;
        if active.native.is_some() {
            // The native rootfs now is the merged view of lowers + this layer: keep
            // it for the next step on that stack instead of copying it again.
            let mut stack = active.lowers.clone();
            stack.push(path.clone());
            self.keep_rootfs(&active.merged, &stack);
        }
        Ok(path)
    }

    fn rootfs_cache(&self, stack: &[PathBuf]) -> PathBuf {
        self.root.join("native").join(chain_key(stack))
    }

    fn keep_rootfs(&self, rootfs: &Path, stack: &[PathBuf]) {
        let dest = self.rootfs_cache(stack);
        if fs::create_dir_all(self.root.join("native")).is_ok() && fs::rename(rootfs, &dest).is_ok() {
            self.kept.lock().unwrap_or_else(|p| p.into_inner()).push(dest);
        }
    }

    /// A kept rootfs for exactly this stack, moved to `to` (single use).
    fn take_rootfs(&self, stack: &[PathBuf], to: &Path) -> bool {
        let from = self.rootfs_cache(stack);
        from.is_dir() && fs::rename(&from, to).is_ok()
    }
}

/// The lower directories to mount for a stack of layers (bottom first) that gives
/// the same tree as applying the layers in order.
///
/// Overlayfs refuses a stack in which one directory appears twice (ELOOP), yet a
/// stack repeats a directory whenever two steps make the same layer (two no-op RUNs,
/// the same COPY twice, the empty layers WORKDIR or a no-op step leave): layers are
/// shared by diffID. Decision (issue 12): keep only the top-most occurrence of each
/// directory, and leave out empty layers. Both are exact, not approximations:
/// - an empty layer directory contributes no entry to any lookup;
/// - for any path a repeated layer holds, the overlay lookup (top to bottom) reaches
///   its top-most occurrence first: a file or whiteout there ends the lookup, an
///   opaque directory hides everything below, and a merged directory gets from the
///   lower occurrence only names the top one already supplied (its children are
///   paths of the same layer, decided at the top occurrence again). So the lower
///   occurrence is never consulted for anything it could change.
/// The image keeps every layer (empty and repeated ones included, as BuildKit
/// writes them); only the mount is normalised.
pub fn mount_stack(lowers: &[PathBuf]) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    let mut top_first: Vec<PathBuf> = Vec::with_capacity(lowers.len());
    for l in lowers.iter().rev() {
        if !seen.insert(l.clone()) || is_empty_dir(l) {
            continue;
        }
        top_first.push(l.clone());
    }
    top_first.reverse();
    top_first
}

fn is_empty_dir(p: &Path) -> bool {
    fs::read_dir(p).map(|mut rd| rd.next().is_none()).unwrap_or(false)
}

/// A step's rootfs. Dropping it unmounts and deletes the scratch space.
pub struct ActiveSnapshot {
    dir: PathBuf,
    upper: PathBuf,
    merged: PathBuf,
    mounted: bool,
    stubs: Vec<Stub>,
    /// Native snapshots: the state of the rootfs before the step.
    native: Option<native::Manifest>,
    /// The (bounded) lower directories, top last.
    lowers: Vec<PathBuf>,
    diffed: bool,
}

/// A mount target created for a step (e.g. /etc/hosts missing from the image): it
/// must not reach the layer, and neither must the copy-up of its parents that
/// creating it caused.
struct Stub {
    rel: PathBuf,
    created_dirs: Vec<PathBuf>,
    /// Ancestors that existed below, with (mode, uid, gid) before the step, and
    /// (native) their mtime before and right after the stub was made.
    existing: Vec<(PathBuf, u32, u32, u32)>,
    parent_times: Option<(PathBuf, Time, Time)>,
}

/// (seconds, nanoseconds)
type Time = (i64, i64);

fn mtime_of(p: &Path) -> Option<Time> {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(p).ok().map(|m| (m.mtime(), m.mtime_nsec()))
}

impl ActiveSnapshot {
    /// The rootfs the step sees.
    pub fn merged(&self) -> &Path {
        &self.merged
    }
    /// Only what the step changed, in overlay format. For a native snapshot this
    /// is filled by [`ActiveSnapshot::diff`].
    pub fn upper(&self) -> &Path {
        &self.upper
    }
    pub fn is_native(&self) -> bool {
        self.native.is_some()
    }

    /// Finish the step and return the overlay-format directory of its changes,
    /// ready for `diff::write_layer`: overlay unmounts and repairs hardlinks that
    /// copy-up broke; native walks and compares. Idempotent.
    pub fn diff(&mut self) -> Result<&Path, SnapshotError> {
        self.unmount()?;
        if !self.diffed {
            match &self.native {
                Some(m) => {
                    fs::create_dir(&self.upper).map_err(io_err(&self.upper))?;
                    native::diff_into(&self.merged, m, &self.upper)
                        .map_err(|source| SnapshotError::Io { path: self.merged.clone(), source })?;
                }
                None => {
                    let lowers: Vec<&Path> = self.lowers.iter().rev().map(|p| p.as_path()).collect();
                    links::relink_copied_up(&self.upper, &lowers)
                        .map_err(|source| SnapshotError::Io { path: self.upper.clone(), source })?;
                }
            }
            self.diffed = true;
        }
        Ok(&self.upper)
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
        let mut stub = Stub { rel: rel.to_path_buf(), created_dirs: Vec::new(), existing: Vec::new(), parent_times: None };
        let mut anc = PathBuf::new();
        let comps: Vec<_> = rel.components().collect();
        let mut first_created_parent: Option<PathBuf> = None;
        for c in &comps[..comps.len().saturating_sub(1)] {
            let parent_of_this = anc.clone();
            anc.push(c);
            let p = self.merged.join(&anc);
            match fs::symlink_metadata(&p) {
                Ok(md) if md.is_dir() => stub.existing.push((anc.clone(), md.mode(), md.uid(), md.gid())),
                Ok(_) => return Ok(false), // a file or symlink in the way: leave it alone
                Err(_) => {
                    if first_created_parent.is_none() {
                        first_created_parent = Some(parent_of_this);
                    }
                    fs::create_dir(&p).map_err(io_err(&p))?;
                    stub.created_dirs.push(anc.clone());
                }
            }
        }
        // The directory whose mtime creating the stub moved: restored afterwards
        // (native), unless the step itself changed it too.
        let touched = first_created_parent.unwrap_or_else(|| rel.parent().map(Path::to_path_buf).unwrap_or_default());
        let before = mtime_of(&self.merged.join(&touched));
        if dir {
            fs::create_dir(&target).map_err(io_err(&target))?;
        } else {
            fs::File::create(&target).map_err(io_err(&target))?;
        }
        if let (Some(b), Some(a)) = (before, mtime_of(&self.merged.join(&touched))) {
            stub.parent_times = Some((touched, b, a));
        }
        self.stubs.push(stub);
        Ok(true)
    }

    /// After the step, take the stubs (and, for overlay, their parents' copy-ups)
    /// out of the diff, unless the step itself changed those parents.
    pub fn remove_stubs(&mut self) -> Result<(), SnapshotError> {
        if self.native.is_some() {
            return self.remove_stubs_native();
        }
        use std::os::unix::fs::MetadataExt;
        self.unmount()?;
        for stub in self.stubs.drain(..).rev() {
            remove_stub_paths(&self.upper, &stub);
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

    fn remove_stubs_native(&mut self) -> Result<(), SnapshotError> {
        for stub in self.stubs.drain(..).rev() {
            // Only undo the mtime change if the step did not change the directory too.
            let restore = stub
                .parent_times
                .as_ref()
                .filter(|(rel, _, after)| mtime_of(&self.merged.join(rel)) == Some(*after))
                .map(|(rel, before, _)| (self.merged.join(rel), *before));
            remove_stub_paths(&self.merged, &stub);
            if let Some((p, before)) = restore {
                crate::fsops::set_mtime(&p, before.0, before.1).map_err(io_err(&p))?;
            }
        }
        Ok(())
    }

    /// `rel` (a file, symlink or node, not a directory) was moved out of the rootfs
    /// and back by rename while the step ran (a `RUN --mount` target under chroot
    /// isolation): unchanged, though its ctime moved. Native snapshots then do not
    /// count it as changed; returns whether any recorded name matched.
    pub fn moved_back(&mut self, rel: &Path) -> Result<bool, SnapshotError> {
        let p = self.merged.join(rel);
        let md = fs::symlink_metadata(&p).map_err(io_err(&p))?;
        Ok(match &mut self.native {
            Some(m) if !md.is_dir() => m.moved_back(&md) > 0,
            _ => false,
        })
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

/// Remove a stub (an empty file, device node or empty directory: never something the
/// step filled) and the directories created for it, below `base`. Whatever the step
/// put there keeps its place (the removals fail).
fn remove_stub_paths(base: &Path, stub: &Stub) {
    let p = base.join(&stub.rel);
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
        let _ = fs::remove_dir(base.join(d));
    }
}

/// Best-effort recursive removal that also copes with the 000-mode dirs overlayfs
/// leaves in its workdir.
pub fn remove_tree(p: &Path) {
    match fs::symlink_metadata(p) {
        Err(_) => return,
        // A file or a symlink: remove_dir_all refuses those.
        Ok(md) if !md.is_dir() => {
            let _ = fs::remove_file(p);
            return;
        }
        Ok(_) => {}
    }
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
