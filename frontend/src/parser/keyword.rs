//! Instruction keywords: their spellings and the flags each one accepts.

use serde::Serialize;

/// Instruction keywords.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Keyword {
    From,
    Run,
    Cmd,
    Entrypoint,
    Copy,
    Add,
    Env,
    Arg,
    Label,
    Expose,
    Volume,
    Workdir,
    User,
    StopSignal,
    Healthcheck,
    Shell,
    OnBuild,
    Maintainer,
}

impl Keyword {
    /// Every keyword, in BuildKit's (alphabetical) order: the order in which
    /// equally close "did you mean" candidates are tried.
    #[rustfmt::skip]
    pub const ALL: [Keyword; 18] = {
        use Keyword::*;
        [
            Add, Arg, Cmd, Copy, Entrypoint, Env, Expose, From, Healthcheck, Label, Maintainer, OnBuild, Run, Shell,
            StopSignal, User, Volume, Workdir,
        ]
    };

    pub fn parse(s: &str) -> Option<Keyword> {
        use Keyword::*;
        Some(match s.to_ascii_uppercase().as_str() {
            "FROM" => From,
            "RUN" => Run,
            "CMD" => Cmd,
            "ENTRYPOINT" => Entrypoint,
            "COPY" => Copy,
            "ADD" => Add,
            "ENV" => Env,
            "ARG" => Arg,
            "LABEL" => Label,
            "EXPOSE" => Expose,
            "VOLUME" => Volume,
            "WORKDIR" => Workdir,
            "USER" => User,
            "STOPSIGNAL" => StopSignal,
            "HEALTHCHECK" => Healthcheck,
            "SHELL" => Shell,
            "ONBUILD" => OnBuild,
            "MAINTAINER" => Maintainer,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        use Keyword::*;
        match self {
            From => "FROM",
            Run => "RUN",
            Cmd => "CMD",
            Entrypoint => "ENTRYPOINT",
            Copy => "COPY",
            Add => "ADD",
            Env => "ENV",
            Arg => "ARG",
            Label => "LABEL",
            Expose => "EXPOSE",
            Volume => "VOLUME",
            Workdir => "WORKDIR",
            User => "USER",
            StopSignal => "STOPSIGNAL",
            Healthcheck => "HEALTHCHECK",
            Shell => "SHELL",
            OnBuild => "ONBUILD",
            Maintainer => "MAINTAINER",
        }
    }

    /// Which flags the instruction accepts, and of what kind.
    pub(super) fn flags(self) -> &'static [(&'static str, FlagKind)] {
        use FlagKind::*;
        match self {
            Keyword::From => &[("platform", Value)],
            Keyword::Run => &[("mount", Multi), ("network", Value), ("security", Value)],
            Keyword::Copy => &[
                ("from", Value),
                ("chown", Value),
                ("chmod", Value),
                ("link", Bool),
                ("parents", Bool),
                ("exclude", Multi),
            ],
            Keyword::Add => &[
                ("chown", Value),
                ("chmod", Value),
                ("link", Bool),
                ("keep-git-dir", Bool),
                ("checksum", Value),
                ("exclude", Multi),
                ("unpack", Bool),
            ],
            Keyword::Healthcheck => &[
                ("interval", Value),
                ("timeout", Value),
                ("start-period", Value),
                ("start-interval", Value),
                ("retries", Value),
            ],
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FlagKind {
    /// `--name=value`, at most once.
    Value,
    /// `--name` or `--name=true|false`, at most once.
    Bool,
    /// `--name=value`, any number of times.
    Multi,
}
