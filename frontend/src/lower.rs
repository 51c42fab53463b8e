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

use crate::error::{Diag, Error, Location};
use crate::expand::{expand_display, expand_raw, expand_word};
use crate::gofmt;
use crate::graph::dependency_order;
use crate::graph::*;
use crate::parser::{heredoc_word, CmdLine, Command, CopySource, Dockerfile, Flag, Instruction, Keyword};
use crate::values::{clean_path, expand_ports, valid_signal, valid_stage_name};
use crate::{Heredoc, LowerOptions};

const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// The PATH BuildKit puts in an image config that has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// ARGs Docker passes to RUN without a declaration when given with `--build-arg`.
const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The value a proxy variable (`HTTP_PROXY` or `http_proxy`, ...) gets in RUN from
/// `--build-arg`: BuildKit matches the build arg's name ignoring case and sets both
/// spellings (dockerfile2llb proxyEnvFromBuildArgs, llbsolver/ops/exec.go). The
/// spelling given wins over another one.
fn proxy_build_arg<'m>(build_args: &'m std::collections::BTreeMap<String, String>, name: &str) -> Option<&'m String> {
    build_args.get(name).or_else(|| build_args.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

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
    type Lowered = (Stage, Scope, Vec<(usize, Location)>);
    let mut results: Vec<Result<Lowered, Error>> = Vec::new();
    let mut finals: Vec<Scope> = Vec::new();
    for (i, sh) in cx.stages.iter().enumerate() {
        let parent_err = match &bases[i] {
            Base::Stage(j) => results.get(*j).and_then(|r| r.as_ref().err()).cloned(),
            _ => None,
        };
        let r = match parent_err {
            Some(e) => Err(e),
            None => cx.lower_stage(i, sh, &finals),
        };
        finals.push(r.as_ref().map(|x| x.1.clone()).unwrap_or_default());
        results.push(r);
    }
    let deps: Vec<Vec<usize>> = results
        .iter()
        .enumerate()
        .map(|(i, r)| match r {
            Ok((st, _, _)) => st.deps.clone(),
            Err(_) => cx.rough_deps(i, &bases[i]),
        })
        .collect();
    let dep_refs: Vec<&[usize]> = deps.iter().map(Vec::as_slice).collect();
    let needed = dependency_order(target, &dep_refs);
    let mut needed_sorted = needed.clone();
    needed_sorted.sort_unstable();
    for i in needed_sorted {
        if let Err(e) = &results[i] {
            return Err(e.clone());
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    let mut edges: Vec<Vec<(usize, Location)>> = Vec::new();
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
                    index: i,
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
    Ok(BuildGraph { stages, target, source_date_epoch })
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
    env: Vec<(String, String)>,
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

    /// SOURCE_DATE_EPOCH as BuildKit reads it (dockerfile2llb/epoch.go): the build
    /// arg, else the global ARG's non-empty value; a number, `context`, or the name
    /// of a source-only stage.
    fn source_date_epoch(&self) -> Result<Option<SourceDateEpoch>, Error> {
        const KEY: &str = "SOURCE_DATE_EPOCH";
        let value = match self.opts.build_args.get(KEY) {
            Some(v) => v.clone(),
            None => match self.globals.iter().find(|(k, _)| k == KEY).and_then(|(_, v)| v.clone()) {
                Some(v) if !v.is_empty() => v,
                _ => return Ok(None),
            },
        };
        if value.is_empty() {
            return Ok(None);
        }
        if let Ok(n) = value.parse::<i64>() {
            return Ok(Some(SourceDateEpoch::Seconds(n)));
        }
        if value == "context" {
            return Ok(Some(SourceDateEpoch::Context));
        }
        let Some(i) =
            self.stages.iter().position(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(&value)))
        else {
            return Err(Error::InvalidSourceDateEpoch { value });
        };
        self.check_epoch_stage(&self.stages[i])?;
        Ok(Some(SourceDateEpoch::Stage(i)))
    }

    /// A stage that names the epoch must only fetch one remote source: FROM scratch,
    /// ARGs, and exactly one ADD of one HTTP(S) or Git source.
    fn check_epoch_stage(&self, sh: &StageHead) -> Result<(), Error> {
        let fail = |m: String| Err(self.err(&sh.from.loc, m));
        // The stage sees the global ARGs, but not SOURCE_DATE_EPOCH itself.
        let mut env: Vec<(String, Option<String>)> =
            self.globals.iter().filter(|(k, _)| k != "SOURCE_DATE_EPOCH").cloned().collect();
        let lookup = |env: &[(String, Option<String>)], n: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k == n)
                .and_then(|(_, v)| v.clone())
                .or_else(|| self.auto.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
        };
        if let Command::From { image, .. } = &sh.from.command {
            let base = self.expand(sh.from, image, &|n| lookup(&env, n))?;
            if base != "scratch" {
                return fail("SOURCE_DATE_EPOCH stage must use FROM scratch".into());
            }
        }
        let mut adds = 0;
        for inst in sh.body {
            match &inst.command {
                Command::Arg(args) => {
                    for (k, default) in args {
                        let v = match (self.opts.build_args.get(k), default) {
                            (Some(v), _) => v.clone(),
                            (None, Some(d)) => self.expand(inst, d, &|n| lookup(&env, n))?,
                            (None, None) => continue,
                        };
                        env.push((k.clone(), Some(v)));
                    }
                }
                Command::Add { sources, .. } => {
                    adds += 1;
                    if adds > 1 {
                        return fail("SOURCE_DATE_EPOCH stage must contain exactly one remote ADD".into());
                    }
                    let [CopySource::Path(src)] = sources.as_slice() else {
                        return fail("SOURCE_DATE_EPOCH stage must contain exactly one remote ADD source".into());
                    };
                    let src = self.expand(inst, src, &|n| lookup(&env, n))?;
                    if !is_remote_source(&src) {
                        return fail("SOURCE_DATE_EPOCH stage source must be a single HTTP(S) or Git ADD".into());
                    }
                }
                _ => {
                    return fail(format!(
                        "SOURCE_DATE_EPOCH stage does not meet source-only requirements: unsupported {} instruction",
                        inst.keyword.as_str().to_ascii_lowercase()
                    ))
                }
            }
        }
        if adds == 0 {
            return fail("SOURCE_DATE_EPOCH stage must contain exactly one remote ADD".into());
        }
        Ok(())
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
            return Ok(Base::Stage(j));
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
        Ok(CopyFrom::Stage(j))
    }

    fn lower_stage(
        &self,
        index: usize,
        sh: &StageHead,
        finals: &[Scope],
    ) -> Result<(Stage, Scope, Vec<(usize, Location)>), Error> {
        let base = self.base_of(index, sh)?;
        let platform = match sh.from.flag("platform") {
            Some(f) => Some(self.expand_flag(f, &|n| self.global(n))?),
            None => None,
        };
        let mut scope = match &base {
            Base::Scratch => Scope { workdir: Some("/".into()), ..Default::default() },
            Base::Image(r) => Scope {
                env: self.opts.base_env.get(r).cloned().unwrap_or_default(),
                onbuild: self
                    .opts
                    .base_onbuild
                    .get(r)
                    .map(|t| t.iter().map(|e| (e.clone(), None)).collect())
                    .unwrap_or_default(),
                ..Default::default()
            },
            Base::Stage(j) => finals.get(*j).cloned().unwrap_or_default(),
        };
        let triggers = std::mem::take(&mut scope.onbuild);
        if !matches!(base, Base::Stage(_)) && !scope.env.iter().any(|(k, _)| k == "PATH") {
            // BuildKit always gives a non-Windows image a PATH; it is visible to $PATH.
            let windows = platform.as_deref().unwrap_or("").starts_with("windows")
                || (platform.is_none() && self.opts.target_platform.os == "windows");
            if !windows {
                scope.env.push(("PATH".into(), DEFAULT_PATH.into()));
            }
        }
        let mut edges: Vec<(usize, Location)> = Vec::new();
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
        let mut deps: Vec<usize> = Vec::new();
        for (d, _) in &edges {
            if !deps.contains(d) {
                deps.push(*d);
            }
        }
        let stage = Stage { index, name: sh.name.clone(), base, platform, steps, deps, loc: sh.from.loc.clone() };
        Ok((stage, scope, edges))
    }

    /// Stage dependencies without lowering (for a stage whose lowering failed):
    /// its base stage and the earlier stages named by `--from` / `from=` as written.
    fn rough_deps(&self, i: usize, base: &Base) -> Vec<usize> {
        let mut out = Vec::new();
        if let Base::Stage(j) = base {
            out.push(*j);
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

    fn lower_inst(
        &self,
        index: usize,
        inst: &Instruction,
        scope: &mut Scope,
        args: &mut Vec<(String, Option<String>)>,
        edges: &mut Vec<(usize, Location)>,
        platform: &str,
    ) -> Result<Step, Error> {
        // Snapshot of the scope for this instruction (ENV pairs expand against the env
        // before the instruction, as in Docker). Every name looked up is recorded, so
        // that the step's cache material lists the build args it depends on.
        let base_lookup = scope_lookup(&scope.env, args, &scope.arg_over_env);
        let looked_up: std::cell::RefCell<Vec<String>> = std::cell::RefCell::new(Vec::new());
        let lookup = |n: &str| {
            looked_up.borrow_mut().push(n.to_string());
            base_lookup(n)
        };
        let mut inputs: Vec<StepInput> = Vec::new();
        let (snapshot_env, snapshot_args, snapshot_over) =
            (scope.env.clone(), args.clone(), scope.arg_over_env.clone());
        let aloc = &inst.args_loc;
        let x = |w: &str| self.expand(inst, w, &lookup);
        let shell: Vec<String> =
            scope.shell.clone().unwrap_or_else(|| DEFAULT_SHELL.iter().map(|s| s.to_string()).collect());
        let wrap = |c: &CmdLine| -> (Vec<String>, bool) {
            match c {
                CmdLine::Exec(v) => (v.clone(), false),
                CmdLine::Shell(s) => {
                    let mut v = shell.clone();
                    v.push(s.clone());
                    (v, true)
                }
            }
        };
        let (kind, created_by) = match &inst.command {
            Command::From { .. } => return Err(self.err(&inst.loc, "internal: FROM inside a stage body")),
            Command::Run(c) => {
                let c = match c {
                    CmdLine::Shell(s) if !inst.heredocs.is_empty() => {
                        CmdLine::Shell(run_heredoc_script(s, &inst.heredocs, self.df.escape))
                    }
                    other => other.clone(),
                };
                let (argv, shell_form) = wrap(&c);
                let mut build_env: Vec<(String, String)> = Vec::new();
                let mut history_env: Vec<String> = Vec::new();
                for (k, v) in args.iter() {
                    let env_wins = !scope.arg_over_env.contains(k);
                    match (scope.env.iter().find(|(ek, _)| ek == k).filter(|_| env_wins || v.is_none()), v) {
                        (Some((_, ev)), _) => history_env.push(format!("{k}={ev}")),
                        (None, Some(v)) => {
                            build_env.push((k.clone(), v.clone()));
                            history_env.push(format!("{k}={v}"));
                        }
                        (None, None) => history_env.push(format!("{k}=")),
                    }
                }
                for p in PROXY_ARGS {
                    if let Some(v) = proxy_build_arg(&self.opts.build_args, p) {
                        if !args.iter().any(|(k, _)| k == p) && !scope.env.iter().any(|(k, _)| k == p) {
                            build_env.push((p.to_string(), v.clone()));
                        }
                    }
                }
                let network = match inst.flag("network") {
                    Some(f) => {
                        let v = self.expand_flag(f, &lookup)?;
                        if !matches!(v.as_str(), "default" | "none" | "host") {
                            return Err(Error::Flag(self.diag(
                                f.loc.clone(),
                                format!("unsupported network mode {v:?} (expected default, none or host)"),
                            )));
                        }
                        Some(v)
                    }
                    None => None,
                };
                if let Some(f) = inst.flag("security") {
                    let v = self.expand_flag(f, &lookup)?;
                    match v.as_str() {
                        "sandbox" => {}
                        "insecure" => {
                            return Err(Error::Flag(self.diag(
                                f.loc.clone(),
                                "--security=insecure is not supported by kiln (rootless builds cannot grant it)",
                            )))
                        }
                        _ => {
                            return Err(Error::Flag(
                                self.diag(f.loc.clone(), format!("unsupported security mode {v:?}")),
                            ))
                        }
                    }
                }
                let mut mounts = Vec::new();
                for f in inst.flag_values("mount") {
                    let m = self.parse_mount(index, f, &lookup, edges)?;
                    match (&m.from, m.kind.as_str()) {
                        (Some(CopyFrom::Stage(j)), _) => inputs.push(StepInput::Stage(*j)),
                        (Some(CopyFrom::Image(r)), _) => inputs.push(StepInput::Image(r.clone())),
                        (None, "bind") => inputs.push(StepInput::Context {
                            sources: vec![m.options.get("source").cloned().unwrap_or_else(|| ".".into())],
                        }),
                        _ => {}
                    }
                    mounts.push(m);
                }
                let mut cb = String::from("RUN ");
                if !history_env.is_empty() {
                    cb.push_str(&format!("|{} {} ", history_env.len(), history_env.join(" ")));
                }
                cb.push_str(&argv.join(" "));
                cb.push_str(" # buildkit");
                (StepKind::Run { argv, shell_form, build_env, network, mounts, heredocs: inst.heredocs.clone() }, cb)
            }
            Command::Cmd(c) => {
                let (argv, _) = wrap(c);
                let cb = format!("CMD {}", gofmt::quote_slice(&argv));
                (StepKind::Cmd(argv), cb)
            }
            Command::Entrypoint(c) => {
                let (argv, _) = wrap(c);
                let cb = format!("ENTRYPOINT {}", gofmt::quote_slice(&argv));
                (StepKind::Entrypoint(argv), cb)
            }
            Command::Shell(v) => {
                scope.shell = Some(v.clone());
                (StepKind::Shell(v.clone()), format!("SHELL [{}]", v.join(" ")))
            }
            Command::Copy { sources, dest } | Command::Add { sources, dest } => {
                let is_add = inst.keyword == Keyword::Add;
                let fx = |name: &str| -> Result<Option<String>, Error> {
                    match inst.flag(name) {
                        Some(f) => Ok(Some(self.expand_flag(f, &lookup)?)),
                        None => Ok(None),
                    }
                };
                let from = match inst.flag("from") {
                    Some(f) => {
                        let raw = f.value.clone().unwrap_or_default();
                        let v = self.expand_flag(f, &|_: &str| None)?;
                        if v != raw {
                            return Err(Error::Flag(self.diag(
                                f.loc.clone(),
                                "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
                            )));
                        }
                        let cf = self.resolve_from(index, &v, &f.loc)?;
                        if let CopyFrom::Stage(j) = cf {
                            edges.push((j, f.loc.clone()));
                        }
                        Some(cf)
                    }
                    None => None,
                };
                let mut srcs = Vec::new();
                let mut heredocs = Vec::new();
                for s in sources {
                    match s {
                        CopySource::Path(p) => srcs.push(x(p)?),
                        CopySource::Heredoc(h) => {
                            let Some(hd) = inst.heredocs.get(*h) else { continue };
                            let mut hd = hd.clone();
                            if hd.expand {
                                hd.content = expand_raw(&hd.content, '\\', &lookup)
                                    .map_err(|m| Error::Expansion(self.diag(aloc.clone(), m)))?;
                            }
                            heredocs.push(hd);
                        }
                    }
                }
                let dest = x(dest)?;
                let mut exclude = Vec::new();
                for f in inst.flag_values("exclude") {
                    exclude.push(self.expand_flag(f, &lookup)?);
                }
                let spec = CopySpec {
                    sources: srcs,
                    dest,
                    from,
                    chown: fx("chown")?,
                    chmod: fx("chmod")?,
                    link: inst.flag_bool("link"),
                    parents: inst.flag_bool("parents"),
                    exclude,
                    heredocs,
                    checksum: fx("checksum")?,
                    keep_git_dir: inst.flag_bool("keep-git-dir"),
                    unpack: inst.flag("unpack").map(|_| inst.flag_bool("unpack")),
                };
                let is_url = |s: &str| s.starts_with("http://") || s.starts_with("https://");
                let is_git = |s: &str| s.starts_with("git@") || s.starts_with("git://") || s.ends_with(".git");
                if !is_add && spec.sources.iter().any(|s| is_url(s)) {
                    return Err(Error::Syntax(self.diag(aloc.clone(), "source can't be a URL for COPY")));
                }
                if spec.checksum.is_some() && (spec.sources.len() != 1 || !spec.heredocs.is_empty()) {
                    return Err(Error::Flag(
                        self.diag(aloc.clone(), "checksum can't be specified for multiple sources"),
                    ));
                }
                match &spec.from {
                    Some(CopyFrom::Stage(j)) => inputs.push(StepInput::Stage(*j)),
                    Some(CopyFrom::Image(r)) => inputs.push(StepInput::Image(r.clone())),
                    None => {
                        let local: Vec<String> = spec
                            .sources
                            .iter()
                            .filter(|s| !(is_add && (is_url(s) || is_git(s))))
                            .cloned()
                            .collect();
                        if !local.is_empty() {
                            inputs.push(StepInput::Context { sources: local });
                        }
                    }
                }
                let mut cb = String::from(if is_add { "ADD" } else { "COPY" });
                if spec.parents {
                    cb.push_str(" --parents");
                }
                if let Some(c) = &spec.chown {
                    cb.push_str(&format!(" --chown={c}"));
                }
                if let Some(c) = &spec.chmod {
                    cb.push_str(&format!(" --chmod={c}"));
                }
                for s in &spec.sources {
                    cb.push(' ');
                    cb.push_str(s);
                }
                for h in &spec.heredocs {
                    cb.push_str(" <<");
                    cb.push_str(&h.name);
                }
                cb.push(' ');
                cb.push_str(&spec.dest);
                cb.push_str(" # buildkit");
                (if is_add { StepKind::Add(spec) } else { StepKind::Copy(spec) }, cb)
            }
            Command::Env(pairs) => {
                let mut out = Vec::new();
                for (k, v) in pairs {
                    out.push((x(k)?, x(v)?));
                }
                for (k, v) in &out {
                    set(&mut scope.env, k, v.clone());
                    scope.arg_over_env.retain(|o| o != k);
                }
                let cb = format!("ENV {}", kv_join(&out));
                (StepKind::Env(out), cb)
            }
            Command::Label(pairs) => {
                let mut out = Vec::new();
                for (k, v) in pairs {
                    out.push((x(k)?, x(v)?));
                }
                let cb = format!("LABEL {}", kv_join(&out));
                (StepKind::Label(out), cb)
            }
            Command::Arg(decls) => {
                let mut out = Vec::new();
                let mut hist = Vec::new();
                for (k, default) in decls {
                    // --build-arg wins; else the expanded default; else the global
                    // value (a global ARG or an automatic platform ARG).
                    let v = match (self.opts.build_args.get(k), default) {
                        (Some(b), _) => Some(b.clone()),
                        (None, Some(d)) => {
                            // Earlier ARGs of this same instruction are visible.
                            let l = scope_lookup(&scope.env, args, &scope.arg_over_env);
                            Some(self.expand(inst, d, &l)?)
                        }
                        (None, None) => self.global(k),
                    };
                    hist.push(match &v {
                        Some(v) => format!("{k}={v}"),
                        None => k.clone(),
                    });
                    if v.is_some() && scope.env.iter().any(|(e, _)| e == k) && !scope.arg_over_env.contains(k) {
                        scope.arg_over_env.push(k.clone());
                    }
                    set(args, k, v.clone());
                    out.push((k.clone(), v));
                }
                (StepKind::Arg(out), format!("ARG {}", hist.join(" ")))
            }
            Command::Expose(words) => {
                let mut ports: Vec<String> = Vec::new();
                let mut seen = std::collections::HashSet::new();
                for w in words {
                    let e = x(w)?;
                    // EXPOSE splits words after expansion (BuildKit's ProcessWords).
                    for word in crate::words::split_ws(&e) {
                        for p in expand_ports(&word).map_err(|m| Error::Syntax(self.diag(aloc.clone(), m)))? {
                            if seen.insert(p.clone()) {
                                ports.push(p);
                            }
                        }
                    }
                }
                let mut sorted = ports.clone();
                sorted.sort();
                let items: Vec<String> = sorted.iter().map(|p| format!("{p}:{{}}")).collect();
                let cb = format!("EXPOSE map[{}]", items.join(" "));
                (StepKind::Expose(ports), cb)
            }
            Command::Volume(words) => {
                let mut out = Vec::new();
                for w in words {
                    let e = x(w)?;
                    if e.trim().is_empty() {
                        return Err(Error::Syntax(
                            self.diag(aloc.clone(), "VOLUME specified can not be an empty string"),
                        ));
                    }
                    out.push(e);
                }
                let cb = format!("VOLUME [{}]", out.join(" "));
                (StepKind::Volume(out), cb)
            }
            Command::Workdir(w) => {
                let e = x(w)?;
                if e.is_empty() {
                    return Err(Error::Syntax(self.diag(aloc.clone(), "WORKDIR can not be empty")));
                }
                let wd = if e.starts_with('/') {
                    clean_path(&e)
                } else {
                    match &scope.workdir {
                        Some(cur) => clean_path(&format!("{cur}/{e}")),
                        None => e.clone(),
                    }
                };
                scope.workdir = Some(wd.clone()).filter(|w| w.starts_with('/'));
                let cb = format!("WORKDIR {wd}");
                (StepKind::Workdir(wd), cb)
            }
            Command::User(u) => {
                let e = x(u)?;
                let cb = format!("USER {e}");
                (StepKind::User(e), cb)
            }
            Command::StopSignal(s) => {
                let e = x(s)?;
                if !valid_signal(&e) {
                    return Err(Error::Syntax(self.diag(aloc.clone(), format!("invalid stop signal {e:?}"))));
                }
                let cb = format!("STOPSIGNAL {e}");
                (StepKind::StopSignal(e), cb)
            }
            Command::OnBuild(e) => {
                scope.onbuild.push((e.clone(), Some(inst.loc.clone())));
                (StepKind::OnBuild(e.clone()), format!("ONBUILD {e}"))
            }
            Command::Maintainer(m) => (StepKind::Maintainer(m.clone()), format!("MAINTAINER {m}")),
            Command::Healthcheck(None) => {
                let cb = "HEALTHCHECK {Test:[NONE] Interval:0s Timeout:0s StartPeriod:0s StartInterval:0s Retries:0}"
                    .to_string();
                (StepKind::Healthcheck(None), cb)
            }
            Command::Healthcheck(Some(c)) => {
                let test = match c {
                    CmdLine::Exec(v) => {
                        let mut t = vec!["CMD".to_string()];
                        t.extend(v.iter().cloned());
                        t
                    }
                    CmdLine::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
                };
                let dur = |name: &str| -> Result<Option<i64>, Error> {
                    let Some(f) = inst.flag(name) else { return Ok(None) };
                    let v = f.value.as_deref().unwrap_or("");
                    let d = gofmt::parse_duration(v).map_err(|m| Error::Flag(self.diag(f.loc.clone(), m)))?;
                    if d < 0 || (d > 0 && d < 1_000_000) {
                        return Err(Error::Flag(self.diag(f.loc.clone(), format!("--{name} cannot be less than 1ms"))));
                    }
                    Ok(Some(d))
                };
                let retries = match inst.flag("retries") {
                    Some(f) => {
                        let v = f.value.as_deref().unwrap_or("");
                        let r: i64 = v.parse().map_err(|_| {
                            Error::Flag(self.diag(f.loc.clone(), format!("invalid --retries value {v:?}")))
                        })?;
                        if r < 0 {
                            return Err(Error::Flag(self.diag(f.loc.clone(), "--retries cannot be negative")));
                        }
                        Some(r)
                    }
                    None => None,
                };
                let hc = Healthcheck {
                    test,
                    interval: dur("interval")?,
                    timeout: dur("timeout")?,
                    start_period: dur("start-period")?,
                    start_interval: dur("start-interval")?,
                    retries,
                };
                let d = |o: Option<i64>| gofmt::duration(o.unwrap_or(0));
                let cb = format!(
                    "HEALTHCHECK {{Test:[{}] Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
                    hc.test.join(" "),
                    d(hc.interval),
                    d(hc.timeout),
                    d(hc.start_period),
                    d(hc.start_interval),
                    hc.retries.unwrap_or(0)
                );
                (StepKind::Healthcheck(Some(hc)), cb)
            }
        };
        // Build args this step depends on: ARGs it looked up, and for RUN every ARG in
        // its environment.
        let mut names: Vec<String> = looked_up.into_inner();
        if let StepKind::Run { build_env, .. } = &kind {
            names.extend(build_env.iter().map(|(k, _)| k.clone()));
        }
        names.sort();
        names.dedup();
        let args_used: Vec<(String, Option<String>)> = names
            .iter()
            .filter_map(|n| {
                let (_, v) = snapshot_args.iter().find(|(k, _)| k == n)?;
                let env_has = snapshot_env.iter().any(|(k, _)| k == n) && !snapshot_over.contains(n);
                (!env_has).then(|| (n.clone(), v.clone()))
            })
            .collect();
        let cache_material = cache_material(platform, &kind, &args_used, &inputs, &self.opts.build_args);
        let display = display_name(&inst.source, &kind, self.df.escape, &base_lookup);
        Ok(Step {
            loc: inst.loc.clone(),
            end_line: inst.end_line,
            source: inst.source.clone(),
            display,
            kind,
            created_by,
            inputs,
            args_used,
            cache_material,
        })
    }

    /// `--mount=type=cache,target=/x,...` as written → [`RunMount`]; variables expand in
    /// each field's value.
    fn parse_mount(
        &self,
        index: usize,
        f: &Flag,
        env: &dyn Fn(&str) -> Option<String>,
        edges: &mut Vec<(usize, Location)>,
    ) -> Result<RunMount, Error> {
        let spec = f.value.as_deref().unwrap_or("");
        let expand = |v: &str| {
            expand_word(v, self.df.escape, env).map_err(|m| {
                Error::Expansion(self.diag(f.loc.clone(), format!("failed to process {}: {m}", gofmt::quote(v))))
            })
        };
        let (kind, options) = crate::mounts::parse_mount_spec(spec, expand).map_err(|e| match e {
            crate::mounts::MountError::Spec(m) => Error::Flag(self.diag(f.loc.clone(), m)),
            crate::mounts::MountError::Expand(e) => e,
        })?;
        let from = match options.get("from") {
            Some(fv) => {
                let cf = self.resolve_from(index, fv, &f.loc)?;
                if let CopyFrom::Stage(j) = cf {
                    edges.push((j, f.loc.clone()));
                }
                Some(cf)
            }
            None => None,
        };
        Ok(RunMount { kind, options, from })
    }
}

/// An ADD source fetched from elsewhere: an HTTP(S) URL or a Git remote (as
/// BuildKit's ParseGitRef tells them from local paths, approximately).
fn is_remote_source(src: &str) -> bool {
    let lower = src.to_ascii_lowercase();
    if ["http://", "https://", "git://", "git@", "ssh://"].iter().any(|p| lower.starts_with(p)) {
        return true;
    }
    let repo = lower.split('#').next().unwrap_or("");
    repo.ends_with(".git") && repo.contains('/') && !repo.starts_with('/') && !repo.starts_with('.')
}

/// The automatic platform ARGs.
fn auto_args(opts: &LowerOptions) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for (prefix, p) in [("TARGET", &opts.target_platform), ("BUILD", &opts.build_platform)] {
        v.push((format!("{prefix}PLATFORM"), p.to_string()));
        v.push((format!("{prefix}OS"), p.os.clone()));
        v.push((format!("{prefix}ARCH"), p.architecture.clone()));
        v.push((format!("{prefix}VARIANT"), p.variant.clone().unwrap_or_default()));
    }
    v
}

/// A lookup over a snapshot of the scope: ENV wins over ARG; an ARG without a value
/// is unset.
fn scope_lookup(
    env: &[(String, String)],
    args: &[(String, Option<String>)],
    arg_over_env: &[String],
) -> impl Fn(&str) -> Option<String> {
    let (env, args, over) = (env.to_vec(), args.to_vec(), arg_over_env.to_vec());
    move |n: &str| {
        let arg = || args.iter().find(|(k, _)| k == n).and_then(|(_, v)| v.clone());
        if over.iter().any(|o| o == n) {
            if let Some(v) = arg() {
                return Some(v);
            }
        }
        match env.iter().find(|(k, _)| k == n) {
            Some((_, v)) => Some(v.clone()),
            None => arg(),
        }
    }
}

/// The cache-key material of a step (format in the crate docs). Proxy args given
/// with `--build-arg` but not declared reach RUN's environment and are left out, as
/// BuildKit leaves them out of the cache key.
fn cache_material(
    platform: &str,
    kind: &StepKind,
    args_used: &[(String, Option<String>)],
    inputs: &[StepInput],
    build_args: &std::collections::BTreeMap<String, String>,
) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut kind = kind.clone();
    if let StepKind::Run { build_env, .. } = &mut kind {
        build_env.retain(|(k, _)| {
            !(PROXY_ARGS.contains(&k.as_str())
                && proxy_build_arg(build_args, k).is_some()
                && !args_used.iter().any(|(a, _)| a == k))
        });
    }
    let mut m = String::from("kiln.step.v1\n");
    m.push_str(&format!("platform {}\n", q(platform)));
    m.push_str(&format!("instruction {}\n", serde_json::to_string(&kind).unwrap_or_default()));
    for (k, v) in args_used {
        match v {
            Some(v) => m.push_str(&format!("arg {} {}\n", q(k), q(v))),
            None => m.push_str(&format!("arg {} null\n", q(k))),
        }
    }
    m.push_str("input parent\n");
    for i in inputs {
        m.push_str(&format!("input {}\n", i.material()));
    }
    m
}

/// Insert or replace, keeping first-declaration order.
fn set<V: Clone>(list: &mut Vec<(String, V)>, k: &str, v: V) {
    match list.iter_mut().find(|(n, _)| n == k) {
        Some(e) => e.1 = v,
        None => list.push((k.to_string(), v)),
    }
}

fn kv_join(kv: &[(String, String)]) -> String {
    kv.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// The shell script of a heredoc RUN, as BuildKit builds it: `RUN <<EOF` alone runs the
/// body; otherwise the command and its bodies are handed to the shell together.
fn run_heredoc_script(cmd: &str, heredocs: &[Heredoc], escape: char) -> String {
    // BuildKit's test: the whole command is one word, a heredoc marker.
    let one_word = crate::words::parse_words(cmd.trim(), escape).len() == 1;
    if heredocs.len() == 1 && one_word && heredoc_word(cmd.trim(), escape).is_some() {
        if heredocs[0].content.starts_with("#!") {
            return format!("/dev/pipes/{}", heredocs[0].name);
        }
        return heredocs[0].content.clone();
    }
    let mut full = cmd.to_string();
    for h in heredocs {
        full.push('\n');
        full.push_str(&h.content);
        full.push_str(&h.name);
    }
    full
}

/// Dependency cycles. References can only name earlier stages, so none can form
/// today; this stays as a guard should forward references ever be allowed.
fn check_cycles(cx: &Cx, stages: &[Stage], edges: &[Vec<(usize, Location)>]) -> Result<(), Error> {
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
                let d = *d;
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

/// BuildKit's name of a RUN, COPY, ADD or WORKDIR step (dockerfile2llb
/// `processCmdEnv`; for RUN `withSecretEnvMask`, convert_secrets.go): the text with
/// the variables in scope expanded, an env= secret as `****`. Other steps show as written.
fn display_name(source: &str, kind: &StepKind, escape: char, env: &dyn Fn(&str) -> Option<String>) -> String {
    let masked: Vec<&str> = match kind {
        StepKind::Run { mounts, .. } => mounts
            .iter()
            .filter(|m| m.kind == "secret")
            .filter_map(|m| m.options.get("env").map(String::as_str))
            .collect(),
        StepKind::Copy(_) | StepKind::Add(_) | StepKind::Workdir(_) => Vec::new(),
        _ => return source.to_string(),
    };
    let lookup = |n: &str| if masked.contains(&n) { Some("****".to_string()) } else { env(n) };
    expand_display(source, escape, &lookup)
}
