//! `kiln build` and `kiln executor`: registry credentials, options, the user
//! namespace, the async runtime, then the solver.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::build::BuildArgs;

/// `kiln build` (and `kiln executor`, which maps onto it). `image_names`: Kaniko's
/// `--image-name-with-digest-file`, written once the build succeeded.
pub fn run(args: BuildArgs, image_names: Option<(std::path::PathBuf, std::path::PathBuf, Vec<String>)>) -> ExitCode {
    // CI-provided registry credentials (CI_REGISTRY*, KILN_AUTH, --authfile):
    // a private merged docker config, removed when the build ends.
    let _auth = match crate::cmd::ciauth::install(args.authfile.as_deref()) {
        Ok(g) => g,
        Err(e) => return super::fail(&e.context("registry credentials")),
    };
    // Validate before entering the namespace so flag errors are reported once.
    let mut opts = match args.validate() {
        Ok(o) => o,
        Err(e) => return super::fail(&e),
    };
    crate::progress::init(opts.progress);
    let code = match crate::exec::userns::enter(opts.isolation_choice) {
        Ok(crate::exec::userns::Entered::ChildExited(code)) => code,
        Ok(crate::exec::userns::Entered::Inside(isolation)) => {
            opts.isolation = isolation;
            if isolation == crate::options::Isolation::Chroot {
                // No mounts at all: materialized rootfs and walk-and-compare diffs.
                opts.snapshotter = Some(kiln_snapshotter::SnapshotterKind::Native);
            }
            super::init_tracing();
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return super::fail(&anyhow::Error::new(e).context("starting the async runtime")),
            };
            match rt.block_on(crate::solver::build(opts)) {
                Ok(()) => 0,
                Err(e) => return super::fail(&e),
            }
        }
        Err(e) => return super::fail(&e.context("entering the build's user namespace")),
    };
    if code == 0 && !crate::exec::userns::entered_before() {
        if let Some((file, digest_file, destinations)) = image_names {
            if let Err(e) = write_image_names(&file, &destinations, &digest_file) {
                return super::fail(&e.context(format!("writing {}", file.display())));
            }
        }
    }
    ExitCode::from(code.clamp(0, 255) as u8)
}


/// After a successful build: Kaniko's `--image-name-with-digest-file`, one
/// `REF@DIGEST` line per destination.
pub fn write_image_names(file: &std::path::Path, destinations: &[String], digest_file: &std::path::Path) -> Result<()> {
    let digest = std::fs::read_to_string(digest_file)?;
    let digest = digest.trim();
    let lines: Vec<String> = destinations.iter().map(|d| format!("{}@{digest}", d.split('@').next().unwrap_or(d))).collect();
    std::fs::write(file, lines.join("\n") + "\n")?;
    Ok(())
}
