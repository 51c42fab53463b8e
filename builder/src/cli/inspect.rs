//! `kiln parse` and `kiln plan` flags.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct ParseArgs {
    /// Path of the Dockerfile (default: CONTEXT/Dockerfile; `-` reads stdin).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Print JSON (schema: frontend/docs/parse-json.md).
    #[arg(long)]
    pub json: bool,
    /// Build context directory (only used to find the Dockerfile).
    #[arg(default_value = ".")]
    pub context: PathBuf,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Path of the Dockerfile (default: CONTEXT/Dockerfile; `-` reads stdin).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Build-time variable, KEY=VALUE (or KEY to take it from the environment).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Plan this stage (default: the last one).
    #[arg(long)]
    pub target: Option<String>,
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
