//! The build context as a directory that holds only what `.dockerignore` lets in:
//! what `RUN --mount=type=bind` (no `from=`) shows a step.
//!
//! BuildKit sends a filtered context to its solver, so an ignored `.env` or key is
//! never visible to any step. kiln reads the context in place for COPY (through
//! `select::Selector`, which applies the ignore list), but a bind mount hands the
//! kernel a directory: that directory must already be filtered. The view is made
//! once per build, only when the ignore list is not empty, from hard links (the
//! same inodes, no bytes copied) where the file system allows them and copies
//! (mode and mtime kept) where it does not.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::dockerignore::Matcher;
use super::select::{EntryKind, Selector};

/// A filtered copy of the context, removed when dropped.
#[derive(Debug)]
pub struct ContextView {
    dir: PathBuf,
}

impl ContextView {
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Fills `dir` (which must not exist) with the entries of `context` that
    /// `ignore` keeps. Sockets, fifos and devices are left out, as BuildKit's
    /// context transfer leaves them out.
    pub fn make(context: &Path, ignore: &Matcher, dir: PathBuf) -> Result<ContextView> {
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let view = ContextView { dir };
        let mut entries = Vec::new();
        Selector::new(context, ignore).walk("", &mut entries, false)?;
        let mut dirs = vec![(view.dir.clone(), fs::metadata(context)?)];
        for e in &entries {
            let from = context.join(&e.path);
            let to = view.dir.join(&e.path);
            match e.kind {
                EntryKind::Dir => {
                    fs::create_dir(&to).with_context(|| format!("creating {}", to.display()))?;
                    dirs.push((to, fs::symlink_metadata(&from)?));
                }
                EntryKind::File => link_or_copy(&from, &to)?,
                EntryKind::Symlink => {
                    let target = e.link.as_deref().context("a symlink without a target")?;
                    std::os::unix::fs::symlink(target, &to).with_context(|| format!("creating {}", to.display()))?;
                }
                _ => {}
            }
        }
        // Modes and times of directories last (their entries changed their mtime),
        // children before parents.
        for (d, md) in dirs.iter().rev() {
            fs::set_permissions(d, fs::Permissions::from_mode(md.mode() & 0o7777))?;
            crate::fsutil::set_times_from(d, md)?;
        }
        Ok(view)
    }
}

impl Drop for ContextView {
    fn drop(&mut self) {
        // A read-only directory of the context keeps its mode here: remove_tree
        // opens such directories up.
        kiln_snapshotter::snapshots::remove_tree(&self.dir);
    }
}

fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    // Another file system, or protected_hardlinks refused a file the user does not
    // own: a copy with the same mode and times.
    fs::copy(from, to).with_context(|| format!("copying {} into the context view", from.display()))?;
    crate::fsutil::set_times_from(to, &fs::metadata(from)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_holds_what_the_ignore_list_keeps() {
        let t = tempfile::tempdir().unwrap();
        let ctx = t.path().join("ctx");
        fs::create_dir_all(ctx.join("src/keep")).unwrap();
        fs::create_dir_all(ctx.join("secrets")).unwrap();
        fs::write(ctx.join(".env"), "TOKEN=1").unwrap();
        fs::write(ctx.join("app.py"), "print(1)").unwrap();
        fs::write(ctx.join("src/keep/a.txt"), "a").unwrap();
        fs::write(ctx.join("src/b.key"), "k").unwrap();
        fs::write(ctx.join("secrets/id_rsa"), "k").unwrap();
        fs::write(ctx.join("secrets/README"), "r").unwrap();
        std::os::unix::fs::symlink("app.py", ctx.join("link")).unwrap();
        fs::set_permissions(ctx.join("app.py"), fs::Permissions::from_mode(0o751)).unwrap();
        let ignore = Matcher::new(&[".env", "**/*.key", "secrets", "!secrets/README"]).unwrap();
        let dir = t.path().join("view");
        let view = ContextView::make(&ctx, &ignore, dir.clone()).unwrap();
        let mut seen = Vec::new();
        for e in walk(view.path()) {
            seen.push(e);
        }
        assert_eq!(seen, ["app.py", "link", "secrets", "secrets/README", "src", "src/keep", "src/keep/a.txt"]);
        assert_eq!(fs::read_link(dir.join("link")).unwrap(), Path::new("app.py"));
        assert_eq!(fs::metadata(dir.join("app.py")).unwrap().mode() & 0o7777, 0o751);
        assert_eq!(fs::metadata(dir.join("src")).unwrap().mtime(), fs::metadata(ctx.join("src")).unwrap().mtime());
        drop(view);
        assert!(!dir.exists(), "the view outlived its build");
    }

    fn walk(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            for e in fs::read_dir(root.join(&rel)).unwrap() {
                let e = e.unwrap();
                let r = rel.join(e.file_name());
                if e.file_type().unwrap().is_dir() {
                    stack.push(r.clone());
                }
                out.push(r.to_string_lossy().into_owned());
            }
        }
        out.sort();
        out
    }
}
