//! `kiln parse` and `kiln plan`: look at a Dockerfile without building it.
//!
//! Both are pure front-end tools: they read the Dockerfile, never the context files,
//! never a registry, and need no namespaces. `parse` prints the instructions as the
//! parser sees them; `plan` prints the build graph after expansion and pruning, with
//! each step's cache-key material. The JSON of both is documented in
//! `frontend/docs/parse-json.md` and versioned by its `schema_version` field.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use kiln_frontend::{
    CmdLine, Command, CopySource, Dockerfile, Instruction, LowerOptions, StepInput,
};
use serde_json::{json, Value};

use crate::cli::dockerfile::DockerfileFlag;
use crate::cli::inspect::{ParseArgs, PlanArgs};

/// Version of the JSON printed by `kiln parse --json` and `kiln plan --json`.
const SCHEMA_VERSION: u32 = 1;


pub fn parse_cmd(args: ParseArgs) -> ExitCode {
    finish(run_parse(args))
}

pub fn plan_cmd(args: PlanArgs) -> ExitCode {
    finish(run_plan(args))
}

fn finish(r: Result<String>) -> ExitCode {
    match r {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", super::error_text(&e));
            ExitCode::from(1)
        }
    }
}

/// The Dockerfile's text and the name used in error locations.
fn read_dockerfile(flag: &DockerfileFlag, context: &std::path::Path) -> Result<(String, String)> {
    match &flag.file {
        Some(f) if f.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("reading the Dockerfile from stdin")?;
            Ok(("Dockerfile".into(), s))
        }
        _ => {
            let path = flag.path(context);
            let text = crate::fsutil::read_dockerfile(&path)?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "Dockerfile".into());
            Ok((name, text))
        }
    }
}

fn run_parse(args: ParseArgs) -> Result<String> {
    let (name, text) = read_dockerfile(&args.dockerfile, &args.context)?;
    let df = kiln_frontend::parse(&name, &text).map_err(|e| anyhow!("{e}"))?;
    if args.json {
        let mut s = serde_json::to_string_pretty(&parse_json(&df))?;
        s.push('\n');
        return Ok(s);
    }
    Ok(parse_text(&df))
}

/// `kiln parse --json`.
pub fn parse_json(df: &Dockerfile) -> Value {
    let directives: Vec<Value> = df
        .directives
        .iter()
        .map(|d| json!({"name": d.name, "value": d.value, "line": d.loc.line}))
        .collect();
    let instructions: Vec<Value> = df.instructions.iter().map(instruction_json).collect();
    json!({
        "schema_version": SCHEMA_VERSION,
        "file": df.file_name,
        "escape": df.escape.to_string(),
        "directives": directives,
        "instructions": instructions,
    })
}

fn cmdline_json(c: &CmdLine) -> Value {
    match c {
        CmdLine::Exec(v) => json!({"exec": v}),
        CmdLine::Shell(s) => json!({"shell": s}),
    }
}

fn sources_json(sources: &[CopySource]) -> Value {
    Value::Array(
        sources
            .iter()
            .map(|s| match s {
                CopySource::Path(p) => json!({"path": p}),
                CopySource::Heredoc(i) => json!({"heredoc": i}),
            })
            .collect(),
    )
}

fn pairs_json(p: &[(String, String)]) -> Value {
    Value::Array(p.iter().map(|(k, v)| json!([k, v])).collect())
}

/// The typed arguments of an instruction (see the schema document).
fn value_json(c: &Command) -> Value {
    match c {
        Command::From { image, name } => json!({"image": image, "name": name}),
        Command::Run(c) | Command::Cmd(c) | Command::Entrypoint(c) => cmdline_json(c),
        Command::Copy { sources, dest } | Command::Add { sources, dest } => {
            json!({"sources": sources_json(sources), "dest": dest})
        }
        Command::Env(p) | Command::Label(p) => json!({"pairs": pairs_json(p)}),
        Command::Arg(a) => json!({"args": a.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()}),
        Command::Expose(v) | Command::Volume(v) | Command::Shell(v) => json!({"items": v}),
        Command::Workdir(s)
        | Command::User(s)
        | Command::StopSignal(s)
        | Command::OnBuild(s)
        | Command::Maintainer(s) => json!({"value": s}),
        Command::Healthcheck(None) => json!({"none": true}),
        Command::Healthcheck(Some(c)) => cmdline_json(c),
    }
}

fn instruction_json(i: &Instruction) -> Value {
    let flags: Vec<Value> = i.flags.iter().map(|f| json!({"name": f.name, "value": f.value})).collect();
    let heredocs: Vec<Value> = i
        .heredocs
        .iter()
        .map(|h| json!({"name": h.name, "content": h.content, "expand": h.expand, "chomp": h.chomp}))
        .collect();
    json!({
        "keyword": i.keyword.as_str(),
        "line": i.loc.line,
        "column": i.loc.column,
        "end_line": i.end_line,
        "source": i.source,
        "flags": flags,
        "args": i.args,
        "value": value_json(&i.command),
        "heredocs": heredocs,
    })
}

fn parse_text(df: &Dockerfile) -> String {
    let mut out = String::new();
    for d in &df.directives {
        out.push_str(&format!("{:>4}  # {}={}\n", d.loc.line, d.name, d.value));
    }
    for i in &df.instructions {
        let range = if i.end_line > i.loc.line { format!("{}-{}", i.loc.line, i.end_line) } else { i.loc.line.to_string() };
        out.push_str(&format!("{range:>4}  {}", i.keyword.as_str()));
        for f in &i.flags {
            match &f.value {
                Some(v) => out.push_str(&format!(" --{}={}", f.name, v)),
                None => out.push_str(&format!(" --{}", f.name)),
            }
        }
        out.push_str(&format!("  {}\n", serde_json::to_string(&value_json(&i.command)).unwrap_or_default()));
        for h in &i.heredocs {
            out.push_str(&format!("      <<{}{}\n", if h.chomp { "-" } else { "" }, h.name));
            for l in h.content.lines() {
                out.push_str(&format!("      | {l}\n"));
            }
        }
    }
    out
}

fn run_plan(args: PlanArgs) -> Result<String> {
    let (name, text) = read_dockerfile(&args.dockerfile, &args.context)?;
    let build_args = crate::cli::values::parse_build_args(&args.stage.build_args)?;
    let host = kiln_oci::Platform::host();
    let target_platform = match &args.platform {
        Some(p) => kiln_oci::Platform::parse(p)?,
        None => host.clone(),
    };
    let opts = LowerOptions {
        build_args,
        target: args.stage.target.clone(),
        target_platform,
        build_platform: host,
        ..Default::default()
    };
    let df = kiln_frontend::parse(&name, &text).map_err(|e| anyhow!("{e}"))?;
    let graph = kiln_frontend::lower(&df, &opts).map_err(|e| anyhow!("{e}"))?;
    let needed = graph.needed();
    let ops = graph.ops();
    if args.json {
        let stages: Vec<Value> = needed
            .iter()
            .filter_map(|&i| graph.stage(i))
            .map(|st| {
                let base = match &st.base {
                    kiln_frontend::Base::Scratch => json!("scratch"),
                    kiln_frontend::Base::Image(r) => json!({"image": r}),
                    kiln_frontend::Base::Stage(j) => json!({"stage": j}),
                };
                let steps: Vec<Value> = st
                    .steps
                    .iter()
                    .map(|s| {
                        json!({
                            "line": s.loc.line,
                            "column": s.loc.column,
                            "source": s.source,
                            "created_by": s.created_by,
                            "kind": s.kind,
                            "inputs": s.inputs.iter().map(StepInput::material).collect::<Vec<_>>(),
                            "args_used": s.args_used.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
                            "cache_material": s.cache_material,
                        })
                    })
                    .collect();
                json!({
                    "index": st.index,
                    "name": st.name,
                    "base": base,
                    "platform": st.platform,
                    "deps": st.deps,
                    "line": st.loc.line,
                    "steps": steps,
                })
            })
            .collect();
        let v = json!({
            "schema_version": SCHEMA_VERSION,
            "file": df.file_name,
            "target": graph.target,
            "needed": needed,
            "stages": stages,
            "ops": ops,
        });
        let mut s = serde_json::to_string_pretty(&v)?;
        s.push('\n');
        return Ok(s);
    }
    let mut out = String::new();
    let pruned: Vec<usize> = (0..graph.stages.len()).filter(|i| !needed.contains(&kiln_frontend::StageIdx(*i))).collect();
    out.push_str(&format!("target: stage {}", graph.target));
    if let Some(n) = graph.stage(graph.target).and_then(|s| s.name.as_deref()) {
        out.push_str(&format!(" ({n})"));
    }
    out.push_str(&format!("\nneeded stages: {needed:?}; pruned: {pruned:?}\n"));
    for &i in &needed {
        let st = &graph.stages[i];
        let base = match &st.base {
            kiln_frontend::Base::Scratch => "scratch".to_string(),
            kiln_frontend::Base::Image(r) => r.clone(),
            kiln_frontend::Base::Stage(j) => format!("stage {j}"),
        };
        out.push_str(&format!(
            "\nstage {i}{} FROM {base}{} (line {}) deps={:?}\n",
            st.name.as_deref().map(|n| format!(" \"{n}\"")).unwrap_or_default(),
            st.platform.as_deref().map(|p| format!(" --platform={p}")).unwrap_or_default(),
            st.loc.line,
            st.deps
        ));
        for s in &st.steps {
            out.push_str(&format!("  {:>4}  {}\n", s.loc.line, s.created_by.replace('\n', "\n        ")));
            if !s.inputs.is_empty() {
                let ins: Vec<String> = s.inputs.iter().map(StepInput::material).collect();
                out.push_str(&format!("        inputs: {}\n", ins.join(", ")));
            }
            if !s.args_used.is_empty() {
                let a: Vec<String> = s
                    .args_used
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) => format!("{k}={v}"),
                        None => format!("{k} (unset)"),
                    })
                    .collect();
                out.push_str(&format!("        args: {}\n", a.join(" ")));
            }
        }
    }
    out.push_str("\nops:\n");
    for op in &ops {
        let ins: Vec<String> = op.inputs.iter().map(|i| format!("{}:{}", i.role, i.op)).collect();
        let label = op.label.lines().next().unwrap_or("");
        out.push_str(&format!("  #{:<3} {:<14} <- [{}]  {}\n", op.id, format!("{:?}", op.kind), ins.join(", "), label));
    }
    Ok(out)
}
