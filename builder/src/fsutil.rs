//! Path handling inside a rootfs the build does not trust.
//!
//! The merged rootfs of a step is an ordinary directory on the host; a symlink in
//! the image (`/app -> /etc`) must resolve inside it, never to the host's /etc.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Normalise an absolute container path lexically (`/a/./b/../c` → `/a/c`); `..`
/// at the root stays at the root, as in the kernel.
pub fn clean_abs(p: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Join a possibly relative container path onto the working directory.
pub fn container_path(workdir: &str, p: &str) -> PathBuf {
    if p.starts_with('/') {
        clean_abs(p)
    } else {
        let wd = if workdir.is_empty() { "/" } else { workdir };
        clean_abs(&format!("{wd}/{p}"))
    }
}

/// Resolve a container path to a host path under `root`, following symlinks of
/// existing components as the container would see them (absolute targets are
/// relative to `root`, `..` never climbs above it). The last component is followed
/// too when `follow_last`. Missing components are appended as they are.
pub fn resolve_in_root(root: &Path, path: &Path, follow_last: bool) -> Result<PathBuf> {
    let mut resolved = PathBuf::new(); // relative to root
    let mut pending: Vec<std::ffi::OsString> =
        path.components().filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        }).rev().collect();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&name);
        let is_last = pending.is_empty();
        let host = root.join(&candidate);
        match std::fs::symlink_metadata(&host) {
            Ok(md) if md.file_type().is_symlink() && (!is_last || follow_last) => {
                links += 1;
                if links > 40 {
                    bail!("too many levels of symbolic links resolving {}", path.display());
                }
                let target = std::fs::read_link(&host).with_context(|| format!("reading link {}", host.display()))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

/// `mkdir -p` of `path` inside `root`: symlinks along it are followed inside the
/// root (as a chroot at `root` would), missing directories are created with
/// `mode` and, when given and not 0:0, chowned to `owner`. Returns the host path.
pub fn mkdir_in_root(root: &Path, path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let host = resolve_in_root(root, &Path::new("/").join(path), true)?;
    let rel = host.strip_prefix(root).context("path resolved outside the root")?.to_path_buf();
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => bail!("cannot create directory {}: a file is in the way", path.display()),
            Err(_) => {
                std::fs::create_dir(&cur).with_context(|| format!("creating directory {}", path.display()))?;
                std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(mode))?;
                if let Some((uid, gid)) = owner.filter(|o| *o != (0, 0)) {
                    nix::unistd::chown(&cur, Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(gid)))
                        .with_context(|| format!("chown {uid}:{gid} {}", path.display()))?;
                }
            }
        }
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_paths() {
        assert_eq!(clean_abs("/a/./b/../c/"), PathBuf::from("/a/c"));
        assert_eq!(clean_abs("/../.."), PathBuf::from("/"));
        assert_eq!(container_path("/app", "./x"), PathBuf::from("/app/x"));
        assert_eq!(container_path("", "x"), PathBuf::from("/x"));
        assert_eq!(container_path("/app", "/y"), PathBuf::from("/y"));
    }

    #[test]
    fn symlinks_resolve_inside_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("real/up")).unwrap();
        assert_eq!(resolve_in_root(root, Path::new("/abs/dir/f"), true).unwrap(), root.join("real/dir/f"));
        assert_eq!(resolve_in_root(root, Path::new("/real/up/passwd"), true).unwrap(), root.join("etc/passwd"));
        assert_eq!(resolve_in_root(root, Path::new("/abs"), false).unwrap(), root.join("abs"));
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert!(resolve_in_root(root, Path::new("/loop/x"), true).is_err());
    }
}

/// Gives `p` (not following a symlink) the modification time of `md`, as access
/// and modification time (a copy made to look like its source).
pub(crate) fn set_times_from(p: &Path, md: &std::fs::Metadata) -> Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use std::os::unix::fs::MetadataExt;
    let t = nix::sys::time::TimeSpec::new(md.mtime(), md.mtime_nsec());
    utimensat(nix::fcntl::AT_FDCWD, p, &t, &t, UtimensatFlags::NoFollowSymlink).with_context(|| format!("setting times of {}", p.display()))
}

pub(crate) fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Largest Dockerfile or `.dockerignore` read (real ones are kilobytes; a device or
/// an endless file must fail, not fill memory).
pub const MAX_BUILD_FILE: u64 = 16 << 20;

/// The bytes of a build file (`what`: "Dockerfile", ".dockerignore"): a regular file
/// (after symlinks) of at most [`MAX_BUILD_FILE`] bytes, else an error naming it.
pub fn read_build_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let md = std::fs::metadata(path).with_context(|| format!("reading {what} {}", path.display()))?;
    let ft = md.file_type();
    if !ft.is_file() {
        use std::os::unix::fs::FileTypeExt as _;
        let kind = if ft.is_dir() {
            "a directory"
        } else if ft.is_char_device() || ft.is_block_device() {
            "a device"
        } else if ft.is_fifo() {
            "a pipe"
        } else {
            "not a file"
        };
        anyhow::bail!("{what} {}: is {kind}, not a regular file", path.display());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_BUILD_FILE + 1).read_to_end(&mut bytes))
        .with_context(|| format!("reading {what} {}", path.display()))?;
    if bytes.len() as u64 > MAX_BUILD_FILE {
        anyhow::bail!("{what} {}: larger than {} MiB", path.display(), MAX_BUILD_FILE >> 20);
    }
    Ok(bytes)
}

/// A build file's bytes as text; invalid UTF-8 is an error naming `file:line:col`.
pub fn build_file_text(bytes: Vec<u8>, path: &Path) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..at];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let col = at - before.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1) + 1;
        anyhow::anyhow!("{}:{line}:{col}: invalid UTF-8 (a Dockerfile is UTF-8 text)", path.display())
    })
}

/// [`read_build_file`] then [`build_file_text`]: the Dockerfile's text.
pub fn read_dockerfile(path: &Path) -> Result<String> {
    build_file_text(read_build_file(path, "Dockerfile")?, path)
}

#[cfg(test)]
mod build_file_tests {
    use super::*;

    #[test]
    fn devices_dirs_and_bad_utf8_are_refused_by_name() {
        let e = read_dockerfile(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("/dev/zero: is a device, not a regular file"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let e = read_build_file(d.path(), ".dockerignore").unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let link = d.path().join("Dockerfile");
        std::os::unix::fs::symlink("/dev/urandom", &link).unwrap();
        assert!(read_dockerfile(&link).unwrap_err().to_string().contains("is a device"));
        let bad = d.path().join("bad");
        std::fs::write(&bad, b"FROM scratch\nLABEL a=\"x\xffy\"\n").unwrap();
        let e = read_dockerfile(&bad).unwrap_err().to_string();
        assert!(e.ends_with(":2:11: invalid UTF-8 (a Dockerfile is UTF-8 text)"), "{e}");
    }
}

/// The process id in a scratch name made as `WHAT-<pid>-<n>` (`run-12-3.json`,
/// `kiln-secrets-12-3`): its first all-digit `-`-separated word.
fn owner_pid(name: &str) -> Option<i32> {
    name.split('-').find(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit())).and_then(|w| w.parse().ok())
}

/// Removes the entries of `dir` whose names start with one of `prefixes` and carry
/// the id of a process that no longer exists: what a killed build left (spec files,
/// staged secrets, context views). A live process's entries stay, also those of a
/// concurrent build in another state directory. Returns the bytes removed.
pub(crate) fn remove_leftovers_of_dead(dir: &Path, prefixes: &[&str]) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    let mut freed = 0;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !prefixes.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let Some(pid) = owner_pid(&name) else { continue };
        // SAFETY: signal 0 only checks that the process exists.
        let dead = unsafe { libc::kill(pid, 0) } != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if dead {
            freed += disk_usage(&e.path());
            kiln_snapshotter::snapshots::remove_tree(&e.path());
        }
    }
    freed
}

/// What killed builds left: their spec files and context views in `scratch`
/// (`$KILN_ROOT/tmp`), their staged secrets in memory. A live build's stay.
pub(crate) fn remove_dead_builds_scratch(scratch: &Path) {
    remove_leftovers_of_dead(scratch, &["run-", "staged-", "context-view-", "kiln-"]);
    remove_leftovers_of_dead(Path::new(SECRETS_DIR), &[SECRETS_PREFIX]);
}

/// Bytes of the regular files at and below `p` (symlinks not followed).
pub(crate) fn disk_usage(p: &Path) -> u64 {
    let Ok(md) = std::fs::symlink_metadata(p) else { return 0 };
    if !md.is_dir() {
        return if md.is_file() { md.len() } else { 0 };
    }
    std::fs::read_dir(p).map(|rd| rd.flatten().map(|e| disk_usage(&e.path())).sum()).unwrap_or(0)
}

/// Where RUN steps' secrets are staged (memory, not disk), and the prefix of their
/// directories there.
pub(crate) const SECRETS_DIR: &str = "/dev/shm";
pub(crate) const SECRETS_PREFIX: &str = "kiln-secrets-";

#[cfg(test)]
mod leftover_tests {
    use super::*;

    #[test]
    fn only_a_dead_process_s_leftovers_are_removed() {
        assert_eq!(owner_pid("run-123-4.json"), Some(123));
        assert_eq!(owner_pid("kiln-secrets-77-0"), Some(77));
        assert_eq!(owner_pid("notes"), None);
        let t = tempfile::tempdir().unwrap();
        // A pid that cannot exist (above pid_max) and ours.
        let dead = t.path().join("run-99999999-1.json");
        let live = t.path().join(format!("run-{}-1.json", std::process::id()));
        let dead_dir = t.path().join("kiln-secrets-99999999-2");
        std::fs::write(&dead, "{}").unwrap();
        std::fs::write(&live, "{}").unwrap();
        std::fs::create_dir(&dead_dir).unwrap();
        std::fs::write(dead_dir.join("s"), "secret").unwrap();
        std::fs::write(t.path().join("other-99999999"), "x").unwrap();
        let freed = remove_leftovers_of_dead(t.path(), &["run-", "kiln-secrets-"]);
        assert_eq!(freed, 8);
        assert!(!dead.exists() && !dead_dir.exists());
        assert!(live.exists() && t.path().join("other-99999999").exists());
    }
}
