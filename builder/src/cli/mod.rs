//! The command line: clap declarations only, one module per subcommand family.
//!
//! Flags are declared once (clap derive) and parsed into low-level args structs;
//! `build::BuildArgs::validate` (and the other subcommands' `cmd/` modules) turn
//! them into the typed options of `crate::options`, which is all the engine reads.
//! Every validation error names the flag. Nothing below `cmd/` names this module.

pub mod build;
pub mod diff;
pub mod dockerfile;
pub mod executor;
pub mod images;
pub mod index;
pub mod inspect;
pub mod maintenance;
pub mod values;

use std::path::PathBuf;

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
    // pflag's rule, which Kaniko pipelines rely on: a repeated flag's last value wins.
    #[command(args_override_self = true)]
    Executor(executor::ExecutorArgs),
    /// Remove unused data: unreferenced blobs, leftovers of killed builds; with --all
    /// also the layer cache and unpacked layers.
    Prune(maintenance::PruneArgs),
    /// Show how much disk kiln's state uses.
    Df,
    #[command(flatten)]
    Image(images::ImageCommand),
    /// Compare two images (file tree and config); exit 0 same, 1 different, 2 error.
    Diff(diff::DiffArgs),
    /// Internal: run one RUN step inside its sandbox.
    #[command(name = "__sandbox", hide = true)]
    Sandbox { spec: PathBuf },
}
