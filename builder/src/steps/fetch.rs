//! Remote ADD sources: URL file names and git checkouts (HTTP downloads are in
//! `urlcache`).

use std::path::Path;

use anyhow::{bail, Context, Result};

/// An HTTP(S) URL source (downloaded; anything else that is remote is git).
pub fn is_http(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The file name ADD gives a URL source: the last path segment, as Docker does.
pub fn file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_host = path.splitn(4, '/').nth(3).unwrap_or("");
    // Go's path.Base of the URL path, as BuildKit names the file; a path with no
    // name (`/`, empty) gives BuildKit's `__unnamed__`.
    let name = after_host.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    if name.is_empty() || name == "." { "__unnamed__".to_string() } else { name.to_string() }
}

/// RFC 7231 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) → seconds since the epoch.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_dates() {
        assert_eq!(file_name("https://example.com/a/b/file.tar.gz?x=1"), "file.tar.gz");
        assert_eq!(file_name("http://example.com/"), "__unnamed__");
        assert_eq!(file_name("http://example.com"), "__unnamed__");
        assert_eq!(file_name("http://example.com/v2/"), "v2");
    }
}

/// `ADD <git URL>[#ref[:subdir]] DEST` and git build contexts: clone with the `git`
/// command (any transport it speaks), check out `ref` (branch, tag or commit) and
/// its submodules, keep only `subdir`, and drop `.git` unless `keep_git_dir`.
/// Returns the directory whose contents are the source. Errors say what failed;
/// the caller says which URL.
pub fn git_checkout(url: &str, into: &Path, keep_git_dir: bool) -> Result<std::path::PathBuf> {
    Ok(git_checkout_commit(url, into, keep_git_dir)?.0)
}

/// [`git_checkout`], also returning the commit checked out (provenance names it).
pub fn git_checkout_commit(url: &str, into: &Path, keep_git_dir: bool) -> Result<(std::path::PathBuf, String)> {
    if !is_git(url) {
        // Never a repository of the host (a path, file://, git's ext:: helper).
        bail!("{} is not a remote git repository (git://, ssh://, user@host:path, or an http(s) URL ending in .git)", redact_url(url));
    }
    let (repo, fragment) = match url.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (url, None),
    };
    let (reference, subdir) = match fragment {
        Some(f) => match f.split_once(':') {
            Some((r, d)) => (Some(r).filter(|r| !r.is_empty()), Some(d).filter(|d| !d.is_empty())),
            None => (Some(f).filter(|f| !f.is_empty()), None),
        },
        None => (None, None),
    };
    let dir = into.join("git");
    let git = |args: &[&str], cwd: Option<&Path>| -> Result<std::process::Output> {
        let mut c = std::process::Command::new("git");
        // Only network transports: no file:// or ext:: remote, also not for a
        // submodule or a redirect (git's protocol.allow), and no system or user
        // configuration that could rewrite URLs (insteadOf) to local ones.
        c.args(["-c", "protocol.allow=never", "-c", "protocol.https.allow=always", "-c", "protocol.http.allow=always"])
            .args(["-c", "protocol.git.allow=always", "-c", "protocol.ssh.allow=always"])
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_PROTOCOL_FROM_USER", "0")
            .stdin(std::process::Stdio::null());
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        c.output().context("running git (is it installed?)")
    };
    let dir_s = dir.to_string_lossy().into_owned();
    // A branch or tag clones shallow; anything else (a commit) needs the history.
    let mut args = vec!["clone", "--quiet", "--no-checkout"];
    if let Some(r) = reference.filter(|r| !is_commit(r)) {
        args.extend(["--depth", "1", "--branch", r]);
    }
    args.extend(["--", repo, &dir_s]);
    let mut out = git(&args, None)?;
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("does not support shallow") {
        // A dumb-HTTP server cannot serve a shallow clone: take the history.
        let _ = std::fs::remove_dir_all(&dir);
        let full: Vec<&str> = args.iter().copied().filter(|a| *a != "--depth" && *a != "1").collect();
        out = git(&full, None)?;
    }
    if !out.status.success() {
        bail!("git clone failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let what = reference.unwrap_or("HEAD");
    let out = git(&["checkout", "--quiet", "--detach", what], Some(&dir))?;
    if !out.status.success() {
        bail!("git checkout {what} failed (no such branch, tag or commit?): {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    // Submodules come along, as BuildKit's git source checks them out.
    if dir.join(".gitmodules").is_file() {
        let out = git(&["-c", "protocol.file.allow=never", "submodule", "update", "--quiet", "--init", "--recursive", "--depth", "1"], Some(&dir))?;
        if !out.status.success() {
            bail!("git submodule update failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    let out = git(&["rev-parse", "HEAD"], Some(&dir))?;
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !is_commit(&commit) {
        bail!("git rev-parse HEAD failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    if !keep_git_dir {
        std::fs::remove_dir_all(dir.join(".git")).context("removing .git")?;
    }
    match subdir {
        Some(d) => {
            let p = crate::fsutil::resolve_in_root(&dir, &Path::new("/").join(d), true)?;
            if !p.is_dir() {
                bail!("{d} is not a directory of the repository");
            }
            Ok((p, commit))
        }
        None => Ok((dir, commit)),
    }
}

/// A URL as it may be shown or recorded: without `user:password@`.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (auth, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match auth.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://{host}{path}"),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// A full commit id (what a cache key may trust to name fixed content).
pub fn is_commit(r: &str) -> bool {
    (r.len() == 40 || r.len() == 64) && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether an ADD source (or a context argument) is a remote git repository, as
/// BuildKit tells them apart; a local path ending in `.git` is not one.
pub fn is_git(s: &str) -> bool {
    kiln_frontend::is_remote_git(s)
}
