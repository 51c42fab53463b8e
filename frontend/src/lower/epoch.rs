//! SOURCE_DATE_EPOCH: which value the build uses and, when it names a stage, the
//! check that the stage only fetches one remote source (dockerfile2llb/epoch.go).

use super::{Cx, StageHead};
use crate::error::Error;
use crate::graph::SourceDateEpoch;
use crate::parser::{Command, CopySource};

impl Cx<'_> {
    /// SOURCE_DATE_EPOCH as BuildKit reads it (dockerfile2llb/epoch.go): the build
    /// arg, else the global ARG's non-empty value; a number, `context`, or the name
    /// of a source-only stage.
    pub(super) fn source_date_epoch(&self) -> Result<Option<SourceDateEpoch>, Error> {
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
        Ok(Some(SourceDateEpoch::Stage(crate::StageIdx(i))))
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
