//! The flags that say which Dockerfile and which part of it: `-f`, `--build-arg`,
//! `--target`, declared once for `build`, `parse` and `plan`, and the one
//! Dockerfile lookup they share.

use std::path::{Path, PathBuf};

use clap::Args;

#[derive(Debug, Args)]
pub struct DockerfileFlag {
    /// Path of the Dockerfile (default: CONTEXT/Dockerfile, else CONTEXT/dockerfile,
    /// else CONTEXT/Containerfile; `-` reads it from stdin).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

impl DockerfileFlag {
    /// The Dockerfile to read: `-f` as given, else BuildKit's lookup in the
    /// context, `Dockerfile` then `dockerfile` (dockerui's DefaultDockerfileName and
    /// its lower-case fallback).
    pub fn path(&self, context: &Path) -> PathBuf {
        match &self.file {
            Some(f) => f.clone(),
            None if context.join("Dockerfile").exists() => context.join("Dockerfile"),
            None if context.join("dockerfile").is_file() => context.join("dockerfile"),
            // Buildah's and podman's default name, when there is no Dockerfile.
            None if context.join("Containerfile").is_file() => context.join("Containerfile"),
            None => context.join("Dockerfile"),
        }
    }
}

#[derive(Debug, Args)]
pub struct StageFlags {
    /// Build-time variable, KEY=VALUE (or KEY to take it from the environment).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Build (or plan) this stage and stop (default: the last one).
    #[arg(long)]
    pub target: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_lookup_prefers_the_capitalised_name() {
        let t = tempfile::tempdir().unwrap();
        let flag = DockerfileFlag { file: None };
        assert_eq!(flag.path(t.path()), t.path().join("Dockerfile"));
        std::fs::write(t.path().join("Containerfile"), "FROM scratch\n").unwrap();
        assert_eq!(flag.path(t.path()), t.path().join("Containerfile"));
        std::fs::write(t.path().join("dockerfile"), "FROM scratch\n").unwrap();
        assert_eq!(flag.path(t.path()), t.path().join("dockerfile"));
        std::fs::write(t.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        assert_eq!(flag.path(t.path()), t.path().join("Dockerfile"));
        let given = DockerfileFlag { file: Some("x/Containerfile".into()) };
        assert_eq!(given.path(t.path()), PathBuf::from("x/Containerfile"));
    }
}
