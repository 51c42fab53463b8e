//! Build sources other than a local directory, made into one before the build:
//! CONTEXT `-` (a tar on stdin, or a bare Dockerfile with an empty context), a local
//! tarball, an `http(s)://` tarball (or a Dockerfile served as text), a git URL
//! (`https://…/repo.git#ref:subdir`, `git@…`, `git://…`, submodules included,
//! `.git` kept with `--build-arg BUILDKIT_CONTEXT_KEEP_GIT_DIR=1`), and `-f -`.
//!
//! The parent process materialises; a re-executed child (inside the user namespace)
//! finds the result in [`DIR_ENV`]/[`DOCKERFILE_ENV`], set on its command line's
//! environment by `exec::userns` — never with `set_var`. The temporary directory
//! is removed when the [`Materialized`] guard of the parent drops.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::steps::archive;
use crate::steps::fetch;

/// Where the re-executed child finds the materialised context directory.
pub const DIR_ENV: &str = "KILN_MATERIALIZED_CONTEXT";
/// ... and the Dockerfile read from stdin (`-f -`, or a bare Dockerfile).
pub const DOCKERFILE_ENV: &str = "KILN_MATERIALIZED_DOCKERFILE";

/// What the user passed as CONTEXT.
#[derive(Debug, PartialEq, Eq)]
pub enum Source {
    Dir,
    Stdin,
    Git(String),
    Http(String),
    Tarball(PathBuf),
}

/// BuildKit's order: git first (`git@`, `git://`, a `.git` URL, with or without a
/// fragment), then other http(s) URLs, then `-`, then paths.
pub fn classify(arg: &Path) -> Source {
    let s = arg.to_string_lossy();
    if fetch::is_git(&s) && (s.contains("://") || s.starts_with("git@")) {
        return Source::Git(s.into_owned());
    }
    if fetch::is_http(&s) {
        return Source::Http(s.into_owned());
    }
    if s == "-" {
        return Source::Stdin;
    }
    if arg.is_file() {
        return Source::Tarball(arg.to_path_buf());
    }
    Source::Dir
}

/// A context made into a directory; removes its temporary directory on drop.
pub struct Materialized {
    pub context: PathBuf,
    /// The Dockerfile when it came from stdin or was the whole source.
    pub dockerfile: Option<PathBuf>,
    /// A git or http(s) source's URL without credentials, and a git source's commit.
    pub uri: Option<String>,
    pub commit: Option<String>,
    temp: Option<PathBuf>,
}

impl Materialized {
    /// The variables a re-executed child reads instead of materialising again.
    pub fn child_env(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        if self.temp.is_some() {
            v.push((DIR_ENV.to_string(), self.context.display().to_string()));
        }
        if let Some(d) = &self.dockerfile {
            v.push((DOCKERFILE_ENV.to_string(), d.display().to_string()));
        }
        if let Some(u) = &self.uri {
            v.push((crate::options::attest::CONTEXT_URI_ENV.to_string(), u.clone()));
        }
        if let Some(c) = &self.commit {
            v.push((crate::options::attest::CONTEXT_COMMIT_ENV.to_string(), c.clone()));
        }
        v
    }
}

impl Drop for Materialized {
    fn drop(&mut self) {
        if let Some(t) = &self.temp {
            let _ = std::fs::remove_dir_all(t);
        }
    }
}

/// The child's view: what the parent materialised, if anything.
pub fn inherited() -> Option<(Option<PathBuf>, Option<PathBuf>)> {
    let dir = std::env::var_os(DIR_ENV).map(PathBuf::from);
    let df = std::env::var_os(DOCKERFILE_ENV).map(PathBuf::from);
    (dir.is_some() || df.is_some()).then_some((dir, df))
}

fn temp_dir(state_dir: &Path) -> Result<PathBuf> {
    let tmp = state_dir.join("tmp");
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    for n in 0.. {
        let d = tmp.join(format!("context-{}-{n}", std::process::id()));
        match std::fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", d.display())),
        }
    }
    unreachable!("an unbounded range ends only by returning")
}

/// Unpacks a (possibly compressed) tar stream into `dir`, owned by the caller;
/// `Ok(false)` when the stream is not a tar (the bytes are then in `not_tar`).
fn unpack_or_keep(mut r: impl Read, dir: &Path, not_tar: &mut Vec<u8>) -> Result<bool> {
    let mut head = Vec::new();
    (&mut r).take(1024).read_to_end(&mut head)?;
    let c = archive::detect(&head);
    let rest = std::io::Cursor::new(head.clone()).chain(r);
    let mut dec = archive::decompress(rest, c).context("decompressing")?;
    let mut block = vec![0u8; 512];
    let n = read_up_to(&mut dec, &mut block)?;
    let looks_tar = n == 512 && block[257..262] == *b"ustar";
    if !looks_tar {
        if c != archive::Compression::None {
            bail!("a compressed stream that is not a tar archive");
        }
        not_tar.extend_from_slice(&block[..n]);
        dec.read_to_end(not_tar)?;
        return Ok(false);
    }
    let opts = archive::ExtractOptions { ignore_chown_errors: true, owner: Some((nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw())) };
    archive::extract_into_with(std::io::Cursor::new(block).chain(dec), dir, dir, &opts)?;
    Ok(true)
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Makes `arg` a directory (and maybe a Dockerfile), reading stdin for `-` or
/// `-f -`. `None` when `arg` is already a directory and `-f` is not `-`.
pub fn materialize(arg: &Path, dockerfile_arg: Option<&Path>, state_dir: &Path, keep_git_dir: bool) -> Result<Option<Materialized>> {
    let source = classify(arg);
    let df_stdin = dockerfile_arg.is_some_and(|f| f.as_os_str() == "-");
    if df_stdin && source == Source::Stdin {
        bail!("the context and -f cannot both be - (stdin)");
    }
    if source == Source::Dir && !df_stdin {
        return Ok(None);
    }
    let temp = temp_dir(state_dir)?;
    let mut m = Materialized { context: temp.join("context"), dockerfile: None, uri: None, commit: None, temp: Some(temp.clone()) };
    std::fs::create_dir_all(&m.context)?;
    let mut text = Vec::new();
    let unpacked = match &source {
        Source::Dir => {
            m.context = arg.to_path_buf();
            true
        }
        Source::Stdin => unpack_or_keep(std::io::stdin().lock(), &m.context, &mut text).context("reading the context from stdin")?,
        Source::Tarball(p) => {
            let f = std::fs::File::open(p).with_context(|| format!("opening the context {}", p.display()))?;
            let ok = unpack_or_keep(f, &m.context, &mut text).with_context(|| format!("unpacking the context {}", p.display()))?;
            if !ok {
                bail!("build context {} is a file but not a tar archive (plain, gzip, bzip2, xz or zstd)", p.display());
            }
            true
        }
        Source::Http(url) => {
            let shown = fetch::redact_url(url);
            let resp = reqwest::blocking::Client::builder()
                .build()
                .context("starting the HTTP client")?
                .get(url)
                .send()
                .map_err(|e| anyhow!("downloading the context {shown}: {}", e.without_url()))?;
            if !resp.status().is_success() {
                bail!("downloading the context {shown}: HTTP {}", resp.status());
            }
            m.uri = Some(shown.clone());
            unpack_or_keep(resp, &m.context, &mut text).with_context(|| format!("unpacking the context {shown}"))?
        }
        Source::Git(url) => {
            let (dir, commit) = fetch::git_checkout_commit(url, &temp, keep_git_dir).with_context(|| format!("build context {}", fetch::redact_url(url)))?;
            m.context = dir;
            m.uri = Some(fetch::redact_url(url));
            m.commit = Some(commit);
            true
        }
    };
    if !unpacked {
        // A bare Dockerfile (stdin or a text URL): an empty context.
        let p = temp.join("Dockerfile");
        std::fs::write(&p, &text)?;
        m.dockerfile = Some(p);
    }
    if df_stdin {
        let mut df = Vec::new();
        std::io::stdin().lock().read_to_end(&mut df).context("reading the Dockerfile from stdin")?;
        let p = temp.join("Dockerfile.stdin");
        std::fs::write(&p, &df)?;
        m.dockerfile = Some(p);
    }
    Ok(Some(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_told_apart_as_buildkit_does() {
        assert_eq!(classify(Path::new("https://example.com/r.git#main:sub")), Source::Git("https://example.com/r.git#main:sub".into()));
        assert_eq!(classify(Path::new("git@github.com:o/r.git")), Source::Git("git@github.com:o/r.git".into()));
        assert_eq!(classify(Path::new("git://h/r")), Source::Git("git://h/r".into()));
        assert_eq!(classify(Path::new("https://example.com/ctx.tar.gz")), Source::Http("https://example.com/ctx.tar.gz".into()));
        assert_eq!(classify(Path::new("-")), Source::Stdin);
        assert_eq!(classify(Path::new("/nonexistent/dir")), Source::Dir);
    }

    #[test]
    fn credentials_never_shown() {
        assert_eq!(fetch::redact_url("https://user:secret@example.com/a.tar"), "https://example.com/a.tar");
        assert_eq!(fetch::redact_url("https://example.com/a.tar"), "https://example.com/a.tar");
    }

    #[test]
    fn tar_streams_unpack_and_text_is_kept() {
        let t = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "sub/f", &b"abc"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &bytes).unwrap();
        let gz = gz.finish().unwrap();
        let mut text = Vec::new();
        assert!(unpack_or_keep(&gz[..], t.path(), &mut text).unwrap());
        assert_eq!(std::fs::read_to_string(t.path().join("sub/f")).unwrap(), "abc");
        let t2 = tempfile::tempdir().unwrap();
        assert!(!unpack_or_keep(&b"FROM scratch\n"[..], t2.path(), &mut text).unwrap());
        assert_eq!(text, b"FROM scratch\n");
    }
}
