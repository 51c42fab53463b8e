//! `RUN --mount` and the other things a RUN step sees that never reach its layer:
//! bind mounts (context, stage or image), cache mounts, tmpfs, secrets, the SSH
//! agent, and heredoc scripts.
//!
//! The builder prepares host-side sources here; the sandbox only bind-mounts what
//! the `SandboxMount` list says. Every target gets a stub in the rootfs if the image
//! lacks it, and stubs are removed before the diff, so nothing of a mount — neither
//! its contents nor its mount point — reaches a layer. Under `--isolation chroot`
//! (no mount(2)) the same sources become a `chroot_mounts::Mount` list instead:
//! copied (or, for caches, moved) into the rootfs and taken out before the diff.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use kiln_frontend::{Heredoc, MountKind, RunMount, Sharing};

use crate::fsutil::{container_path, resolve_in_root};
use crate::options::SshSpec;
use crate::options::SecretSpec;
use crate::options::SecretSource;
use crate::exec::sandbox::SandboxMountKind;
use crate::exec::sandbox::SandboxMount;
use crate::steps::chroot_mounts::{self, Fill};

/// What preparing a RUN's mounts produced.
#[derive(Default)]
pub struct Prepared {
    pub mounts: Vec<SandboxMount>,
    /// Extra environment (SSH_AUTH_SOCK, secrets with env=): the RUN's only.
    pub env: Vec<String>,
    /// Mount points to stub in the rootfs: (relative path, is a directory).
    pub stubs: Vec<(PathBuf, bool)>,
    /// Scratch directories removed when the step ends (secrets, heredocs).
    pub scratch: Vec<PathBuf>,
    /// Locks held for the step (cache mounts with sharing=locked).
    pub locks: Vec<fs::File>,
    /// The step's ssh agent sockets (relays to the caller's agents).
    pub ssh_relays: Vec<crate::steps::sshrelay::SshRelay>,
    /// `--isolation chroot`: what goes into the rootfs instead of `mounts`, parents
    /// first.
    pub chroot: Vec<chroot_mounts::Mount>,
    /// A private directory in memory (/dev/shm) when the step has secrets: their
    /// staged files, and the sandbox spec when it carries a secret in `env`.
    pub private: Option<PathBuf>,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // Relays first: each wakes its accept loop through its socket, which lives
        // in a scratch directory.
        self.ssh_relays.clear();
        for d in &self.scratch {
            let _ = fs::remove_dir_all(d);
        }
    }
}

/// Where a bind mount reads: the solver mounts the stage or image (or a writable
/// scratch view of the context) and keeps it mounted for the step.
pub trait FromRoots {
    fn root_of(&mut self, from: &kiln_frontend::CopyFrom) -> Result<PathBuf>;
    fn root_of_context_rw(&mut self) -> Result<PathBuf>;
}

pub struct Inputs<'a> {
    pub context: &'a Path,
    pub state_dir: &'a Path,
    pub workdir: &'a str,
    pub secrets: &'a [SecretSpec],
    pub ssh: &'a [SshSpec],
    /// `--no-cache`: cache mounts start empty (once per build), as BuildKit prunes
    /// the cache mounts of a build that uses no cache (moby/buildkit#5305).
    pub no_cache: bool,
    /// `--isolation chroot`: fill `Prepared::chroot`, not `mounts`.
    pub chroot: bool,
}

fn scratch_dir(base: &Path, what: &str) -> Result<PathBuf> {
    // Secrets should not touch a disk: prefer a private dir on /dev/shm.
    // Named with our pid, so that a killed build's are found and removed (next
    // build, kiln prune: fsutil::remove_leftovers_of_dead).
    let shm = Path::new(crate::fsutil::SECRETS_DIR);
    let parent = if what == "secrets" && shm.is_dir() { shm.to_path_buf() } else { base.to_path_buf() };
    let dir = parent.join(format!("kiln-{what}-{}-{}", std::process::id(), crate::fsutil::next_id()));
    // 0700 from the start: never a moment where another user could enter it.
    fs::DirBuilder::new().recursive(false).mode(0o700).create(&dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

fn target_of(m: &RunMount, workdir: &str, default: &str) -> String {
    let t = m.target.as_deref().filter(|t| !t.is_empty()).unwrap_or(default);
    container_path(workdir, t).to_string_lossy().into_owned()
}

fn rel(target: &str) -> PathBuf {
    PathBuf::from(target.trim_start_matches('/'))
}

/// Prepare every `--mount` of a RUN, plus its heredoc scripts.
pub fn prepare(mounts: &[RunMount], heredocs: &[Heredoc], inputs: &Inputs<'_>, roots: &mut dyn FromRoots) -> Result<Prepared> {
    let mut p = Prepared::default();
    let mut ssh_index = 0;
    let mut caches = Vec::new();
    for m in mounts {
        match m.kind {
            MountKind::Bind => bind(m, inputs, roots, &mut p)?,
            MountKind::Cache => caches.push(cache(m, inputs, roots)?),
            MountKind::Tmpfs => {
                let target = target_of(m, inputs.workdir, "");
                if inputs.chroot {
                    // Root-owned, world-writable and sticky, as a fresh tmpfs.
                    p.chroot.push(chroot_mounts::Mount { target, fill: Fill::Empty { mode: 0o1777, uid: 0, gid: 0 } });
                    continue;
                }
                p.stubs.push((rel(&target), true));
                p.mounts.push(SandboxMount { target, kind: SandboxMountKind::Tmpfs { size: m.size.clone() } });
            }
            MountKind::Secret => secret(m, inputs, &mut p)?,
            MountKind::Ssh => ssh(m, inputs, &mut ssh_index, &mut p)?,
        }
    }
    attach_caches(&caches, inputs, &mut p)?;
    if !heredocs.is_empty() {
        stage_heredocs(heredocs, inputs, &mut p)?;
    }
    // Parents before children, so nested targets stay visible.
    p.mounts.sort_by_key(|m| depth(&m.target));
    p.chroot.sort_by_key(|m| depth(&m.target));
    Ok(p)
}

fn depth(target: &str) -> usize {
    Path::new(target).components().count()
}

/// `type=bind`: a directory or file of the context (read-only, or a scratch copy
/// for `rw`) or of a stage/image (`from=`).
fn bind(m: &RunMount, inputs: &Inputs<'_>, roots: &mut dyn FromRoots, p: &mut Prepared) -> Result<()> {
    let target = target_of(m, inputs.workdir, "");
    let readonly = m.readonly;
    let root = match &m.from {
        Some(from) => roots.root_of(from)?,
        // rw binds of the context: writes land in a scratch copy (under chroot
        // every bind is a copy, discarded after the step).
        None if !readonly && !inputs.chroot => roots.root_of_context_rw()?,
        None => inputs.context.to_path_buf(),
    };
    let src = m.source.as_deref().unwrap_or("/");
    let host = resolve_in_root(&root, &PathBuf::from("/").join(src), true)?;
    let md = fs::metadata(&host).with_context(|| format!("--mount=type=bind source {src:?} not found"))?;
    if inputs.chroot {
        p.chroot.push(chroot_mounts::Mount { target, fill: Fill::Copy { source: host } });
        return Ok(());
    }
    p.stubs.push((rel(&target), md.is_dir()));
    p.mounts.push(SandboxMount { target, kind: SandboxMountKind::Bind { source: host, readonly } });
    Ok(())
}

/// One `type=cache` mount of a step, before its lock is taken.
struct CacheUse {
    target: String,
    id: String,
    dir: PathBuf,
    /// (root, directory in it) of a `from=` seed.
    seed: Option<(PathBuf, PathBuf)>,
    sharing: Sharing,
    readonly: bool,
    owner: (u32, u32, u32),
}

/// A cache mount's id: its `id=`, else its target (BuildKit's default).
pub(crate) fn cache_id(m: &RunMount, workdir: &str) -> String {
    let target = target_of(m, workdir, "");
    m.id.as_deref().filter(|i| !i.is_empty()).map(str::to_string).unwrap_or(target)
}

/// `type=cache`: a persistent directory per id, shared, locked or private.
fn cache(m: &RunMount, inputs: &Inputs<'_>, roots: &mut dyn FromRoots) -> Result<CacheUse> {
    let target = target_of(m, inputs.workdir, "");
    let id = cache_id(m, inputs.workdir);
    // `from=` (with `source=`): a new cache starts as a copy of that
    // directory of a stage or image instead of empty.
    let seed = match &m.from {
        Some(from) => {
            let root = roots.root_of(from)?;
            let src = m.source.as_deref().unwrap_or("/");
            Some((root.clone(), resolve_in_root(&root, &PathBuf::from("/").join(src), true)?))
        }
        None => None,
    };
    let owner = (m.mode.unwrap_or(0o755), m.uid.unwrap_or(0), m.gid.unwrap_or(0));
    let dir = cache_path(inputs.state_dir, &id);
    Ok(CacheUse { target, id, dir, seed, sharing: m.sharing, readonly: m.readonly, owner })
}

/// Lock the step's caches and mount them. Locks are taken once per cache
/// directory and in one order (by path), so a step naming a cache twice does not
/// wait for itself and two steps never wait for each other in a circle. Under
/// chroot every cache is locked for the step (its directory is moved into the
/// rootfs, so `shared` waits as `locked` does); elsewhere `shared` takes no lock.
/// A cache's data directory is made (or emptied for `--no-cache`) only once its
/// lock is held: under chroot another step may have it in its rootfs.
fn attach_caches(caches: &[CacheUse], inputs: &Inputs<'_>, p: &mut Prepared) -> Result<()> {
    let mut wanted: std::collections::BTreeMap<&Path, bool> = Default::default();
    for c in caches {
        fs::create_dir_all(&c.dir).with_context(|| format!("creating cache mount {:?}", c.id))?;
        let wait = match c.sharing {
            Sharing::Locked => true,
            Sharing::Private => false,
            Sharing::Shared if inputs.chroot => true,
            Sharing::Shared => continue,
        };
        let w = wanted.entry(&c.dir).or_insert(wait);
        *w |= wait;
    }
    let mut held = std::collections::HashSet::new();
    for (dir, wait) in wanted {
        if let Some(lock) = lock_file(dir, wait)? {
            p.locks.push(lock);
            held.insert(dir);
        }
    }
    for c in caches {
        // Private and in use elsewhere: this step gets its own, thrown away afterwards.
        let own = c.sharing == Sharing::Private && !held.contains(c.dir.as_path());
        let data = c.dir.join("data");
        if !own {
            let seed = c.seed.as_ref().map(|(r, s)| (r.as_path(), s.as_path()));
            ensure_data(&c.dir, &c.id, c.owner, seed, inputs.no_cache)?;
        }
        if inputs.chroot {
            let twice = caches.iter().filter(|o| o.dir == c.dir).count() > 1;
            let fill = if own {
                Fill::Empty { mode: c.owner.0, uid: c.owner.1, gid: c.owner.2 }
            } else if c.readonly {
                Fill::Copy { source: data }
            } else {
                // One directory cannot be at two targets: the same cache twice is copied.
                Fill::Cache { data, copy: twice }
            };
            p.chroot.push(chroot_mounts::Mount { target: c.target.clone(), fill });
            continue;
        }
        let source = if own {
            let d = scratch_dir(&inputs.state_dir.join("tmp"), "cache")?;
            p.scratch.push(d.clone());
            d
        } else {
            data
        };
        p.stubs.push((rel(&c.target), true));
        p.mounts.push(SandboxMount { target: c.target.clone(), kind: SandboxMountKind::Bind { source, readonly: c.readonly } });
    }
    Ok(())
}

/// `type=secret`: a file (0400 by default) in a private scratch dir, and/or an
/// environment variable (`env=`). A missing optional secret mounts nothing.
fn secret(m: &RunMount, inputs: &Inputs<'_>, p: &mut Prepared) -> Result<()> {
    let id = m.id.as_deref()
        .filter(|i| !i.is_empty())
        .map(str::to_string)
        .or_else(|| m.target.as_deref().and_then(|t| Path::new(t).file_name()).map(|n| n.to_string_lossy().into_owned()))
        .ok_or_else(|| anyhow!("--mount=type=secret needs id= or target="))?;
    let required = m.required;
    let Some(spec) = inputs.secrets.iter().find(|s| s.id == id) else {
        if required {
            bail!("secret {id:?} is required but was not given (use --secret id={id},src=FILE)");
        }
        return Ok(());
    };
    let value = match &spec.source {
        SecretSource::File(path) => fs::read(path).with_context(|| format!("reading secret {id:?} from {}", path.display()))?,
        SecretSource::Env(var) => std::env::var_os(var)
            .map(|v| std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec())
            .ok_or_else(|| anyhow!("secret {id:?}: environment variable {var} is not set"))?,
    };
    let dir = match &p.private {
        Some(d) => d.clone(),
        None => {
            let d = scratch_dir(&inputs.state_dir.join("tmp"), "secrets")?;
            p.scratch.push(d.clone());
            p.private = Some(d.clone());
            d
        }
    };
    if let Some(var) = &m.env {
        p.env.push(format!("{var}={}", String::from_utf8_lossy(&value)));
        if m.target.is_none() {
            return Ok(());
        }
    }
    let target = target_of(m, "/", &format!("/run/secrets/{id}"));
    let file = dir.join(format!("secret-{}", p.mounts.len() + p.chroot.len()));
    fs::write(&file, &value).with_context(|| format!("staging secret {id:?}"))?;
    fs::set_permissions(&file, fs::Permissions::from_mode(m.mode.unwrap_or(0o400)))?;
    nix::unistd::chown(&file, Some(nix::unistd::Uid::from_raw(m.uid.unwrap_or(0))), Some(nix::unistd::Gid::from_raw(m.gid.unwrap_or(0))))
        .with_context(|| format!("chown of secret {id:?}"))?;
    if inputs.chroot {
        p.chroot.push(chroot_mounts::Mount { target, fill: Fill::Secret { source: file } });
        return Ok(());
    }
    p.stubs.push((rel(&target), false));
    p.mounts.push(SandboxMount { target, kind: SandboxMountKind::Bind { source: file, readonly: true } });
    Ok(())
}

/// `type=ssh`: a relay socket to the given agent, named by `SSH_AUTH_SOCK`.
fn ssh(m: &RunMount, inputs: &Inputs<'_>, ssh_index: &mut usize, p: &mut Prepared) -> Result<()> {
    let id = m.id.as_deref().filter(|i| !i.is_empty()).unwrap_or("default");
    let required = m.required;
    let Some(spec) = inputs.ssh.iter().find(|s| s.id == id) else {
        if required {
            bail!("ssh agent {id:?} is required but was not given (use --ssh {id}=$SSH_AUTH_SOCK)");
        }
        return Ok(());
    };
    let md = fs::metadata(&spec.socket).with_context(|| format!("--ssh {id}: {}", spec.socket.display()))?;
    if !std::os::unix::fs::FileTypeExt::is_socket(&md.file_type()) {
        bail!("--ssh {id}: {} is not an agent socket (key files are not supported yet)", spec.socket.display());
    }
    let target = target_of(m, "/", &format!("/run/buildkit/ssh_agent.{ssh_index}"));
    *ssh_index += 1;
    // BuildKit's defaults for an ssh mount: 0600, owned by root.
    let mode = m.mode.unwrap_or(0o600);
    let (uid, gid) = (m.uid.unwrap_or(0), m.gid.unwrap_or(0));
    p.env.push(format!("SSH_AUTH_SOCK={target}"));
    if inputs.chroot {
        // The relay listens at the target in the rootfs itself.
        p.chroot.push(chroot_mounts::Mount { target, fill: Fill::Socket { agent: spec.socket.clone(), mode, uid, gid } });
        return Ok(());
    }
    let dir = scratch_dir(&inputs.state_dir.join("tmp"), "ssh")?;
    p.scratch.push(dir.clone());
    let sock = dir.join("agent.sock");
    p.ssh_relays.push(crate::steps::sshrelay::SshRelay::start(&sock, &spec.socket, mode, uid, gid)?);
    p.stubs.push((rel(&target), false));
    p.mounts.push(SandboxMount { target, kind: SandboxMountKind::Bind { source: sock, readonly: false } });
    Ok(())
}

/// Heredoc scripts with an interpreter line run as /dev/pipes/NAME (on /dev's
/// tmpfs in the sandbox, so never in a layer).
fn stage_heredocs(heredocs: &[Heredoc], inputs: &Inputs<'_>, p: &mut Prepared) -> Result<()> {
    let dir = scratch_dir(&inputs.state_dir.join("tmp"), "heredoc")?;
    p.scratch.push(dir.clone());
    for h in heredocs {
        let file = dir.join(format!("h{}", p.mounts.len() + p.chroot.len()));
        fs::write(&file, &h.content)?;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o755))?;
        let target = format!("/dev/pipes/{}", h.name);
        if inputs.chroot {
            p.chroot.push(chroot_mounts::Mount { target, fill: Fill::Copy { source: file } });
            continue;
        }
        p.mounts.push(SandboxMount { target, kind: SandboxMountKind::Bind { source: file, readonly: true } });
    }
    Ok(())
}

/// The persistent directory behind a cache mount id (`data/` in it, `lock` beside).
pub(crate) fn cache_path(state_dir: &Path, id: &str) -> PathBuf {
    use sha2::{Digest as _, Sha256};
    let key = hex::encode(Sha256::digest(id.as_bytes()));
    state_dir.join("cache-mounts").join(&key[..32])
}

/// A cache's `data/`, created with the mount's owner and mode the first time
/// (seeded from `from=`), emptied the first time a `--no-cache` build uses it.
fn ensure_data(dir: &Path, id: &str, (mode, uid, gid): (u32, u32, u32), seed: Option<(&Path, &Path)>, fresh: bool) -> Result<()> {
    let data = dir.join("data");
    // A build without cache empties each cache mount the first time it uses it
    // (later steps of the same build share what the first one wrote).
    static EMPTIED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    if fresh {
        let mut done = EMPTIED.lock().unwrap_or_else(|p| p.into_inner());
        if !done.iter().any(|d| d == dir) {
            done.push(dir.to_path_buf());
            if data.is_dir() {
                let old = dir.join(format!("data.old-{}", crate::fsutil::next_id()));
                fs::rename(&data, &old).with_context(|| format!("emptying cache mount {id:?} for --no-cache"))?;
                kiln_snapshotter::snapshots::remove_tree(&old);
            }
        }
    }
    if !data.is_dir() {
        let tmp = dir.join(format!("data.tmp-{}", crate::fsutil::next_id()));
        fs::create_dir(&tmp)?;
        nix::unistd::chown(&tmp, Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(gid)))
            .with_context(|| format!("chown of cache mount {id:?} to {uid}:{gid}"))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        if let Some((root, src)) = seed {
            if src.is_dir() {
                let sources = vec![".".to_string()];
                let req = crate::steps::copy::CopyRequest::whole_dir(src, &sources, "/", None);
                crate::steps::copy::copy_into(&tmp, &req).with_context(|| format!("seeding cache mount {id:?} from {}", src.strip_prefix(root).unwrap_or(src).display()))?;
            }
        }
        if fs::rename(&tmp, &data).is_err() {
            kiln_snapshotter::snapshots::remove_tree(&tmp); // another build created it first
        }
        fs::write(dir.join("id"), id)?;
    }
    Ok(())
}

/// The cache directory's lock, waited for: no `sharing=locked` step of any build
/// writes the cache while it is held.
pub(crate) fn lock_cache_dir(dir: &Path) -> Result<fs::File> {
    lock_file(dir, true)?.context("locking a cache mount")
}

/// flock on the cache dir's lock file; `wait=false` returns None when held.
fn lock_file(dir: &Path, wait: bool) -> Result<Option<fs::File>> {
    use std::os::fd::AsRawFd;
    let f = fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("lock"))
        .with_context(|| format!("opening {}", dir.join("lock").display()))?;
    let op = if wait { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
    // SAFETY: a valid open file descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), op) } != 0 {
        let e = std::io::Error::last_os_error();
        if !wait && e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(None);
        }
        return Err(e).context("locking a cache mount");
    }
    Ok(Some(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoRoots;
    impl FromRoots for NoRoots {
        fn root_of(&mut self, _: &kiln_frontend::CopyFrom) -> Result<PathBuf> {
            bail!("no stages here")
        }
        fn root_of_context_rw(&mut self) -> Result<PathBuf> {
            bail!("chroot binds never need a writable view")
        }
    }

    fn mount(kind: MountKind, target: &str) -> RunMount {
        RunMount {
            kind,
            target: Some(target.into()),
            source: None,
            from: None,
            readonly: kind == MountKind::Bind,
            id: None,
            sharing: Sharing::Shared,
            mode: None,
            uid: None,
            gid: None,
            required: false,
            env: None,
            size: None,
        }
    }

    fn fills(p: &Prepared) -> Vec<String> {
        p.chroot.iter().map(|m| format!("{} {:?}", m.target, m.fill)).collect()
    }

    /// Under chroot every mount becomes a fill of the rootfs, never a sandbox mount
    /// or a stub; caches are locked for the step.
    #[test]
    fn chroot_mounts_are_fills_parents_first() {
        let t = tempfile::tempdir().unwrap();
        let me = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
        fs::write(t.path().join("token"), "hunter2").unwrap();
        let secrets = [SecretSpec { id: "token".into(), source: SecretSource::File(t.path().join("token")) }];
        let inputs = Inputs { context: t.path(), state_dir: t.path(), workdir: "/w", secrets: &secrets, ssh: &[], no_cache: false, chroot: true };
        let mut twice = mount(MountKind::Cache, "/c/two");
        twice.id = Some("/c/one".into());
        let mut secret = mount(MountKind::Secret, "/run/secrets/token");
        secret.env = Some("TOKEN".into());
        secret.uid = Some(me.0);
        secret.gid = Some(me.1);
        let mounts = [mount(MountKind::Cache, "/c/one"), twice, mount(MountKind::Bind, "rel"), mount(MountKind::Tmpfs, "/t"), secret];
        let p = prepare(&mounts, &[], &inputs, &mut NoRoots).unwrap();
        assert!(p.mounts.is_empty() && p.stubs.is_empty());
        assert_eq!(p.env, ["TOKEN=hunter2"]);
        let kinds: Vec<(&str, &str)> = p.chroot.iter().map(|m| (m.target.as_str(), match &m.fill {
            Fill::Copy { .. } => "copy",
            Fill::Cache { copy: true, .. } => "cache copied",
            Fill::Cache { copy: false, .. } => "cache moved",
            Fill::Empty { mode: 0o1777, .. } => "tmpfs",
            Fill::Empty { .. } => "empty",
            Fill::Secret { .. } => "secret",
            Fill::Socket { .. } => "socket",
        })).collect();
        // One cache at two targets is copied at both (one directory, two places).
        assert_eq!(kinds, [("/t", "tmpfs"), ("/w/rel", "copy"), ("/c/one", "cache copied"), ("/c/two", "cache copied"), ("/run/secrets/token", "secret")], "{:?}", fills(&p));
        assert_eq!(p.locks.len(), 1, "one lock per cache directory, shared included under chroot");
        assert!(cache_path(t.path(), "/c/one").join("data").is_dir(), "made once its lock was held");
        // The secret and the spec carrying it live in memory.
        let private = p.private.clone().unwrap();
        assert!(private.starts_with("/dev/shm") || !Path::new("/dev/shm").is_dir());
        // A private cache in use elsewhere is an empty one of the step's own.
        let mut private_cache = mount(MountKind::Cache, "/c/one");
        private_cache.sharing = Sharing::Private;
        let q = prepare(&[private_cache.clone()], &[], &inputs, &mut NoRoots).unwrap();
        assert!(matches!(q.chroot[0].fill, Fill::Empty { mode: 0o755, .. }), "{:?}", fills(&q));
        drop(p);
        let q = prepare(&[private_cache], &[], &inputs, &mut NoRoots).unwrap();
        assert!(matches!(q.chroot[0].fill, Fill::Cache { copy: false, .. }), "{:?}", fills(&q));
        assert!(!private.exists(), "the secrets' directory goes with the step");
    }
}
