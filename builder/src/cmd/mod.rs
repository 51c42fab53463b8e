//! One module per subcommand: each turns validated options into work.

pub mod build;
pub mod ciauth;
pub mod index;
pub mod inspect;
pub mod maintenance;

use std::process::ExitCode;

use clap::Parser;

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

/// Parse the command line and run the subcommand.
pub fn run() -> ExitCode {
    let cli = crate::cli::Cli::parse();
    match cli.command {
        crate::cli::CommandKind::Binfmt { install, platforms } => {
            let r = if install { crate::exec::binfmt::install(&platforms) } else { crate::exec::binfmt::list() };
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        crate::cli::CommandKind::Parse(args) => inspect::parse_cmd(args),
        crate::cli::CommandKind::Plan(args) => inspect::plan_cmd(args),
        crate::cli::CommandKind::Index { command } => {
            init_tracing();
            let authfile = match &command {
                crate::cli::index::IndexCommand::Create(a) => a.authfile.clone(),
            };
            let _auth = match ciauth::install(authfile.as_deref()) {
                Ok(g) => g,
                Err(e) => return fail(&e.context("registry credentials")),
            };
            match index::main(command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        crate::cli::CommandKind::Df => match crate::options::state_dir().and_then(|d| maintenance::df(&d)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        crate::cli::CommandKind::Prune(args) => {
            // Unpacked layers belong to subordinate ids: prune from inside.
            match crate::exec::userns::enter(crate::options::IsolationChoice::Auto) {
                Ok(crate::exec::userns::Entered::ChildExited(code)) => return ExitCode::from(code.clamp(0, 255) as u8),
                Ok(crate::exec::userns::Entered::Inside(_)) => {}
                Err(e) => return fail(&e.context("entering the build's user namespace")),
            }
            match crate::options::state_dir().and_then(|d| maintenance::prune(&args, &d)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        crate::cli::CommandKind::Sandbox { spec } => ExitCode::from(crate::exec::sandbox::main(&spec).clamp(0, 255) as u8),
        crate::cli::CommandKind::Build(args) => build::run(args, None),
        crate::cli::CommandKind::Executor(args) => {
            let destinations = args.destinations.clone();
            match args.into_build() {
                Ok((build, names_file)) => {
                    let digest_file = build.digest_file.clone();
                    build::run(build, names_file.zip(digest_file).map(|(n, d)| (n, d, destinations)))
                }
                Err(e) => fail(&e),
            }
        }
    }
}

