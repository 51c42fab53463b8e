//! `kiln prune` flags.

use clap::Args;

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also remove every layer-cache record and every unpacked layer.
    #[arg(long)]
    pub all: bool,
    /// Keep at most this much (e.g. 10GB), removing the oldest first.
    #[arg(long = "keep-storage", value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// Only remove what is older than a duration: until=DURATION (e.g. until=24h).
    #[arg(long = "filter", value_name = "until=DURATION")]
    pub filter: Option<String>,
}
