//! kiln's builder: the CLI, the solver and everything a build does.
//!
//! Imports point one way, down this list (ARCHITECTURE.md, "builder"):
//! `cmd` (one module per subcommand: reads the parsed flags, does the work) →
//! `cli` (clap declarations, validated into `options`) → `solver` (schedule and run
//! stages) → `plan` (keys) → `export` (manifests, indexes, outputs) → `attest` (SBOM and provenance documents) → `steps`
//! (RUN mounts, COPY/ADD, archives, downloads) → `exec` (namespaces, sandbox) and
//! `context` (the build context) → the leaves (`options`, `image`, `progress`,
//! `platform`, `fsutil`), then `timefmt` (progress lines are dated with it).

mod attest;
mod cli;
pub mod cmd;
mod context;
mod exec;
mod export;
mod fsutil;
mod image;
mod options;
mod plan;
mod progress;
mod solver;
mod steps;
mod timefmt;
