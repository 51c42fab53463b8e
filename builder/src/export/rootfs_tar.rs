//! `--output type=tar` (and `-o -`): the final root filesystem as one tar, as
//! BuildKit's tar exporter writes it — the files of the image, not an image. Several
//! platforms go into one directory each (`linux_amd64/…`).
//!
//! Entries are written sorted, with numeric owners as the image has them (the build
//! runs as root of its user namespace, so the ids on disk are the image's), and
//! hard links kept as links to the first name seen.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};
use kiln_snapshotter::snapshots::ActiveSnapshot;

/// Writes the tar of `roots` to `dest` (`-`: stdout), replacing a file only once complete.
pub fn write(dest: &Path, roots: &[(Option<String>, ActiveSnapshot)]) -> Result<()> {
    super::write_output(dest, |w| write_to(w, roots)).with_context(|| format!("writing {}", dest.display()))?;
    if dest.as_os_str() != "-" {
        crate::progress::get().info("output", &format!("wrote rootfs tar {}", dest.display()));
    }
    Ok(())
}

fn write_to<W: Write>(w: W, roots: &[(Option<String>, ActiveSnapshot)]) -> Result<()> {
    let mut tar = tar::Builder::new(w);
    tar.mode(tar::HeaderMode::Complete);
    tar.follow_symlinks(false);
    for (prefix, snap) in roots {
        let root = snap.merged();
        let mut links: HashMap<(u64, u64), String> = HashMap::new();
        if let Some(p) = prefix {
            tar.append_path_with_name(root, p).with_context(|| format!("adding {p}"))?;
        }
        walk(&mut tar, root, root, prefix.as_deref(), &mut links)?;
    }
    tar.into_inner()?;
    Ok(())
}

fn walk<W: Write>(tar: &mut tar::Builder<W>, root: &Path, dir: &Path, prefix: Option<&str>, links: &mut HashMap<(u64, u64), String>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path.strip_prefix(root).context("a path outside the rootfs")?;
        let name = match prefix {
            Some(p) => format!("{p}/{}", rel.display()),
            None => rel.display().to_string(),
        };
        let md = std::fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        if md.is_file() && md.nlink() > 1 {
            if let Some(first) = links.get(&(md.dev(), md.ino())) {
                let mut h = tar::Header::new_gnu();
                h.set_metadata_in_mode(&md, tar::HeaderMode::Complete);
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                tar.append_link(&mut h, &name, first).with_context(|| format!("adding {name}"))?;
                continue;
            }
            links.insert((md.dev(), md.ino()), name.clone());
        }
        tar.append_path_with_name(&path, &name).with_context(|| format!("adding {name}"))?;
        if md.is_dir() {
            walk(tar, root, &path, prefix, links)?;
        }
    }
    Ok(())
}
