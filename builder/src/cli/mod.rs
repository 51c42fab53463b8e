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
pub mod warmer;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

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
    /// Kaniko's cache warmer: write base images into a cache directory that
    /// `kiln executor --cache=true --cache-dir DIR` (and `kiln build --base-image-cache`) read.
    Warmer(warmer::WarmerArgs),
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

/// The command line clap should read. Invoked under the name `executor` (the
/// `/kaniko/executor` of kiln's Kaniko image, where Tekton's kaniko task and GitLab's
/// documented job call it), kiln is `kiln executor`: Kaniko's command line with
/// Kaniko's defaults. The re-executions inside the user namespace keep this argv and
/// so dispatch alike; the RUN sandbox is started as `/proc/self/exe`, never as `executor`.
pub fn command_line(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    let name = args.first().and_then(|a| Path::new(a).file_name()).map(OsStr::to_os_string);
    // Kaniko's image has `/kaniko/warmer` beside it, for the same binary.
    if let Some(as_tool) = name.filter(|n| n == "executor" || n == "warmer") {
        // Help and errors then say `kiln executor`, which is what runs.
        args.splice(0..1, [OsString::from("kiln"), as_tool]);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Cli {
        Cli::try_parse_from(command_line(argv.iter().map(OsString::from))).unwrap()
    }

    #[test]
    fn warmer_by_name_is_kiln_warmer_with_kanikos_defaults() {
        let CommandKind::Warmer(a) = parse(&["/kaniko/warmer", "-i", "debian:12", "--image=alpine", "--customPlatform=linux/arm64"]).command else {
            panic!("/kaniko/warmer did not dispatch to warmer");
        };
        assert_eq!(a.cache_dir, PathBuf::from("/cache"));
        assert_eq!(a.images, ["debian:12", "alpine"]);
        assert_eq!(a.custom_platform.as_deref(), Some("linux/arm64"));
        assert!(Cli::try_parse_from(command_line(["/kaniko/warmer", "--bogus"].map(OsString::from))).is_err());
    }

    #[test]
    fn executor_by_name_is_kiln_executor_with_kanikos_defaults() {
        for argv0 in ["/kaniko/executor", "executor", "./executor"] {
            let CommandKind::Executor(a) = parse(&[argv0, "--destination", "r/app:1", "--no-push"]).command else {
                panic!("{argv0} did not dispatch to executor");
            };
            assert_eq!(a.context, "/workspace/");
            assert_eq!(a.dockerfile, PathBuf::from("Dockerfile"));
            assert_eq!(a.destinations, ["r/app:1"]);
            assert_eq!(a.no_push, Some(true));
        }
        // No arguments at all is Kaniko's plain run: the defaults.
        assert!(matches!(parse(&["/kaniko/executor"]).command, CommandKind::Executor(_)));
    }

    #[test]
    fn other_names_are_kiln() {
        for argv0 in ["kiln", "/usr/local/bin/kiln", "/proc/self/exe", "executor-wrapper", "/kaniko/executor/kiln"] {
            assert!(matches!(parse(&[argv0, "df"]).command, CommandKind::Df), "{argv0}");
        }
        // `kiln` named explicitly still takes `executor` as a subcommand.
        assert!(matches!(parse(&["kiln", "executor", "--no-push"]).command, CommandKind::Executor(_)));
        // As `executor`, the first argument is a flag of executor, not a subcommand.
        assert!(Cli::try_parse_from(command_line(["/kaniko/executor", "df"].map(OsString::from))).is_err());
    }
}
