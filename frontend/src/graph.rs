//! The lowered build graph: stages of steps with dependency edges.
//!
//! This is the contract with the builder: every value is already expanded, every
//! stage reference is an index, and each step carries its `created_by` history text.

use crate::chmod::Chmod;
use crate::error::Location;
use crate::Heredoc;
use serde::Serialize;
use std::collections::BTreeMap;

/// The index of a stage in its graph ([`BuildGraph::stages`]); written (Display,
/// Debug, JSON) as the bare number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct StageIdx(pub usize);

impl std::fmt::Display for StageIdx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for StageIdx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::ops::Index<StageIdx> for Vec<Stage> {
    type Output = Stage;
    fn index(&self, i: StageIdx) -> &Stage {
        &self[i.0]
    }
}

impl BuildGraph {
    /// The stage at `i`, if the graph has it.
    pub fn stage(&self, i: StageIdx) -> Option<&Stage> {
        self.stages.get(i.0)
    }
}

/// The result of lowering.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildGraph {
    pub stages: Vec<Stage>,
    /// Index of the stage to build (`--target`, else the last one).
    pub target: StageIdx,
    /// Where the build's SOURCE_DATE_EPOCH comes from (`--build-arg`, else the
    /// global ARG's value); `None` when it is unset or empty.
    pub source_date_epoch: Option<SourceDateEpoch>,
    /// Every stage up to the target is built, used or not ([`LowerOptions::all_stages`]).
    pub all_stages: bool,
}

/// A SOURCE_DATE_EPOCH value as BuildKit reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SourceDateEpoch {
    /// Seconds since 1970.
    Seconds(i64),
    /// `context`: the time of the build context's source (none for a local one).
    Context,
    /// A stage name: the time of the one remote source (HTTP or Git) its single
    /// `ADD` fetches; the stage is checked to be `FROM scratch` with only ARGs and it.
    Stage(StageIdx),
}

impl BuildGraph {
    /// The stages the target needs, dependencies first, the target last.
    pub fn needed(&self) -> Vec<StageIdx> {
        let deps: Vec<Vec<usize>> = self.stages.iter().map(|s| s.deps.iter().map(|d| d.0).collect()).collect();
        let deps: Vec<&[usize]> = deps.iter().map(Vec::as_slice).collect();
        built_stages(self.target.0, &deps, self.all_stages).into_iter().map(StageIdx).collect()
    }

    /// The needed part of the build as a DAG of operations: image and context
    /// sources, then each needed stage's steps in order. Every step reads its parent
    /// (the previous step, or the stage's base: an image source or the last op of the
    /// base stage; nothing for `scratch`) plus its [`Step::inputs`]. Stages that do
    /// not reach each other share no path in this DAG, so they can run in parallel.
    pub fn ops(&self) -> Vec<Op> {
        let mut ops: Vec<Op> = Vec::new();
        let mut images: BTreeMap<String, usize> = BTreeMap::new();
        let mut context: Option<usize> = None;
        // The last op of each lowered stage (None: scratch with no steps).
        let mut results: BTreeMap<StageIdx, Option<usize>> = BTreeMap::new();
        let mut image_op = |ops: &mut Vec<Op>, r: &str| -> usize {
            *images.entry(r.to_string()).or_insert_with(|| {
                let id = ops.len();
                ops.push(Op {
                    id,
                    kind: OpKind::ImageSource,
                    stage: None,
                    step: None,
                    label: format!("image {r}"),
                    inputs: Vec::new(),
                    cache_material: StepInput::Image(r.to_string()).material(),
                });
                id
            })
        };
        for i in self.needed() {
            let Some(st) = self.stage(i) else { continue };
            let mut parent = match &st.base {
                Base::Scratch => None,
                Base::Image(r) => Some(image_op(&mut ops, r)),
                Base::Stage(j) => results.get(j).copied().flatten(),
            };
            for (n, step) in st.steps.iter().enumerate() {
                let mut inputs = Vec::new();
                if let Some(p) = parent {
                    inputs.push(OpInput { op: p, role: "parent" });
                }
                for inp in &step.inputs {
                    let (op, role) = match inp {
                        StepInput::Context { .. } => {
                            let id = *context.get_or_insert_with(|| {
                                let id = ops.len();
                                ops.push(Op {
                                    id,
                                    kind: OpKind::ContextSource,
                                    stage: None,
                                    step: None,
                                    label: "context".into(),
                                    inputs: Vec::new(),
                                    cache_material: "context".into(),
                                });
                                id
                            });
                            (Some(id), "context")
                        }
                        StepInput::Stage(j) => (results.get(j).copied().flatten(), "stage"),
                        StepInput::Image(r) => (Some(image_op(&mut ops, r)), "image"),
                    };
                    if let Some(op) = op {
                        if !inputs.iter().any(|x| x.op == op && x.role == role) {
                            inputs.push(OpInput { op, role });
                        }
                    }
                }
                let kind = match step.kind {
                    StepKind::Run { .. } => OpKind::Exec,
                    StepKind::Copy(_) | StepKind::Add(_) => OpKind::File,
                    _ => OpKind::Config,
                };
                let id = ops.len();
                ops.push(Op {
                    id,
                    kind,
                    stage: Some(i),
                    step: Some(n),
                    label: step.created_by.clone(),
                    inputs,
                    cache_material: step.cache_material.clone(),
                });
                parent = Some(id);
            }
            results.insert(i, parent);
        }
        ops
    }
}

/// Post-order walk from `target` over `deps`: dependencies first. Iterative, so deep
/// chains cannot overflow the stack; out-of-range indices are ignored.
/// The stages a build runs, dependencies first and the target last: what the target
/// needs, or with `all_stages` every stage up to the target and what each needs
/// (Kaniko without `--skip-unused-stages`).
pub(crate) fn built_stages(target: usize, deps: &[&[usize]], all_stages: bool) -> Vec<usize> {
    if !all_stages {
        return dependency_order(target, deps);
    }
    let mut out: Vec<usize> = Vec::new();
    for s in (0..target).chain(std::iter::once(target)) {
        for d in dependency_order(s, deps) {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

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
    pub index: StageIdx,
    /// Lower-cased `AS` name.
    pub name: Option<String>,
    pub base: Base,
    /// `FROM --platform=...`, expanded.
    pub platform: Option<String>,
    pub steps: Vec<Step>,
    /// Stages this one reads from (its base stage, `COPY --from`, `RUN --mount=from=`).
    pub deps: Vec<StageIdx>,
    pub loc: Location,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Base {
    Scratch,
    Image(String),
    Stage(StageIdx),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub loc: Location,
    /// Last physical line of the instruction (a RUN continued over lines 2-3: 3).
    pub end_line: usize,
    /// The instruction as written, continuation lines joined.
    pub source: String,
    /// The step's name in progress output, as BuildKit names RUN, COPY, ADD and
    /// WORKDIR: [`Step::source`] with the variables set at that point expanded
    /// (`expand::expand_display`) and a secret's `env=` variable shown as `****`.
    pub display: String,
    pub kind: StepKind,
    /// History text, as BuildKit writes it.
    pub created_by: String,
    /// What the step reads besides its parent (the previous step of the stage, or the
    /// stage's base): context files, other stages, images. In instruction order.
    pub inputs: Vec<StepInput>,
    /// Build args (declared ARGs) the step depends on, with their values (`None` =
    /// declared without a value), sorted by name. Proxy args are never listed.
    pub args_used: Vec<(String, Option<String>)>,
    /// Deterministic cache-key material: everything of the key that the frontend
    /// knows (see the crate docs, "Cache-key material"). The builder hashes it with
    /// the parent key and the digests of [`Step::inputs`].
    pub cache_material: String,
}

/// An input edge of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum StepInput {
    /// Files of the build context: COPY/ADD sources (after expansion; URLs excluded)
    /// or a `RUN --mount=type=bind` source (`.` for the whole context).
    Context { sources: Vec<String> },
    /// The result of another stage (`COPY --from`, `RUN --mount=from=`).
    Stage(StageIdx),
    /// An image that is not a stage (`COPY --from=alpine`, `--mount=from=image`).
    Image(String),
}

impl StepInput {
    /// `context:["a","b"]`, `stage:2`, `image:"alpine:3"`; the form used in the
    /// cache material and by `kiln plan`.
    pub fn material(&self) -> String {
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        match self {
            StepInput::Context { sources } => {
                format!("context:{}", serde_json::to_string(sources).unwrap_or_default())
            }
            StepInput::Stage(j) => format!("stage:{j}"),
            StepInput::Image(r) => format!("image:{}", q(r)),
        }
    }
}

/// What kind of operation a node of [`BuildGraph::ops`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// A base image or an image named by `--from`.
    ImageSource,
    /// The build context (one node per graph).
    ContextSource,
    /// RUN.
    Exec,
    /// COPY / ADD.
    File,
    /// Every other instruction: changes the image config only.
    Config,
}

/// An input edge of an [`Op`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpInput {
    /// The `id` of the op read.
    pub op: usize,
    /// `parent` (the filesystem/config the step runs on), `context`, `stage` or `image`.
    pub role: &'static str,
}

/// A node of the operation DAG.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Op {
    /// Index in the vector returned by [`BuildGraph::ops`]; inputs always point to
    /// lower ids, so the vector is a topological order.
    pub id: usize,
    pub kind: OpKind,
    /// The stage of a step node; `None` for sources.
    pub stage: Option<StageIdx>,
    /// The step index within the stage.
    pub step: Option<usize>,
    /// A short human label: `FROM alpine`, `context`, or the step's `created_by`.
    pub label: String,
    pub inputs: Vec<OpInput>,
    /// The step's [`Step::cache_material`]; for a source, `image:"ref"` / `context`.
    pub cache_material: String,
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
        network: Network,
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
    pub chmod: Option<Chmod>,
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
    Stage(StageIdx),
    Image(String),
}

/// `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// No `--network`, or `--network=default`: the build's default (as BuildKit,
    /// where `default` sets nothing and the step inherits the build's mode).
    #[default]
    Default,
    None,
    Host,
}

impl Network {
    pub(crate) fn parse(v: &str) -> Option<Network> {
        match v {
            "default" => Some(Network::Default),
            "none" => Some(Network::None),
            "host" => Some(Network::Host),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountKind {
    pub const ALL: [MountKind; 5] =
        [MountKind::Bind, MountKind::Cache, MountKind::Tmpfs, MountKind::Secret, MountKind::Ssh];

    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Cache => "cache",
            MountKind::Tmpfs => "tmpfs",
            MountKind::Secret => "secret",
            MountKind::Ssh => "ssh",
        }
    }
}

/// A cache mount's `sharing=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    #[default]
    Shared,
    Private,
    Locked,
}

impl Sharing {
    pub const ALL: [Sharing; 3] = [Sharing::Shared, Sharing::Private, Sharing::Locked];

    pub fn as_str(self) -> &'static str {
        match self {
            Sharing::Shared => "shared",
            Sharing::Private => "private",
            Sharing::Locked => "locked",
        }
    }
}

/// A `RUN --mount`, validated, aliases resolved (`dst`/`destination` → `target`,
/// `src` → `source`, `ro`/`rw` → `readonly`) and BuildKit's defaults filled in for
/// its type, so that two spellings of one mount are equal. Options a type does not
/// take are refused when parsing, except `source`, `id`, `env` and `readonly`, which
/// BuildKit accepts on every type and which only matter where noted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunMount {
    pub kind: MountKind,
    /// As written (relative to the working directory unless absolute). Always set for
    /// bind, cache and tmpfs; for a secret without `env=` defaults to
    /// `/run/secrets/ID`; `None` for a secret with only `env=` and an ssh mount
    /// without one (the builder picks `/run/buildkit/ssh_agent.N`).
    pub target: Option<String>,
    /// The path read in `from` (bind; cache: its seed), or in the context.
    pub source: Option<String>,
    /// `from=` resolved: a stage index or an image ref.
    pub from: Option<CopyFrom>,
    /// Bind: default true; cache: default false; unused by the other types.
    pub readonly: bool,
    /// Cache: default `path.Clean(target)`; secret: default the target's base name;
    /// ssh: default `default`.
    pub id: Option<String>,
    /// Cache only (refused elsewhere); default shared.
    pub sharing: Sharing,
    /// Permission bits (≤ 0o7777) for cache (default 0755), secret (0400) and ssh
    /// (0600); refused on other types.
    pub mode: Option<u32>,
    /// Owner for cache, secret and ssh (default 0); refused on other types.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Secret and ssh only: fail when the build was given none.
    pub required: bool,
    /// Secret: the variable that receives the value.
    pub env: Option<String>,
    /// Tmpfs only: the size as written (the sandbox passes it to the mount).
    pub size: Option<String>,
}

impl RunMount {
    /// A bind of the build context (no `from=`): what the step sees of it must be
    /// what `.dockerignore` keeps.
    pub fn binds_context(&self) -> bool {
        self.kind == MountKind::Bind && self.from.is_none()
    }
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
