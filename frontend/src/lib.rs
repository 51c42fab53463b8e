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
//! # The operation graph
//!
//! [`BuildGraph`] keeps the stage/step structure the builder executes, and
//! [`BuildGraph::ops`] views the needed part of it as a DAG of operations
//! ([`OpKind`]: image source, context source, exec, file, config) with an edge for
//! every input: `parent` (the previous step, or the stage's base), `context`,
//! `stage` (`COPY --from`, `RUN --mount=from=`, and `FROM stage` as a parent) and
//! `image`. Stages that do not depend on each other share no path, so a solver can
//! run them in parallel.
//!
//! # Cache-key material
//!
//! Each [`Step`] carries `cache_material`: a deterministic text holding everything of
//! the step's cache key that the frontend knows. It does not depend on where the
//! instruction is in the file, on its spelling (`RUN  x` and `run x` give the same
//! text), on build args the step does not use, or on proxy args. Format (version 1),
//! one item per line, each line ending in `\n`:
//!
//! ```text
//! kiln.step.v1
//! platform "linux/amd64"              stage platform (FROM --platform) or target platform
//! instruction {"Run":{"argv":[...]}}  the expanded StepKind as JSON (serde; maps sorted)
//! arg "NAME" "value"                  each build arg used (sorted; `null` = declared, no value)
//! input parent                        always: the key of the step's parent
//! input context:["src","dir/"]        each Step::inputs entry, in order (StepInput::material)
//! input stage:0
//! input image:"alpine:3.20"
//! ```
//!
//! Strings are JSON-quoted, so no value can forge a line. The builder computes a
//! step's key as a hash of: the parent's key (for the first step: the base image's
//! manifest digest, the base stage's last key, or `scratch`), this text, and for each
//! `input` line in order the digest of what it names (context files after
//! `.dockerignore`, the source stage's last key, the image's manifest digest). A
//! build arg is "used" by a step when its expansion looked the name up (and ENV did
//! not shadow it), and by every RUN while it is in scope, as RUN gets all ARGs in its
//! environment.
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
//! assert_eq!(graph.needed().iter().map(|d| d.0).collect::<Vec<_>>(), vec![0, 1]);
//! match &graph.stages[0].steps[0].kind {
//!     StepKind::Run { argv, .. } => assert_eq!(argv, &["/bin/sh", "-c", "make"]),
//!     other => panic!("{other:?}"),
//! }
//! # Ok::<(), kiln_frontend::Error>(())
//! ```

mod chmod;
mod error;
mod expand;
mod gitref;
mod gofmt;
mod graph;
mod lower;
mod mounts;
mod parser;
pub mod suggest;
mod values;
mod words;

pub use chmod::{Chmod, Clause, ModeSpec};
pub use error::{Diag, Error, Location};
pub use gitref::is_remote_git;
pub use expand::{expand_display, expand_raw, expand_word};
pub use graph::{
    Base, BuildGraph, CopyFrom, CopySpec, Healthcheck, MountKind, Network, Op, OpInput, OpKind, RunMount, Sharing,
    SourceDateEpoch, Stage, StageIdx, Step, StepInput, StepKind,
};
pub use lower::{base_images, lower};
pub use parser::{parse, CmdLine, Command, CopySource, Directive, Dockerfile, Flag, Instruction, Keyword};

use serde::Serialize;
use std::collections::BTreeMap;

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
    /// Image ref → its config `OnBuild` triggers (as written, e.g. `RUN make`): they
    /// run first in a stage built FROM that image, as in Docker.
    pub base_onbuild: BTreeMap<String, Vec<String>>,
    /// Build every stage up to the target, not only those it needs: Kaniko's default
    /// (`kiln executor` without `--skip-unused-stages`); BuildKit builds only the needed.
    pub all_stages: bool,
}

/// Platforms are kiln's one type (parse, normalise, host, text, JSON).
pub use kiln_oci::Platform;

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
