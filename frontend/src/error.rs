//! Errors of the frontend.
//!
//! Every user-facing error points at a place in the Dockerfile so that the message can
//! be rendered the way compilers do: `file:line:col: message`, the offending line, and
//! a caret under the column. The rendering lives in [`Diag`]'s `Display` so that every
//! variant prints the same way.

use serde::Serialize;
use std::fmt;

/// A position in a Dockerfile. Lines and columns are 1-based; columns count characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A located message plus the source line it refers to (kept so that `Display` needs
/// no access to the Dockerfile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub loc: Location,
    pub message: String,
    pub line_text: String,
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.loc, self.message)?;
        writeln!(f, "{}", self.line_text)?;
        // Copy tabs from the line prefix so that the caret lines up in a terminal.
        let mut caret = String::new();
        for (i, c) in self.line_text.chars().enumerate() {
            if i + 1 >= self.loc.column {
                break;
            }
            caret.push(if c == '\t' { '\t' } else { ' ' });
        }
        let have = caret.chars().count();
        for _ in have + 1..self.loc.column.max(1) {
            caret.push(' ');
        }
        caret.push('^');
        write!(f, "{caret}")
    }
}

/// Everything that can go wrong while parsing or lowering a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Malformed syntax: directives, continuation, heredocs, JSON, arguments.
    #[error("{0}")]
    Syntax(Diag),
    /// An instruction keyword that is not a Dockerfile instruction.
    #[error("{0}")]
    UnknownInstruction(Diag),
    /// A `--flag` the instruction does not accept, or a bad flag value.
    #[error("{0}")]
    Flag(Diag),
    /// Variable expansion failed (`${V:?msg}`, bad substitution, missing `}`).
    #[error("{0}")]
    Expansion(Diag),
    /// Stage problems: no FROM, duplicate names, bad `--from`, dependency cycles.
    #[error("{0}")]
    Stage(Diag),
    /// `--target` names no stage; `suggestion` is a stage name close to it.
    #[error(
        "target stage {} could not be found{}",
        crate::gofmt::quote(name),
        crate::suggest::did_you_mean(suggestion.as_deref())
    )]
    UnknownTarget { name: String, suggestion: Option<String> },
    /// SOURCE_DATE_EPOCH is neither a number, `context` nor a stage name.
    #[error("invalid SOURCE_DATE_EPOCH: {value}")]
    InvalidSourceDateEpoch { value: String },
}

impl Error {
    /// Where the error is, when it is tied to a place in the Dockerfile.
    pub fn location(&self) -> Option<&Location> {
        self.diag().map(|d| &d.loc)
    }

    /// The bare message, without location or source line.
    pub fn message(&self) -> String {
        match self.diag() {
            Some(d) => d.message.clone(),
            None => self.to_string(),
        }
    }

    fn diag(&self) -> Option<&Diag> {
        match self {
            Error::Syntax(d)
            | Error::UnknownInstruction(d)
            | Error::Flag(d)
            | Error::Expansion(d)
            | Error::Stage(d) => Some(d),
            Error::UnknownTarget { .. } | Error::InvalidSourceDateEpoch { .. } => None,
        }
    }
}
