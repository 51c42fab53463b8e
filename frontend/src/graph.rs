//! The lowered build graph: stages of steps with dependency edges.
//!
//! This is the contract with the builder: every value is already expanded, every
//! stage reference is an index, and each step carries its `created_by` history text.

use crate::error::Location;
use crate::Heredoc;
use serde::Serialize;
use std::collections::BTreeMap;

/// The result of lowering.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildGraph {
    pub stages: Vec<Stage>,
    /// Index of the stage to build (`--target`, else the last one).
    pub target: usize,
}

impl BuildGraph {
    /// The stages the target needs, dependencies first, the target last.
    pub fn needed(&self) -> Vec<usize> {
        let deps: Vec<&[usize]> = self.stages.iter().map(|s| s.deps.as_slice()).collect();
        dependency_order(self.target, &deps)
    }
}

/// Post-order walk from `target` over `deps`: dependencies first. Iterative, so deep
/// chains cannot overflow the stack; out-of-range indices are ignored.
pub(crate) fn dependency_order(target: usize, deps: &[&[usize]]) -> Vec<usize> {
    let n = deps.len();
    if target >= n {
        return Vec::new();
    }
    let mut seen = vec![false; n];
    let mut out = Vec::new();
    let mut stack: Vec<(usize, usize)> = vec![(target, 0)];
    seen[target] = true;
    while let Some((s, i)) = stack.last_mut() {
        let s = *s;
        if let Some(&d) = deps[s].get(*i) {
            *i += 1;
            if d < n && !seen[d] {
                seen[d] = true;
                stack.push((d, 0));
            }
        } else {
            out.push(s);
            stack.pop();
        }
    }
    out
}

/// A build stage. Stages outside [`BuildGraph::needed`] are lowered best-effort, as
/// BuildKit never evaluates unreachable stages: if lowering one fails (say
/// `${X:?}` with X unset) it is kept with no steps and its error is dropped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    pub index: usize,
    /// Lower-cased `AS` name.
    pub name: Option<String>,
    pub base: Base,
    /// `FROM --platform=...`, expanded.
    pub platform: Option<String>,
    pub steps: Vec<Step>,
    /// Stages this one reads from (its base stage, `COPY --from`, `RUN --mount=from=`).
    pub deps: Vec<usize>,
    pub loc: Location,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Base {
    Scratch,
    Image(String),
    Stage(usize),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub loc: Location,
    /// The instruction as written, continuation lines joined.
    pub source: String,
    pub kind: StepKind,
    /// History text, as BuildKit writes it.
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum StepKind {
    /// `argv` is final: shell form is wrapped in the stage's SHELL. Heredoc forms
    /// follow BuildKit: `RUN <<EOF` alone runs the body via the shell; if the body
    /// starts with `#!`, argv is `[shell..., "/dev/pipes/EOF"]` and the builder must
    /// mount `heredocs[0].content` read-only, mode 0755, at `/dev/pipes/EOF`;
    /// otherwise the command line and bodies are joined and given to the shell.
    Run {
        argv: Vec<String>,
        shell_form: bool,
        /// ARGs in scope with values: set in the RUN's environment, never in the image.
        build_env: Vec<(String, String)>,
        network: Option<String>,
        mounts: Vec<RunMount>,
        heredocs: Vec<Heredoc>,
    },
    Copy(CopySpec),
    Add(CopySpec),
    Env(Vec<(String, String)>),
    /// Resolved against the previous WORKDIR of the stage. Relative only when the
    /// stage's base image working directory is unknown here (the builder joins it
    /// with the base config's `WorkingDir`).
    Workdir(String),
    Cmd(Vec<String>),
    Entrypoint(Vec<String>),
    User(String),
    Label(Vec<(String, String)>),
    /// `80/tcp` normalized, ranges expanded.
    Expose(Vec<String>),
    Volume(Vec<String>),
    StopSignal(String),
    /// `None` = `HEALTHCHECK NONE`.
    Healthcheck(Option<Healthcheck>),
    Shell(Vec<String>),
    OnBuild(String),
    Maintainer(String),
    /// Declared ARGs with their effective values.
    Arg(Vec<(String, Option<String>)>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CopySpec {
    pub sources: Vec<String>,
    pub dest: String,
    pub from: Option<CopyFrom>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub heredocs: Vec<Heredoc>,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    pub unpack: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CopyFrom {
    Stage(usize),
    Image(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunMount {
    /// bind|cache|tmpfs|secret|ssh
    pub kind: String,
    /// Options with aliases normalized (`dst`/`destination` → `target`, `src` →
    /// `source`, `ro` → `readonly=true`, `rw` → `readonly=false`).
    pub options: BTreeMap<String, String>,
    /// `from=` resolved: a stage index or an image ref.
    pub from: Option<CopyFrom>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// `["CMD", ...]` or `["CMD-SHELL", "..."]`.
    pub test: Vec<String>,
    /// Durations in nanoseconds.
    pub interval: Option<i64>,
    pub timeout: Option<i64>,
    pub start_period: Option<i64>,
    pub start_interval: Option<i64>,
    pub retries: Option<i64>,
}
