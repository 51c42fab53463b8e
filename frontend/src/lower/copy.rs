//! COPY and ADD: `--from`, sources (heredocs expanded), flags (`--chmod` parsed
//! here, so a bad mode is an error at its line), the checks BuildKit makes on
//! them, the step's inputs and its history text.

use crate::StageIdx;
use super::step::Inst;
use super::Cx;
use crate::chmod::Chmod;
use crate::error::{Error, Location};
use crate::expand::expand_raw;
use crate::graph::{CopyFrom, CopySpec, StepInput, StepKind};
use crate::parser::{CopySource, Flag, Keyword};

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

fn is_git(s: &str) -> bool {
    crate::gitref::is_remote_git(s)
}

impl Cx<'_> {
    pub(super) fn lower_copy_add(
        &self,
        ix: &Inst,
        sources: &[CopySource],
        dest: &str,
        edges: &mut Vec<(StageIdx, Location)>,
        inputs: &mut Vec<StepInput>,
    ) -> Result<(StepKind, String), Error> {
        let inst = ix.inst;
        let aloc = &inst.args_loc;
        let is_add = inst.keyword == Keyword::Add;
        let fx = |name: &str| -> Result<Option<String>, Error> {
            match inst.flag(name) {
                Some(f) => Ok(Some(self.x_flag(ix, f)?)),
                None => Ok(None),
            }
        };
        let from = match inst.flag("from") {
            Some(f) => Some(self.copy_from(ix.index, f, edges)?),
            None => None,
        };
        let mut srcs = Vec::new();
        let mut heredocs = Vec::new();
        for s in sources {
            match s {
                CopySource::Path(p) => srcs.push(self.x(ix, p)?),
                CopySource::Heredoc(h) => {
                    let Some(hd) = inst.heredocs.get(*h) else { continue };
                    let mut hd = hd.clone();
                    if hd.expand {
                        hd.content = expand_raw(&hd.content, '\\', &|n| ix.lookup(n))
                            .map_err(|m| Error::Expansion(self.diag(aloc.clone(), m)))?;
                    }
                    heredocs.push(hd);
                }
            }
        }
        let dest = self.x(ix, dest)?;
        let mut exclude = Vec::new();
        for f in inst.flag_values("exclude") {
            exclude.push(self.x_flag(ix, f)?);
        }
        let chown = fx("chown")?;
        let chmod = match inst.flag("chmod") {
            Some(f) => Some(self.chmod(ix, f)?),
            None => None,
        };
        let spec = CopySpec {
            sources: srcs,
            dest,
            from,
            chown,
            chmod,
            link: inst.flag_bool("link"),
            parents: inst.flag_bool("parents"),
            exclude,
            heredocs,
            checksum: fx("checksum")?,
            keep_git_dir: inst.flag_bool("keep-git-dir"),
            unpack: inst.flag("unpack").map(|_| inst.flag_bool("unpack")),
        };
        if !is_add && spec.sources.iter().any(|s| is_url(s)) {
            return Err(Error::Syntax(self.diag(aloc.clone(), "source can't be a URL for COPY")));
        }
        if spec.checksum.is_some() && (spec.sources.len() != 1 || !spec.heredocs.is_empty()) {
            return Err(Error::Flag(self.diag(aloc.clone(), "checksum can't be specified for multiple sources")));
        }
        match &spec.from {
            Some(CopyFrom::Stage(j)) => inputs.push(StepInput::Stage(*j)),
            Some(CopyFrom::Image(r)) => inputs.push(StepInput::Image(r.clone())),
            None => {
                let local: Vec<String> =
                    spec.sources.iter().filter(|s| !(is_add && (is_url(s) || is_git(s)))).cloned().collect();
                if !local.is_empty() {
                    inputs.push(StepInput::Context { sources: local });
                }
            }
        }
        let cb = copy_history(is_add, &spec);
        Ok((if is_add { StepKind::Add(spec) } else { StepKind::Copy(spec) }, cb))
    }

    /// `--from=`: taken literally (BuildKit fixes the stage graph before variables
    /// are known), resolved to an earlier stage (a dependency edge) or an image.
    fn copy_from(&self, index: usize, f: &Flag, edges: &mut Vec<(StageIdx, Location)>) -> Result<CopyFrom, Error> {
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
        Ok(cf)
    }

    /// `--chmod=`, expanded and parsed; an error names the flag's line, as BuildKit
    /// refuses a bad mode when it converts the Dockerfile, before building.
    fn chmod(&self, ix: &Inst, f: &Flag) -> Result<Chmod, Error> {
        let v = self.x_flag(ix, f)?;
        Chmod::parse(&v).map_err(|m| Error::Flag(self.diag(f.loc.clone(), m)))
    }
}

/// BuildKit's history text of a COPY/ADD: the flags it shows, the sources and the
/// destination.
fn copy_history(is_add: bool, spec: &CopySpec) -> String {
    let mut cb = String::from(if is_add { "ADD" } else { "COPY" });
    if spec.parents {
        cb.push_str(" --parents");
    }
    if let Some(c) = &spec.chown {
        cb.push_str(&format!(" --chown={c}"));
    }
    if let Some(c) = &spec.chmod {
        cb.push_str(&format!(" --chmod={}", c.text));
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
    cb
}
