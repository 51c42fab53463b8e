//! `kiln diff A B`: two images compared, file tree and config (`compare.rs`), each
//! read from a layout, an archive, the local store or a registry (`source.rs`) and
//! its layers applied in memory (`tree.rs`). Exit 0 when the same, 1 when they
//! differ, 2 on an error; clap's usage errors exit 2 too.
//!
//! Text output: one line per difference, then a summary line (or one line saying
//! the images are identical). `--format json`: one object
//! `{"same", "a", "b", "differences": [{"path"|"field", "key"?, "index"?, "kind",
//! "what", "a", "b"}]}`.

pub mod compare;
pub mod source;
pub mod tree;

use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use kiln_oci::Platform;
use serde_json::json;

use crate::cli::diff::{DiffArgs, DiffFormat};
use crate::cmd::diff::compare::{Change, Difference, Options};
use crate::cmd::diff::tree::Tree;

pub fn run(args: DiffArgs) -> ExitCode {
    crate::cmd::init_tracing(None);
    match diff(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// One image read in full: its tree and config.
struct Image {
    tree: Tree,
    config: serde_json::Value,
}

fn load(loader: &mut source::Loader, which: &str, arg: &str) -> Result<Image> {
    let what = || format!("image {which} ({arg})");
    let loaded = loader.load(arg).with_context(what)?;
    tracing::info!("{which}: {}", loaded.description);
    let tree = loaded.tree().with_context(what)?;
    Ok(Image { tree, config: loaded.config })
}

/// Whether the images are the same; prints the differences.
fn diff(args: &DiffArgs) -> Result<bool> {
    let opts = Options::new(&args.ignore_paths, &args.ignore_labels, &args.ignore_xattrs, &args.ignore_config, args.history)?;
    let platform = match &args.platform {
        Some(p) => Platform::parse(p).map_err(|e| anyhow!("--platform {p}: {e}"))?,
        None => Platform::host(),
    };
    let state = crate::options::state_dir().map_err(|e| format!("{e:#}"));
    let mut loader = source::Loader::new(args.registry.to_options()?, platform, state);
    let a = load(&mut loader, "A", &args.a)?;
    let b = load(&mut loader, "B", &args.b)?;
    let mut diffs = compare::compare_trees(&a.tree, &b.tree, &opts);
    diffs.extend(compare::compare_configs(&a.config, &b.config, &opts));
    match args.format {
        DiffFormat::Json => {
            let v = json!({
                "same": diffs.is_empty(),
                "a": args.a,
                "b": args.b,
                "differences": diffs.iter().map(Difference::to_json).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        DiffFormat::Text => {
            for d in &diffs {
                println!("{}", d.line());
            }
            println!("{}", summary(&diffs, &args.a, &args.b));
        }
    }
    Ok(diffs.is_empty())
}

fn summary(diffs: &[Difference], a: &str, b: &str) -> String {
    if diffs.is_empty() {
        return format!("identical: {a} and {b}");
    }
    let n = |k: Change| diffs.iter().filter(|d| d.kind == k).count();
    format!(
        "{} difference{} between {a} and {b}: {} added, {} removed, {} changed",
        diffs.len(),
        if diffs.len() == 1 { "" } else { "s" },
        n(Change::Added),
        n(Change::Removed),
        n(Change::Changed)
    )
}
