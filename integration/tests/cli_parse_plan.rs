//! `kiln parse` and `kiln plan` end to end. They read only the Dockerfile (no
//! registry, no namespaces), so they run as the current user.

use kiln_integration::{kiln_bin, run_with_timeout, RunOutput};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const DOCKERFILE: &str = r#"# syntax=docker/dockerfile:1
ARG GO=1.22
FROM golang:${GO} AS build
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/root/.cache \
    # a comment inside
    GOARCH=$TARGETARCH go build -o /out/app .
COPY <<-EOF /etc/app.conf
	arch=${TARGETARCH}
	EOF

FROM alpine AS debug
RUN apk add strace

FROM scratch AS final
COPY --from=build /out/app /app
ENTRYPOINT ["/app"]
"#;

fn kiln(args: &[&str], dir: &Path) -> RunOutput {
    let mut cmd = Command::new(kiln_bin());
    cmd.args(args).current_dir(dir);
    run_with_timeout(&mut cmd, Duration::from_secs(60))
}

fn fixture(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Dockerfile"), text).unwrap();
    dir
}

fn json(out: &RunOutput) -> Value {
    out.assert_success();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{out}"))
}

#[test]
fn parse_json_lists_instructions() {
    let dir = fixture(DOCKERFILE);
    let v = json(&kiln(&["parse", "--json", "."], dir.path()));
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["file"], "Dockerfile");
    assert_eq!(v["directives"][0]["name"], "syntax");
    let inst = v["instructions"].as_array().unwrap();
    let kws: Vec<&str> = inst.iter().map(|i| i["keyword"].as_str().unwrap()).collect();
    assert_eq!(
        kws,
        ["ARG", "FROM", "ARG", "WORKDIR", "COPY", "RUN", "COPY", "FROM", "RUN", "FROM", "COPY", "ENTRYPOINT"]
    );
    assert_eq!(inst[1]["value"], serde_json::json!({"image": "golang:${GO}", "name": "build"}));
    let run = &inst[5];
    assert_eq!((run["line"].as_u64(), run["end_line"].as_u64()), (Some(7), Some(9)));
    assert_eq!(run["flags"][0]["name"], "mount");
    assert_eq!(run["flags"][0]["value"], "type=cache,target=/root/.cache");
    assert_eq!(run["value"]["shell"], "GOARCH=$TARGETARCH go build -o /out/app .");
    let hd = &inst[6]["heredocs"][0];
    assert_eq!(hd["name"], "EOF");
    assert_eq!(hd["content"], "arch=${TARGETARCH}\n");
    assert_eq!(hd["chomp"], true);
    assert_eq!(inst[6]["value"]["sources"][0]["heredoc"], 0);
    assert_eq!(inst[11]["value"]["exec"][0], "/app");

    // -f and the plain listing.
    let out = kiln(&["parse", "-f", "Dockerfile"], dir.path());
    out.assert_success();
    assert!(out.stdout.contains("7-9  RUN --mount=type=cache,target=/root/.cache"), "{out}");
    assert!(out.stdout.contains("| arch=${TARGETARCH}"), "{out}");
}

#[test]
fn plan_json_expands_prunes_and_keys() {
    let dir = fixture(DOCKERFILE);
    let args = ["plan", "--json", "--build-arg", "GO=1.23", "--platform", "linux/arm64", "--target", "final", "."];
    let v = json(&kiln(&args, dir.path()));
    assert_eq!(v["target"], 2);
    assert_eq!(v["needed"], serde_json::json!([0, 2]));
    let stages = v["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2, "the debug stage is pruned");
    assert_eq!(stages[0]["base"]["image"], "golang:1.23");
    let steps = stages[0]["steps"].as_array().unwrap();
    let copy_conf = &steps[4];
    assert_eq!(copy_conf["kind"]["Copy"]["heredocs"][0]["content"], "arch=arm64\n");
    assert_eq!(copy_conf["args_used"], serde_json::json!([["TARGETARCH", "arm64"]]));
    let material = copy_conf["cache_material"].as_str().unwrap();
    assert!(material.starts_with("kiln.step.v1\nplatform \"linux/arm64\"\n"), "{material}");
    assert!(material.contains("arg \"TARGETARCH\" \"arm64\"\n"), "{material}");
    assert_eq!(steps[2]["inputs"], serde_json::json!(["context:[\"go.mod\",\"go.sum\"]"]));
    assert_eq!(stages[1]["steps"][0]["inputs"], serde_json::json!(["stage:0"]));
    // The op DAG: the final COPY reads the build stage's last op.
    let ops = v["ops"].as_array().unwrap();
    let last_build = ops.iter().filter(|o| o["stage"] == 0).map(|o| o["id"].as_u64().unwrap()).max().unwrap();
    let final_copy = ops.iter().find(|o| o["stage"] == 2 && o["step"] == 0).unwrap();
    assert_eq!(final_copy["kind"], "file");
    assert_eq!(final_copy["inputs"], serde_json::json!([{"op": last_build, "role": "stage"}]));
    assert!(ops.iter().all(|o| o["stage"] != 1), "no op of the pruned stage");

    // Another value of a used build arg changes that step's material.
    let args2 = ["plan", "--json", "--platform", "linux/amd64", "--target", "final", "."];
    let v2 = json(&kiln(&args2, dir.path()));
    assert_ne!(v2["stages"][0]["steps"][4]["cache_material"], copy_conf["cache_material"]);

    // The readable listing.
    let out = kiln(&["plan", "--target", "debug", "."], dir.path());
    out.assert_success();
    assert!(out.stdout.contains("needed stages: [1]; pruned: [0, 2]"), "{out}");
}

#[test]
fn bad_dockerfiles_fail_with_a_location() {
    let dir = fixture("FROM alpine\nRUN --mount=type=cache,target=/c \\\n    --mont=x echo\n");
    for cmd in [&["parse", "--json", "."][..], &["plan", "."][..]] {
        let out = kiln(cmd, dir.path());
        out.assert_failure_containing("Dockerfile:3:5: unknown flag: --mont for RUN");
        assert!(out.stderr.contains("    --mont=x echo\n    ^"), "{out}");
        assert!(out.stdout.is_empty(), "{out}");
    }
    let dir = fixture("FROM alpine AS a\nARG X\nWORKDIR ${X:?X is required}\n");
    let out = kiln(&["plan", "."], dir.path());
    out.assert_failure_containing("Dockerfile:3:9: failed to process");
    let out = kiln(&["plan", "--target", "nope", "."], dir.path());
    out.assert_failure_containing("target stage \"nope\" could not be found");
}

/// `kiln build --call targets|outline` prints what buildx prints, building nothing
/// (the example of the Dockerfile reference's build checks page: doc comments above
/// FROM and ARG, their own name taken off).
#[test]
fn call_targets_and_outline() {
    let dir = fixture(
        "# syntax=docker/dockerfile:1\n# GO_VERSION sets the Go version\nARG GO_VERSION=1.22\n# base has all the dependencies\nFROM golang:${GO_VERSION} AS base\n# VERSION is stamped into the binary\nARG VERSION=dev\nRUN --mount=type=secret,id=token,required=true true\n\n# binary builds the binary\nFROM base AS binary\nRUN --mount=type=ssh true\n\nFROM scratch AS other\nARG UNUSED=1\n",
    );
    let t = kiln(&["build", "--call", "targets", "."], dir.path());
    t.assert_success();
    let rows: Vec<Vec<String>> = t.stdout.lines().map(|l| l.split_whitespace().map(str::to_string).collect()).collect();
    assert_eq!(rows[1].join(" "), "base has all the dependencies");
    assert_eq!(rows[2].join(" "), "binary builds the binary");
    assert_eq!(rows[3].join(" "), "other (default)");
    let o = kiln(&["build", "--call", "outline", "--target", "binary", "--build-arg", "VERSION=1.2", "."], dir.path());
    o.assert_success().assert_stdout_contains("TARGET:      binary").assert_stdout_contains("DESCRIPTION: builds the binary");
    let line = |s: &str| o.stdout.lines().find(|l| l.starts_with(s)).map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "));
    assert_eq!(line("GO_VERSION").as_deref(), Some("GO_VERSION 1.22 sets the Go version"));
    assert_eq!(line("VERSION").as_deref(), Some("VERSION 1.2 is stamped into the binary"));
    assert_eq!(line("token").as_deref(), Some("token true"));
    assert!(o.stdout.lines().any(|l| l == "default"), "ssh listed\n{o}");
    assert!(!o.stdout.contains("UNUSED"), "args of stages the target does not need are not listed\n{o}");
    kiln(&["build", "--call", "check", "."], dir.path()).assert_failure_containing("--call \"check\"");
}
