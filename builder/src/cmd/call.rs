//! `kiln build --call targets|outline`: what a Dockerfile offers, as buildx prints
//! it, without building: the stages one can `--target` with the comment above their
//! `FROM`, and for one target the build args, secrets and ssh sockets it uses, with
//! the comment above each `ARG`. A comment that starts with the stage's or arg's own
//! name has that name taken off (`# binary builds the binary` → `builds the binary`),
//! as BuildKit's outline does.

use anyhow::{anyhow, bail, Context, Result};
use kiln_frontend::{Command, LowerOptions, MountKind, StepKind};

use crate::cli::build::BuildArgs;

/// The `#` comment lines directly above line `line` (1-based), joined.
fn comment_above(lines: &[String], line: usize, name: Option<&str>) -> String {
    let mut parts = Vec::new();
    let mut i = line.saturating_sub(1);
    while i > 0 {
        let t = lines[i - 1].trim();
        match t.strip_prefix('#') {
            Some(c) if !t.starts_with("# syntax=") && !t.starts_with("# escape=") && !t.starts_with("# check=") => parts.push(c.trim().to_string()),
            _ => break,
        }
        i -= 1;
    }
    parts.reverse();
    let text = parts.join(" ");
    match name {
        Some(n) => match text.strip_prefix(n) {
            Some(rest) if rest.starts_with(' ') => rest.trim_start().to_string(),
            _ => text,
        },
        None => text,
    }
}

struct StageInfo {
    name: Option<String>,
    line: usize,
    args: Vec<(String, Option<String>, usize)>,
}

pub fn run(args: &BuildArgs, what: &str) -> Result<()> {
    if !matches!(what, "targets" | "outline") {
        bail!("--call {what:?}: kiln knows targets and outline (build is the default; check is not supported)");
    }
    let context = &args.context;
    let path = args.dockerfile.path(context);
    let text = crate::fsutil::read_dockerfile(&path)?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "Dockerfile".into());
    let df = kiln_frontend::parse(&file_name, &text).map_err(|e| anyhow!("{e}"))?;
    let mut global_args = Vec::new();
    let mut stages: Vec<StageInfo> = Vec::new();
    for inst in &df.instructions {
        match &inst.command {
            Command::From { name, .. } => stages.push(StageInfo { name: name.clone(), line: inst.loc.line, args: Vec::new() }),
            Command::Arg(list) => {
                let target = match stages.last_mut() {
                    Some(s) => &mut s.args,
                    None => &mut global_args,
                };
                for (k, v) in list {
                    target.push((k.clone(), v.clone(), inst.loc.line));
                }
            }
            _ => {}
        }
    }
    if stages.is_empty() {
        bail!("{}: no FROM, so no targets", path.display());
    }
    if what == "targets" {
        let last = stages.len() - 1;
        println!("{:<24} DESCRIPTION", "TARGET");
        for (i, s) in stages.iter().enumerate() {
            let Some(n) = &s.name else { continue };
            let mut desc = comment_above(&df.lines, s.line, Some(n));
            if i == last {
                desc = if desc.is_empty() { "(default)".into() } else { format!("(default) {desc}") };
            }
            println!("{n:<24} {desc}");
        }
        if stages[last].name.is_none() {
            println!("{:<24} (default)", "(last stage)");
        }
        return Ok(());
    }
    // outline: lower for the target to learn which stages it needs and what they mount.
    let build_args = crate::cli::values::parse_build_args(&args.stage.build_args)?;
    let lower_opts = LowerOptions { build_args: build_args.clone(), target: args.stage.target.clone(), ..Default::default() };
    let graph = kiln_frontend::lower(&df, &lower_opts).map_err(|e| anyhow!("{e}"))?;
    let target = graph.stage(graph.target).context("the target stage")?;
    let target_info = &stages[target.index.0];
    println!("TARGET:      {}", target.name.as_deref().unwrap_or("(last stage)"));
    let desc = comment_above(&df.lines, target_info.line, target_info.name.as_deref());
    if !desc.is_empty() {
        println!("DESCRIPTION: {desc}");
    }
    println!();
    println!("{:<24} {:<24} DESCRIPTION", "BUILD ARG", "VALUE");
    let needed = graph.needed();
    let mut shown = std::collections::BTreeSet::new();
    let all = global_args.iter().chain(needed.iter().flat_map(|i| stages[i.0].args.iter()));
    for (k, v, line) in all {
        if !shown.insert(k.clone()) {
            continue;
        }
        let value = build_args.get(k).cloned().or_else(|| v.clone()).unwrap_or_default();
        println!("{k:<24} {value:<24} {}", comment_above(&df.lines, *line, Some(k)));
    }
    let mut secrets = std::collections::BTreeMap::new();
    let mut ssh = std::collections::BTreeSet::new();
    for i in &needed {
        for step in graph.stage(*i).map(|s| s.steps.as_slice()).unwrap_or_default() {
            if let StepKind::Run { mounts, .. } = &step.kind {
                for m in mounts {
                    match m.kind {
                        MountKind::Secret => {
                            let id = m.id.clone().unwrap_or_default();
                            *secrets.entry(id).or_insert(false) |= m.required;
                        }
                        MountKind::Ssh => {
                            ssh.insert(m.id.clone().unwrap_or_else(|| "default".into()));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    if !secrets.is_empty() {
        println!();
        println!("{:<24} REQUIRED", "SECRET");
        for (id, req) in &secrets {
            println!("{id:<24} {}", if *req { "true" } else { "" });
        }
    }
    if !ssh.is_empty() {
        println!();
        println!("SSH");
        for id in &ssh {
            println!("{id}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_comments_lose_their_own_name() {
        let lines: Vec<String> = ["# syntax=docker/dockerfile:1", "# binary builds", "# the binary", "FROM x AS binary", "", "FROM y"].iter().map(|s| s.to_string()).collect();
        assert_eq!(comment_above(&lines, 4, Some("binary")), "builds the binary");
        assert_eq!(comment_above(&lines, 6, None), "");
        assert_eq!(comment_above(&lines, 4, Some("other")), "binary builds the binary");
    }
}
