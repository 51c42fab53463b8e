//! One module per subcommand: each turns validated options into work.

pub mod build;
pub mod call;
pub mod ciauth;
pub mod diff;
pub mod images;
pub mod index;
pub mod inspect;
pub mod maintenance;
pub mod source;
pub mod warmer;

use std::process::ExitCode;

use clap::Parser;

pub fn fail(e: &anyhow::Error) -> ExitCode {
    // Frontend errors carry their own `file:line:col` and caret; print them as is.
    if crate::progress::get().mode() == crate::progress::Mode::Json {
        let run = e.chain().find_map(|c| c.downcast_ref::<crate::solver::RunFailed>()).map(|r| (r.step, r.code));
        crate::progress::get().error(&error_text(e), run);
    } else {
        crate::progress::get().error("", None);
        eprintln!("error: {}", error_text(e));
    }
    ExitCode::from(1)
}

/// `e` and its causes joined by ": ", each cause left out when the text before
/// already says it: most errors put their source in their own message, so anyhow's
/// `{:#}` said "No space left on device" three times.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let m = cause.to_string();
        if text.contains(&m) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&m);
    }
    text
}

/// Logging to stderr: `KILN_LOG` if set, else `default` (e.g. `--verbosity`), else warnings.
pub fn init_tracing(default: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default.unwrap_or("warn")));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Parse the command line and run the subcommand.
pub fn run() -> ExitCode {
    let cli = crate::cli::Cli::parse_from(crate::cli::command_line(std::env::args_os()));
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
            init_tracing(None);
            let authfile = match &command {
                crate::cli::index::IndexCommand::Create(a) => a.access.authfile.clone(),
            };
            let auth = match ciauth::install(authfile.as_deref()) {
                Ok(g) => g,
                Err(e) => return fail(&e.context("registry credentials")),
            };
            match index::main(command, auth.as_ref().map(|g| g.auth_files())) {
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
            match crate::exec::userns::enter(crate::options::IsolationChoice::Auto, &[]) {
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
        crate::cli::CommandKind::Image(command) => images::run(command),
        crate::cli::CommandKind::Diff(args) => diff::run(args),
        crate::cli::CommandKind::Warmer(args) => {
            init_tracing(args.verbosity.as_deref());
            crate::progress::init_with(crate::progress::Mode::Plain, args.log_timestamp.unwrap_or(false));
            match warmer::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        crate::cli::CommandKind::Executor(args) => {
            let destinations = args.destinations.clone();
            let own_digest_file = args.digest_file.is_some();
            match args.into_build() {
                Ok((build, names_files)) => {
                    let names = build.digest_file.clone().filter(|_| !names_files.is_empty()).map(|digest_file| build::ImageNames {
                        files: names_files,
                        temporary_digest: !own_digest_file,
                        digest_file,
                        destinations,
                    });
                    build::run(build, names)
                }
                Err(e) => fail(&e),
            }
        }
    }
}

