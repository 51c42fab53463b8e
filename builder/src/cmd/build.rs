//! `kiln build` and `kiln executor`: registry credentials, options, the user
//! namespace, the async runtime, then the solver.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::build::BuildArgs;

/// `kiln build` (and `kiln executor`, which maps onto it). `image_names`: Kaniko's
/// `--image-name-with-digest-file`, written once the build succeeded.
pub fn run(mut args: BuildArgs, image_names: Option<ImageNames>) -> ExitCode {
    // A context that is not a directory (stdin, tarball, URL, git) or `-f -`:
    // made into one by this process, or inherited by the re-executed child.
    let materialized = match prepare_sources(&mut args) {
        Ok(m) => m,
        Err(e) => return super::fail(&e),
    };
    if let Some(what) = args.call.clone().filter(|c| c != "build") {
        return match super::call::run(&args, &what) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => super::fail(&e),
        };
    }
    let named = match prepare_named_contexts(&mut args) {
        Ok(n) => n,
        Err(e) => return super::fail(&e),
    };
    let mut child_env = materialized.as_ref().map(|m| m.child_env()).unwrap_or_default();
    child_env.extend(named.1);
    // CI-provided registry credentials (CI_REGISTRY*, KILN_AUTH, --authfile):
    // a private merged docker config, removed when the build ends.
    let auth = match crate::cmd::ciauth::install(args.authfile.as_deref()) {
        Ok(g) => g,
        Err(e) => return super::fail(&e.context("registry credentials")),
    };
    let notes = std::mem::take(&mut args.notes);
    // Validate before entering the namespace so flag errors are reported once.
    let mut opts = match args.validate() {
        Ok(o) => o,
        Err(e) => return super::fail(&e),
    };
    opts.registry.auth_files = auth.as_ref().map(|g| g.auth_files());
    if let Some(m) = &materialized {
        opts.context_uri = m.uri.clone();
        opts.context_commit = m.commit.clone();
    }
    crate::progress::init_with(opts.progress, opts.log_timestamp);
    opts.registry.transferred = crate::progress::get().transfers();
    let code = match crate::exec::userns::enter(opts.isolation_choice, &child_env) {
        Ok(crate::exec::userns::Entered::ChildExited(code)) => code,
        Ok(crate::exec::userns::Entered::Inside(isolation)) => {
            opts.isolation = isolation;
            if isolation == crate::options::Isolation::Chroot {
                // No mounts at all: materialized rootfs and walk-and-compare diffs.
                opts.snapshotter = Some(kiln_snapshotter::SnapshotterKind::Native);
            }
            super::init_tracing(opts.log_filter.as_deref());
            for n in &notes {
                tracing::debug!("{n}");
            }
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return super::fail(&anyhow::Error::new(e).context("starting the async runtime")),
            };
            if let Err(e) = rt.block_on(crate::solver::build(opts)) {
                return super::fail(&e);
            }
            if let Some(names) = image_names {
                let written = names.files.iter().try_for_each(|(file, with_tag)| {
                    write_image_names(file, &names.destinations, &names.digest_file, *with_tag).with_context(|| format!("writing {}", file.display()))
                });
                if names.temporary_digest {
                    let _ = std::fs::remove_file(&names.digest_file);
                }
                if let Err(e) = written {
                    return super::fail(&e);
                }
            }
            0
        }
        Err(e) => return super::fail(&e.context("entering the build's user namespace")),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}


/// Where the re-executed child finds the `--build-context` list with git URLs and
/// tarballs replaced by the directories they were made into.
const NAMED_ENV: &str = "KILN_MATERIALIZED_BUILD_CONTEXTS";

/// `--build-context` values that are git URLs, tarballs or http(s) URLs, made into
/// directories (kept until the returned guards drop); the child's environment.
fn prepare_named_contexts(args: &mut BuildArgs) -> anyhow::Result<(Vec<super::source::Materialized>, Vec<(String, String)>)> {

    if let Some(v) = std::env::var_os(NAMED_ENV) {
        args.build_contexts = serde_json::from_str(&v.to_string_lossy()).context("the parent's build contexts")?;
        return Ok((Vec::new(), Vec::new()));
    }
    let mut guards = Vec::new();
    let mut changed = false;
    let state = crate::options::state_dir()?;
    for c in args.build_contexts.iter_mut() {
        let Some((name, value)) = c.split_once('=') else { continue };
        if value.starts_with("docker-image://") || value.starts_with("oci-layout://") {
            continue;
        }
        if value == "-" {
            anyhow::bail!("--build-context {name}: stdin is for the main context only");
        }
        if let Some(m) = super::source::materialize(std::path::Path::new(value), None, &state, false).with_context(|| format!("--build-context {name}"))? {
            *c = format!("{name}={}", m.context.display());
            guards.push(m);
            changed = true;
        }
    }
    let env = if changed { vec![(NAMED_ENV.to_string(), serde_json::to_string(&args.build_contexts)?)] } else { Vec::new() };
    Ok((guards, env))
}

/// Points `args` at a materialised context and Dockerfile (see `cmd::source`).
fn prepare_sources(args: &mut BuildArgs) -> anyhow::Result<Option<super::source::Materialized>> {
    if let Some((dir, dockerfile)) = super::source::inherited() {
        if let Some(d) = dir {
            args.context = d;
        }
        match dockerfile {
            Some(f) => args.dockerfile.file = Some(f),
            None if args.dockerfile_in_context => args.dockerfile.file = args.dockerfile.file.as_ref().map(|f| args.context.join(f)),
            None => {}
        }
        return Ok(None);
    }
    let keep_git_dir = args.stage.build_args.iter().any(|a| {
        a.split_once('=').is_some_and(|(k, v)| k == "BUILDKIT_CONTEXT_KEEP_GIT_DIR" && crate::options::build_arg_on(v))
    });
    let state = crate::options::state_dir()?;
    let mut m = super::source::materialize(&args.context, args.dockerfile.file.as_deref(), &state, keep_git_dir)?;
    if let (Some(m), Some(sub)) = (&mut m, &args.context_sub_path) {
        if sub.is_absolute() || sub.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            anyhow::bail!("--context-sub-path {}: expected a relative path inside the context", sub.display());
        }
        let dir = m.context.join(sub);
        if !std::fs::symlink_metadata(&dir).is_ok_and(|md| md.is_dir()) {
            anyhow::bail!("--context-sub-path {}: no such directory in the context {}", sub.display(), args.context.display());
        }
        m.context = dir;
    }
    if let Some(m) = &m {
        args.context = m.context.clone();
        if let Some(f) = &m.dockerfile {
            args.dockerfile.file = Some(f.clone());
        } else if args.dockerfile_in_context {
            args.dockerfile.file = args.dockerfile.file.as_ref().map(|f| m.context.join(f));
        }
    }
    Ok(m)
}

/// Kaniko's `--image-name-with-digest-file` and `--image-name-tag-with-digest-file`:
/// the files (whether each keeps the tag), for which destinations, and the digest
/// file the build writes (a temporary one when the user gave no --digest-file).
pub struct ImageNames {
    pub files: Vec<(std::path::PathBuf, bool)>,
    pub digest_file: std::path::PathBuf,
    pub temporary_digest: bool,
    pub destinations: Vec<String>,
}

/// After a successful build: one `REPO@DIGEST` line per destination (Kaniko's
/// `--image-name-with-digest-file`), or `REPO:TAG@DIGEST` with `with_tag`
/// (`--image-name-tag-with-digest-file`; a destination without a tag has none), as
/// Kaniko's `DoPush` writes them.
pub fn write_image_names(file: &std::path::Path, destinations: &[String], digest_file: &std::path::Path, with_tag: bool) -> Result<()> {
    let digest = std::fs::read_to_string(digest_file)?;
    let digest = digest.trim();
    let lines: Vec<String> = destinations
        .iter()
        .map(|d| {
            let name = d.split('@').next().unwrap_or(d);
            let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
            let (repo, tag) = match name[slash..].rfind(':') {
                Some(i) => (&name[..slash + i], Some(&name[slash + i + 1..])),
                None => (name, None),
            };
            match tag.filter(|_| with_tag) {
                Some(t) => format!("{repo}:{t}@{digest}"),
                None => format!("{repo}@{digest}"),
            }
        })
        .collect();
    std::fs::write(file, lines.join("\n") + "\n")?;
    Ok(())
}
