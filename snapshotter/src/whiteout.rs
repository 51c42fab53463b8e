//! Whiteout naming: the OCI/AUFS tar convention versus overlayfs on disk.
//!
//! In a layer tar, a deleted `NAME` is an empty file `.wh.NAME`, and a directory
//! whose lower contents are hidden carries an entry `DIR/.wh..wh..opq`. On disk, in
//! overlay format, a deleted name is a 0/0 character device and an opaque directory
//! has the `user.overlay.opaque=y` xattr.

/// Prefix of a whiteout entry name.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the opaque-directory marker entry.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// AUFS metadata names (`.wh..wh.plnk`, `.wh..wh.aufs`...): not files of the image.
pub const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

/// What a final path component means in a layer tar.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kind<'a> {
    /// An ordinary name.
    Normal,
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
    /// `.wh..wh.*` other than the opaque marker: AUFS bookkeeping, ignored.
    AufsMeta,
    /// `.wh.NAME`: NAME is deleted.
    Whiteout(&'a [u8]),
}

pub(crate) fn classify(name: &[u8]) -> Kind<'_> {
    if name == OPAQUE_MARKER {
        Kind::Opaque
    } else if name.starts_with(AUFS_META_PREFIX) {
        Kind::AufsMeta
    } else if let Some(rest) = name.strip_prefix(WHITEOUT_PREFIX) {
        Kind::Whiteout(rest)
    } else {
        Kind::Normal
    }
}

/// Is this lstat result an overlay whiteout (character device 0/0)?
pub(crate) fn is_overlay_whiteout(mode: u32, rdev: u64) -> bool {
    mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(classify(b"x"), Kind::Normal);
        assert_eq!(classify(b".wh..wh..opq"), Kind::Opaque);
        assert_eq!(classify(b".wh..wh.plnk"), Kind::AufsMeta);
        assert_eq!(classify(b".wh.foo"), Kind::Whiteout(b"foo"));
        assert_eq!(classify(b".whfoo"), Kind::Normal);
    }
}
