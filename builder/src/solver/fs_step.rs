//! A step that changes the filesystem: RUN (mounts, user, environment, sandbox)
//! and COPY/ADD (context, stages, heredocs, URLs, git, archives).

use super::*;

pub(super) fn run_fs_step(cx: &Ctx, state: &mut ImageState, step: &Step, sources: &Sources<'_>, step_no: usize) -> Result<()> {
    if let StepKind::Copy(spec) | StepKind::Add(spec) = &step.kind {
        let copy = |state: &ImageState, active: &mut ActiveSnapshot, root: &Path| {
            let workdir = state.workdir();
            copy::mkdir_p_as(root, Path::new(&workdir), Some(workdir_owner(root, state)))?;
            copy_step(cx, active, root, &workdir, step, spec, sources)
        };
        if unpack_free(cx, state, copy)? {
            return Ok(());
        }
    }
    let lowers = lower_dirs(cx, state)?;
    let t0 = std::time::Instant::now();
    let mut active = cx.snaps.prepare(&lowers)?;
    tracing::debug!(step = step_no, ms = t0.elapsed().as_millis() as u64, "rootfs prepared");
    let root = active.merged().to_path_buf();
    let workdir = state.workdir();
    // Docker creates the working directory if the image lacks it, owned by the
    // stage's USER (as BuildKit does).
    copy::mkdir_p_as(&root, Path::new(&workdir), Some(workdir_owner(&root, state)))?;

    match &step.kind {
        StepKind::Run { .. } => run_step(cx, state, &mut active, &root, &workdir, step, sources, step_no)?,
        StepKind::Copy(spec) | StepKind::Add(spec) => copy_step(cx, &mut active, &root, &workdir, step, spec, sources)?,
        _ => unreachable!("config-only steps are applied by ImageState"),
    }
    commit_layer(cx, state, active)
}

/// A RUN step's process ended with a non-zero status (128+N when killed by signal N).
/// The message is BuildKit's (solver/llbsolver/ops/exec.go), with the command as
/// executed: the shell form shows its shell.
#[derive(Debug, thiserror::Error)]
#[error("process {command:?} did not complete successfully: exit code: {code}")]
pub struct RunFailed {
    /// The step's number in its stage's step list (as progress shows it).
    pub step: usize,
    pub command: String,
    pub code: i32,
}

/// RUN: its mounts, user, environment and network, run in the sandbox.
#[allow(clippy::too_many_arguments)]
fn run_step(
    cx: &Ctx,
    state: &ImageState,
    active: &mut ActiveSnapshot,
    root: &Path,
    workdir: &str,
    step: &Step,
    sources: &Sources<'_>,
    step_no: usize,
) -> Result<()> {
    let StepKind::Run { argv, build_env, network, mounts, heredocs, .. } = &step.kind else { unreachable!("a RUN step") };
    let root = root.to_path_buf();
    let workdir = workdir.to_string();
    let mut roots = MountRoots { cx, sources, held: Vec::new() };
    let chroot = cx.opts.isolation == crate::options::Isolation::Chroot;
    let uses_context = mounts.iter().any(kiln_frontend::RunMount::binds_context);
    let context = if uses_context { cx.bind_context()? } else { cx.opts.context.clone() };
    let inputs = runmounts::Inputs {
        context: &context,
        state_dir: &cx.opts.state_dir,
        workdir: &workdir,
        secrets: &cx.opts.secrets,
        ssh: &cx.opts.ssh,
        no_cache: cx.opts.no_cache,
        chroot,
    };
    let network_none = match network {
        Network::None => true,
        Network::Host => false,
        Network::Default => cx.opts.network_none,
    };
    if chroot && network_none {
        bail!("RUN --network=none needs a network namespace, which --isolation chroot does not have");
    }
    super::mountcache::before_run(cx, mounts, &workdir, sources.platform);
    let prepared = runmounts::prepare(mounts, heredocs, &inputs, &mut roots)?;
    if chroot {
        // Device nodes are made by mknod over these stubs (no bind mounts).
        for (rel, _, _) in sandbox::CHROOT_DEVICES {
            active.create_stub(Path::new(rel), false)?;
        }
    }
    for (target, is_dir) in &prepared.stubs {
        active.create_stub(target, *is_dir)?;
    }
    let run_as = resolve_user(&root, &state.user())?;
    for (target, is_dir) in MOUNT_TARGETS {
        active.create_stub(Path::new(target), *is_dir)?;
    }
    // Chroot: the mounts' contents go into the rootfs after the stubs and come out
    // before them (each puts back the directory times it moved). Dropped on any
    // error below, which takes them out too.
    let placed = if chroot { Some(crate::steps::chroot_mounts::place(&root, &prepared.chroot)?) } else { None };
    let mut env = state.env();
    // The frontend decided precedence (an ENV before an ARG of the same name
    // loses to it in RUN, as in BuildKit): what it lists here wins.
    for (k, v) in build_env {
        crate::image::set_env(&mut env, k, v);
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    // As Docker: HOME from the user's /etc/passwd entry unless the image sets it.
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", run_as.home));
    }
    // Mount-provided variables (SSH_AUTH_SOCK, env secrets) are the step's only.
    env.extend(prepared.env.iter().cloned());
    let spec = RunSpec {
        rootfs: root.clone(),
        argv: argv.clone(),
        env,
        cwd: workdir.clone(),
        uid: run_as.uid,
        gid: run_as.gid,
        groups: run_as.groups,
        // BuildKit's sandbox hostname, or the BUILDKIT_SANDBOX_HOSTNAME build arg.
        hostname: cx.opts.build_args.get("BUILDKIT_SANDBOX_HOSTNAME").cloned().unwrap_or_else(|| "buildkitsandbox".into()),
        network_none,
        extra_hosts: cx.opts.extra_hosts.clone(),
        mounts: prepared.mounts.clone(),
        chroot,
        shm_size: cx.opts.shm_size,
        ulimits: cx.opts.ulimits.clone(),
    };
    // A spec with secrets in its environment is written to memory, never to disk.
    let spec_dir = prepared.private.as_deref().unwrap_or(&cx.scratch);
    let spec_path = spec_dir.join(format!("run-{}-{}.json", std::process::id(), next_id()));
    let t0 = std::time::Instant::now();
    let code = sandbox::run(&spec, &spec_path, step_no)?;
    tracing::debug!(step = step_no, ms = t0.elapsed().as_millis() as u64, code, "RUN finished");
    // Also after a failed step: cache changes are kept, secrets wiped.
    if let Some(placed) = placed {
        placed.finish(&mut |rel: &Path| {
            active.moved_back(rel)?;
            Ok(())
        })?;
    }
    drop(prepared);
    drop(roots);
    if code != 0 {
        return Err(RunFailed { step: step_no, command: argv.join(" "), code }.into());
    }
    active.remove_stubs()?;
    Ok(())
}

/// COPY and ADD: context files, another stage's or image's, heredocs, URLs, git
/// repositories and archives, into the step's rootfs.
#[allow(clippy::too_many_arguments)]
fn copy_step(
    cx: &Ctx,
    active: &mut ActiveSnapshot,
    root: &Path,
    workdir: &str,
    step: &Step,
    spec: &kiln_frontend::CopySpec,
    sources: &Sources<'_>,
) -> Result<()> {
    let root = root.to_path_buf();
    let workdir = workdir.to_string();
    let is_add = matches!(step.kind, StepKind::Add(_));
    // Context files become 0:0; files from a stage or image keep their owner
    // (as BuildKit does) unless --chown says otherwise.
    let owner = match (&spec.chown, &spec.from) {
        (Some(c), _) => Some(resolve_chown(&root, c)?),
        (None, None) => Some(Owner::default()),
        (None, Some(_)) => None,
    };
    let chmod = spec.chmod.as_ref().map(|c| c.mode.clone());
    let exclude = if spec.exclude.is_empty() { None } else { Some(crate::context::dockerignore::Matcher::new(&spec.exclude)?) };
    let is_git = crate::steps::fetch::is_git;
    let (remote, local): (Vec<String>, Vec<String>) =
        spec.sources.iter().cloned().partition(|s| is_add && (crate::steps::fetch::is_http(s) || is_git(s)));
    let total_sources = spec.sources.len() + spec.heredocs.len();
    let dest_is_dir = total_sources > 1;
    let unpack = is_add && spec.unpack != Some(false);

    // Heredocs and downloads are staged as files in a scratch "context".
    let staged = if spec.heredocs.is_empty() && remote.is_empty() {
        None
    } else {
        let dir = cx.scratch.join(format!("staged-{}-{}", std::process::id(), next_id()));
        std::fs::create_dir_all(&dir)?;
        Some(ScratchDir(dir))
    };
    let mut staged_names = Vec::new();
    if let Some(dir) = &staged {
        for h in &spec.heredocs {
            let f = dir.0.join(&h.name);
            std::fs::write(&f, &h.content).with_context(|| format!("staging heredoc {}", h.name))?;
            std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
            staged_names.push(h.name.clone());
        }
        for url in &remote {
            if is_git(url) {
                let tree = crate::steps::fetch::git_checkout(url, &dir.0, spec.keep_git_dir).with_context(|| format!("ADD {url}"))?;
                // The repository's contents go into DEST, as a directory source.
                let all = [".".to_string()];
                let req = CopyRequest {
                    workdir: &workdir,
                    chmod: chmod.as_ref(),
                    ..CopyRequest::whole_dir(&tree, &all, &spec.dest, owner.or(Some(Owner::default())))
                };
                copy::copy_into(&root, &req)?;
                continue;
            }
            let name = crate::steps::fetch::file_name(url);
            let f = dir.0.join(&name);
            // Resolved before the build, or (with --checksum) fetched now.
            let fetched;
            let r = match (cx.urls.get(url), spec.checksum.as_deref()) {
                (Some(r), _) => r,
                (None, Some(c)) => {
                    fetched = crate::steps::urlcache::fetch_pinned(&cx.store, url, c)?;
                    &fetched
                }
                (None, None) => bail!("ADD {url} was not resolved before the build"),
            };
            std::fs::copy(cx.store.blob_path(&r.digest), &f).with_context(|| format!("ADD {url}: staging the download"))?;
            let mtime = r.mtime;
            // Docker gives downloaded files mode 0600 and the server's mtime.
            std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            if let Some(t) = mtime {
                let ts = nix::sys::time::TimeSpec::new(t, 0);
                let _ = nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, &f, &ts, &ts, nix::sys::stat::UtimensatFlags::FollowSymlink);
            }
            staged_names.push(name);
        }
    }
    if spec.checksum.is_some() && remote.is_empty() {
        bail!("--checksum is only supported for ADD from a URL");
    }
    // A source stage or image is mounted for the copy (its scratch upper is
    // discarded).
    let from_root = match &spec.from {
        Some(from) => {
            let src_state = sources.get(from)?;
            let src_lowers = lower_dirs(cx, src_state)?;
            Some(cx.snaps.prepare(&src_lowers)?)
        }
        None => None,
    };
    if !local.is_empty() {
        let context = from_root.as_ref().map(|a| a.merged()).unwrap_or(&cx.opts.context);
        let req = CopyRequest {
            context,
            sources: &local,
            dest: &spec.dest,
            workdir: &workdir,
            owner,
            chmod: chmod.as_ref(),
            parents: spec.parents,
            ignore: if from_root.is_none() { Some(&cx.ignore) } else { None },
            exclude: exclude.as_ref(),
            dest_is_dir,
            unpack_archives: unpack && from_root.is_none(),
            archive_owner: spec.chown.as_ref().and(owner),
        };
        copy::copy_into(&root, &req)?;
    }
    if let Some(dir) = staged.as_ref().filter(|_| !staged_names.is_empty()) {
        let req = CopyRequest {
            workdir: &workdir,
            chmod: chmod.as_ref(),
            dest_is_dir,
            // Remote archives are not unpacked unless --unpack asks.
            unpack_archives: spec.unpack == Some(true),
            archive_owner: spec.chown.as_ref().and(owner),
            ..CopyRequest::whole_dir(&dir.0, &staged_names, &spec.dest, owner.or(Some(Owner::default())))
        };
        copy::copy_into(&root, &req)?;
    }
    drop(from_root);
    active.unmount()?;
    Ok(())
}
