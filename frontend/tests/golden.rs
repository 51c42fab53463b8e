//! Golden cases: each directory under `tests/cases/` holds a `Dockerfile`, optional
//! `options` (one per line: `target NAME`, `build-arg K=V`, `target-platform P`,
//! `build-platform P`, `base-env REF K=V`, `base-onbuild REF TRIGGER`) and `expected.txt`, the rendered graph or
//! error. Run with `KILN_UPDATE_GOLDEN=1` to rewrite the expected files, then review
//! the diff.

use kiln_frontend::*;
use std::fmt::Write as _;
use std::path::Path;

fn platform(s: &str) -> Platform {
    let mut it = s.split('/');
    Platform {
        os: it.next().unwrap_or("").into(),
        architecture: it.next().unwrap_or("").into(),
        variant: it.next().map(str::to_string),
        os_version: None,
    }
}

fn options(text: &str) -> LowerOptions {
    let mut o = LowerOptions::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "target" => o.target = Some(rest.into()),
            "target-platform" => o.target_platform = platform(rest),
            "build-platform" => o.build_platform = platform(rest),
            "build-arg" => {
                let (k, v) = rest.split_once('=').expect("build-arg K=V");
                o.build_args.insert(k.into(), v.into());
            }
            "base-onbuild" => {
                let (r, t) = rest.split_once(' ').expect("base-onbuild REF TRIGGER");
                o.base_onbuild.entry(r.into()).or_default().push(t.into());
            }
            "base-env" => {
                let (r, kv) = rest.split_once(' ').expect("base-env REF K=V");
                let (k, v) = kv.split_once('=').expect("base-env REF K=V");
                o.base_env.entry(r.into()).or_default().push((k.into(), v.into()));
            }
            other => panic!("unknown option {other}"),
        }
    }
    o
}

fn render(text: &str, opts: &LowerOptions) -> String {
    let mut out = String::new();
    let result = parse("Dockerfile", text).and_then(|df| {
        let bases = base_images(&df, opts)?;
        let g = lower(&df, opts)?;
        Ok((bases, g))
    });
    match result {
        Err(e) => {
            writeln!(out, "error: {e}").unwrap();
            writeln!(out, "location: {:?}", e.location()).unwrap();
        }
        Ok((bases, g)) => {
            writeln!(out, "base_images: {bases:?}").unwrap();
            writeln!(out, "target: {}", g.target).unwrap();
            writeln!(out, "needed: {:?}", g.needed()).unwrap();
            for op in g.ops() {
                let ins: Vec<String> = op.inputs.iter().map(|i| format!("{}:{}", i.role, i.op)).collect();
                let label = op.label.lines().next().unwrap_or("");
                writeln!(out, "op {} {:?} [{}] {}", op.id, op.kind, ins.join(" "), label).unwrap();
            }
            for st in &g.stages {
                writeln!(
                    out,
                    "stage {} name={:?} base={:?} platform={:?} deps={:?} at {}:{}",
                    st.index, st.name, st.base, st.platform, st.deps, st.loc.line, st.loc.column
                )
                .unwrap();
                for step in &st.steps {
                    writeln!(out, "  {}:{} {}", step.loc.line, step.loc.column, step.source).unwrap();
                    writeln!(out, "      kind: {:?}", step.kind).unwrap();
                    writeln!(out, "      created_by: {}", step.created_by).unwrap();
                    if !step.inputs.is_empty() {
                        let ins: Vec<String> = step.inputs.iter().map(StepInput::material).collect();
                        writeln!(out, "      inputs: {}", ins.join(" ")).unwrap();
                    }
                    if !step.args_used.is_empty() {
                        writeln!(out, "      args_used: {:?}", step.args_used).unwrap();
                    }
                }
            }
        }
    }
    out
}

#[test]
fn golden_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let update = std::env::var_os("KILN_UPDATE_GOLDEN").is_some();
    let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    let mut failures = Vec::new();
    for case in entries.iter().filter(|p| p.is_dir()) {
        let text = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
        let opts = options(&std::fs::read_to_string(case.join("options")).unwrap_or_default());
        let got = render(&text, &opts);
        let expected_path = case.join("expected.txt");
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != want {
            failures.push(format!("--- {}\n{got}", case.display()));
        }
    }
    assert!(failures.is_empty(), "golden mismatches (KILN_UPDATE_GOLDEN=1 to accept):\n{}", failures.join("\n"));
    assert!(entries.len() >= 60, "only {} cases", entries.len());
}
