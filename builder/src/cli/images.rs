//! Flags of the local-image commands: `kiln images`, `tag`, `rmi`, `push`, `pull`,
//! `inspect`, `save`, `load` (the habits of `docker`/`podman` image commands).

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List the images kept by name in kiln's store (built with -t, pulled, loaded).
    Images(ListArgs),
    /// Give a local image another name: `kiln tag SRC DST`.
    Tag(TagArgs),
    /// Remove local image names (their blobs are reclaimed by `kiln prune`).
    Rmi(RmiArgs),
    /// Push a local image to a registry: `kiln push NAME [DEST]`.
    Push(PushArgs),
    /// Pull an image from a registry into the store and name it locally.
    Pull(PullArgs),
    /// Show an image's manifest, config and history (local name, else registry).
    Inspect(InspectArgs),
    /// Write local images to an archive that `docker load`, `podman load` and OCI tools read.
    Save(SaveArgs),
    /// Read an image archive (docker save, OCI archive) into the store, by its names.
    Load(LoadArgs),
    /// Print the SBOM attached to a pushed image (its packages, or the document).
    Sbom(SbomArgs),
    /// List the attestations (SBOMs, provenance) attached to a pushed image.
    Attestations(AttestationsArgs),
}

#[derive(Debug, Args)]
pub struct SbomArgs {
    /// The image, e.g. registry:5000/app:1.
    pub reference: String,
    /// The platform's SBOM of a multi-platform image (default: the host's, else the first).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Which document: spdx or cyclonedx (default: the first attached).
    #[arg(long = "type", value_name = "spdx|cyclonedx")]
    pub sbom_type: Option<String>,
    /// What it describes: image (default), context, or stage:NAME.
    #[arg(long, value_name = "image|context|stage:NAME", default_value = "image")]
    pub scope: String,
    /// `table` (packages: name, version, purl) or `json` (the document itself).
    #[arg(long, value_name = "table|json", default_value = "table")]
    pub format: String,
    #[command(flatten)]
    pub access: crate::cli::values::RegistryAccess,
}

#[derive(Debug, Args)]
pub struct AttestationsArgs {
    /// The image, e.g. registry:5000/app:1.
    pub reference: String,
    /// Only this platform's attestations.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// `table` or `json` (one object per attestation; `--payload` adds the documents).
    #[arg(long, value_name = "table|json", default_value = "table")]
    pub format: String,
    /// With --format json: include each attestation's document.
    #[arg(long)]
    pub payload: bool,
    #[command(flatten)]
    pub access: crate::cli::values::RegistryAccess,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only images whose name matches (`app`, `app:dev`, `registry/app`).
    pub filter: Option<String>,
    /// `table` (default) or `json`.
    #[arg(long, value_name = "table|json", default_value = "table")]
    pub format: String,
    /// Only the image IDs (digests, 12 hex digits), one per image.
    #[arg(short, long)]
    pub quiet: bool,
    /// Full digests instead of 12 hex digits.
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// A local name or image ID.
    pub source: String,
    /// The new name.
    pub target: String,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Local names or image IDs (an ID removes every name it has).
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Do not fail when an image is not there.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// A local name or image ID.
    pub image: String,
    /// Where to push (default: the local name itself).
    pub destination: Option<String>,
    #[command(flatten)]
    pub access: crate::cli::values::RegistryAccess,
    /// Write the pushed digest to this file.
    #[arg(long = "digest-file", value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image to pull, e.g. registry:5000/app:1.
    pub reference: String,
    /// Only these platforms (comma-separated; default: every platform of an index).
    #[arg(long, value_name = "OS/ARCH[/VARIANT],...")]
    pub platform: Option<String>,
    #[command(flatten)]
    pub access: crate::cli::values::RegistryAccess,
    /// Print only the digest.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A local name or image ID, else a registry reference.
    pub image: String,
    /// The platform's image of a multi-platform image (default: the host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Print one value: a path into the JSON, e.g. `.Config.config.Env`,
    /// `{{.Digest}}` (keys match case-insensitively).
    #[arg(short, long, value_name = "PATH")]
    pub format: Option<String>,
    #[command(flatten)]
    pub access: crate::cli::values::RegistryAccess,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Local names or image IDs.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// The archive to write (`-` for stdout).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// `docker-archive` (default: an OCI layout plus manifest.json, which both
    /// `docker load` and OCI tools read) or `oci-archive` (the OCI layout alone).
    #[arg(long, value_name = "docker-archive|oci-archive", default_value = "docker-archive")]
    pub format: String,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The archive to read (`-` or absent: stdin).
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Print only the names loaded.
    #[arg(short, long)]
    pub quiet: bool,
}
