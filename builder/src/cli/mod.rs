//! The command line: clap declarations only, one module per subcommand family.
//!
//! Flags are declared once (clap derive) and parsed into low-level args structs;
//! `build::BuildArgs::validate` (and the other subcommands' `cmd/` modules) turn
//! them into the typed options of `crate::options`, which is all the engine reads.
//! Every validation error names the flag. Nothing below `cmd/` names this module.

pub mod build;
pub mod executor;
pub mod index;
pub mod inspect;
pub mod maintenance;
pub mod values;

use std::path::PathBuf;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "kiln", version, about = "Daemonless, rootless container image builder")]
pub struct Cli {
    #[command(subcommand)]
    pub command: CommandKind,
}

#[derive(Debug, Subcommand)]
pub enum CommandKind {
    /// Build an image from a Dockerfile and a context directory.
    Build(build::BuildArgs),
    /// Parse a Dockerfile and print its instructions (no build, no registry).
    Parse(inspect::ParseArgs),
    /// Print the build graph after expansion and pruning, with cache-key material.
    Plan(inspect::PlanArgs),
    /// Show which foreign platforms RUN steps can execute on, or register QEMU.
    Binfmt {
        /// Register qemu-user-static's emulators with the F flag (root only).
        #[arg(long)]
        install: bool,
        /// Architectures or platforms to register (default: all kiln knows).
        platforms: Vec<String>,
    },
    /// Work with multi-platform image indexes: `kiln index create REF --from REF1 --from REF2`.
    Index {
        #[command(subcommand)]
        command: index::IndexCommand,
    },
    /// Kaniko-compatible command line (`--context`, `--destination`, ...), mapped onto `build`.
    Executor(executor::ExecutorArgs),
    /// Remove unused data: unreferenced blobs, leftovers of killed builds; with --all
    /// also the layer cache and unpacked layers.
    Prune(maintenance::PruneArgs),
    /// Show how much disk kiln's state uses.
    Df,
    /// Internal: run one RUN step inside its sandbox.
    #[command(name = "__sandbox", hide = true)]
    Sandbox { spec: PathBuf },
}


/// Parse the command line and run the subcommand.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        CommandKind::Binfmt { install, platforms } => {
            let r = if install { crate::exec::binfmt::install(&platforms) } else { crate::exec::binfmt::list() };
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => crate::cmd::fail(&e),
            }
        }
        CommandKind::Parse(args) => crate::cmd::inspect::parse_cmd(args),
        CommandKind::Plan(args) => crate::cmd::inspect::plan_cmd(args),
        CommandKind::Index { command } => {
            crate::cmd::init_tracing();
            let authfile = match &command {
                index::IndexCommand::Create(a) => a.authfile.clone(),
            };
            let _auth = match crate::cmd::ciauth::install(authfile.as_deref()) {
                Ok(g) => g,
                Err(e) => return crate::cmd::fail(&e.context("registry credentials")),
            };
            match crate::cmd::index::main(command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => crate::cmd::fail(&e),
            }
        }
        CommandKind::Df => match crate::options::state_dir().and_then(|d| crate::cmd::maintenance::df(&d)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => crate::cmd::fail(&e),
        },
        CommandKind::Prune(args) => {
            // Unpacked layers belong to subordinate ids: prune from inside.
            match crate::exec::userns::enter(crate::exec::userns::IsolationChoice::Auto) {
                Ok(crate::exec::userns::Entered::ChildExited(code)) => return ExitCode::from(code.clamp(0, 255) as u8),
                Ok(crate::exec::userns::Entered::Inside(_)) => {}
                Err(e) => return crate::cmd::fail(&e.context("entering the build's user namespace")),
            }
            match crate::options::state_dir().and_then(|d| crate::cmd::maintenance::prune(&args, &d)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => crate::cmd::fail(&e),
            }
        }
        CommandKind::Sandbox { spec } => ExitCode::from(crate::exec::sandbox::main(&spec).clamp(0, 255) as u8),
        CommandKind::Build(args) => crate::cmd::build::run(args, None),
        CommandKind::Executor(args) => {
            let destinations = args.destinations.clone();
            match args.into_build() {
                Ok((build, names_file)) => {
                    let digest_file = build.digest_file.clone();
                    crate::cmd::build::run(build, names_file.zip(digest_file).map(|(n, d)| (n, d, destinations)))
                }
                Err(e) => crate::cmd::fail(&e),
            }
        }
    }
}

