//! The `kiln` binary.

mod binfmt;
mod chmod;
mod ciauth;
mod index_cmd;
mod cli;
mod copy;
mod archive;
mod context;
mod dockerignore;
mod executor;
mod export;
mod fetch;
mod fsutil;
mod idmap;
mod keys;
mod maintenance;
mod image;
mod inspect;
mod platform;
mod parents;
mod progress;
mod runmounts;
mod sandbox;
mod solver;
mod stagecontent;
mod sshrelay;
mod stdio;
mod timefmt;
mod urlcache;
mod userns;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, CommandKind};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        CommandKind::Binfmt { install, platforms } => {
            let r = if install { binfmt::install(&platforms) } else { binfmt::list() };
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        CommandKind::Parse(args) => inspect::parse_cmd(args),
        CommandKind::Plan(args) => inspect::plan_cmd(args),
        CommandKind::Index { command } => {
            init_tracing();
            let authfile = match &command {
                index_cmd::IndexCommand::Create(a) => a.authfile.clone(),
            };
            let _auth = match ciauth::install(authfile.as_deref()) {
                Ok(g) => g,
                Err(e) => return fail(&e.context("registry credentials")),
            };
            match index_cmd::main(command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        CommandKind::Df => match cli::state_dir().and_then(|d| maintenance::df(&d)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        CommandKind::Prune(args) => {
            // Unpacked layers belong to subordinate ids: prune from inside.
            match userns::enter(userns::IsolationChoice::Auto) {
                Ok(userns::Entered::ChildExited(code)) => return ExitCode::from(code.clamp(0, 255) as u8),
                Ok(userns::Entered::Inside(_)) => {}
                Err(e) => return fail(&e.context("entering the build's user namespace")),
            }
            match cli::state_dir().and_then(|d| maintenance::prune(&args, &d)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        CommandKind::Sandbox { spec } => ExitCode::from(sandbox::main(&spec).clamp(0, 255) as u8),
        CommandKind::Build(args) => run_build(args, None),
        CommandKind::Executor(args) => {
            let destinations = args.destinations.clone();
            match args.into_build() {
                Ok((build, names_file)) => {
                    let digest_file = build.digest_file.clone();
                    run_build(build, names_file.zip(digest_file).map(|(n, d)| (n, d, destinations)))
                }
                Err(e) => fail(&e),
            }
        }
    }
}

/// `kiln build` (and `kiln executor`, which maps onto it). `image_names`: Kaniko's
/// `--image-name-with-digest-file`, written once the build succeeded.
fn run_build(args: cli::BuildArgs, image_names: Option<(std::path::PathBuf, std::path::PathBuf, Vec<String>)>) -> ExitCode {
    // CI-provided registry credentials (CI_REGISTRY*, KILN_AUTH, --authfile):
    // a private merged docker config, removed when the build ends.
    let _auth = match ciauth::install(args.authfile.as_deref()) {
        Ok(g) => g,
        Err(e) => return fail(&e.context("registry credentials")),
    };
    // Validate before entering the namespace so flag errors are reported once.
    let mut opts = match args.validate() {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    progress::init(opts.progress);
    let code = match userns::enter(opts.isolation_choice) {
        Ok(userns::Entered::ChildExited(code)) => code,
        Ok(userns::Entered::Inside(isolation)) => {
            opts.isolation = isolation;
            if isolation == userns::Isolation::Chroot {
                // No mounts at all: materialized rootfs and walk-and-compare diffs.
                opts.snapshotter = Some(kiln_snapshotter::SnapshotterKind::Native);
            }
            init_tracing();
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return fail(&anyhow::Error::new(e).context("starting the async runtime")),
            };
            match rt.block_on(solver::build(opts)) {
                Ok(()) => 0,
                Err(e) => return fail(&e),
            }
        }
        Err(e) => return fail(&e.context("entering the build's user namespace")),
    };
    if code == 0 && !userns::entered_before() {
        if let Some((file, digest_file, destinations)) = image_names {
            if let Err(e) = executor::write_image_names(&file, &destinations, &digest_file) {
                return fail(&e.context(format!("writing {}", file.display())));
            }
        }
    }
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn fail(e: &anyhow::Error) -> ExitCode {
    // Frontend errors carry their own `file:line:col` and caret; print them as is.
    if progress::get().mode() == progress::Mode::Json {
        progress::get().error(&format!("{e:#}"));
    } else {
        eprintln!("error: {e:#}");
    }
    ExitCode::from(1)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
