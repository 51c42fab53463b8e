//! COPY (and, for now, local ADD) into a step's rootfs.
//!
//! Docker's rules kept here: a directory source copies its *contents*; a destination
//! ending in `/` (or several sources, or an existing directory) is a directory; file
//! modes and mtimes come from the context, ownership is 0:0 unless `--chown`;
//! symlinks are copied as symlinks, never followed; missing parent directories are
//! created 0755 root-owned.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::unistd::{chown, Gid, Uid};

use crate::context::dockerignore::Matcher;
use crate::context::select::{Entry, EntryKind, Selector};
use crate::fsutil::{container_path, resolve_in_root};
use crate::image::Owner;

pub struct CopyRequest<'a> {
    pub context: &'a Path,
    pub sources: &'a [String],
    pub dest: &'a str,
    pub workdir: &'a str,
    pub owner: Option<Owner>,
    pub chmod: Option<&'a kiln_frontend::ModeSpec>,
    /// `--parents`: keep each source's path below the context under the destination.
    pub parents: bool,
    /// `.dockerignore` of the build context (paths relative to `context`).
    pub ignore: Option<&'a Matcher>,
    /// `--exclude` patterns (paths relative to each source, as BuildKit applies them).
    pub exclude: Option<&'a Matcher>,
    /// The destination is a directory even with one source (heredocs alongside).
    pub dest_is_dir: bool,
    /// ADD: local tar archives (any compression) are extracted into the destination.
    pub unpack_archives: bool,
    /// `--chown` as given (None without it): extracted archive entries get it.
    pub archive_owner: Option<Owner>,
}

impl<'a> CopyRequest<'a> {
    /// Copy everything in `dir` into `dest` (a directory), owned by `owner` (None:
    /// keep the owners), nothing excluded, no archive unpacking.
    pub fn whole_dir(dir: &'a Path, sources: &'a [String], dest: &'a str, owner: Option<Owner>) -> Self {
        CopyRequest {
            context: dir,
            sources,
            dest,
            workdir: "/",
            owner,
            chmod: None,
            parents: false,
            ignore: None,
            exclude: None,
            dest_is_dir: true,
            unpack_archives: false,
            archive_owner: None,
        }
    }
}

impl CopyRequest<'_> {
    /// Whether a path is left out: by `.dockerignore` (`rel`: relative to the
    /// context) or by `--exclude` (`in_src`: relative to the source being copied).
    fn excluded(&self, rel: &str, in_src: &str) -> bool {
        self.ignore.is_some_and(|m| m.matches(rel, false))
            || (!in_src.is_empty() && self.exclude.is_some_and(|m| m.matches(in_src, false)))
    }

    fn rel(&self, p: &Path) -> String {
        p.strip_prefix(self.context).map(|r| r.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

/// Copy into the rootfs at `root`; returns the number of entries written.
pub fn copy_into(root: &Path, req: &CopyRequest<'_>) -> Result<u64> {
    // Matches are reported relative to a canonical root.
    let context = req.context.canonicalize().with_context(|| format!("reading {}", req.context.display()))?;
    let req = CopyRequest { context: &context, ..*req };
    HARDLINKS.with(|h| h.borrow_mut().clear());
    let r = copy_into_inner(root, &req);
    HARDLINKS.with(|h| h.borrow_mut().clear());
    r
}

fn copy_into_inner(root: &Path, req: &CopyRequest<'_>) -> Result<u64> {
    if req.sources.is_empty() {
        bail!("COPY needs at least one source");
    }
    let dest = container_path(req.workdir, req.dest);
    let dest_is_dir = req.dest_is_dir || req.parents || req.dest.ends_with('/') || req.sources.len() > 1 || {
        let host = resolve_in_root(root, &dest, true)?;
        host.is_dir()
    };
    if req.parents {
        return copy_parents(root, &dest, req);
    }
    let no_ignore = Matcher::empty();
    let sel = Selector::new(req.context, req.ignore.unwrap_or(&no_ignore)).allow_empty_wildcard(true);
    let mut written = 0;
    for src in req.sources {
        let literal = !src.contains(['*', '?', '[']);
        for (m, entries) in sel.list(src)? {
            let name = m.path.rsplit('/').next().unwrap_or_default();
            // `--exclude` applies below each source; a file source is matched by its name.
            if !m.is_dir && !m.path.is_empty() && req.exclude.is_some_and(|x| x.matches(name, false)) {
                if literal {
                    bail!("COPY source {src:?} not found in the build context (excluded by --exclude)");
                }
                continue;
            }
            // A symlink named as a source was followed by the selector (a dangling one
            // is the link itself); the copy keeps the name it was given.
            let content_src = sel.host(&m.resolved);
            let md = fs::symlink_metadata(&content_src).with_context(|| format!("COPY source {src:?}"))?;
            if req.unpack_archives && md.is_file() {
                if let Some(reader) = crate::steps::archive::open_decompressed(&content_src)? {
                    mkdir_p_as(root, &dest, req.owner)?;
                    let host_dest = resolve_in_root(root, &dest, true)?;
                    let opts = crate::steps::archive::ExtractOptions {
                        owner: req.archive_owner.map(|o| (o.uid, o.gid)),
                        ..Default::default()
                    };
                    crate::steps::archive::extract_into_with(reader, &host_dest, root, &opts)
                        .with_context(|| format!("extracting {src:?} into {}", dest.display()))?;
                    written += 1;
                    continue;
                }
            }
            let target = if md.is_dir() || !dest_is_dir {
                dest.clone()
            } else if name.is_empty() {
                bail!("COPY source {src:?} has no file name")
            } else {
                dest.join(name)
            };
            ensure_parents(root, &target, req)?;
            if md.is_dir() {
                let host_dir = resolve_in_root(root, &target, true)?;
                if !host_dir.exists() {
                    // BuildKit copies a directory's *contents*: the destination it
                    // creates is 0755 (or --chmod's mode), owned by --chown's owner or
                    // root, never the source directory's owner (fsutil MkdirAll).
                    fs::create_dir(&host_dir).with_context(|| format!("creating {}", target.display()))?;
                    let o = req.owner.unwrap_or_default();
                    chown(&host_dir, Some(Uid::from_raw(o.uid)), Some(Gid::from_raw(o.gid)))
                        .with_context(|| format!("chown {}:{} {}", o.uid, o.gid, target.display()))?;
                    fs::set_permissions(&host_dir, fs::Permissions::from_mode(created_dir_mode(req)))?;
                    crate::fsutil::set_times_from(&host_dir, &md)?;
                }
                written += copy_entries(&sel, &m.resolved, &entries[1..], root, &target, req)?;
            } else {
                written += copy_entry(&content_src, &md, root, &target, req)?;
            }
        }
    }
    Ok(written)
}

/// `COPY --parents` (see `crate::steps::parents`): for each source, the contents of its
/// directory before the `/./` pivot that its pattern keeps, under `dest` with their
/// paths; directories on the way are made with their source's metadata.
fn copy_parents(root: &Path, dest: &Path, req: &CopyRequest<'_>) -> Result<u64> {
    use crate::steps::parents::{select, ParentsSource};
    let no_ignore = Matcher::empty();
    let sel = Selector::new(req.context, req.ignore.unwrap_or(&no_ignore)).allow_empty_wildcard(true);
    // BuildKit creates the destination even when nothing matches.
    mkdir_p_mode(root, dest, req.owner, created_dir_mode(req))?;
    let mut written = 0;
    for src in req.sources {
        let ps = ParentsSource::parse(src);
        if let Some(required) = ps.required() {
            let host = resolve_in_root(req.context, &Path::new("/").join(&required), true)?;
            if fs::symlink_metadata(&host).is_err() {
                bail!("COPY source {src:?} not found in the build context");
            }
        }
        let dirs = if ps.dir.is_empty() {
            vec![req.context.to_path_buf()]
        } else {
            sel.resolve(&ps.dir)?.into_iter().filter(|m| m.is_dir).map(|m| sel.host(&m.resolved)).collect()
        };
        let pattern = Matcher::new(&[ps.pattern.as_str()]).with_context(|| format!("COPY --parents source {src:?}"))?;
        // The directory named before the pivot was followed if it is a symlink.
        for dir in dirs {
            let mut made: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
            // Directory metadata goes on last (children would move their mtimes).
            let mut dirs_made: Vec<(PathBuf, PathBuf)> = Vec::new();
            for (rel, host) in select(&dir, &pattern).with_context(|| format!("COPY --parents source {src:?}"))? {
                let ctx_rel = req.rel(&host);
                if req.excluded(&ctx_rel, &rel) {
                    continue;
                }
                // Parents of the entry, top down, with their own metadata.
                let comps: Vec<&str> = rel.split('/').collect();
                for i in 1..comps.len() {
                    let a = comps[..i].join("/");
                    if made.insert(a.clone()) {
                        dirs_made.push((make_dir(root, &dest.join(&a), true)?, dir.join(&a)));
                        written += 1;
                    }
                }
                let md = fs::symlink_metadata(&host)?;
                if md.is_dir() {
                    if made.insert(rel.clone()) {
                        dirs_made.push((make_dir(root, &dest.join(&rel), true)?, host.clone()));
                        written += 1;
                    }
                } else {
                    written += copy_entry(&host, &md, root, &dest.join(&rel), req)?;
                }
            }
            for (made_at, like) in dirs_made.iter().rev() {
                set_meta(made_at, &fs::symlink_metadata(like)?, req.owner, req.chmod)?;
            }
        }
    }
    Ok(written)
}

/// A directory at `target` (created, or replacing a non-directory); its host path.
/// `follow`: whether a symlink as the last component is followed (inside the root).
fn make_dir(root: &Path, target: &Path, follow: bool) -> Result<PathBuf> {
    let host = resolve_in_root(root, target, follow)?;
    match fs::symlink_metadata(&host) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            fs::remove_file(&host)?;
            fs::create_dir(&host)?;
        }
        Err(_) => fs::create_dir(&host).with_context(|| format!("creating {}", target.display()))?,
    }
    Ok(host)
}

/// Create missing parents of `target`: 0755, owned like the copied files (BuildKit
/// gives `--chown`'s owner to the directories a COPY creates), else root.
fn ensure_parents(root: &Path, target: &Path, req: &CopyRequest<'_>) -> Result<()> {
    if let Some(parent) = target.parent() {
        let host = resolve_in_root(root, parent, true)?;
        if !host.is_dir() {
            mkdir_p_mode(root, parent, req.owner, created_dir_mode(req))?;
        }
    }
    Ok(())
}

/// The mode of directories a COPY creates on the way to its destination: 0755, or
/// the `--chmod` mode (fsutil's copy makes its destination path with `perm =
/// *Mode` when one is given).
fn created_dir_mode(req: &CopyRequest<'_>) -> u32 {
    req.chmod.map(|c| c.apply(0o755, true)).unwrap_or(0o755)
}

/// `mkdir -p` of a container path. Existing symlinks along it are followed inside
/// the root first, so the directories are created where the container would see them.
/// The directories it creates go to `owner` (root when None).
pub fn mkdir_p_as(root: &Path, path: &Path, owner: Option<Owner>) -> Result<()> {
    mkdir_p_mode(root, path, owner, 0o755)
}

/// [`mkdir_p_as`] with the mode of the directories it creates.
pub fn mkdir_p_mode(root: &Path, path: &Path, owner: Option<Owner>, mode: u32) -> Result<()> {
    crate::fsutil::mkdir_in_root(root, path, mode, owner.map(|o| (o.uid, o.gid))).map(|_| ())
}

/// Copy the entries the selector listed below the directory `base` (relative to
/// the source root) into `dest`, leaving out what `--exclude` drops.
fn copy_entries(sel: &Selector<'_>, base: &str, entries: &[Entry], root: &Path, dest: &Path, req: &CopyRequest<'_>) -> Result<u64> {
    let under = |e: &Entry| -> String {
        let p = if base.is_empty() { e.path.as_str() } else { e.path.strip_prefix(base).unwrap_or(&e.path) };
        p.trim_start_matches('/').to_string()
    };
    let keep = kept_by_exclude(entries.iter().map(|e| (under(e), e.kind == EntryKind::Dir)), req.exclude);
    let mut n = 0;
    // Directory metadata goes on last (children would move their mtimes).
    let mut dirs = Vec::new();
    for (e, keep) in entries.iter().zip(keep) {
        if !keep {
            continue;
        }
        let src = sel.host(&e.path);
        let md = fs::symlink_metadata(&src).with_context(|| format!("reading {}", src.display()))?;
        let target = dest.join(under(e));
        if md.is_dir() {
            // The last component is not followed: a symlink there is replaced.
            dirs.push((make_dir(root, &target, false)?, md));
            n += 1;
        } else {
            n += copy_entry(&src, &md, root, &target, req)?;
        }
    }
    for (host, md) in dirs.iter().rev() {
        set_meta(host, md, req.owner, req.chmod)?;
    }
    Ok(n)
}

/// Which of a depth-first listing (paths relative to the copied directory, whether
/// each is a directory) `--exclude` keeps: an excluded directory stays only for
/// re-included entries below it, as BuildKit's fsutil walk keeps it.
fn kept_by_exclude(listing: impl Iterator<Item = (String, bool)>, exclude: Option<&Matcher>) -> Vec<bool> {
    let mut keep = Vec::new();
    // Directories above the current entry: (path, index in `keep`).
    let mut open: Vec<(String, usize)> = Vec::new();
    let mut pruned: Option<String> = None;
    for (path, is_dir) in listing {
        let i = keep.len();
        keep.push(false);
        let inside = |dir: &str| path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/');
        if pruned.as_deref().is_some_and(inside) {
            continue;
        }
        pruned = None;
        while open.last().is_some_and(|(d, _)| !inside(d)) {
            open.pop();
        }
        let Some(x) = exclude else {
            keep[i] = true;
            continue;
        };
        if !x.matches(&path, false) {
            keep[i] = true;
            for (_, j) in &open {
                keep[*j] = true;
            }
        } else if !(is_dir && (!x.matches(&path, true) || x.could_contain_included(&path))) {
            if is_dir {
                pruned = Some(path);
            }
            continue;
        }
        if is_dir {
            open.push((path, i));
        }
    }
    keep
}

fn copy_entry(src: &Path, md: &fs::Metadata, root: &Path, target: &Path, req: &CopyRequest<'_>) -> Result<u64> {
    // The parent is resolved inside the root; the last component is replaced, never followed.
    let parent = resolve_in_root(root, target.parent().unwrap_or(Path::new("/")), true)?;
    let host = parent.join(target.file_name().context("destination without a file name")?);
    if let Ok(existing) = fs::symlink_metadata(&host) {
        if existing.is_dir() {
            bail!("cannot copy {} over the directory {}", src.display(), target.display());
        }
        fs::remove_file(&host).with_context(|| format!("replacing {}", target.display()))?;
    }
    let ft = md.file_type();
    use std::os::unix::fs::FileTypeExt;
    if ft.is_file() && md.nlink() > 1 {
        // Names of one file stay one file, as BuildKit's copy keeps hard links.
        let first = HARDLINKS.with(|h| h.borrow().get(&(md.dev(), md.ino())).cloned());
        if let Some(first) = first {
            fs::hard_link(&first, &host).with_context(|| format!("linking {} to {}", target.display(), first.display()))?;
            return Ok(1);
        }
        HARDLINKS.with(|h| h.borrow_mut().insert((md.dev(), md.ino()), host.clone()));
    }
    if ft.is_symlink() {
        let link = fs::read_link(src)?;
        std::os::unix::fs::symlink(&link, &host).with_context(|| format!("creating symlink {}", target.display()))?;
        chown_nofollow(&host, owner_for(req.owner, md))?;
        crate::fsutil::set_times_from(&host, md)?;
    } else if ft.is_file() {
        fs::copy(src, &host).with_context(|| format!("copying {} to {}", src.display(), target.display()))?;
        set_meta(&host, md, req.owner, req.chmod)?;
    } else if ft.is_socket() {
        // BuildKit writes a socket as an empty regular file (testCopySocket).
        fs::File::create(&host).with_context(|| format!("creating {}", target.display()))?;
        set_meta(&host, md, req.owner, req.chmod)?;
    } else if ft.is_fifo() {
        nix::unistd::mkfifo(&host, nix::sys::stat::Mode::from_bits_truncate(md.mode() & 0o7777))
            .with_context(|| format!("creating the fifo {}", target.display()))?;
        set_meta(&host, md, req.owner, req.chmod)?;
    } else {
        // Device nodes cannot be made in a user namespace.
        crate::progress::get().info("copy", &format!("skipping {}: a device node", src.display()));
        return Ok(0);
    }
    Ok(1)
}

thread_local! {
    /// (dev, inode) of a multiply-linked source file → where this copy wrote it,
    /// for the copy under way on this thread (`copy_into` clears it).
    static HARDLINKS: std::cell::RefCell<std::collections::HashMap<(u64, u64), PathBuf>> = Default::default();
}

fn owner_for(owner: Option<Owner>, md: &fs::Metadata) -> Owner {
    owner.unwrap_or(Owner { uid: md.uid(), gid: md.gid() })
}

fn chown_nofollow(p: &Path, owner: Owner) -> Result<()> {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        p,
        Some(Uid::from_raw(owner.uid)),
        Some(Gid::from_raw(owner.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("chown {}:{} {}", owner.uid, owner.gid, p.display()))
}

fn set_meta(p: &Path, md: &fs::Metadata, owner: Option<Owner>, chmod: Option<&kiln_frontend::ModeSpec>) -> Result<()> {
    let owner = owner_for(owner, md);
    chown(p, Some(Uid::from_raw(owner.uid)), Some(Gid::from_raw(owner.gid)))
        .with_context(|| format!("chown {}:{} {}", owner.uid, owner.gid, p.display()))?;
    let mode = match chmod {
        Some(spec) => spec.apply(md.mode() & 0o7777, md.is_dir()),
        None => md.mode() & 0o7777,
    };
    fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
    crate::fsutil::set_times_from(p, md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_file_into_dir_and_contents_of_dir() {
        let ctx = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        fs::write(ctx.path().join("hello.txt"), "hi\n").unwrap();
        fs::create_dir_all(ctx.path().join("d/sub")).unwrap();
        fs::write(ctx.path().join("d/sub/x"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", ctx.path().join("d/link")).unwrap();
        let me = Owner { uid: nix::unistd::getuid().as_raw(), gid: nix::unistd::getgid().as_raw() };
        let req = CopyRequest { context: ctx.path(), sources: &["hello.txt".into()], dest: "./", workdir: "/app", owner: Some(me), chmod: None, parents: false, ignore: None, exclude: None, dest_is_dir: false, unpack_archives: false, archive_owner: None };
        copy_into(root.path(), &req).unwrap();
        assert_eq!(fs::read_to_string(root.path().join("app/hello.txt")).unwrap(), "hi\n");
        let req = CopyRequest { context: ctx.path(), sources: &["d".into()], dest: "/out", workdir: "/", owner: Some(me), chmod: None, parents: false, ignore: None, exclude: None, dest_is_dir: false, unpack_archives: false, archive_owner: None };
        copy_into(root.path(), &req).unwrap();
        assert_eq!(fs::read_to_string(root.path().join("out/sub/x")).unwrap(), "x");
        assert_eq!(fs::read_link(root.path().join("out/link")).unwrap(), PathBuf::from("/etc/passwd"));
        let req = CopyRequest { context: ctx.path(), sources: &["../etc/passwd".into()], dest: "/", workdir: "/", owner: Some(me), chmod: None, parents: false, ignore: None, exclude: None, dest_is_dir: false, unpack_archives: false, archive_owner: None };
        assert!(copy_into(root.path(), &req).is_err());
    }

    #[test]
    fn symlinked_destination_stays_in_root() {
        let ctx = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(ctx.path().join("f"), "f").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        let me = Owner { uid: nix::unistd::getuid().as_raw(), gid: nix::unistd::getgid().as_raw() };
        let req = CopyRequest { context: ctx.path(), sources: &["f".into()], dest: "/escape/", workdir: "/", owner: Some(me), chmod: None, parents: false, ignore: None, exclude: None, dest_is_dir: false, unpack_archives: false, archive_owner: None };
        copy_into(root.path(), &req).unwrap();
        assert!(fs::read_dir(outside.path()).unwrap().next().is_none(), "wrote outside the root");
        assert!(root.path().join(outside.path().strip_prefix("/").unwrap()).join("f").exists());
    }

    /// Every regular file, link and directory below `dir`, relative to it.
    fn tree_of(dir: &Path) -> std::collections::BTreeSet<String> {
        fn walk(base: &Path, dir: &Path, out: &mut std::collections::BTreeSet<String>) {
            let Ok(rd) = fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                let p = e.path();
                out.insert(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
                if fs::symlink_metadata(&p).unwrap().is_dir() {
                    walk(base, &p, out);
                }
            }
        }
        let mut out = Default::default();
        walk(dir, dir, &mut out);
        out
    }

    /// The cache key and the copy come from one resolver: for each row, what the
    /// selector lists is exactly what the copy writes, every copied file moves the
    /// key, and a context file the copy leaves out does not.
    #[test]
    fn cache_key_and_copy_see_the_same_files() {
        use crate::context::hasher::ContextHasher;
        let rows: &[(&[&str], &str)] = &[
            (&["src"], ""),
            (&["src"], "src/lib/gen.rs"),
            (&["src"], "src\n!src/lib/mod.rs"),
            (&["*.txt", "link.rs"], ""),
            (&["."], "secret.key\ndocs"),
            (&["*"], "*.md\nsrc/lib"),
            (&["s*"], "secret.key"),
            (&["src/*", "escape"], ""),
            (&["./src/../docs/", "c.md"], "**/gen.rs"),
        ];
        let me = Owner { uid: nix::unistd::getuid().as_raw(), gid: nix::unistd::getgid().as_raw() };
        for (sources, ignore) in rows {
            let t = crate::context::select::tests::tree();
            let ctx = t.path().canonicalize().unwrap();
            let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
            let matcher = Matcher::parse(ignore).unwrap();
            let mut hasher = ContextHasher::new(&ctx, Matcher::parse(ignore).unwrap(), None).unwrap();
            hasher.set_allow_empty_wildcard(true);
            // What the key covers, placed where the copy puts it.
            let mut listed = std::collections::BTreeSet::new();
            let mut files = Vec::new();
            for src in &sources {
                for (m, entries) in hasher.select().list(src).unwrap() {
                    let base = if m.is_dir { m.resolved.clone() } else { m.resolved.rsplit_once('/').map(|(p, _)| p.to_string()).unwrap_or_default() };
                    for e in if m.is_dir { &entries[1..] } else { &entries[..] } {
                        let under = e.path.strip_prefix(&base).unwrap_or(&e.path).trim_start_matches('/');
                        let placed = if m.is_dir { under.to_string() } else { m.path.rsplit('/').next().unwrap().to_string() };
                        listed.insert(placed);
                        if e.kind == EntryKind::File {
                            files.push(e.path.clone());
                        }
                    }
                }
            }
            let root = tempfile::tempdir().unwrap();
            let req = CopyRequest { context: &ctx, sources: &sources, dest: "/out/", workdir: "/", owner: Some(me), chmod: None, parents: false, ignore: Some(&matcher), exclude: None, dest_is_dir: true, unpack_archives: false, archive_owner: None };
            copy_into(root.path(), &req).unwrap();
            let copied = tree_of(&root.path().join("out"));
            assert_eq!(listed, copied, "sources {sources:?}, .dockerignore {ignore:?}");

            let key = hasher.digest_sources(&sources).unwrap();
            for f in &files {
                let before = fs::read(ctx.join(f)).unwrap();
                fs::write(ctx.join(f), b"changed").unwrap();
                assert_ne!(hasher.digest_sources(&sources).unwrap(), key, "{f} is copied by {sources:?} but not in its key");
                fs::write(ctx.join(f), before).unwrap();
            }
            for f in ["a.txt", "b.txt", "c.md", "src/main.rs", "src/lib/mod.rs", "src/lib/gen.rs", "docs/x.md", "secret.key"] {
                if files.iter().any(|x| x == f) {
                    continue;
                }
                fs::write(ctx.join(f), b"changed").unwrap();
                assert_eq!(hasher.digest_sources(&sources).unwrap(), key, "{f} is not copied by {sources:?} but moves its key");
            }
        }
    }
}
