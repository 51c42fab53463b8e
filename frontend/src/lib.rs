//! Dockerfile parsing and lowering. Does no I/O.
//!
//! Pipeline: [`parse`] turns text into a [`Dockerfile`] AST (syntax only: directives,
//! continuation lines, heredocs, flags, argument shapes). [`lower`] resolves scope
//! (ARG/ENV, stages, `--from`, `--target`), expands variables and produces a
//! [`BuildGraph`] whose steps carry everything a cache key needs. [`base_images`] is a
//! cheap pre-pass so that the builder can fetch base image configs (their `Env` feeds
//! expansion) before lowering.
//!
//! Nothing here panics on any input; every failure is an [`Error`] with a location.
//!
//! ```
//! use kiln_frontend::{base_images, lower, parse, LowerOptions, StepKind};
//!
//! let df = parse("Dockerfile", "FROM alpine AS build\nRUN make\nFROM scratch\nCOPY --from=build /out /\n")?;
//! let mut opts = LowerOptions::default();
//! for image in base_images(&df, &opts)? {
//!     // The builder fetches each base config here and records its Env:
//!     opts.base_env.insert(image, vec![("PATH".into(), "/usr/bin:/bin".into())]);
//! }
//! let graph = lower(&df, &opts)?;
//! assert_eq!(graph.needed(), vec![0, 1]);
//! match &graph.stages[0].steps[0].kind {
//!     StepKind::Run { argv, .. } => assert_eq!(argv, &["/bin/sh", "-c", "make"]),
//!     other => panic!("{other:?}"),
//! }
//! # Ok::<(), kiln_frontend::Error>(())
//! ```

mod error;
mod expand;
mod gofmt;
mod graph;
mod lower;
mod mounts;
mod parser;
mod values;
mod words;

pub use error::{Diag, Error, Location};
pub use expand::{expand_raw, expand_word};
pub use graph::{Base, BuildGraph, CopyFrom, CopySpec, Healthcheck, RunMount, Stage, Step, StepKind};
pub use lower::{base_images, lower};
pub use parser::{parse, CmdLine, Command, CopySource, Directive, Dockerfile, Flag, Instruction, Keyword};

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// Inputs of lowering that come from the command line and from base image configs.
#[derive(Debug, Clone, Default)]
pub struct LowerOptions {
    /// `--build-arg NAME=VALUE`; only applies to declared ARGs (and the proxy args).
    pub build_args: BTreeMap<String, String>,
    /// `--target` stage name; the last stage when `None`.
    pub target: Option<String>,
    /// Sets TARGETPLATFORM/TARGETOS/TARGETARCH/TARGETVARIANT.
    pub target_platform: Platform,
    /// Sets BUILDPLATFORM/BUILDOS/BUILDARCH/BUILDVARIANT.
    pub build_platform: Platform,
    /// Image ref (as returned by [`base_images`]) → its config `Env`, so that
    /// variables of the base image expand in WORKDIR/COPY/ENV/... as Docker does.
    pub base_env: BTreeMap<String, Vec<(String, String)>>,
}

/// An OS/architecture/variant triple.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl fmt::Display for Platform {
    /// `linux/amd64` or `linux/arm/v7`; empty for the empty (default) platform.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.os.is_empty() && self.architecture.is_empty() {
            return Ok(());
        }
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A heredoc attached to RUN/COPY/ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word (for COPY/ADD also the file name).
    pub name: String,
    /// The body, one `\n` after every line; leading tabs already removed for `<<-`.
    /// For COPY/ADD with `expand`, lowering has already expanded variables in it.
    pub content: String,
    /// False when the delimiter was quoted (`<<"EOF"`): no expansion.
    pub expand: bool,
    /// `<<-`: leading tabs stripped.
    pub chomp: bool,
}
