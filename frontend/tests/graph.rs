//! The operation DAG and the cache-key material: keys depend on exactly what a step
//! uses, independent stages share no path, and inputs are edges.

use kiln_frontend::*;
use std::collections::BTreeMap;

fn lower_with(text: &str, args: &[(&str, &str)]) -> BuildGraph {
    let opts = LowerOptions {
        build_args: args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    let df = parse("Dockerfile", text).unwrap_or_else(|e| panic!("{e}"));
    lower(&df, &opts).unwrap_or_else(|e| panic!("{e}"))
}

fn materials(g: &BuildGraph, stage: usize) -> Vec<String> {
    g.stages[stage].steps.iter().map(|s| s.cache_material.clone()).collect()
}

const ARGS: &str = "\
FROM alpine
ARG USED=1
ARG UNUSED_HERE=1
WORKDIR /app
COPY src/${USED} ./
LABEL v=$USED
RUN make
";

#[test]
fn key_changes_with_a_used_arg_only() {
    let base = lower_with(ARGS, &[]);
    let m0 = materials(&base, 0);
    // A build arg the Dockerfile never declares changes nothing.
    let other = lower_with(ARGS, &[("NOT_DECLARED", "x")]);
    assert_eq!(materials(&other, 0), m0);
    // USED changes: its ARG step, the COPY and LABEL that expand it, and the RUN
    // (whose environment holds every ARG in scope); WORKDIR does not use it.
    let used = lower_with(ARGS, &[("USED", "2")]);
    let m1 = materials(&used, 0);
    assert_ne!(m1[0], m0[0], "ARG USED");
    assert_eq!(m1[1], m0[1], "ARG UNUSED_HERE");
    assert_eq!(m1[2], m0[2], "WORKDIR");
    assert_ne!(m1[3], m0[3], "COPY");
    assert_ne!(m1[4], m0[4], "LABEL");
    assert_ne!(m1[5], m0[5], "RUN");
    assert!(m1[3].contains("arg \"USED\" \"2\"\n"), "{}", m1[3]);
    assert!(m1[3].contains("input context [\"src/2\"]") || m1[3].contains("input context:[\"src/2\"]"), "{}", m1[3]);
    // An ARG declared but not used by COPY does not enter COPY's key.
    let unused = lower_with(ARGS, &[("UNUSED_HERE", "2")]);
    let m2 = materials(&unused, 0);
    assert_eq!(m2[3], m0[3], "COPY does not read UNUSED_HERE");
    assert_eq!(m2[4], m0[4], "LABEL does not read UNUSED_HERE");
    assert_ne!(m2[5], m0[5], "RUN sees every ARG in its env");
    assert_eq!(base.stages[0].steps[3].args_used, vec![("USED".to_string(), Some("1".to_string()))]);
}

#[test]
fn key_ignores_location_and_proxy_args() {
    let a = lower_with("FROM alpine\nRUN make\n", &[]);
    let b = lower_with("FROM alpine\n\n# moved\nRUN   make\n", &[("HTTP_PROXY", "http://proxy:3128")]);
    assert_eq!(materials(&a, 0), materials(&b, 0));
    // The proxy does reach the RUN environment, in both spellings (as BuildKit).
    match &b.stages[0].steps[0].kind {
        StepKind::Run { build_env, .. } => assert_eq!(
            build_env,
            &vec![
                ("HTTP_PROXY".to_string(), "http://proxy:3128".to_string()),
                ("http_proxy".to_string(), "http://proxy:3128".to_string())
            ]
        ),
        k => panic!("{k:?}"),
    }
    // The platform is part of the key.
    let opts = LowerOptions {
        target_platform: Platform::new("linux", "arm64", None),
        ..Default::default()
    };
    let c = lower(&parse("Dockerfile", "FROM alpine\nRUN make\n").unwrap(), &opts).unwrap();
    assert_ne!(materials(&a, 0), materials(&c, 0));
    assert!(c.stages[0].steps[0].cache_material.starts_with("kiln.step.v1\nplatform \"linux/arm64\"\n"));
}

const PAR: &str = "\
FROM golang AS a
RUN build-a
FROM rust AS b
COPY b.rs /src/
RUN build-b
FROM scratch AS final
COPY --from=a /a /a
COPY --from=b /b /b
COPY --from=busybox /bin/sh /sh
";

#[test]
fn independent_stages_share_no_path() {
    let g = lower_with(PAR, &[]);
    let ops = g.ops();
    // Reachability: which ops can reach each op.
    let mut reach: Vec<std::collections::BTreeSet<usize>> = Vec::new();
    for op in &ops {
        let mut set = std::collections::BTreeSet::new();
        for i in &op.inputs {
            assert!(i.op < op.id);
            set.insert(i.op);
            set.extend(reach[i.op].iter().copied());
        }
        reach.push(set);
    }
    let last_of = |stage: usize| ops.iter().filter(|o| o.stage == Some(kiln_frontend::StageIdx(stage))).map(|o| o.id).max().unwrap();
    let (a, b, f) = (last_of(0), last_of(1), last_of(2));
    assert!(!reach[a].contains(&b) && !reach[b].contains(&a), "a and b are independent");
    assert!(reach[f].contains(&a) && reach[f].contains(&b));
    let kinds: Vec<OpKind> = ops.iter().map(|o| o.kind).collect();
    assert_eq!(kinds.iter().filter(|k| **k == OpKind::ImageSource).count(), 3, "golang, rust, busybox");
    assert_eq!(kinds.iter().filter(|k| **k == OpKind::ContextSource).count(), 1);
    assert_eq!(kinds.iter().filter(|k| **k == OpKind::Exec).count(), 2);
    assert_eq!(kinds.iter().filter(|k| **k == OpKind::File).count(), 4);
    // The COPY --from=a reads stage a's last op, with the role "stage".
    let copy_a = ops.iter().find(|o| o.stage == Some(kiln_frontend::StageIdx(2)) && o.step == Some(0)).unwrap();
    assert!(copy_a.inputs.iter().any(|i| i.op == a && i.role == "stage"));
    assert!(copy_a.cache_material.contains("input stage:0\n"), "{}", copy_a.cache_material);
    let copy_img = ops.iter().find(|o| o.stage == Some(kiln_frontend::StageIdx(2)) && o.step == Some(2)).unwrap();
    assert!(copy_img.cache_material.contains("input image:\"busybox\"\n"));
    // Pruning: targeting `a` leaves only a's ops.
    let opts = LowerOptions { target: Some("a".into()), ..Default::default() };
    let ga = lower(&parse("Dockerfile", PAR).unwrap(), &opts).unwrap();
    let ops_a = ga.ops();
    assert_eq!(ops_a.len(), 2);
    assert!(ops_a.iter().all(|o| o.stage.is_none() || o.stage == Some(kiln_frontend::StageIdx(0))));
}

#[test]
fn stage_on_stage_and_mount_edges() {
    let g = lower_with(
        "FROM alpine AS base\nRUN a\nFROM base AS t\nRUN --mount=type=bind,from=base,target=/b --mount=type=bind,target=/ctx x\n",
        &[],
    );
    let ops = g.ops();
    let run_t = ops.iter().find(|o| o.stage == Some(kiln_frontend::StageIdx(1))).unwrap();
    let base_last = ops.iter().find(|o| o.stage == Some(kiln_frontend::StageIdx(0))).unwrap().id;
    assert!(run_t.inputs.iter().any(|i| i.op == base_last && i.role == "parent"));
    assert!(run_t.inputs.iter().any(|i| i.op == base_last && i.role == "stage"));
    assert!(run_t.inputs.iter().any(|i| i.role == "context"));
    assert_eq!(g.stages[1].steps[0].inputs, vec![StepInput::Stage(kiln_frontend::StageIdx(0)), StepInput::Context { sources: vec![".".into()] }]);
}

#[test]
fn onbuild_triggers_of_a_base_image_run_first() {
    let opts = LowerOptions {
        base_onbuild: BTreeMap::from([("node:20".to_string(), vec!["COPY . /app".to_string(), "RUN npm ci".to_string()])]),
        ..Default::default()
    };
    let g = lower(&parse("Dockerfile", "FROM node:20\nCMD [\"node\"]\n").unwrap(), &opts).unwrap();
    let steps = &g.stages[0].steps;
    assert_eq!(steps.len(), 3);
    assert!(matches!(&steps[0].kind, StepKind::Copy(c) if c.dest == "/app"));
    assert!(matches!(&steps[1].kind, StepKind::Run { argv, .. } if argv[2] == "npm ci"));
    assert_eq!(steps[0].loc.line, 1, "located at the FROM");
    let bad = LowerOptions {
        base_onbuild: BTreeMap::from([("node:20".to_string(), vec!["FROBNICATE x".to_string()])]),
        ..Default::default()
    };
    let e = lower(&parse("Dockerfile", "FROM node:20\n").unwrap(), &bad).unwrap_err();
    assert!(e.to_string().contains("ONBUILD trigger of base image node:20"), "{e}");
    assert_eq!(e.location().map(|l| l.line), Some(1));
}

#[test]
fn arg_after_env_of_the_same_name_wins_in_run_and_expansion() {
    let g = lower_with("FROM alpine\nENV X=env\nARG X=arg\nRUN echo $X\nENV Y=$X\nENV X=env2\nRUN echo $X\n", &[]);
    let steps = &g.stages[0].steps;
    match &steps[2].kind {
        StepKind::Run { build_env, .. } => assert_eq!(build_env, &vec![("X".to_string(), "arg".to_string())]),
        k => panic!("{k:?}"),
    }
    assert_eq!(steps[3].kind, StepKind::Env(vec![("Y".into(), "arg".into())]));
    match &steps[5].kind {
        StepKind::Run { build_env, .. } => assert!(build_env.is_empty(), "{build_env:?}"),
        k => panic!("{k:?}"),
    }
    // Declared without a value, the ARG does not hide the ENV.
    let g = lower_with("FROM alpine\nENV X=env\nARG X\nENV Y=$X\n", &[]);
    assert_eq!(g.stages[0].steps[2].kind, StepKind::Env(vec![("Y".into(), "env".into())]));
}

/// Kaniko builds every stage up to the target unless `--skip-unused-stages`
/// (executor/build.go CalcDependencies + skipUnusedStages); BuildKit only the needed.
#[test]
fn all_stages_builds_every_stage_up_to_the_target_dependencies_first() {
    let text = "FROM scratch AS a\nFROM scratch AS unused\nCOPY --from=a / /\nFROM scratch AS b\nFROM scratch AS final\nCOPY --from=b / /\nFROM scratch AS after\n";
    let df = parse("Dockerfile", text).unwrap();
    let needed = |all: bool, target: Option<&str>| {
        let opts = LowerOptions { all_stages: all, target: target.map(str::to_string), ..Default::default() };
        lower(&df, &opts).unwrap().needed().iter().map(|s| s.0).collect::<Vec<_>>()
    };
    assert_eq!(needed(false, Some("final")), vec![2, 3]);
    assert_eq!(needed(true, Some("final")), vec![0, 1, 2, 3]);
    assert_eq!(needed(true, None), vec![0, 1, 2, 3, 4]);
    assert_eq!(needed(true, Some("a")), vec![0]);
    // A stage that cannot be lowered fails the build only when it is built.
    let bad = parse("Dockerfile", "FROM scratch AS a\nFROM scratch AS broken\nCOPY --chmod=abc x /\nFROM scratch AS final\n").unwrap();
    assert!(lower(&bad, &LowerOptions::default()).is_ok());
    assert!(lower(&bad, &LowerOptions { all_stages: true, ..Default::default() }).is_err());
}
