//! `kiln parse` and `kiln plan` flags.

use std::path::PathBuf;

use clap::Args;

use crate::cli::dockerfile::{DockerfileFlag, StageFlags};

#[derive(Debug, Args)]
pub struct ParseArgs {
    #[command(flatten)]
    pub dockerfile: DockerfileFlag,
    /// Print JSON (schema: frontend/docs/parse-json.md).
    #[arg(long)]
    pub json: bool,
    /// Build context directory (only used to find the Dockerfile).
    #[arg(default_value = ".")]
    pub context: PathBuf,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub dockerfile: DockerfileFlag,
    #[command(flatten)]
    pub stage: StageFlags,
    /// Target platform, os/arch[/variant] (default: the host's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Print JSON (schema: frontend/docs/parse-json.md).
    #[arg(long)]
    pub json: bool,
    /// Build context directory (only used to find the Dockerfile).
    #[arg(default_value = ".")]
    pub context: PathBuf,
}
