//! The instructions that change only the image config or the scope: ENV, LABEL,
//! ARG, EXPOSE, VOLUME, WORKDIR, STOPSIGNAL and HEALTHCHECK (the one-liners are in
//! `step`).

use super::step::Inst;
use super::{scope_lookup, set, Cx, Scope};
use crate::error::Error;
use crate::gofmt;
use crate::graph::{Healthcheck, StepKind};
use crate::parser::{CmdLine, Instruction};
use crate::values::{clean_path, expand_ports, valid_signal};

type Lowered = Result<(StepKind, String), Error>;

fn kv_join(kv: &[(String, String)]) -> String {
    kv.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

impl Cx<'_> {
    fn x_pairs(&self, ix: &Inst, pairs: &[(String, String)]) -> Result<Vec<(String, String)>, Error> {
        pairs.iter().map(|(k, v)| Ok((self.x(ix, k)?, self.x(ix, v)?))).collect()
    }

    pub(super) fn lower_env(&self, ix: &Inst, pairs: &[(String, String)], scope: &mut Scope) -> Lowered {
        // The values go into the scope in lower_inst, once this instruction's
        // snapshot of it is gone (see vars.rs).
        let out = self.x_pairs(ix, pairs)?;
        let _ = scope;
        let cb = format!("ENV {}", kv_join(&out));
        Ok((StepKind::Env(out), cb))
    }

    pub(super) fn lower_label(&self, ix: &Inst, pairs: &[(String, String)]) -> Lowered {
        let out = self.x_pairs(ix, pairs)?;
        let cb = format!("LABEL {}", kv_join(&out));
        Ok((StepKind::Label(out), cb))
    }

    pub(super) fn lower_arg(
        &self,
        inst: &Instruction,
        decls: &[(String, Option<String>)],
        scope: &mut Scope,
        args: &mut Vec<(String, Option<String>)>,
    ) -> Lowered {
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
            if v.is_some() && scope.env.contains(k) && !scope.arg_over_env.contains(k) {
                scope.arg_over_env.push(k.clone());
            }
            set(args, k, v.clone());
            out.push((k.clone(), v));
        }
        Ok((StepKind::Arg(out), format!("ARG {}", hist.join(" "))))
    }

    pub(super) fn lower_expose(&self, ix: &Inst, words: &[String]) -> Lowered {
        let mut ports: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for w in words {
            let e = self.x(ix, w)?;
            // EXPOSE splits words after expansion (BuildKit's ProcessWords).
            for word in crate::words::split_ws(&e) {
                for p in expand_ports(&word).map_err(|m| Error::Syntax(self.diag(ix.inst.args_loc.clone(), m)))? {
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
        Ok((StepKind::Expose(ports), cb))
    }

    pub(super) fn lower_volume(&self, ix: &Inst, words: &[String]) -> Lowered {
        let mut out = Vec::new();
        for w in words {
            let e = self.x(ix, w)?;
            if e.trim().is_empty() {
                return Err(Error::Syntax(
                    self.diag(ix.inst.args_loc.clone(), "VOLUME specified can not be an empty string"),
                ));
            }
            out.push(e);
        }
        let cb = format!("VOLUME [{}]", out.join(" "));
        Ok((StepKind::Volume(out), cb))
    }

    pub(super) fn lower_workdir(&self, ix: &Inst, w: &str, scope: &mut Scope) -> Lowered {
        let e = self.x(ix, w)?;
        if e.is_empty() {
            return Err(Error::Syntax(self.diag(ix.inst.args_loc.clone(), "WORKDIR can not be empty")));
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
        Ok((StepKind::Workdir(wd), cb))
    }

    pub(super) fn lower_stop_signal(&self, ix: &Inst, s: &str) -> Lowered {
        let e = self.x(ix, s)?;
        if !valid_signal(&e) {
            return Err(Error::Syntax(self.diag(ix.inst.args_loc.clone(), format!("invalid stop signal {e:?}"))));
        }
        let cb = format!("STOPSIGNAL {e}");
        Ok((StepKind::StopSignal(e), cb))
    }

    pub(super) fn lower_healthcheck(&self, inst: &Instruction, c: Option<&CmdLine>) -> Lowered {
        let Some(c) = c else {
            let cb = "HEALTHCHECK {Test:[NONE] Interval:0s Timeout:0s StartPeriod:0s StartInterval:0s Retries:0}";
            return Ok((StepKind::Healthcheck(None), cb.to_string()));
        };
        let test = match c {
            CmdLine::Exec(v) => {
                let mut t = vec!["CMD".to_string()];
                t.extend(v.iter().cloned());
                t
            }
            CmdLine::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
        };
        let retries = self.healthcheck_retries(inst)?;
        let hc = Healthcheck {
            test,
            interval: self.healthcheck_duration(inst, "interval")?,
            timeout: self.healthcheck_duration(inst, "timeout")?,
            start_period: self.healthcheck_duration(inst, "start-period")?,
            start_interval: self.healthcheck_duration(inst, "start-interval")?,
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
        Ok((StepKind::Healthcheck(Some(hc)), cb))
    }

    /// A HEALTHCHECK duration flag in nanoseconds: 0 or at least 1ms.
    fn healthcheck_duration(&self, inst: &Instruction, name: &str) -> Result<Option<i64>, Error> {
        let Some(f) = inst.flag(name) else { return Ok(None) };
        let v = f.value.as_deref().unwrap_or("");
        let d = gofmt::parse_duration(v).map_err(|m| Error::Flag(self.diag(f.loc.clone(), m)))?;
        if d < 0 || (d > 0 && d < 1_000_000) {
            return Err(Error::Flag(self.diag(f.loc.clone(), format!("--{name} cannot be less than 1ms"))));
        }
        Ok(Some(d))
    }

    fn healthcheck_retries(&self, inst: &Instruction) -> Result<Option<i64>, Error> {
        let Some(f) = inst.flag("retries") else { return Ok(None) };
        let v = f.value.as_deref().unwrap_or("");
        let r: i64 =
            v.parse().map_err(|_| Error::Flag(self.diag(f.loc.clone(), format!("invalid --retries value {v:?}"))))?;
        if r < 0 {
            return Err(Error::Flag(self.diag(f.loc.clone(), "--retries cannot be negative")));
        }
        Ok(Some(r))
    }
}
