//! `kiln diff` flags.

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// One line per difference, then a summary line.
    Text,
    /// One JSON object: `{"same", "a", "b", "differences": [...]}`.
    Json,
}

/// Compare two images: file tree and config. Exit 0 when the same, 1 when they
/// differ, 2 on an error (usage, an image that cannot be read).
///
/// An image is `oci-layout://DIR[:TAG|@DIGEST]`, a directory holding an OCI
/// layout, an OCI or docker archive (`.tar`, plain or gzip), or an image
/// reference (`docker-image://REF` or plain `REF`: a named local image, else
/// pulled from its registry).
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The first image: `oci-layout://DIR[:TAG|@DIGEST]`, a directory holding an OCI
    /// layout, an OCI or docker archive file (plain or gzip), or `[docker-image://]REF`
    /// (a named local image, else pulled from its registry).
    pub a: String,
    /// The second image, in any of the same forms.
    pub b: String,
    /// Leave out a path and everything below it: a prefix (`etc/hosts`, `/run`) or a
    /// glob (`*` within a name, `**` across names: `var/cache/*`, `**/*.pyc`). Repeatable.
    #[arg(long = "ignore-path", value_name = "PATTERN")]
    pub ignore_paths: Vec<String>,
    /// Leave out a config label. Repeatable.
    #[arg(long = "ignore-label", value_name = "KEY")]
    pub ignore_labels: Vec<String>,
    /// Leave out xattrs whose name starts with PREFIX (`user.overlay.`). Repeatable.
    #[arg(long = "ignore-xattr", value_name = "PREFIX")]
    pub ignore_xattrs: Vec<String>,
    /// Leave out a config field: User, Env, Entrypoint, Cmd, WorkingDir, Labels,
    /// ExposedPorts, Volumes, StopSignal, Healthcheck, Shell, OnBuild, os,
    /// architecture, variant, history. Repeatable.
    #[arg(long = "ignore-config", value_name = "FIELD")]
    pub ignore_config: Vec<String>,
    /// The platform to compare when an image is an index (default: the host's).
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Output format.
    #[arg(long = "format", value_enum, default_value_t = DiffFormat::Text)]
    pub format: DiffFormat,
    /// Also compare the history: its length and each entry's `created_by`.
    #[arg(long = "history")]
    pub history: bool,
    #[command(flatten)]
    pub registry: crate::cli::values::RegistryFlags,
}
