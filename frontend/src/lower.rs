//! Lowering: AST → [`BuildGraph`].
//!
//! This is where Docker's scoping rules live:
//! - global ARGs (before the first FROM) and the automatic platform ARGs expand in
//!   FROM lines; inside a stage a global ARG is visible only once re-declared;
//! - `--build-arg` overrides declared ARGs' defaults and is otherwise ignored (except
//!   the predefined proxy ARGs, which reach RUN without declaration);
//! - the expansion environment of a stage is its base's env (base image config, or the
//!   parent stage's ENV and ARGs, as BuildKit carries both over) plus ENV so far plus
//!   declared ARGs, ENV winning over ARG;
//! - a stage built on another stage first runs that stage's ONBUILD triggers;
//! - stage references (`FROM stage`, `COPY --from`, `RUN --mount=from=`) become
//!   indices and dependency edges; they must name an earlier stage (BuildKit
//!   dispatches in order), which also rules out cycles;
//! - as in BuildKit, only stages the target needs must lower without error.
//!
//! This module walks stages; `step` lowers one instruction through the family
//! modules (`run`, `copy`, `config`); `epoch` resolves SOURCE_DATE_EPOCH.

mod config;
mod copy;
mod epoch;
mod run;
mod step;
mod vars;

use crate::error::{Diag, Error, Location};
use crate::expand::expand_word;
use crate::gofmt;
use crate::graph::built_stages;
use crate::graph::*;
use crate::parser::{Command, Dockerfile, Flag, Instruction, Keyword};
use crate::values::valid_stage_name;
use crate::LowerOptions;

const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// The PATH BuildKit puts in an image config that has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The image refs named by FROM lines (expanded; not stage names, not `scratch`),
/// deduplicated, in order.
pub fn base_images(df: &Dockerfile, opts: &LowerOptions) -> Result<Vec<String>, Error> {
    let cx = Cx::new(df, opts)?;
    let mut out: Vec<String> = Vec::new();
    for (i, sh) in cx.stages.iter().enumerate() {
        if let Base::Image(r) = cx.base_of(i, sh)? {
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// Lower a parsed Dockerfile to a build graph.
pub fn lower(df: &Dockerfile, opts: &LowerOptions) -> Result<BuildGraph, Error> {
    let cx = Cx::new(df, opts)?;
    // BuildKit resolves the epoch before it looks for the target.
    let source_date_epoch = cx.source_date_epoch()?;
    let target = match opts.target.as_deref().filter(|t| !t.is_empty()) {
        None => cx.stages.len() - 1,
        Some(t) => {
            let lt = t.to_ascii_lowercase();
            cx.stages
                .iter()
                .position(|s| s.name.as_deref() == Some(lt.as_str()))
                .ok_or_else(|| Error::UnknownTarget {
                    name: t.to_string(),
                    suggestion: crate::suggest::search(t, cx.stages.iter().filter_map(|s| s.name.as_deref()), true),
                })?
        }
    };
    // FROM lines are evaluated for every stage (errors there are always fatal).
    let mut bases = Vec::new();
    for (i, sh) in cx.stages.iter().enumerate() {
        bases.push(cx.base_of(i, sh)?);
        if let Some(f) = sh.from.flag("platform") {
            cx.expand_flag(f, &|n| cx.global(n))?;
        }
    }
    type Lowered = (Stage, Scope, Vec<(StageIdx, Location)>);
    let mut results: Vec<Result<Lowered, Error>> = Vec::new();
    let mut finals: Vec<Scope> = Vec::new();
    for (i, sh) in cx.stages.iter().enumerate() {
        let parent_err = match &bases[i] {
            Base::Stage(j) => results.get(j.0).and_then(|r| r.as_ref().err()).cloned(),
            _ => None,
        };
        let r = match parent_err {
            Some(e) => Err(e),
            None => cx.lower_stage(i, sh, &finals),
        };
        finals.push(r.as_ref().map(|x| x.1.clone()).unwrap_or_default());
        results.push(r);
    }
    let deps: Vec<Vec<StageIdx>> = results
        .iter()
        .enumerate()
        .map(|(i, r)| match r {
            Ok((st, _, _)) => st.deps.clone(),
            Err(_) => cx.rough_deps(i, &bases[i]).into_iter().map(StageIdx).collect(),
        })
        .collect();
    let raw_deps: Vec<Vec<usize>> = deps.iter().map(|d| d.iter().map(|s| s.0).collect()).collect();
    let dep_refs: Vec<&[usize]> = raw_deps.iter().map(Vec::as_slice).collect();
    let needed = built_stages(target, &dep_refs, opts.all_stages);
    let mut needed_sorted = needed.clone();
    needed_sorted.sort_unstable();
    for i in needed_sorted {
        if let Err(e) = &results[i] {
            return Err(e.clone());
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    let mut edges: Vec<Vec<(StageIdx, Location)>> = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok((stage, _, e)) => {
                stages.push(stage);
                edges.push(e);
            }
            Err(_) => {
                let sh = &cx.stages[i];
                let platform = sh.from.flag("platform").and_then(|f| cx.expand_flag(f, &|n| cx.global(n)).ok());
                stages.push(Stage {
                    index: StageIdx(i),
                    name: sh.name.clone(),
                    base: bases[i].clone(),
                    platform,
                    steps: Vec::new(),
                    deps: deps[i].clone(),
                    loc: sh.from.loc.clone(),
                });
                edges.push(Vec::new());
            }
        }
    }
    check_cycles(&cx, &stages, &edges)?;
    Ok(BuildGraph { stages, target: StageIdx(target), source_date_epoch, all_stages: opts.all_stages })
}

/// A stage as found in the AST: its FROM and the instructions after it.
struct StageHead<'a> {
    from: &'a Instruction,
    name: Option<String>,
    body: &'a [Instruction],
}

/// What a stage hands to stages built on it.
#[derive(Clone, Default)]
struct Scope {
    env: std::rc::Rc<vars::Vars>,
    /// Declared ARGs with effective values; inherited by stages built on this one.
    args: Vec<(String, Option<String>)>,
    /// ONBUILD triggers declared in this stage (run by stages built on it), with
    /// the ONBUILD's location (`None`: from a base image's config).
    onbuild: Vec<(String, Option<Location>)>,
    /// Names whose ARG (with a value) came after their ENV: in BuildKit an ARG adds
    /// to the build state's env, so the ARG value wins for expansion and RUN until
    /// the next ENV of that name. The image config keeps the ENV value.
    arg_over_env: Vec<String>,
    shell: Option<Vec<String>>,
    workdir: Option<String>,
}

struct Cx<'a> {
    df: &'a Dockerfile,
    opts: &'a LowerOptions,
    /// Global ARGs with their effective values.
    globals: Vec<(String, Option<String>)>,
    auto: Vec<(String, String)>,
    stages: Vec<StageHead<'a>>,
}

impl<'a> Cx<'a> {
    fn new(df: &'a Dockerfile, opts: &'a LowerOptions) -> Result<Self, Error> {
        let mut cx = Cx { df, opts, globals: Vec::new(), auto: auto_args(opts), stages: Vec::new() };
        let first_from = df.instructions.iter().position(|i| i.keyword == Keyword::From);
        let Some(first_from) = first_from else {
            let loc = df.instructions.first().map(|i| i.loc.clone()).unwrap_or(Location {
                file: df.file_name.clone(),
                line: 1,
                column: 1,
            });
            return Err(Error::Stage(
                cx.diag(loc, "dockerfile contains no stages to build: a Dockerfile must start with FROM (after optional ARGs)"),
            ));
        };
        for inst in &df.instructions[..first_from] {
            let Command::Arg(args) = &inst.command else {
                return Err(Error::Stage(cx.diag(
                    inst.loc.clone(),
                    format!("{} before the first FROM: only ARG may come before FROM", inst.keyword.as_str()),
                )));
            };
            for (k, default) in args {
                let v = match opts.build_args.get(k) {
                    Some(v) => Some(v.clone()),
                    None => match default {
                        Some(d) => Some(cx.expand(inst, d, &|n| cx.global(n))?),
                        None => None,
                    },
                };
                set(&mut cx.globals, k, v);
            }
        }
        let rest = &df.instructions[first_from..];
        let starts: Vec<usize> =
            rest.iter().enumerate().filter(|(_, i)| i.keyword == Keyword::From).map(|(n, _)| n).collect();
        for (n, &s) in starts.iter().enumerate() {
            let end = starts.get(n + 1).copied().unwrap_or(rest.len());
            let from = &rest[s];
            let name = match &from.command {
                Command::From { name: Some(nm), .. } => {
                    let l = nm.to_ascii_lowercase();
                    if !valid_stage_name(&l) {
                        return Err(Error::Stage(cx.diag(
                            from.args_loc.clone(),
                            format!("invalid stage name {nm:?}: must start with a letter and contain only letters, digits, '-', '_' and '.'"),
                        )));
                    }
                    if cx.stages.iter().any(|h: &StageHead| h.name.as_deref() == Some(l.as_str())) {
                        return Err(Error::Stage(
                            cx.diag(from.args_loc.clone(), format!("duplicate stage name {l:?}")),
                        ));
                    }
                    Some(l)
                }
                _ => None,
            };
            cx.stages.push(StageHead { from, name, body: &rest[s + 1..end] });
        }
        // BuildKit's TARGETSTAGE (dockerfile2llb defaultArgs): the --target stage,
        // else the last stage's name, else "default".
        let target_stage = match opts.target.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => t.to_ascii_lowercase(),
            None => cx.stages.last().and_then(|s| s.name.clone()).unwrap_or_else(|| "default".into()),
        };
        cx.auto.push(("TARGETSTAGE".into(), target_stage));
        Ok(cx)
    }

    fn diag(&self, loc: Location, message: impl Into<String>) -> Diag {
        let line_text = self.df.lines.get(loc.line.wrapping_sub(1)).cloned().unwrap_or_default();
        Diag { loc, message: message.into(), line_text }
    }

    fn err(&self, loc: &Location, message: impl Into<String>) -> Error {
        Error::Stage(self.diag(loc.clone(), message))
    }

    /// Lookup in the global scope (FROM lines, global ARG defaults).
    fn global(&self, n: &str) -> Option<String> {
        // A global ARG declared without a value does not hide an automatic one.
        match self.globals.iter().find(|(k, v)| k == n && v.is_some()) {
            Some((_, v)) => v.clone(),
            None => self.auto.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()),
        }
    }

    /// Expand one word of `inst`; an error points at the word when it can be found.
    fn expand(&self, inst: &Instruction, word: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Error> {
        expand_word(word, self.df.escape, env).map_err(|m| {
            Error::Expansion(
                self.diag(self.word_loc(inst, word), format!("failed to process {}: {m}", gofmt::quote(word))),
            )
        })
    }

    /// Where `word` (as written) is in the instruction's arguments: the first match on
    /// its physical lines at or after the arguments' start, else the arguments' start.
    fn word_loc(&self, inst: &Instruction, word: &str) -> Location {
        let start = &inst.args_loc;
        if word.is_empty() {
            return start.clone();
        }
        for line_no in start.line..=inst.end_line.max(start.line) {
            let Some(text) = self.df.lines.get(line_no.wrapping_sub(1)) else { break };
            let from = if line_no == start.line {
                text.char_indices().nth(start.column.saturating_sub(1)).map_or(text.len(), |(b, _)| b)
            } else {
                0
            };
            if let Some(off) = text.get(from..).and_then(|r| r.find(word)) {
                let col = text[..from + off].chars().count() + 1;
                return Location { file: start.file.clone(), line: line_no, column: col };
            }
        }
        start.clone()
    }

    fn stage_index(&self, name: &str) -> Option<usize> {
        let l = name.to_ascii_lowercase();
        self.stages.iter().position(|s| s.name.as_deref() == Some(l.as_str()))
    }

    fn base_of(&self, i: usize, sh: &StageHead) -> Result<Base, Error> {
        let Command::From { image, .. } = &sh.from.command else { return Ok(Base::Scratch) };
        let img = self.expand(sh.from, image, &|n| self.global(n))?;
        if img.is_empty() {
            return Err(self.err(&sh.from.args_loc, format!("base name ({image}) should not be blank")));
        }
        if img.eq_ignore_ascii_case("scratch") {
            return Ok(Base::Scratch);
        }
        let l = img.to_ascii_lowercase();
        if let Some(j) = self.stages[..i].iter().position(|s| s.name.as_deref() == Some(l.as_str())) {
            return Ok(Base::Stage(StageIdx(j)));
        }
        Ok(Base::Image(img))
    }

    /// `--from=` / `from=`: a stage name, a stage index, or an image ref. A stage must
    /// be defined before the current one (BuildKit dispatches stages in order).
    fn resolve_from(&self, cur: usize, value: &str, loc: &Location) -> Result<CopyFrom, Error> {
        if value.is_empty() {
            return Err(self.err(loc, "from flag value can not be empty"));
        }
        let here = self.stages.get(cur).and_then(|s| s.name.clone()).unwrap_or_else(|| format!("stage-{cur}"));
        let j = match self.stage_index(value) {
            Some(j) => j,
            None if value.bytes().all(|b| b.is_ascii_digit()) => match value.parse::<usize>() {
                Ok(j) if j < self.stages.len() => j,
                _ => return Err(self.err(loc, format!("invalid stage index {value}"))),
            },
            None => return Ok(CopyFrom::Image(value.to_string())),
        };
        if j >= cur {
            return Err(self.err(
                loc,
                format!("cannot copy from stage {value:?}, it needs to be defined before current stage {here:?}"),
            ));
        }
        Ok(CopyFrom::Stage(StageIdx(j)))
    }

    fn lower_stage(
        &self,
        index: usize,
        sh: &StageHead,
        finals: &[Scope],
    ) -> Result<(Stage, Scope, Vec<(StageIdx, Location)>), Error> {
        let base = self.base_of(index, sh)?;
        let platform = match sh.from.flag("platform") {
            Some(f) => Some(self.expand_flag(f, &|n| self.global(n))?),
            None => None,
        };
        let mut scope = match &base {
            Base::Scratch => Scope { workdir: Some("/".into()), ..Default::default() },
            Base::Image(r) => Scope {
                env: std::rc::Rc::new(vars::Vars::from_list(self.opts.base_env.get(r).cloned().unwrap_or_default())),
                onbuild: self
                    .opts
                    .base_onbuild
                    .get(r)
                    .map(|t| t.iter().map(|e| (e.clone(), None)).collect())
                    .unwrap_or_default(),
                ..Default::default()
            },
            Base::Stage(j) => finals.get(j.0).cloned().unwrap_or_default(),
        };
        let triggers = std::mem::take(&mut scope.onbuild);
        if !matches!(base, Base::Stage(_)) && !scope.env.contains("PATH") {
            // BuildKit always gives a non-Windows image a PATH; it is visible to $PATH.
            let windows = platform.as_deref().unwrap_or("").starts_with("windows")
                || (platform.is_none() && self.opts.target_platform.os == "windows");
            if !windows {
                std::rc::Rc::make_mut(&mut scope.env).set("PATH", DEFAULT_PATH.into());
            }
        }
        let mut edges: Vec<(StageIdx, Location)> = Vec::new();
        if let Base::Stage(j) = base {
            edges.push((j, sh.from.loc.clone()));
        }
        let mut args: Vec<(String, Option<String>)> = std::mem::take(&mut scope.args);
        let mut steps = Vec::new();
        // ONBUILD triggers of a base stage run first, located at this FROM.
        let plat = platform.clone().unwrap_or_else(|| self.opts.target_platform.to_string());
        for (expr, tloc) in &triggers {
            let inst = self.trigger(expr, tloc.as_ref(), &base, &sh.from.loc)?;
            let step = self.lower_inst(index, &inst, &mut scope, &mut args, &mut edges, &plat)?;
            steps.push(step);
        }
        for inst in sh.body {
            let step = self.lower_inst(index, inst, &mut scope, &mut args, &mut edges, &plat)?;
            steps.push(step);
        }
        scope.args = args;
        let mut deps: Vec<StageIdx> = Vec::new();
        for (d, _) in &edges {
            if !deps.contains(d) {
                deps.push(*d);
            }
        }
        let stage = Stage { index: StageIdx(index), name: sh.name.clone(), base, platform, steps, deps, loc: sh.from.loc.clone() };
        Ok((stage, scope, edges))
    }

    /// Stage dependencies without lowering (for a stage whose lowering failed):
    /// its base stage and the earlier stages named by `--from` / `from=` as written.
    fn rough_deps(&self, i: usize, base: &Base) -> Vec<usize> {
        let mut out = Vec::new();
        if let Base::Stage(j) = base {
            out.push(j.0);
        }
        let Some(sh) = self.stages.get(i) else { return out };
        let lookup =
            |v: &str| -> Option<usize> { self.stage_index(v).or_else(|| v.parse::<usize>().ok()).filter(|&j| j < i) };
        for inst in sh.body {
            for f in &inst.flags {
                let v = f.value.as_deref().unwrap_or("");
                let from = match f.name.as_str() {
                    "from" => Some(v),
                    "mount" => v.split(',').find_map(|kv| kv.trim().strip_prefix("from=")),
                    _ => None,
                };
                if let Some(j) = from.and_then(lookup) {
                    if !out.contains(&j) {
                        out.push(j);
                    }
                }
            }
        }
        out
    }

    /// Parse an ONBUILD trigger into an instruction located at the FROM that runs it.
    fn trigger(
        &self,
        expr: &str,
        onbuild_loc: Option<&Location>,
        base: &Base,
        from_loc: &Location,
    ) -> Result<Instruction, Error> {
        let origin = match (onbuild_loc, base) {
            (Some(l), _) => format!("from line {}", l.line),
            (None, Base::Image(r)) => format!("of base image {r}"),
            (None, _) => "of the base".to_string(),
        };
        let wrap = |e: Error| {
            Error::Syntax(self.diag(from_loc.clone(), format!("ONBUILD trigger {origin}: {}", e.message())))
        };
        let mut df = crate::parser::parse_with_escape(&self.df.file_name, expr, self.df.escape).map_err(wrap)?;
        if df.instructions.len() != 1 {
            return Err(Error::Syntax(self.diag(from_loc.clone(), "onbuild trigger should be a single expression")));
        }
        let mut inst = df.instructions.remove(0);
        inst.loc = from_loc.clone();
        inst.args_loc = from_loc.clone();
        for f in &mut inst.flags {
            f.loc = from_loc.clone();
        }
        Ok(inst)
    }

    fn expand_flag(&self, f: &Flag, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Error> {
        let v = f.value.as_deref().unwrap_or("");
        expand_word(v, self.df.escape, env).map_err(|m| {
            Error::Expansion(self.diag(f.loc.clone(), format!("failed to process {}: {m}", gofmt::quote(v))))
        })
    }
}

/// The automatic platform ARGs.
fn auto_args(opts: &LowerOptions) -> Vec<(String, String)> {
    let mut v = Vec::new();
    // dockerfile2llb defaultArgs: TARGETPLATFORM with its OS version
    // (platforms.FormatAll), BUILDPLATFORM without (platforms.Format).
    for (prefix, p) in [("TARGET", &opts.target_platform), ("BUILD", &opts.build_platform)] {
        let text = if prefix == "TARGET" { p.to_string() } else { p.without_version() };
        v.push((format!("{prefix}PLATFORM"), text));
        v.push((format!("{prefix}OS"), p.os.clone()));
        v.push((format!("{prefix}OSVERSION"), p.os_version.clone().unwrap_or_default()));
        v.push((format!("{prefix}ARCH"), p.architecture.clone()));
        v.push((format!("{prefix}VARIANT"), p.variant.clone().unwrap_or_default()));
    }
    v
}

/// A lookup over a snapshot of the scope: ENV wins over ARG; an ARG without a value
/// is unset.
fn scope_lookup(
    env: &std::rc::Rc<vars::Vars>,
    args: &[(String, Option<String>)],
    arg_over_env: &[String],
) -> impl Fn(&str) -> Option<String> {
    let (env, args, over) = (env.clone(), args.to_vec(), arg_over_env.to_vec());
    move |n: &str| {
        let arg = || args.iter().find(|(k, _)| k == n).and_then(|(_, v)| v.clone());
        if over.iter().any(|o| o == n) {
            if let Some(v) = arg() {
                return Some(v);
            }
        }
        match env.get(n) {
            Some(v) => Some(v.to_string()),
            None => arg(),
        }
    }
}

/// Insert or replace, keeping first-declaration order.
fn set<V: Clone>(list: &mut Vec<(String, V)>, k: &str, v: V) {
    match list.iter_mut().find(|(n, _)| n == k) {
        Some(e) => e.1 = v,
        None => list.push((k.to_string(), v)),
    }
}

/// Dependency cycles. References can only name earlier stages, so none can form
/// today; this stays as a guard should forward references ever be allowed.
fn check_cycles(cx: &Cx, stages: &[Stage], edges: &[Vec<(StageIdx, Location)>]) -> Result<(), Error> {
    let n = stages.len();
    let mut state = vec![0u8; n];
    for root in 0..n {
        if state[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        state[root] = 1;
        while let Some(top) = stack.last_mut() {
            let (s, i) = (top.0, top.1);
            if let Some((d, loc)) = edges[s].get(i) {
                top.1 += 1;
                let d = d.0;
                if d >= n {
                    continue;
                }
                match state[d] {
                    0 => {
                        state[d] = 1;
                        stack.push((d, 0));
                    }
                    1 => {
                        let name = stages[d].name.clone().unwrap_or_else(|| d.to_string());
                        return Err(cx.err(loc, format!("circular dependency detected on stage: {name}")));
                    }
                    _ => {}
                }
            } else {
                state[s] = 2;
                stack.pop();
            }
        }
    }
    Ok(())
}

