//! Step cache keys, all computed before anything runs.
//!
//! key(step) = sha256 over length-prefixed parts: the parent key (the previous step
//! of the stage, or the stage's base), the frontend's cache material (expanded
//! instruction, platform, build args used, named inputs), and the digest of every
//! input the step reads: context files after `.dockerignore` (content, mode, type —
//! never owner or time), the final key of a source stage, the manifest digest of a
//! source image. Secrets contribute only their ids (in the material), never values.
//! Config-only steps are part of the chain, so an ENV change misses every later RUN.

use anyhow::{Context, Result};
use kiln_cache::layercache::CacheKey;
use kiln_frontend::{Base, Stage, StepInput, StepKind};

/// Keys of one job: per step, and the key of the stage's result.
#[derive(Debug, Clone)]
pub struct JobKeys {
    pub steps: Vec<CacheKey>,
    pub result: CacheKey,
}

/// What a key computation needs from outside the stage.
pub trait KeyInputs {
    /// Digest of context files selected by `sources` (after `.dockerignore`).
    fn context_digest(&mut self, sources: &[String]) -> Result<String>;
    /// Whether `rel` (relative to the context, after `.dockerignore`) exists.
    fn context_has(&mut self, rel: &str) -> bool;
    /// Manifest digest of an image as pulled for this platform.
    fn image_digest(&self, reference: &str) -> Result<String>;
    /// Result key of a stage this one reads.
    fn stage_key(&self, stage: usize) -> Result<CacheKey>;
}

pub fn job_keys(stage: &Stage, platform: &str, inputs: &mut dyn KeyInputs) -> Result<JobKeys> {
    let base = match &stage.base {
        Base::Scratch => CacheKey::from_parts(["kiln.base.v1", "scratch", platform]),
        Base::Image(r) => CacheKey::from_parts(["kiln.base.v1", "image", &inputs.image_digest(r)?, platform]),
        Base::Stage(i) => CacheKey::from_parts(["kiln.base.v1", "stage", inputs.stage_key(*i)?.hex(), platform]),
    };
    let mut parent = base;
    let mut steps = Vec::with_capacity(stage.steps.len());
    for step in &stage.steps {
        let mut parts: Vec<String> = vec!["kiln.step.v1".into(), parent.hex().to_string(), step.cache_material.clone()];
        for input in &step.inputs {
            let d = match input {
                StepInput::Context { sources } if copies_parents(&step.kind) => parents_digest(sources, inputs)
                    .with_context(|| format!("{}:{}: hashing the build context", step.loc.file, step.loc.line))?,
                StepInput::Context { sources } => inputs
                    .context_digest(sources)
                    .with_context(|| format!("{}:{}: hashing the build context", step.loc.file, step.loc.line))?,
                StepInput::Stage(j) => format!("stage:{}", inputs.stage_key(*j)?.hex()),
                StepInput::Image(r) => format!("image:{}", inputs.image_digest(r)?),
            };
            parts.push(d);
        }
        let key = CacheKey::from_parts(parts.iter());
        steps.push(key.clone());
        parent = key;
    }
    Ok(JobKeys { steps, result: parent })
}

fn copies_parents(kind: &StepKind) -> bool {
    matches!(kind, StepKind::Copy(spec) | StepKind::Add(spec) if spec.parents)
}

/// `COPY --parents` selects by pattern below each source's directory: the key
/// hashes the deepest directory holding all it can select (a superset, so no
/// change the copy would see is missed); one that is absent where wildcards allow
/// an empty match is keyed as absent.
fn parents_digest(sources: &[String], inputs: &mut dyn KeyInputs) -> Result<String> {
    let mut roots = Vec::new();
    let mut absent = Vec::new();
    for s in sources {
        let ps = crate::parents::ParentsSource::parse(s);
        let root = ps.key_root();
        let root = if root.is_empty() { ".".to_string() } else { root };
        if ps.may_select_nothing() && !inputs.context_has(&root) {
            absent.push(root);
        } else {
            roots.push(root);
        }
    }
    Ok(format!("parents {} absent {:?}", inputs.context_digest(&roots)?, absent))
}

/// Whether a step's result may come from the cache at all. ADD of a URL without
/// `--checksum`, or of a git repository at a branch or tag (not a commit id), cannot
/// be known before fetching it, so it always runs.
pub fn cacheable(kind: &StepKind) -> bool {
    match kind {
        StepKind::Add(spec) => !spec.sources.iter().any(|s| {
            if crate::fetch::is_git(s) {
                let reference = s.split_once('#').map(|(_, f)| f.split(':').next().unwrap_or("")).unwrap_or("");
                !crate::fetch::is_commit(reference)
            } else {
                (s.starts_with("http://") || s.starts_with("https://")) && spec.checksum.is_none()
            }
        }),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        ctx: String,
        reads: usize,
    }

    impl KeyInputs for Fake {
        fn context_digest(&mut self, _: &[String]) -> Result<String> {
            self.reads += 1;
            Ok(self.ctx.clone())
        }
        fn context_has(&mut self, _: &str) -> bool {
            true
        }
        fn image_digest(&self, r: &str) -> Result<String> {
            Ok(format!("sha256:{r}"))
        }
        fn stage_key(&self, s: usize) -> Result<CacheKey> {
            Ok(CacheKey::from_parts([format!("stage{s}")]))
        }
    }

    fn graph(df: &str) -> kiln_frontend::BuildGraph {
        let d = kiln_frontend::parse("Dockerfile", df).unwrap();
        kiln_frontend::lower(&d, &Default::default()).unwrap()
    }

    #[test]
    fn keys_chain_and_follow_inputs() {
        let g = graph("FROM img\nCOPY a /a\nRUN echo hi\n");
        let mut f = Fake { ctx: "sha256:one".into(), reads: 0 };
        let k1 = job_keys(&g.stages[0], "linux/amd64", &mut f).unwrap();
        assert_eq!(f.reads, 1);
        let again = job_keys(&g.stages[0], "linux/amd64", &mut f).unwrap();
        assert_eq!(k1.steps, again.steps, "keys are deterministic");
        // Context content changes: the COPY and everything after miss.
        f.ctx = "sha256:two".into();
        let k2 = job_keys(&g.stages[0], "linux/amd64", &mut f).unwrap();
        assert_ne!(k1.steps[0], k2.steps[0]);
        assert_ne!(k1.steps[1], k2.steps[1]);
        // Another platform never shares a key.
        let k3 = job_keys(&g.stages[0], "linux/arm64", &mut f).unwrap();
        assert_ne!(k2.steps[1], k3.steps[1]);
    }

    #[test]
    fn env_change_misses_later_runs() {
        let mut f = Fake { ctx: "x".into(), reads: 0 };
        let a = job_keys(&graph("FROM img\nENV A=1\nRUN true\n").stages[0], "p", &mut f).unwrap();
        let b = job_keys(&graph("FROM img\nENV A=2\nRUN true\n").stages[0], "p", &mut f).unwrap();
        assert_ne!(a.steps[1], b.steps[1]);
    }
}
