//! Step cache keys, all computed before anything runs.
//!
//! key(step) = sha256 over length-prefixed parts: the parent key (the previous step
//! of the stage, or the stage's base), the frontend's cache material (expanded
//! instruction, platform, build args used, named inputs), and the digest of every
//! input the step reads: context files after `.dockerignore` (content, mode, type —
//! never owner or time), the final key of a source stage, the manifest digest of a
//! source image. Secrets contribute only their ids (in the material), never values.
//! Config-only steps are part of the chain, so an ENV change misses every later RUN.
//!
//! A step that reads another stage also has a *content key*, made only when its key
//! misses: the same parts with each stage replaced by the digest of what the step
//! selects there (COPY --from sources, a bind mount's `source`), chained on the
//! content key of the step before when that one had one. BuildKit's exec and file
//! ops key such inputs by content (`solver/llbsolver/ops/exec.go` `getMountDeps`:
//! content-based for read-only and no-output mounts), so a stage that changed
//! elsewhere does not rerun the steps that read only its unchanged part.

use anyhow::{Context, Result};
use kiln_cache::layercache::CacheKey;
use kiln_frontend::{Base, Stage, StepInput, StepKind};

/// Keys of one job: per step, and the key of the stage's result.
#[derive(Debug, Clone)]
pub struct JobKeys {
    pub steps: Vec<CacheKey>,
    pub result: CacheKey,
    /// The key of the stage's base, the parent of its first step.
    pub base: CacheKey,
    /// Per step, what its key hashed after the parent, for [`content_key`].
    pub parts: Vec<Vec<Part>>,
}

/// One hashed part of a step key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Fixed(String),
    /// The `n`-th input of the step: a stage, hashed by its result key.
    Stage { input: usize, key: CacheKey },
}

impl Part {
    fn text(&self) -> String {
        match self {
            Part::Fixed(s) => s.clone(),
            Part::Stage { key, .. } => format!("stage:{}", key.hex()),
        }
    }
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
    fn stage_key(&self, stage: kiln_frontend::StageIdx) -> Result<CacheKey>;
    /// What an `ADD` URL (without `--checksum`) resolved to: content digest and time.
    fn url_digest(&self, url: &str) -> Result<String>;
    /// What the build leaves out of every layer it writes (`--ignore-path`), as key
    /// material: empty for none, which keeps the keys of builds without it unchanged.
    fn layer_filter(&self) -> String {
        String::new()
    }
}

pub fn job_keys(stage: &Stage, platform: &str, inputs: &mut dyn KeyInputs) -> Result<JobKeys> {
    let base = match &stage.base {
        Base::Scratch => CacheKey::from_parts(["kiln.base.v1", "scratch", platform]),
        Base::Image(r) => CacheKey::from_parts(["kiln.base.v1", "image", &inputs.image_digest(r)?, platform]),
        Base::Stage(i) => CacheKey::from_parts(["kiln.base.v1", "stage", inputs.stage_key(*i)?.hex(), platform]),
    };
    // Layers written with paths left out are other layers: another key chain.
    let filter = inputs.layer_filter();
    let base = if filter.is_empty() { base } else { CacheKey::from_parts(["kiln.layer-filter.v1", base.hex(), &filter]) };
    let mut parent = base.clone();
    let mut steps = Vec::with_capacity(stage.steps.len());
    let mut all_parts = Vec::with_capacity(stage.steps.len());
    for step in &stage.steps {
        let mut parts: Vec<Part> = vec![Part::Fixed(step.cache_material.clone())];
        for (n, input) in step.inputs.iter().enumerate() {
            let d = match input {
                StepInput::Context { sources } if copies_parents(&step.kind) => parents_digest(sources, inputs)
                    .with_context(|| format!("{}:{}: hashing the build context", step.loc.file, step.loc.line))?,
                StepInput::Context { sources } => inputs
                    .context_digest(sources)
                    .with_context(|| format!("{}:{}: hashing the build context", step.loc.file, step.loc.line))?,
                StepInput::Stage(j) => {
                    parts.push(Part::Stage { input: n, key: inputs.stage_key(*j)? });
                    continue;
                }
                StepInput::Image(r) => format!("image:{}", inputs.image_digest(r)?),
            };
            parts.push(Part::Fixed(d));
        }
        for url in resolved_urls(&step.kind) {
            parts.push(Part::Fixed(format!("url {url} {}", inputs.url_digest(url)?)));
        }
        let key = CacheKey::from_parts(
            ["kiln.step.v1".to_string(), parent.hex().to_string()].into_iter().chain(parts.iter().map(Part::text)),
        );
        steps.push(key.clone());
        all_parts.push(parts);
        parent = key;
    }
    Ok(JobKeys { steps, result: parent, base, parts: all_parts })
}

impl JobKeys {
    /// The parent of step `i` in the key chain.
    pub fn parent_of(&self, i: usize) -> &CacheKey {
        if i == 0 {
            &self.base
        } else {
            &self.steps[i - 1]
        }
    }

    /// Whether step `i` reads another stage (and so has a content key).
    pub fn reads_stage(&self, i: usize) -> bool {
        self.parts[i].iter().any(|p| matches!(p, Part::Stage { .. }))
    }
}

/// The content key of step `i` (module comment): `parent` is the content key of
/// the step before, or its plain parent key; `stage_content(input)` gives the
/// digest of what the step selects from the stage that is its `input`-th input.
pub fn content_key(
    keys: &JobKeys,
    i: usize,
    parent: &CacheKey,
    stage_content: &mut dyn FnMut(usize) -> Result<String>,
) -> Result<CacheKey> {
    let mut parts = vec!["kiln.step.content.v1".to_string(), parent.hex().to_string()];
    for p in &keys.parts[i] {
        parts.push(match p {
            Part::Fixed(s) => s.clone(),
            Part::Stage { input, .. } => format!("stage-content:{}", stage_content(*input)?),
        });
    }
    Ok(CacheKey::from_parts(parts.iter()))
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
        let ps = crate::steps::parents::ParentsSource::parse(s);
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

/// The URLs of an `ADD` that are resolved before the build (`urlcache`): HTTP(S)
/// sources without `--checksum` (with one, the checksum is the key).
pub fn resolved_urls(kind: &StepKind) -> Vec<&str> {
    match kind {
        StepKind::Add(spec) if spec.checksum.is_none() => spec
            .sources
            .iter()
            .filter(|s| crate::steps::fetch::is_http(s) && !crate::steps::fetch::is_git(s))
            .map(String::as_str)
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether a step's result may come from the cache at all. ADD of a git repository
/// at a branch or tag (not a commit id) cannot be known before fetching it, so it
/// always runs. (A URL is resolved before the build and keyed by its content.)
pub fn cacheable(kind: &StepKind) -> bool {
    match kind {
        StepKind::Add(spec) => !spec.sources.iter().any(|s| {
            if crate::steps::fetch::is_git(s) {
                let reference = s.split_once('#').map(|(_, f)| f.split(':').next().unwrap_or("")).unwrap_or("");
                !crate::steps::fetch::is_commit(reference)
            } else {
                false
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
        fn stage_key(&self, s: kiln_frontend::StageIdx) -> Result<CacheKey> {
            Ok(CacheKey::from_parts([format!("stage{s}")]))
        }
        fn url_digest(&self, u: &str) -> Result<String> {
            Ok(format!("sha256:{u}"))
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

    #[test]
    fn content_keys_follow_the_selected_content_not_the_stage_key() {
        let df = "FROM img AS a\nRUN x\nFROM img\nCOPY --from=a /out /out\nRUN y\n";
        let g = graph(df);
        let mut f = Fake { ctx: "c".into(), reads: 0 };
        let k = job_keys(&g.stages[1], "p", &mut f).unwrap();
        assert!(k.reads_stage(0) && !k.reads_stage(1));
        let same = |_: usize| Ok("sha256:out".to_string());
        let c0 = content_key(&k, 0, k.parent_of(0), &mut { same }).unwrap();
        assert_ne!(&c0, &k.steps[0], "a content key is not the step key");
        // The stage's key changes, what the step reads does not: same content key.
        struct Other;
        impl KeyInputs for Other {
            fn context_digest(&mut self, _: &[String]) -> Result<String> { Ok("c".into()) }
            fn context_has(&mut self, _: &str) -> bool { true }
            fn image_digest(&self, r: &str) -> Result<String> { Ok(format!("sha256:{r}")) }
            fn stage_key(&self, _: kiln_frontend::StageIdx) -> Result<CacheKey> { Ok(CacheKey::from_parts(["another"])) }
            fn url_digest(&self, u: &str) -> Result<String> { Ok(u.into()) }
        }
        let k2 = job_keys(&g.stages[1], "p", &mut Other).unwrap();
        assert_ne!(k.steps[0], k2.steps[0]);
        assert_eq!(c0, content_key(&k2, 0, k2.parent_of(0), &mut { same }).unwrap());
        // What it reads changes: another content key.
        let changed = content_key(&k2, 0, k2.parent_of(0), &mut |_| Ok("sha256:new".to_string())).unwrap();
        assert_ne!(c0, changed);
        // The next step chains on the content key.
        let c1 = content_key(&k2, 1, &c0, &mut |_| unreachable!("reads no stage")).unwrap();
        assert_eq!(c1, content_key(&k, 1, &c0, &mut |_| unreachable!()).unwrap());
    }
}
