//! `kiln index` flags.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Create (and push) an OCI image index over single-platform images.
    Create(CreateArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Where to push the index, e.g. registry:5000/app:1.
    pub reference: String,
    /// A source image (single-platform manifest, or an index whose platform
    /// manifests are all taken). Repeatable; at least one.
    #[arg(long = "from", value_name = "REF", required = true)]
    pub from: Vec<String>,
    #[command(flatten)]
    pub access: crate::cli::values::RegistryAccess,
    /// Write the index digest to this file.
    #[arg(long = "digest-file", value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
}

