//! One module per subcommand: each turns validated options into work.

pub mod build;
pub mod ciauth;
pub mod index;
pub mod inspect;
pub mod maintenance;

use std::process::ExitCode;

pub fn fail(e: &anyhow::Error) -> ExitCode {
    // Frontend errors carry their own `file:line:col` and caret; print them as is.
    if crate::progress::get().mode() == crate::progress::Mode::Json {
        crate::progress::get().error(&format!("{e:#}"));
    } else {
        eprintln!("error: {e:#}");
    }
    ExitCode::from(1)
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
