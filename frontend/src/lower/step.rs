//! One instruction → one [`Step`]: the dispatch to each instruction family, and
//! what every step gets the same way: the build args it used, its cache material
//! and its display name.

use crate::StageIdx;
use super::run::{proxy_build_arg, PROXY_ARGS};
use super::{scope_lookup, Cx, Scope, DEFAULT_SHELL};
use crate::error::{Error, Location};
use crate::expand::expand_display;
use crate::graph::{Step, StepInput, StepKind};
use crate::parser::{CmdLine, Command, Flag, Instruction};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// The instruction being lowered, with a lookup over the scope as it was before it
/// (ENV pairs expand against the env before the instruction, as in Docker). Every
/// name looked up is recorded, so that the step's cache material lists the build
/// args it depends on.
pub(super) struct Inst<'i> {
    pub inst: &'i Instruction,
    /// The stage the instruction is in.
    pub index: usize,
    base: &'i dyn Fn(&str) -> Option<String>,
    looked_up: RefCell<Vec<String>>,
}

impl Inst<'_> {
    pub fn lookup(&self, n: &str) -> Option<String> {
        self.looked_up.borrow_mut().push(n.to_string());
        (self.base)(n)
    }
}

/// What the step reads of the scope before it, kept for `args_used`.
struct Snapshot {
    env: std::rc::Rc<super::vars::Vars>,
    args: Vec<(String, Option<String>)>,
    arg_over_env: Vec<String>,
}

/// Argv of a CMD/ENTRYPOINT/RUN: the exec form as is, the shell form wrapped in the
/// stage's SHELL; and whether it was the shell form.
pub(super) fn shell_argv(scope: &Scope, c: &CmdLine) -> (Vec<String>, bool) {
    match c {
        CmdLine::Exec(v) => (v.clone(), false),
        CmdLine::Shell(s) => {
            let mut v: Vec<String> =
                scope.shell.clone().unwrap_or_else(|| DEFAULT_SHELL.iter().map(|s| s.to_string()).collect());
            v.push(s.clone());
            (v, true)
        }
    }
}

impl Cx<'_> {
    /// Expand a word of the instruction in its scope.
    pub(super) fn x(&self, ix: &Inst, word: &str) -> Result<String, Error> {
        self.expand(ix.inst, word, &|n| ix.lookup(n))
    }

    /// Expand a flag's value in the instruction's scope.
    pub(super) fn x_flag(&self, ix: &Inst, f: &Flag) -> Result<String, Error> {
        self.expand_flag(f, &|n| ix.lookup(n))
    }

    pub(super) fn lower_inst(
        &self,
        index: usize,
        inst: &Instruction,
        scope: &mut Scope,
        args: &mut Vec<(String, Option<String>)>,
        edges: &mut Vec<(StageIdx, Location)>,
        platform: &str,
    ) -> Result<Step, Error> {
        let snap = Snapshot { env: scope.env.clone(), args: args.clone(), arg_over_env: scope.arg_over_env.clone() };
        let base_lookup = scope_lookup(&snap.env, &snap.args, &snap.arg_over_env);
        let ix = Inst { inst, index, base: &base_lookup, looked_up: RefCell::new(Vec::new()) };
        let mut inputs: Vec<StepInput> = Vec::new();
        let (kind, created_by) = match &inst.command {
            Command::From { .. } => return Err(self.err(&inst.loc, "internal: FROM inside a stage body")),
            Command::Run(c) => self.lower_run(&ix, c, scope, args, edges, &mut inputs)?,
            Command::Copy { sources, dest } | Command::Add { sources, dest } => {
                self.lower_copy_add(&ix, sources, dest, edges, &mut inputs)?
            }
            Command::Cmd(c) => {
                let (argv, _) = shell_argv(scope, c);
                let cb = format!("CMD {}", crate::gofmt::quote_slice(&argv));
                (StepKind::Cmd(argv), cb)
            }
            Command::Entrypoint(c) => {
                let (argv, _) = shell_argv(scope, c);
                let cb = format!("ENTRYPOINT {}", crate::gofmt::quote_slice(&argv));
                (StepKind::Entrypoint(argv), cb)
            }
            Command::Shell(v) => {
                scope.shell = Some(v.clone());
                (StepKind::Shell(v.clone()), format!("SHELL [{}]", v.join(" ")))
            }
            Command::Env(pairs) => self.lower_env(&ix, pairs, scope)?,
            Command::Label(pairs) => self.lower_label(&ix, pairs)?,
            Command::Arg(decls) => self.lower_arg(inst, decls, scope, args)?,
            Command::Expose(words) => self.lower_expose(&ix, words)?,
            Command::Volume(words) => self.lower_volume(&ix, words)?,
            Command::Workdir(w) => self.lower_workdir(&ix, w, scope)?,
            Command::User(u) => {
                let e = self.x(&ix, u)?;
                let cb = format!("USER {e}");
                (StepKind::User(e), cb)
            }
            Command::StopSignal(s) => self.lower_stop_signal(&ix, s)?,
            Command::OnBuild(e) => {
                scope.onbuild.push((e.clone(), Some(inst.loc.clone())));
                (StepKind::OnBuild(e.clone()), format!("ONBUILD {e}"))
            }
            Command::Maintainer(m) => (StepKind::Maintainer(m.clone()), format!("MAINTAINER {m}")),
            Command::Healthcheck(c) => self.lower_healthcheck(inst, c.as_ref())?,
        };
        let args_used = args_used(ix.looked_up.into_inner(), &kind, &snap);
        let cache_material = cache_material(platform, &kind, &args_used, &inputs, &self.opts.build_args);
        let display = display_name(&inst.source, &kind, self.df.escape, &base_lookup);
        if let StepKind::Env(pairs) = &kind {
            // The snapshot's references go first: the shared list is then changed in
            // place, not copied.
            drop(base_lookup);
            drop(snap);
            let env = std::rc::Rc::make_mut(&mut scope.env);
            for (k, v) in pairs {
                env.set(k, v.clone());
                scope.arg_over_env.retain(|o| o != k);
            }
        }
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
}

/// Build args the step depends on, with their values: ARGs it looked up, and for
/// RUN every ARG in its environment; not those an ENV of the same name hid.
fn args_used(mut names: Vec<String>, kind: &StepKind, snap: &Snapshot) -> Vec<(String, Option<String>)> {
    if let StepKind::Run { build_env, .. } = kind {
        names.extend(build_env.iter().map(|(k, _)| k.clone()));
    }
    names.sort();
    names.dedup();
    names
        .iter()
        .filter_map(|n| {
            let (_, v) = snap.args.iter().find(|(k, _)| k == n)?;
            let env_has = snap.env.contains(n) && !snap.arg_over_env.contains(n);
            (!env_has).then(|| (n.clone(), v.clone()))
        })
        .collect()
}

/// The cache-key material of a step (format in the crate docs). Proxy args given
/// with `--build-arg` but not declared reach RUN's environment and are left out, as
/// BuildKit leaves them out of the cache key.
fn cache_material(
    platform: &str,
    kind: &StepKind,
    args_used: &[(String, Option<String>)],
    inputs: &[StepInput],
    build_args: &BTreeMap<String, String>,
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

/// BuildKit's name of a RUN, COPY, ADD or WORKDIR step (dockerfile2llb
/// `processCmdEnv`; for RUN `withSecretEnvMask`, convert_secrets.go): the text with
/// the variables in scope expanded, an env= secret as `****`. Other steps show as written.
fn display_name(source: &str, kind: &StepKind, escape: char, env: &dyn Fn(&str) -> Option<String>) -> String {
    let masked: Vec<&str> = match kind {
        StepKind::Run { mounts, .. } => mounts
            .iter()
            .filter(|m| m.kind == crate::graph::MountKind::Secret)
            .filter_map(|m| m.env.as_deref())
            .collect(),
        StepKind::Copy(_) | StepKind::Add(_) | StepKind::Workdir(_) => Vec::new(),
        _ => return source.to_string(),
    };
    let lookup = |n: &str| if masked.contains(&n) { Some("****".to_string()) } else { env(n) };
    expand_display(source, escape, &lookup)
}
