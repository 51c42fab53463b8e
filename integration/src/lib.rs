//! Test harness for kiln end-to-end tests, in the style of cargo's
//! `cargo-test-support`: fixture builders plus assertions that print
//! everything useful when they fail.
//!
//! * [`Registry`] — a real `docker-registry` (CNCF distribution) on a free
//!   127.0.0.1 port, with its own storage and log, killed on drop;
//!   [`seed_base_images`] pushes the busybox base images
//!   (`testdata/scripts/seed-registry.sh`).
//! * [`Sandbox`] — a per-test temp dir owned by the unprivileged build user
//!   (`kilntest` when the tests run as root, the current user otherwise) with
//!   a HOME and a KILN_ROOT; [`Sandbox::context`] copies a `testdata/cases/*`
//!   build context into it, pointed at the test registry;
//!   [`Sandbox::kiln`] builds a `kiln` command that runs as that user.
//! * [`fileserver::FileServer`] — a std-only HTTP/1.1 server of given files
//!   (GET/HEAD, Last-Modified) that records its requests, for `ADD http://…`.
//! * [`RunOutput`] — status/stdout/stderr with `assert_success()`,
//!   `assert_failure_containing()`, ….
//! * [`Image`] — an image pulled with skopeo (or read from an OCI layout)
//!   whose layers are applied in memory with OCI whiteout semantics into a
//!   [`Tree`] of [`Node`]s, plus its manifest and config JSON.
//!
//! A missing prerequisite (docker-registry, skopeo, newuidmap, the user
//! kilntest, its subuid range, the kiln binary) fails the test with a message
//! that says to run `scripts/setup.sh`; nothing is ever skipped.

pub mod bkcases;
pub mod cases;
pub mod connectproxy;
pub mod faultproxy;
pub mod fileserver;
pub mod gitdaemon;
pub mod http;
pub mod image;
pub mod paths;
pub mod process;
pub mod registry;
pub mod sandbox;

pub use image::{Image, Kind, Layer, Node, Tree};
pub use paths::{case_dir, kiln_bin, repo_root};
pub use process::{run_with_timeout, RunOutput};
pub use registry::{seed_base_images, BaseImages, Registry};
pub use sandbox::{BuildUser, KilnCmd, Sandbox, Spawned};

/// Fail the current test because a prerequisite is missing.
#[track_caller]
pub fn missing_prerequisite(what: &str) -> ! {
    panic!(
        "\n\nmissing test prerequisite: {what}\n\
         run `sudo scripts/setup.sh` (from the repository root) to install and configure it;\n\
         kiln's integration tests never skip.\n"
    )
}

/// Check that an executable exists (absolute path or on PATH).
#[track_caller]
pub fn require_program(program: &str) -> std::path::PathBuf {
    match paths::which(program) {
        Some(p) => p,
        None => missing_prerequisite(&format!("program `{program}` not found")),
    }
}
