//! RUN: its argv (heredoc scripts included), the build args and proxy variables in
//! its environment, `--network`, `--security` and `--mount`, and its history text.

use crate::StageIdx;
use super::step::{shell_argv, Inst};
use super::{Cx, Scope};
use crate::error::{Error, Location};
use crate::expand::expand_word;
use crate::gofmt;
use crate::graph::{CopyFrom, MountKind, Network, RunMount, StepInput, StepKind};
use crate::parser::{heredoc_word, CmdLine, Flag};
use crate::Heredoc;
use std::collections::BTreeMap;

/// ARGs Docker passes to RUN without a declaration when given with `--build-arg`.
pub(super) const PROXY_ARGS: [&str; 10] = [
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
pub(super) fn proxy_build_arg<'m>(build_args: &'m BTreeMap<String, String>, name: &str) -> Option<&'m String> {
    build_args.get(name).or_else(|| build_args.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

impl Cx<'_> {
    pub(super) fn lower_run(
        &self,
        ix: &Inst,
        c: &CmdLine,
        scope: &Scope,
        args: &[(String, Option<String>)],
        edges: &mut Vec<(StageIdx, Location)>,
        inputs: &mut Vec<StepInput>,
    ) -> Result<(StepKind, String), Error> {
        let inst = ix.inst;
        let c = match c {
            CmdLine::Shell(s) if !inst.heredocs.is_empty() => {
                CmdLine::Shell(run_heredoc_script(s, &inst.heredocs, self.df.escape))
            }
            other => other.clone(),
        };
        let (argv, shell_form) = shell_argv(scope, &c);
        let (build_env, history_env) = self.run_env(scope, args);
        let network = match inst.flag("network") {
            Some(f) => self.run_network(ix, f)?,
            None => Network::Default,
        };
        if let Some(f) = inst.flag("security") {
            self.check_security(ix, f)?;
        }
        let mut mounts = Vec::new();
        for f in inst.flag_values("mount") {
            let m = self.parse_mount(ix.index, f, &|n| ix.lookup(n), edges)?;
            match (&m.from, m.kind) {
                (Some(CopyFrom::Stage(j)), _) => inputs.push(StepInput::Stage(*j)),
                (Some(CopyFrom::Image(r)), _) => inputs.push(StepInput::Image(r.clone())),
                (None, MountKind::Bind) => {
                    inputs.push(StepInput::Context { sources: vec![m.source.clone().unwrap_or_else(|| ".".into())] })
                }
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
        Ok((StepKind::Run { argv, shell_form, build_env, network, mounts, heredocs: inst.heredocs.clone() }, cb))
    }

    /// The RUN's own environment (ARGs in scope with values, ENV winning unless an
    /// ARG came after it; undeclared proxy build args) and the `K=V` list its
    /// history shows (every ARG in scope, with the value RUN sees).
    fn run_env(&self, scope: &Scope, args: &[(String, Option<String>)]) -> (Vec<(String, String)>, Vec<String>) {
        let mut build_env: Vec<(String, String)> = Vec::new();
        let mut history_env: Vec<String> = Vec::new();
        for (k, v) in args {
            let env_wins = !scope.arg_over_env.contains(k);
            match (scope.env.get(k).filter(|_| env_wins || v.is_none()), v) {
                (Some(ev), _) => history_env.push(format!("{k}={ev}")),
                (None, Some(v)) => {
                    build_env.push((k.clone(), v.clone()));
                    history_env.push(format!("{k}={v}"));
                }
                (None, None) => history_env.push(format!("{k}=")),
            }
        }
        for p in PROXY_ARGS {
            if let Some(v) = proxy_build_arg(&self.opts.build_args, p) {
                if !args.iter().any(|(k, _)| k == p) && !scope.env.contains(p) {
                    build_env.push((p.to_string(), v.clone()));
                }
            }
        }
        (build_env, history_env)
    }

    fn run_network(&self, ix: &Inst, f: &Flag) -> Result<Network, Error> {
        let v = self.x_flag(ix, f)?;
        Network::parse(&v).ok_or_else(|| {
            Error::Flag(
                self.diag(f.loc.clone(), format!("unsupported network mode {v:?} (expected default, none or host)")),
            )
        })
    }

    /// `--security`: only `sandbox`, the default, is possible here; nothing to store.
    fn check_security(&self, ix: &Inst, f: &Flag) -> Result<(), Error> {
        let v = self.x_flag(ix, f)?;
        let m = match v.as_str() {
            "sandbox" => return Ok(()),
            "insecure" => "--security=insecure is not supported by kiln (rootless builds cannot grant it)".to_string(),
            _ => format!("unsupported security mode {v:?}"),
        };
        Err(Error::Flag(self.diag(f.loc.clone(), m)))
    }

    /// `--mount=type=cache,target=/x,...` as written → [`RunMount`]; variables expand in
    /// each field's value; `from=` becomes a stage (and a dependency edge) or an image.
    fn parse_mount(
        &self,
        index: usize,
        f: &Flag,
        env: &dyn Fn(&str) -> Option<String>,
        edges: &mut Vec<(StageIdx, Location)>,
    ) -> Result<RunMount, Error> {
        let spec = f.value.as_deref().unwrap_or("");
        let expand = |v: &str| {
            expand_word(v, self.df.escape, env).map_err(|m| {
                Error::Expansion(self.diag(f.loc.clone(), format!("failed to process {}: {m}", gofmt::quote(v))))
            })
        };
        let parsed = crate::mounts::parse_mount_spec(spec, expand).map_err(|e| match e {
            crate::mounts::MountError::Spec(m) => Error::Flag(self.diag(f.loc.clone(), m)),
            crate::mounts::MountError::Expand(e) => e,
        })?;
        let mut mount = parsed.mount;
        if let Some(fv) = &parsed.from {
            let cf = self.resolve_from(index, fv, &f.loc)?;
            if let CopyFrom::Stage(j) = cf {
                edges.push((j, f.loc.clone()));
            }
            mount.from = Some(cf);
        }
        Ok(mount)
    }
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
