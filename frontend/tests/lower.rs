//! End-to-end tests of parse + lower: exact lowered steps for the walking skeleton,
//! multi-stage graphs, scoping, heredocs, directives, and located errors.

use kiln_frontend::*;
use std::collections::BTreeMap;

fn sh(cmd: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), cmd.into()]
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn kv(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn lower_str(text: &str, opts: &LowerOptions) -> Result<BuildGraph, Error> {
    let df = parse("Dockerfile", text)?;
    lower(&df, opts)
}

fn graph(text: &str) -> BuildGraph {
    lower_str(text, &LowerOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn loc(line: usize, column: usize) -> Location {
    Location { file: "Dockerfile".into(), line, column }
}

fn copy(sources: &[&str], dest: &str) -> CopySpec {
    CopySpec {
        sources: s(sources),
        dest: dest.into(),
        from: None,
        chown: None,
        chmod: None,
        link: false,
        parents: false,
        exclude: vec![],
        heredocs: vec![],
        checksum: None,
        keep_git_dir: false,
        unpack: None,
    }
}

const SKELETON: &str = r#"FROM 127.0.0.1:5000/base/busybox:latest
WORKDIR /app
COPY hello.txt ./
RUN echo "built by RUN" > /app/built.txt && chmod 0640 /app/built.txt
ENV GREETING="hello world"
CMD ["cat", "/app/hello.txt"]
"#;

#[test]
fn walking_skeleton() {
    let df = parse("Dockerfile", SKELETON).unwrap();
    let opts = LowerOptions::default();
    assert_eq!(base_images(&df, &opts).unwrap(), vec!["127.0.0.1:5000/base/busybox:latest"]);
    let g = lower(&df, &opts).unwrap();
    assert_eq!(g.target.0, 0);
    assert_eq!(g.needed().iter().map(|d| d.0).collect::<Vec<_>>(), vec![0]);
    assert_eq!(g.stages.len(), 1);
    let st = &g.stages[0];
    assert_eq!(st.base, Base::Image("127.0.0.1:5000/base/busybox:latest".into()));
    assert_eq!(st.name, None);
    assert_eq!(st.platform, None);
    assert_eq!(st.deps.iter().map(|d| d.0).collect::<Vec<_>>(), Vec::<usize>::new());
    assert_eq!(st.loc, loc(1, 1));
    let run = r#"echo "built by RUN" > /app/built.txt && chmod 0640 /app/built.txt"#;
    let want = vec![
        Step {
            loc: loc(2, 1),
            source: "WORKDIR /app".into(),
            display: "WORKDIR /app".into(),
            kind: StepKind::Workdir("/app".into()),
            created_by: "WORKDIR /app".into(),
            ..blank()
        },
        Step {
            loc: loc(3, 1),
            source: "COPY hello.txt ./".into(),
            display: "COPY hello.txt ./".into(),
            kind: StepKind::Copy(copy(&["hello.txt"], "./")),
            created_by: "COPY hello.txt ./ # buildkit".into(),
            ..blank()
        },
        Step {
            loc: loc(4, 1),
            source: format!("RUN {run}"),
            display: format!("RUN {run}"),
            kind: StepKind::Run {
                argv: sh(run),
                shell_form: true,
                build_env: vec![],
                network: Network::Default,
                mounts: vec![],
                heredocs: vec![],
            },
            created_by: format!("RUN /bin/sh -c {run} # buildkit"),
            ..blank()
        },
        Step {
            loc: loc(5, 1),
            source: r#"ENV GREETING="hello world""#.into(),
            display: r#"ENV GREETING="hello world""#.into(),
            kind: StepKind::Env(kv(&[("GREETING", "hello world")])),
            created_by: "ENV GREETING=hello world".into(),
            ..blank()
        },
        Step {
            loc: loc(6, 1),
            source: r#"CMD ["cat", "/app/hello.txt"]"#.into(),
            display: r#"CMD ["cat", "/app/hello.txt"]"#.into(),
            kind: StepKind::Cmd(s(&["cat", "/app/hello.txt"])),
            created_by: r#"CMD ["cat" "/app/hello.txt"]"#.into(),
            ..blank()
        },
    ];
    let got: Vec<Step> = st
        .steps
        .iter()
        .map(|s| Step { inputs: vec![], args_used: vec![], cache_material: String::new(), end_line: 0, ..s.clone() })
        .collect();
    assert_eq!(got, want);
    assert_eq!(st.steps[1].inputs, vec![StepInput::Context { sources: vec!["hello.txt".into()] }]);
}

const MULTI: &str = r#"
ARG GO=1.22
FROM golang:${GO} AS Builder
RUN go build -o /out/app
FROM alpine AS tools
RUN apk add curl
FROM builder AS test
RUN go test
FROM scratch
COPY --from=builder /out/app /app
COPY --from=1 /usr/bin/curl /curl
COPY --from=busybox:musl /bin/sh /sh
ENTRYPOINT /app
"#;

#[test]
fn multi_stage_and_target() {
    let df = parse("Dockerfile", MULTI).unwrap();
    let opts = LowerOptions::default();
    assert_eq!(base_images(&df, &opts).unwrap(), vec!["golang:1.22", "alpine"]);
    let g = lower(&df, &opts).unwrap();
    assert_eq!(g.stages.len(), 4);
    assert_eq!(g.target.0, 3);
    assert_eq!(g.stages[0].name.as_deref(), Some("builder"));
    assert_eq!(g.stages[2].base, Base::Stage(kiln_frontend::StageIdx(0)));
    assert_eq!(g.stages[2].deps.iter().map(|d| d.0).collect::<Vec<_>>(), vec![0]);
    assert_eq!(g.stages[3].base, Base::Scratch);
    assert_eq!(g.stages[3].deps.iter().map(|d| d.0).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(g.needed().iter().map(|d| d.0).collect::<Vec<_>>(), vec![0, 1, 3]);
    let froms: Vec<_> = g.stages[3]
        .steps
        .iter()
        .filter_map(|st| match &st.kind {
            StepKind::Copy(c) => c.from.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(froms, vec![CopyFrom::Stage(kiln_frontend::StageIdx(0)), CopyFrom::Stage(kiln_frontend::StageIdx(1)), CopyFrom::Image("busybox:musl".into())]);
    assert_eq!(g.stages[3].steps[3].kind, StepKind::Entrypoint(sh("/app")));
    assert_eq!(g.stages[3].steps[3].created_by, r#"ENTRYPOINT ["/bin/sh" "-c" "/app"]"#);

    let t = LowerOptions { target: Some("TEST".into()), ..Default::default() };
    let g = lower(&df, &t).unwrap();
    assert_eq!(g.target.0, 2);
    assert_eq!(g.needed().iter().map(|d| d.0).collect::<Vec<_>>(), vec![0, 2]);

    let bad = LowerOptions { target: Some("nope".into()), ..Default::default() };
    let e = lower(&df, &bad).unwrap_err();
    assert_eq!(e, Error::UnknownTarget { name: "nope".into(), suggestion: None });
    assert!(e.to_string().contains("nope"));
    assert_eq!(e.location(), None);
    // BuildKit suggests the closest stage name (case-sensitive, as given).
    let typo = LowerOptions { target: Some("bulider".into()), ..Default::default() };
    let e = lower(&df, &typo).unwrap_err();
    assert_eq!(e, Error::UnknownTarget { name: "bulider".into(), suggestion: Some("builder".into()) });
    assert_eq!(e.to_string(), "target stage \"bulider\" could not be found (did you mean builder?)");

    let ba = LowerOptions { build_args: BTreeMap::from([("GO".into(), "1.23".into())]), ..Default::default() };
    assert_eq!(base_images(&df, &ba).unwrap(), vec!["golang:1.23", "alpine"]);
}

#[test]
fn copy_from_rules() {
    // (Dockerfile, expected error line:col and fragment) — BuildKit dispatches stages in
    // order, so --from must name an earlier stage; that also rules out cycles.
    let cases: &[(&str, usize, usize, &str)] = &[
        (
            "FROM a AS one\nCOPY --from=two /x /x\nFROM b AS two\nCOPY --from=one /y /y\n",
            2,
            6,
            "needs to be defined before current stage \"one\"",
        ),
        ("FROM a AS one\nCOPY --from=one /x /x\n", 2, 6, "needs to be defined before"),
        ("FROM a\nCOPY --from=0 /x /x\n", 2, 6, "needs to be defined before current stage \"stage-0\""),
        ("FROM a\nCOPY --from=5 /x /x\n", 2, 6, "invalid stage index 5"),
        ("FROM a\nARG S=x\nCOPY --from=$S /x /x\n", 3, 6, "variable expansion is not supported for --from"),
        ("FROM a AS b\nRUN --mount=from=b,target=/x true\n", 2, 5, "needs to be defined before"),
        ("FROM a\nCOPY https://x/y /y\n", 2, 6, "can't be a URL for COPY"),
        ("FROM a\nADD --checksum=sha256:0 a b /c/\n", 2, 25, "multiple sources"),
    ];
    for (text, line, col, frag) in cases {
        let e = lower_str(text, &LowerOptions::default()).expect_err(text);
        assert_eq!(e.location(), Some(&loc(*line, *col)), "{text:?}: {e}");
        assert!(e.to_string().contains(frag), "{text:?}: {e}");
    }
    let g = graph("FROM a AS one\nFROM b\nCOPY --from=ONE /x /x\nCOPY --from=0 /y /y\n");
    assert_eq!(g.stages[1].deps.iter().map(|d| d.0).collect::<Vec<_>>(), vec![0]);
}

#[test]
fn unreachable_stages_are_best_effort() {
    let text = "FROM a AS release\nARG TOKEN\nRUN echo hi\nCOPY x /opt/${TOKEN:?needed_for_release}/\nFROM release AS rel2\nFROM b AS test\nRUN true\n";
    let g = lower_str(text, &LowerOptions { target: Some("test".into()), ..Default::default() }).unwrap();
    assert_eq!(g.needed().iter().map(|d| d.0).collect::<Vec<_>>(), vec![2]);
    assert!(g.stages[0].steps.is_empty());
    assert!(g.stages[1].steps.is_empty());
    assert_eq!(g.stages[1].deps.iter().map(|d| d.0).collect::<Vec<_>>(), vec![0]);
    assert_eq!(g.stages[2].steps.len(), 1);
    // The same error is fatal when the stage is needed, directly or through a child.
    for target in ["release", "rel2"] {
        let e = lower_str(text, &LowerOptions { target: Some(target.into()), ..Default::default() }).unwrap_err();
        assert_eq!(e.location(), Some(&loc(4, 8)), "{e}");
        assert!(e.to_string().contains("TOKEN: needed_for_release"), "{e}");
    }
    // FROM lines are always evaluated.
    assert!(lower_str("FROM ${X:?}\nFROM b\n", &LowerOptions::default()).is_err());
}

#[test]
fn onbuild_triggers_and_inherited_args() {
    let text =
        "FROM img AS base\nARG V=1\nONBUILD COPY --chown=$V a /a\nONBUILD RUN echo $V\nFROM base\nRUN echo child\n";
    let g = graph(text);
    let st = &g.stages[1];
    assert_eq!(st.steps.len(), 3);
    assert_eq!(st.steps[0].loc, loc(5, 1));
    assert_eq!(st.steps[0].kind, StepKind::Copy(CopySpec { chown: Some("1".into()), ..copy(&["a"], "/a") }));
    match &st.steps[2].kind {
        StepKind::Run { build_env, .. } => assert_eq!(build_env, &kv(&[("V", "1")])),
        k => panic!("{k:?}"),
    }
    assert_eq!(st.steps[2].created_by, "RUN |1 V=1 /bin/sh -c echo child # buildkit");
    // Triggers do not propagate to grandchildren.
    let g = graph(&format!("{text}FROM 1\n"));
    assert_eq!(g.stages[2].base, Base::Image("1".into()));
    let g = graph(&format!("{text}FROM base AS c2\nFROM c2\n"));
    assert_eq!(g.stages[3].steps.len(), 0);
    let e = lower_str("FROM x AS a\nONBUILD RUN --bad x\nFROM a\n", &LowerOptions::default()).unwrap_err();
    assert_eq!(e.location(), Some(&loc(3, 1)));
    assert!(e.to_string().contains("ONBUILD trigger from line 2"), "{e}");
}

#[test]
fn small_buildkit_details() {
    // Default PATH is visible to expansion on scratch; EXPOSE splits after expansion;
    // a shebang heredoc runs from /dev/pipes.
    let g = graph("FROM scratch\nENV PATH=/opt/bin:$PATH P=\"80 81/udp\"\nEXPOSE $P\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n");
    let st = &g.stages[0];
    assert_eq!(
        st.steps[0].kind,
        StepKind::Env(kv(&[
            ("PATH", "/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            ("P", "80 81/udp")
        ]))
    );
    assert_eq!(st.steps[1].kind, StepKind::Expose(s(&["80/tcp", "81/udp"])));
    match &st.steps[2].kind {
        StepKind::Run { argv, heredocs, .. } => {
            assert_eq!(argv, &sh("/dev/pipes/EOF"));
            assert_eq!(heredocs[0].content, "#!/usr/bin/env python3\nprint(1)\n");
        }
        k => panic!("{k:?}"),
    }
    // ARG resolution: --build-arg > default > global/automatic.
    let opts = LowerOptions {
        build_args: BTreeMap::from([("B".into(), "cli".into())]),
        target_platform: Platform::new("linux", "arm64", None),
        ..Default::default()
    };
    let g = lower_str("ARG G=glob\nFROM x\nARG B=dflt G TARGETARCH TARGETOS=mine NONE\n", &opts).unwrap();
    assert_eq!(g.stages[0].steps[0].created_by, "ARG B=cli G=glob TARGETARCH=arm64 TARGETOS=mine NONE");
}

#[test]
fn arg_env_scoping() {
    let text = r#"ARG V=global
ARG ONLY_GLOBAL=g
ARG IMG=alpine
FROM --platform=$BUILDPLATFORM ${IMG}:3
RUN echo $V
ARG V
ARG D=dflt
ARG OVER=x
ARG UNDECLARED_VALUE
ENV E=env-$V-$ONLY_GLOBAL-$D
ENV D=from-env
WORKDIR /w/$D/$OVER
RUN echo hi
ARG TARGETARCH
ARG TARGETPLATFORM
LABEL arch=$TARGETARCH platform=$TARGETPLATFORM
FROM 0 AS child
"#;
    let opts = LowerOptions {
        build_args: BTreeMap::from([
            ("OVER".into(), "over".into()),
            ("NOT_DECLARED".into(), "ignored".into()),
            ("HTTP_PROXY".into(), "http://proxy".into()),
        ]),
        target_platform: Platform::new("linux", "arm", Some("v7")),
        build_platform: Platform::new("linux", "amd64", None),
        base_env: BTreeMap::from([("alpine:3".into(), kv(&[("PATH", "/usr/bin")]))]),
        ..Default::default()
    };
    let g = lower_str(text, &opts).unwrap();
    let st = &g.stages[0];
    assert_eq!(st.platform.as_deref(), Some("linux/amd64"));
    assert_eq!(st.base, Base::Image("alpine:3".into()));
    // Before re-declaration the global V is not in the stage.
    match &st.steps[0].kind {
        StepKind::Run { build_env, .. } => assert_eq!(build_env, &kv(&[("HTTP_PROXY", "http://proxy"), ("http_proxy", "http://proxy")])),
        k => panic!("{k:?}"),
    }
    assert_eq!(st.steps[0].created_by, "RUN /bin/sh -c echo $V # buildkit");
    assert_eq!(st.steps[1].kind, StepKind::Arg(vec![("V".into(), Some("global".into()))]));
    assert_eq!(st.steps[4].kind, StepKind::Arg(vec![("UNDECLARED_VALUE".into(), None)]));
    assert_eq!(st.steps[5].kind, StepKind::Env(kv(&[("E", "env-global--dflt")])));
    assert_eq!(st.steps[7].kind, StepKind::Workdir("/w/from-env/over".into()));
    match &st.steps[8].kind {
        StepKind::Run { build_env, .. } => {
            assert_eq!(build_env, &kv(&[("V", "global"), ("OVER", "over"), ("HTTP_PROXY", "http://proxy"), ("http_proxy", "http://proxy")]))
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(
        st.steps[8].created_by,
        "RUN |4 V=global D=from-env OVER=over UNDECLARED_VALUE= /bin/sh -c echo hi # buildkit"
    );
    assert_eq!(st.steps[11].kind, StepKind::Label(kv(&[("arch", "arm"), ("platform", "linux/arm/v7")])));
    // A child of an image named "0" (not a stage index in FROM).
    assert_eq!(g.stages[1].base, Base::Image("0".into()));
}

#[test]
fn env_from_parent_stage_and_base_image() {
    let text = "FROM img AS a\nENV A=1\nWORKDIR /base\nSHELL [\"/bin/bash\", \"-eu\", \"-c\"]\nFROM a\nENV B=$A$PATH C=$B\nWORKDIR sub\nRUN x\nENV A=2 B=$A\n";
    let opts =
        LowerOptions { base_env: BTreeMap::from([("img".into(), kv(&[("PATH", ":/bin")]))]), ..Default::default() };
    let g = lower_str(text, &opts).unwrap();
    let st = &g.stages[1];
    assert_eq!(st.steps[0].kind, StepKind::Env(kv(&[("B", "1:/bin"), ("C", "")])));
    assert_eq!(st.steps[1].kind, StepKind::Workdir("/base/sub".into()));
    assert_eq!(
        st.steps[2].kind,
        StepKind::Run {
            argv: s(&["/bin/bash", "-eu", "-c", "x"]),
            shell_form: true,
            build_env: vec![],
            network: Network::Default,
            mounts: vec![],
            heredocs: vec![]
        }
    );
    // ENV pairs expand against the env before the instruction.
    assert_eq!(st.steps[3].kind, StepKind::Env(kv(&[("A", "2"), ("B", "1")])));
    assert_eq!(g.stages[0].steps[2].created_by, "SHELL [/bin/bash -eu -c]");
}

#[test]
fn instruction_table() {
    // (instruction after "FROM x\n", expected kind, expected created_by)
    let cases: Vec<(&str, StepKind, &str)> = vec![
        ("RUN [\"echo\", \"a b\"]", StepKind::Run { argv: s(&["echo", "a b"]), shell_form: false, build_env: vec![], network: Network::Default, mounts: vec![], heredocs: vec![] }, "RUN echo a b # buildkit"),
        ("RUN [not json", StepKind::Run { argv: sh("[not json"), shell_form: true, build_env: vec![], network: Network::Default, mounts: vec![], heredocs: vec![] }, "RUN /bin/sh -c [not json # buildkit"),
        ("RUN --network=none true", StepKind::Run { argv: sh("true"), shell_form: true, build_env: vec![], network: Network::None, mounts: vec![], heredocs: vec![] }, "RUN /bin/sh -c true # buildkit"),
        ("ENV A B C", StepKind::Env(kv(&[("A", "B C")])), "ENV A=B C"),
        ("ENV A=1 B='x y' C=a\\ b", StepKind::Env(kv(&[("A", "1"), ("B", "x y"), ("C", "a b")])), "ENV A=1 B=x y C=a b"),
        ("LABEL \"com.x\"=\"v 1\" b=2", StepKind::Label(kv(&[("com.x", "v 1"), ("b", "2")])), "LABEL com.x=v 1 b=2"),
        ("EXPOSE 80 53/udp 8000-8001", StepKind::Expose(s(&["80/tcp", "53/udp", "8000/tcp", "8001/tcp"])), "EXPOSE map[53/udp:{} 80/tcp:{} 8000/tcp:{} 8001/tcp:{}]"),
        ("VOLUME [\"/data\", \"/logs\"]", StepKind::Volume(s(&["/data", "/logs"])), "VOLUME [/data /logs]"),
        ("VOLUME /a /b", StepKind::Volume(s(&["/a", "/b"])), "VOLUME [/a /b]"),
        ("USER app:app", StepKind::User("app:app".into()), "USER app:app"),
        ("STOPSIGNAL SIGKILL", StepKind::StopSignal("SIGKILL".into()), "STOPSIGNAL SIGKILL"),
        ("SHELL [\"pwsh\", \"-c\"]", StepKind::Shell(s(&["pwsh", "-c"])), "SHELL [pwsh -c]"),
        ("ONBUILD RUN make", StepKind::OnBuild("RUN make".into()), "ONBUILD RUN make"),
        ("MAINTAINER me <me@x>", StepKind::Maintainer("me <me@x>".into()), "MAINTAINER me <me@x>"),
        ("ARG A=1 B", StepKind::Arg(vec![("A".into(), Some("1".into())), ("B".into(), None)]), "ARG A=1 B"),
        ("WORKDIR rel", StepKind::Workdir("rel".into()), "WORKDIR rel"),
        ("CMD [\"a\"]", StepKind::Cmd(s(&["a"])), "CMD [\"a\"]"),
        ("CMD echo \"hi\"", StepKind::Cmd(sh("echo \"hi\"")), r#"CMD ["/bin/sh" "-c" "echo \"hi\""]"#),
        ("ENTRYPOINT []", StepKind::Entrypoint(vec![]), "ENTRYPOINT []"),
        ("HEALTHCHECK NONE", StepKind::Healthcheck(None), "HEALTHCHECK {Test:[NONE] Interval:0s Timeout:0s StartPeriod:0s StartInterval:0s Retries:0}"),
        (
            "HEALTHCHECK --interval=30s --timeout=1m30s --retries=3 CMD curl -f http://localhost/",
            StepKind::Healthcheck(Some(Healthcheck {
                test: s(&["CMD-SHELL", "curl -f http://localhost/"]),
                interval: Some(30_000_000_000),
                timeout: Some(90_000_000_000),
                start_period: None,
                start_interval: None,
                retries: Some(3),
            })),
            "HEALTHCHECK {Test:[CMD-SHELL curl -f http://localhost/] Interval:30s Timeout:1m30s StartPeriod:0s StartInterval:0s Retries:3}",
        ),
        (
            "HEALTHCHECK CMD [\"/bin/check\", \"-q\"]",
            StepKind::Healthcheck(Some(Healthcheck { test: s(&["CMD", "/bin/check", "-q"]), interval: None, timeout: None, start_period: None, start_interval: None, retries: None })),
            "HEALTHCHECK {Test:[CMD /bin/check -q] Interval:0s Timeout:0s StartPeriod:0s StartInterval:0s Retries:0}",
        ),
        (
            "COPY --chown=1:1 --chmod=0644 --link --parents --exclude=*.md --exclude=x [\"a b\", \"/d/\"]",
            StepKind::Copy(CopySpec { chown: Some("1:1".into()), chmod: Some(Chmod::parse("0644").unwrap()), link: true, parents: true, exclude: s(&["*.md", "x"]), ..copy(&["a b"], "/d/") }),
            "COPY --parents --chown=1:1 --chmod=0644 a b /d/ # buildkit",
        ),
        (
            "ADD --checksum=sha256:abc --keep-git-dir=true --unpack=false --link=false https://x/y.tar /y",
            StepKind::Add(CopySpec { checksum: Some("sha256:abc".into()), keep_git_dir: true, unpack: Some(false), ..copy(&["https://x/y.tar"], "/y") }),
            "ADD https://x/y.tar /y # buildkit",
        ),
    ];
    for (inst, kind, cb) in cases {
        let g = graph(&format!("FROM x\n{inst}\n"));
        let step = &g.stages[0].steps[0];
        assert_eq!(step.kind, kind, "{inst}");
        assert_eq!(step.created_by, cb, "{inst}");
        assert_eq!(step.source, inst);
    }
}

#[test]
fn run_network_is_typed() {
    let table: &[(&str, Result<Network, &str>)] = &[
        ("RUN true", Ok(Network::Default)),
        ("RUN --network=default true", Ok(Network::Default)),
        ("RUN --network=none true", Ok(Network::None)),
        ("RUN --network=host true", Ok(Network::Host)),
        ("ARG N=none\nRUN --network=$N true", Ok(Network::None)),
        ("RUN --network=bridge true", Err("unsupported network mode \"bridge\" (expected default, none or host)")),
        ("RUN --network=None true", Err("unsupported network mode \"None\"")),
        ("RUN --network= true", Err("unsupported network mode \"\"")),
    ];
    for (body, want) in table {
        let text = format!("FROM x\n{body}\n");
        match (lower_str(&text, &LowerOptions::default()), want) {
            (Ok(g), Ok(n)) => {
                let StepKind::Run { network, .. } = &g.stages[0].steps.last().unwrap().kind else { panic!("{body}") };
                assert_eq!(network, n, "{body}");
            }
            (Err(e), Err(frag)) => {
                assert!(e.to_string().contains(frag), "{body}: {e}");
                assert!(matches!(e, Error::Flag(_)), "{body}: {e:?}");
                assert_eq!(e.location().map(|l| l.line), Some(body.lines().count() + 1), "{body}");
            }
            (got, _) => panic!("{body}: {got:?}"),
        }
    }
}

#[test]
fn chmod_is_parsed_at_lowering() {
    let ok: &[(&str, ModeSpec)] = &[
        ("COPY --chmod=0644 a /b", ModeSpec::Octal(0o644)),
        ("COPY --chmod=755 a /b", ModeSpec::Octal(0o755)),
        ("ADD --chmod=7777 a /b", ModeSpec::Octal(0o7777)),
        ("ARG M=0600\nCOPY --chmod=$M a /b", ModeSpec::Octal(0o600)),
        ("COPY --chmod=u+x a /b", ModeSpec::parse("u+x").unwrap()),
    ];
    for (body, want) in ok {
        let g = graph(&format!("FROM x\n{body}\n"));
        let (StepKind::Copy(spec) | StepKind::Add(spec)) = &g.stages[0].steps.last().unwrap().kind else { panic!() };
        let c = spec.chmod.as_ref().unwrap_or_else(|| panic!("{body}"));
        assert_eq!(&c.mode, want, "{body}");
    }
    // The text as expanded stays for the history.
    let g = graph("FROM x\nARG M=0600\nCOPY --chmod=$M a /b\n");
    assert_eq!(g.stages[0].steps[1].created_by, "COPY --chmod=0600 a /b # buildkit");

    let octal = |v: &str| format!("invalid chmod parameter: '{v}'. it should be octal string and between 0 and 07777");
    // (Dockerfile, line, column of the flag, message)
    let bad: &[(&str, usize, usize, String)] = &[
        ("FROM x\nCOPY --chmod=99999 a /b\n", 2, 6, octal("99999")),
        ("FROM x\nRUN true\nADD --chmod=0778 a /b\n", 3, 5, octal("0778")),
        ("FROM x\nCOPY --chmod=17777 a /b\n", 2, 6, octal("17777")),
        ("FROM x\nARG M=9\nCOPY --chmod=$M a /b\n", 3, 6, octal("9")),
        ("FROM x\nCOPY --link \\\n  --chmod=u+q a /b\n", 3, 3, "--chmod=u+q: unknown permission 'q' (r, w, x, X, s, t)".into()),
        ("FROM x\nCOPY --chmod=z+x a /b\n", 2, 6, "--chmod=z+x: unknown class 'z' (u, g, o, a)".into()),
        ("FROM x\nCOPY --chmod=rwx a /b\n", 2, 6, "--chmod=rwx: \"rwx\" has no +, - or =".into()),
        ("FROM x\nCOPY --chmod= a /b\n", 2, 6, "--chmod=: \"\" has no +, - or =".into()),
        // an ONBUILD trigger fails at the FROM that runs it
        ("FROM x AS a\nONBUILD COPY --chmod=8 a /b\nFROM a\n", 3, 1, octal("8")),
    ];
    for (text, line, col, msg) in bad {
        let e = lower_str(text, &LowerOptions::default()).expect_err(text);
        assert!(matches!(e, Error::Flag(_)), "{text:?}: {e:?}");
        assert_eq!(e.location(), Some(&loc(*line, *col)), "{text:?}: {e}");
        assert_eq!(&e.message(), msg, "{text:?}");
    }
    // A stage the target does not need may keep a bad mode, as in BuildKit.
    let g = lower_str("FROM x AS unused\nCOPY --chmod=9 a /b\nFROM y\n", &LowerOptions::default()).unwrap();
    assert!(g.stages[0].steps.is_empty());
}

#[test]
fn run_mounts() {
    let g = graph("FROM x AS b\nFROM y\nARG ID=c1\nRUN --mount=type=cache,id=$ID,dst=/root/.cache,sharing=locked --mount=from=b,target=/src,ro --mount=type=secret,id=tok true\n");
    let StepKind::Run { mounts, .. } = &g.stages[1].steps[1].kind else { panic!() };
    assert_eq!(mounts.len(), 3);
    let str = |v: &str| Some(v.to_string());
    assert_eq!(
        mounts[0],
        RunMount {
            kind: MountKind::Cache,
            target: str("/root/.cache"),
            source: None,
            from: None,
            readonly: false,
            id: str("c1"),
            sharing: Sharing::Locked,
            mode: Some(0o755),
            uid: Some(0),
            gid: Some(0),
            required: false,
            env: None,
            size: None,
        }
    );
    assert_eq!(mounts[1].kind, MountKind::Bind);
    assert_eq!(mounts[1].from, Some(CopyFrom::Stage(kiln_frontend::StageIdx(0))));
    assert!(mounts[1].readonly);
    assert_eq!(mounts[2].kind, MountKind::Secret);
    assert_eq!(mounts[2].target.as_deref(), Some("/run/secrets/tok"));
    assert!(!mounts[2].required);
    let g2 = graph("FROM x\nRUN --mount=type=secret,target=/a/b.txt,required --mount=type=ssh true\n");
    let StepKind::Run { mounts, .. } = &g2.stages[0].steps[0].kind else { panic!() };
    assert_eq!(mounts[0].id.as_deref(), Some("b.txt"));
    assert!(mounts[0].required);
    assert_eq!(mounts[1].id.as_deref(), Some("default"));
    for bad in [
        "type=secret",
        "type=cache,target=/c,uid=x",
        "type=cache,target=/c,mode=999",
        "type=bind,target=/x,bogus=1",
        "type=cache,target=/c,sharing=all",
    ] {
        assert!(lower_str(&format!("FROM x\nRUN --mount={bad} true\n"), &LowerOptions::default()).is_err(), "{bad}");
    }
    assert_eq!(g.stages[1].deps.iter().map(|d| d.0).collect::<Vec<_>>(), vec![0]);
    assert_eq!(g.needed().iter().map(|d| d.0).collect::<Vec<_>>(), vec![0, 1]);
}

#[test]
fn heredocs() {
    let text = "FROM x\nARG WHO=world\nRUN <<EOF\necho hello $WHO\nEOF\nRUN <<-\"A\" cat > /f && cat <<B\n\t\tline $WHO\n\tA\nb\nB\nCOPY <<one <<'two' /dst/\nhi $WHO\none\nraw $WHO\ntwo\nRUN echo done\n";
    let g = graph(text);
    let st = &g.stages[0];
    assert_eq!(st.steps.len(), 5);
    match &st.steps[1].kind {
        StepKind::Run { argv, heredocs, .. } => {
            assert_eq!(argv, &sh("echo hello $WHO\n"));
            assert_eq!(
                heredocs,
                &vec![Heredoc { name: "EOF".into(), content: "echo hello $WHO\n".into(), expand: true, chomp: false }]
            );
        }
        k => panic!("{k:?}"),
    }
    match &st.steps[2].kind {
        StepKind::Run { argv, heredocs, .. } => {
            assert_eq!(argv, &sh("<<-\"A\" cat > /f && cat <<B\nline $WHO\nA\nb\nB"));
            assert_eq!(
                heredocs[0],
                Heredoc { name: "A".into(), content: "line $WHO\n".into(), expand: false, chomp: true }
            );
            assert_eq!(heredocs[1], Heredoc { name: "B".into(), content: "b\n".into(), expand: true, chomp: false });
        }
        k => panic!("{k:?}"),
    }
    match &st.steps[3].kind {
        StepKind::Copy(c) => {
            assert!(c.sources.is_empty());
            assert_eq!(c.dest, "/dst/");
            assert_eq!(c.heredocs[0].content, "hi world\n");
            assert_eq!(c.heredocs[1].content, "raw $WHO\n");
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(st.steps[3].created_by, "COPY <<one <<two /dst/ # buildkit");
    assert_eq!(st.steps[4].loc, loc(16, 1));
}

#[test]
fn directives_continuations_and_escape() {
    let text = "\u{feff}# syntax=docker/dockerfile:1\r\n# escape=`\r\nFROM x\r\nRUN echo a `\r\n  # a comment inside\r\n\r\n  && echo C:\\path\r\nworkdir C:\\dir\r\n";
    let df = parse("Dockerfile", text).unwrap();
    assert_eq!(df.escape, '`');
    assert_eq!(df.directives.len(), 2);
    assert_eq!(df.directives[0].name, "syntax");
    assert_eq!(df.directives[0].value, "docker/dockerfile:1");
    let g = lower(&df, &LowerOptions::default()).unwrap();
    let st = &g.stages[0];
    assert_eq!(st.steps[0].source, "RUN echo a   && echo C:\\path");
    assert_eq!(
        st.steps[0].kind,
        StepKind::Run {
            argv: sh("echo a   && echo C:\\path"),
            shell_form: true,
            build_env: vec![],
            network: Network::Default,
            mounts: vec![],
            heredocs: vec![]
        }
    );
    assert_eq!(st.steps[1].kind, StepKind::Workdir("C:\\dir".into()));
    assert_eq!(st.steps[1].loc, loc(8, 1));

    // A directive after a comment is just a comment.
    let df = parse("Dockerfile", "# hello\n# escape=`\nFROM x\n").unwrap();
    assert_eq!(df.escape, '\\');
    assert!(df.directives.is_empty());
    // Backslash continuation, trailing spaces after it, and indentation.
    let g = graph("FROM x\n  run echo a \\  \n b\n");
    assert_eq!(g.stages[0].steps[0].source, "run echo a  b");
    assert_eq!(g.stages[0].steps[0].loc, loc(2, 3));
}

#[test]
fn located_errors() {
    // (Dockerfile, line, column, message fragment)
    let cases: &[(&str, usize, usize, &str)] = &[
        ("FROM x\n  FOO bar\n", 2, 3, "unknown instruction: FOO"),
        ("FROM x\nRUN <<EOF\necho\n", 2, 5, "unterminated heredoc EOF"),
        ("FROM x\nCOPY a <<EOF /d\nx\n", 2, 8, "unterminated heredoc EOF"),
        ("ARG A\nRUN true\nFROM x\n", 2, 1, "only ARG may come before FROM"),
        ("# just a comment\n", 1, 1, "file with no instructions"),
        ("", 1, 1, "file with no instructions"),
        ("ARG A=1\n", 1, 1, "no stages to build"),
        ("FROM x\nCOPY --frm=a b c\n", 2, 6, "unknown flag: --frm"),
        ("FROM x\nRUN \\\n  --bogus true\n", 3, 3, "unknown flag: --bogus"),
        ("FROM x\nCOPY --link=maybe a b\n", 2, 6, "boolean"),
        ("FROM x\nCOPY --from a b\n", 2, 6, "missing a value"),
        ("FROM x\nCOPY --chown=1 --chown=2 a b\n", 2, 16, "duplicate flag"),
        ("FROM x\nENV --x=1\n", 2, 5, "unknown flag"),
        ("FROM x\nCOPY onlyone\n", 2, 6, "at least two arguments"),
        ("FROM x\nRUN\n", 2, 1, "requires at least one argument"),
        ("FROM x\nSHELL /bin/sh -c\n", 2, 7, "JSON form"),
        ("FROM x\nENV A=1 B\n", 2, 5, "can't find ="),
        ("FROM x\nENV A\n", 2, 5, "must have two arguments"),
        ("FROM x\nHEALTHCHECK --interval=5 CMD true\n", 2, 13, "missing unit"),
        ("FROM x\nHEALTHCHECK --retries=-1 CMD true\n", 2, 13, "negative"),
        ("FROM x\nHEALTHCHECK BOGUS\n", 2, 13, "unknown type"),
        ("FROM x\nWORKDIR ${A:?must be set}\n", 2, 9, "A: must be set"),
        ("FROM x\nUSER ${A\n", 2, 6, "missing '}'"),
        ("FROM ${IMG:?}\n", 1, 6, "IMG: is not allowed"),
        ("FROM $NOPE\n", 1, 6, "should not be blank"),
        ("FROM x AS a\nFROM y AS A\n", 2, 6, "duplicate stage name"),
        ("FROM x AS 1a\n", 1, 6, "invalid stage name"),
        ("FROM x y\n", 1, 6, "one or three arguments"),
        ("FROM x\nEXPOSE 80/foo\n", 2, 8, "invalid proto"),
        ("FROM x\nRUN --mount=type=weird,target=/x true\n", 2, 5, "unsupported mount type"),
        ("FROM x\nRUN --mount=type=cache true\n", 2, 5, "requires a target"),
        ("FROM x\nRUN --network=bridge true\n", 2, 5, "network mode"),
        ("FROM x\nRUN --security=insecure true\n", 2, 5, "not supported"),
        ("FROM x\nONBUILD FROM y\n", 2, 9, "isn't allowed"),
        ("# escape=x\nFROM x\n", 1, 10, "invalid escape token"),
        ("# escape=`\n# escape=\\\nFROM x\n", 2, 1, "only one escape"),
        ("FROM x\nSTOPSIGNAL 99\n", 2, 12, "invalid stop signal"),
    ];
    for (text, line, col, frag) in cases {
        let e = lower_str(text, &LowerOptions::default()).expect_err(text);
        assert_eq!(e.location(), Some(&loc(*line, *col)), "{text:?}: {e}");
        assert!(e.to_string().contains(frag), "{text:?}: {e}");
    }
}

#[test]
fn error_display_format() {
    // testdata/cases/bad-syntax, as the end-to-end test expects it.
    let e = parse("Dockerfile", "FROM 127.0.0.1:5000/base/busybox:latest\nRUN echo ok\nFROMM x\nCMD [\"sh\"]\n")
        .unwrap_err();
    assert_eq!(e.to_string(), "Dockerfile:3:1: unknown instruction: FROMM (did you mean FROM?)\nFROMM x\n^");
    let e = parse("sub/Dockerfile.dev", "FROM x\n  FOO bar\n").unwrap_err();
    assert_eq!(e.to_string(), "sub/Dockerfile.dev:2:3: unknown instruction: FOO (did you mean FROM?)\n  FOO bar\n  ^");
    // Nothing within two edits: no suggestion.
    let e = parse("Dockerfile", "FROM x
frobnicate y
").unwrap_err();
    assert_eq!(e.message(), "unknown instruction: frobnicate");
    let e = parse("Dockerfile", "FROM x
coppy a b
").unwrap_err();
    assert_eq!(e.message(), "unknown instruction: coppy (did you mean copy?)");
    assert!(matches!(e, Error::UnknownInstruction(_)));
    let e = parse("Dockerfile", "FROM x\n\tCOPY --nope a b\n").unwrap_err();
    assert_eq!(e.to_string(), "Dockerfile:2:7: unknown flag: --nope for COPY\n\tCOPY --nope a b\n\t     ^");
}

#[test]
fn keywords_case_insensitive_and_comments() {
    let g = graph("from x as B\n# comment\n\ncopy a b\n   # indented comment\nRuN true\n");
    assert_eq!(g.stages[0].name.as_deref(), Some("b"));
    assert_eq!(g.stages[0].steps.len(), 2);
}

fn blank() -> Step {
    Step {
        loc: loc(1, 1),
        end_line: 0,
        source: String::new(),
        display: String::new(),
        kind: StepKind::Maintainer(String::new()),
        created_by: String::new(),
        inputs: vec![],
        args_used: vec![],
        cache_material: String::new(),
    }
}

#[test]
fn source_date_epoch() {
    // (Dockerfile, --build-arg SOURCE_DATE_EPOCH, expected epoch or error fragment)
    type Case<'a> = (&'a str, Option<&'a str>, Result<Option<SourceDateEpoch>, &'a str>);
    let remote = "ARG SOURCE_DATE_EPOCH=src\nFROM scratch AS src\nARG V=1\nADD https://example.invalid/v$V.tar /\nFROM scratch\n";
    let table: &[Case] = &[
        ("FROM scratch\n", None, Ok(None)),
        ("ARG SOURCE_DATE_EPOCH=1445412480\nFROM scratch\n", None, Ok(Some(SourceDateEpoch::Seconds(1445412480)))),
        ("ARG SOURCE_DATE_EPOCH\nFROM scratch\n", None, Ok(None)),
        ("ARG SOURCE_DATE_EPOCH=\nFROM scratch\n", None, Ok(None)),
        // the build arg wins, even undeclared, and an empty one means none
        ("ARG SOURCE_DATE_EPOCH=1\nFROM scratch\n", Some("2"), Ok(Some(SourceDateEpoch::Seconds(2)))),
        ("FROM scratch\n", Some("5"), Ok(Some(SourceDateEpoch::Seconds(5)))),
        ("ARG SOURCE_DATE_EPOCH=1\nFROM scratch\n", Some(""), Ok(None)),
        ("FROM scratch\n", Some("context"), Ok(Some(SourceDateEpoch::Context))),
        ("ARG SOURCE_DATE_EPOCH=not-a-timestamp\nFROM scratch\n", None, Err("invalid SOURCE_DATE_EPOCH: not-a-timestamp")),
        (remote, None, Ok(Some(SourceDateEpoch::Stage(kiln_frontend::StageIdx(0))))),
        // a numeric build arg wins over a stage name, which is then not checked
        ("ARG SOURCE_DATE_EPOCH=src\nFROM scratch AS src\nCOPY a /\nFROM scratch\n", Some("7"), Ok(Some(SourceDateEpoch::Seconds(7)))),
        (
            "ARG SOURCE_DATE_EPOCH=src\nFROM scratch AS src\nCOPY a /\nFROM scratch\n",
            None,
            Err("Dockerfile:2:1: SOURCE_DATE_EPOCH stage does not meet source-only requirements: unsupported copy instruction"),
        ),
        ("ARG SOURCE_DATE_EPOCH=src\nFROM alpine AS src\nADD https://x.invalid/a /\nFROM scratch\n", None, Err("must use FROM scratch")),
        ("ARG SOURCE_DATE_EPOCH=src\nFROM scratch AS src\nFROM scratch\n", None, Err("must contain exactly one remote ADD")),
        ("ARG SOURCE_DATE_EPOCH=src\nFROM scratch AS src\nADD https://x.invalid/a https://x.invalid/b /\nFROM scratch\n", None, Err("exactly one remote ADD source")),
        ("ARG SOURCE_DATE_EPOCH=src\nFROM scratch AS src\nADD local.tar /\nFROM scratch\n", None, Err("must be a single HTTP(S) or Git ADD")),
        ("ARG SOURCE_DATE_EPOCH=src\nFROM scratch AS src\nADD git@github.com:a/b.git /\nFROM scratch\n", None, Ok(Some(SourceDateEpoch::Stage(kiln_frontend::StageIdx(0))))),
    ];
    for (text, arg, want) in table {
        let mut opts = LowerOptions::default();
        if let Some(a) = arg {
            opts.build_args.insert("SOURCE_DATE_EPOCH".into(), a.to_string());
        }
        match (lower_str(text, &opts), want) {
            (Ok(g), Ok(w)) => assert_eq!(&g.source_date_epoch, w, "{text:?}"),
            (Err(e), Err(frag)) => assert!(e.to_string().contains(frag), "{text:?}: {e}"),
            (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
        }
    }
}
