//! What a step reads from another stage, for its content key (`keys::content_key`):
//! the paths it selects there (COPY --from sources; a bind or cache mount's
//! `source`) and the digest of those paths in the stage's rootfs.

use std::path::Path;

use anyhow::Result;
use kiln_frontend::{CopyFrom, Step, StepInput, StepKind};

use crate::context::hasher::ContextHasher;
use crate::context::dockerignore::Matcher;

/// Per input of `step`, the paths selected when that input is a stage; `None`
/// when the step's stage inputs cannot be told apart (then it has no content key).
pub fn selectors(step: &Step) -> Option<Vec<Option<Vec<String>>>> {
    let mut from_stages: Vec<Vec<String>> = match &step.kind {
        StepKind::Copy(spec) | StepKind::Add(spec) => match spec.from {
            // `--parents` keeps paths below a pivot: the key roots are its own rules.
            Some(CopyFrom::Stage(_)) if !spec.parents => vec![spec.sources.clone()],
            Some(CopyFrom::Stage(_)) => return None,
            _ => Vec::new(),
        },
        StepKind::Run { mounts, .. } => mounts
            .iter()
            .filter(|m| matches!(m.from, Some(CopyFrom::Stage(_))))
            .map(|m| vec![m.source.clone().unwrap_or_else(|| "/".into())])
            .collect(),
        _ => Vec::new(),
    };
    from_stages.reverse();
    let out: Vec<Option<Vec<String>>> = step
        .inputs
        .iter()
        .map(|i| match i {
            StepInput::Stage(_) => from_stages.pop().map(Some),
            _ => Some(None),
        })
        .collect::<Option<_>>()?;
    from_stages.is_empty().then_some(out)
}

/// The digest of `paths` in a stage's rootfs: the context digest's listing with
/// owners (a stage's files keep them), wildcards allowed to match nothing.
pub fn digest_in(root: &Path, paths: &[String]) -> Result<String> {
    let mut h = ContextHasher::new(root, Matcher::empty(), None)?;
    h.set_allow_empty_wildcard(true);
    h.set_include_owners(true);
    h.digest_sources(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(df: &str) -> Vec<Step> {
        let d = kiln_frontend::parse("Dockerfile", df).unwrap();
        let g = kiln_frontend::lower(&d, &Default::default()).unwrap();
        g.stages.last().unwrap().steps.clone()
    }

    #[test]
    fn selectors_line_up_with_the_step_inputs() {
        let s = steps(
            "FROM img AS a\nFROM img\nCOPY --from=a /out/*.txt /b /dst/\n\
             RUN --mount=type=bind,source=x,target=/ctx --mount=from=a,src=out,target=/o --mount=from=a,target=/all true\n\
             COPY local /l\n",
        );
        assert_eq!(selectors(&s[0]).unwrap(), vec![Some(vec!["/out/*.txt".to_string(), "/b".to_string()])]);
        assert_eq!(
            selectors(&s[1]).unwrap(),
            vec![None, Some(vec!["out".to_string()]), Some(vec!["/".to_string()])]
        );
        assert_eq!(selectors(&s[2]).unwrap(), vec![None]);
    }

    #[test]
    fn digest_follows_content_and_owners_of_the_selected_paths_only() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("out")).unwrap();
        std::fs::write(d.path().join("out/foo"), "foo").unwrap();
        std::fs::write(d.path().join("other"), "1").unwrap();
        let a = digest_in(d.path(), &["out".into()]).unwrap();
        std::fs::write(d.path().join("other"), "2").unwrap();
        assert_eq!(a, digest_in(d.path(), &["out".into()]).unwrap(), "an unselected file does not count");
        std::fs::write(d.path().join("out/foo"), "bar").unwrap();
        assert_ne!(a, digest_in(d.path(), &["out".into()]).unwrap());
        // No match for a wildcard is a digest too (the step decides if that is an error).
        digest_in(d.path(), &["none*".into()]).unwrap();
    }
}
