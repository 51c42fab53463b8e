//! `COPY --parents`: BuildKit's split of a source into the directory it copies from
//! and the pattern that selects what it keeps, and the walk that applies it.
//!
//! BuildKit (dockerfile2llb `dispatchCopy`) cuts a `--parents` source at its first
//! `/./`: the part before is the directory whose *contents* are copied (wildcards
//! allowed), the part after is an include pattern with Docker's pattern rules
//! (`**` spans any number of components; a path is kept when it or one of its
//! parents matches). Without a pivot the directory is the root and the whole
//! source is the pattern, which keeps every parent. The destination is always
//! created; a source without wildcards must exist.

use std::path::{Path, PathBuf};

/// A `--parents` source, split at its pivot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentsSource {
    /// Where the copy reads from (relative to the source root; may hold wildcards).
    pub dir: String,
    /// What is kept below `dir` (relative, cleaned; `/`-separated).
    pub pattern: String,
}

fn has_wildcards(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Clean a relative `/`-separated path: no `.`, empty or leading components, and
/// `..` cannot climb above the start (Go's path.Clean from the root).
fn clean_rel(p: &str) -> String {
    crate::context::dockerignore::go_clean(&format!("/{p}")).trim_start_matches('/').to_string()
}

impl ParentsSource {
    pub fn parse(src: &str) -> ParentsSource {
        match src.split_once("/./") {
            Some((dir, pattern)) => ParentsSource { dir: clean_rel(dir), pattern: clean_rel(pattern) },
            None => ParentsSource { dir: String::new(), pattern: clean_rel(src) },
        }
    }

    /// Without wildcards the selected path must exist (BuildKit's RequiredPaths).
    pub fn required(&self) -> Option<String> {
        (!has_wildcards(&self.dir) && !has_wildcards(&self.pattern)).then(|| {
            if self.dir.is_empty() {
                self.pattern.clone()
            } else if self.pattern.is_empty() {
                self.dir.clone()
            } else {
                format!("{}/{}", self.dir, self.pattern)
            }
        })
    }

    /// The deepest directory (relative to the source root) that holds everything
    /// this source can select: the cache key hashes it, a superset of what is
    /// copied, so a key never misses a change that the copy would see.
    pub fn key_root(&self) -> String {
        let joined = clean_rel(&format!("{}/{}", self.dir, self.pattern));
        let lit: Vec<&str> = joined.split('/').take_while(|c| !c.is_empty() && !has_wildcards(c)).collect();
        lit.join("/")
    }

    /// Whether the key root may be missing without an error (wildcards follow it).
    pub fn may_select_nothing(&self) -> bool {
        self.required().is_none()
    }
}

/// Entries below `dir` (host path) kept by `pattern`: (relative path, host path),
/// parents before children, sorted. Symlinks are listed, never followed.
pub fn select(dir: &Path, pattern: &crate::context::dockerignore::Matcher) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    walk(dir, "", pattern, &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, rel: &str, pattern: &crate::context::dockerignore::Matcher, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let r = if rel.is_empty() { name.to_string_lossy().into_owned() } else { format!("{rel}/{}", name.to_string_lossy()) };
        let host = dir.join(&name);
        let md = std::fs::symlink_metadata(&host)?;
        // `matches` is "the path or one of its parents matches", fsutil's rule for
        // include patterns; an empty pattern keeps everything.
        let kept = pattern.is_empty() || pattern.matches(&r, md.is_dir());
        if kept {
            out.push((r.clone(), host.clone()));
        }
        if md.is_dir() {
            walk(&host, &r, pattern, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_first_pivot() {
        let p = |s: &str| {
            let x = ParentsSource::parse(s);
            (x.dir, x.pattern)
        };
        assert_eq!(p("./x/./y/*.txt"), ("x".into(), "y/*.txt".into()));
        assert_eq!(p("/test/a/./b/./c"), ("test/a".into(), "b/c".into()));
        assert_eq!(p("./x/a.txt"), ("".into(), "x/a.txt".into()), "a leading ./ is no pivot");
        assert_eq!(p("/test/a/b/c/d/."), ("".into(), "test/a/b/c/d".into()), "a trailing /. is no pivot");
        assert_eq!(p("/test/a/b*/./c/**/bar"), ("test/a/b*".into(), "c/**/bar".into()));
    }

    #[test]
    fn key_root_holds_everything_selected() {
        let k = |s: &str| ParentsSource::parse(s).key_root();
        assert_eq!(k("./src/**/*.txt"), "src");
        assert_eq!(k("./x/./y/*.txt"), "x/y");
        assert_eq!(k("/test/a/b*/./c"), "test/a");
        assert_eq!(k("*.txt"), "");
        assert_eq!(k("foo1/foo2/bar"), "foo1/foo2/bar");
        assert!(ParentsSource::parse("a/*").may_select_nothing());
        assert_eq!(ParentsSource::parse("a/./b").required().as_deref(), Some("a/b"));
    }

    #[test]
    fn double_star_spans_any_depth_and_parents_match() {
        let t = tempfile::tempdir().unwrap();
        for f in ["src/a.txt", "src/x/b.txt", "src/x/y/c.txt", "src/x/y/skip.md", "other/d.txt"] {
            let p = t.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        let m = crate::context::dockerignore::Matcher::new(&["src/**/*.txt"]).unwrap();
        let got: Vec<String> = select(t.path(), &m).unwrap().into_iter().map(|(r, _)| r).collect();
        assert_eq!(got, ["src/a.txt", "src/x/b.txt", "src/x/y/c.txt"]);
        let m = crate::context::dockerignore::Matcher::new(&["src/x"]).unwrap();
        let got: Vec<String> = select(t.path(), &m).unwrap().into_iter().map(|(r, _)| r).collect();
        assert_eq!(got, ["src/x", "src/x/b.txt", "src/x/y", "src/x/y/c.txt", "src/x/y/skip.md"], "below a matched dir, everything");
    }
}
