//! Unpacking the layers of a stack side by side (issue 18 part 1).
//!
//! A layer is unpacked knowing the layers below it (`apply.rs`) only because some
//! of its entries reach below: a parent directory the layer itself does not hold,
//! or a hard link to a file it does not hold. A layer with neither gives the same
//! directory whatever is below it, and is shared by diffID (`Applied::
//! depends_on_lowers` false). So every layer of a stack can be unpacked at once on
//! nothing, each on its own core: the self-contained ones are kept (exactly what
//! unpacking them in order would have made), and the others are thrown away and
//! unpacked in order on their lowers afterwards. Image layers made by `docker
//! build`, BuildKit, Buildah and kiln carry their parent directories, so in practice
//! only the rare layer that leans on a lower symlink or links to a lower file waits.

use std::fs;
use std::io::Read;
use std::path::PathBuf;

use kiln_oci::media::LayerCompression;
use kiln_oci::Digest;

use crate::apply::apply_layer_onto;
use crate::snapshots::{io_err, remove_tree, unique_name, SnapshotError, SnapshotStore};

impl SnapshotStore {
    /// Unpack the layer `reader` holds on nothing. `Some(dir)`: it is self-contained
    /// and now shared by diffID (or was already). `None`: it reaches below itself,
    /// or could not be unpacked alone (a hard link to a lower file); nothing is
    /// kept, and the caller unpacks it on its lowers, which reports any real error.
    /// A diffID that does not match is an error here too: nothing is kept.
    pub fn unpack_alone<R: Read>(&self, diff_id: &Digest, reader: R, compression: LayerCompression) -> Result<Option<PathBuf>, SnapshotError> {
        if let Some(p) = self.layer(diff_id) {
            return Ok(Some(p));
        }
        let tmp = self.root.join("active").join(format!("unpack-{}", unique_name()));
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        let applied = match apply_layer_onto(reader, compression, &tmp, &[]) {
            Ok(a) => a,
            Err(e) => {
                remove_tree(&tmp);
                tracing::debug!(layer = %diff_id, error = %e, "layer not unpacked alone");
                return Ok(None);
            }
        };
        if &applied.diff_id != diff_id {
            remove_tree(&tmp);
            return Err(SnapshotError::DiffIdMismatch { expected: diff_id.clone(), actual: applied.diff_id });
        }
        if applied.depends_on_lowers {
            remove_tree(&tmp);
            return Ok(None);
        }
        for note in applied.skipped.iter().take(20) {
            tracing::warn!("layer {}: {note}", diff_id.short());
        }
        self.install_at(&tmp, self.layer_dir(diff_id)).map(Some)
    }
}
