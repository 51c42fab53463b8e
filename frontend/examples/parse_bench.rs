//! Parse + lower benchmark: a generated 2,000-line Dockerfile (multi-stage, every
//! instruction, continuation lines, heredocs, mounts, ARG/ENV expansion).
//!
//! cargo run --release -p kiln-frontend --example parse_bench [-- LINES [ITERATIONS]]
//!
//! Prints the Dockerfile size and the min / median / mean time of `parse` + `lower`
//! (+ `ops`), and of `parse` alone. No assertions: the figure is recorded in
//! BENCHMARKS.md.

use kiln_frontend::{lower, parse, LowerOptions, Platform};
use std::time::{Duration, Instant};

fn dockerfile(lines: usize) -> String {
    let mut s = String::from("# syntax=docker/dockerfile:1.7\nARG BASE=debian:bookworm\nARG VERSION=1.2.3\n");
    let mut stage = 0;
    while s.lines().count() < lines {
        let prev = stage;
        if stage == 0 {
            s.push_str(&format!("FROM --platform=$BUILDPLATFORM ${{BASE}} AS stage{stage}\n"));
        } else {
            s.push_str(&format!("FROM stage{prev_} AS stage{stage}\n", prev_ = prev - 1));
        }
        s.push_str("ARG VERSION TARGETOS TARGETARCH\n");
        s.push_str(&format!("ENV APP_HOME=/opt/app{stage} PATH=/opt/app{stage}/bin:$PATH V=${{VERSION%.*}}\n"));
        s.push_str("WORKDIR $APP_HOME\n");
        s.push_str("LABEL org.opencontainers.image.version=$VERSION \"maintainer\"=\"kiln <kiln@example.com>\"\n");
        s.push_str("COPY --chown=1000:1000 --chmod=0644 --link src/ ./src/\n");
        s.push_str("RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\\n");
        s.push_str("    --mount=type=bind,source=go.mod,target=/src/go.mod \\\n");
        s.push_str("    # a comment inside the continuation\n");
        s.push_str("    apt-get update && apt-get install -y --no-install-recommends \\\n");
        s.push_str("      ca-certificates curl git && \\\n");
        s.push_str("    rm -rf /var/lib/apt/lists/*\n");
        s.push_str("RUN <<EOF\nset -eu\necho \"building $VERSION for $TARGETOS/$TARGETARCH\"\nmake -j2 all\nEOF\n");
        s.push_str("COPY <<-EOT /etc/app.conf\n\tname=${APP_HOME##*/}\n\tversion=${VERSION//./-}\n\tEOT\n");
        s.push_str("EXPOSE 8080 9000-9002/udp\n");
        s.push_str("HEALTHCHECK --interval=30s --timeout=3s CMD [\"curl\", \"-f\", \"http://localhost:8080/\"]\n");
        s.push_str("USER ${UID:-1000}:${GID:-1000}\n");
        s.push_str("VOLUME [\"/data\"]\n");
        s.push_str("STOPSIGNAL SIGTERM\n");
        if stage > 1 {
            s.push_str(&format!("COPY --from=stage{} /opt /opt\n", stage - 2));
        }
        s.push_str("ENTRYPOINT [\"/opt/app/bin/server\"]\n");
        s.push_str("CMD [\"--port=8080\"]\n\n");
        stage += 1;
    }
    s
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let mean = v.iter().sum::<Duration>() / v.len() as u32;
    (v[0], v[v.len() / 2], mean)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let lines: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let iters: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let text = dockerfile(lines);
    let opts = LowerOptions {
        target_platform: Platform::new("linux", "arm64", None),
        build_platform: Platform::new("linux", "amd64", None),
        ..Default::default()
    };
    // Warm up and check that the input is valid.
    let df = parse("Dockerfile", &text).unwrap_or_else(|e| panic!("{e}"));
    let g = lower(&df, &opts).unwrap_or_else(|e| panic!("{e}"));
    let steps: usize = g.stages.iter().map(|s| s.steps.len()).sum();
    let mut full = Vec::with_capacity(iters);
    let mut parse_only = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        let df = parse("Dockerfile", &text).unwrap();
        parse_only.push(t.elapsed());
        let g = lower(&df, &opts).unwrap();
        let ops = g.ops();
        std::hint::black_box(&ops);
        full.push(t.elapsed());
    }
    let (fmin, fmed, fmean) = stats(full);
    let (pmin, pmed, pmean) = stats(parse_only);
    println!(
        "Dockerfile: {} lines, {} bytes, {} instructions, {} stages, {} steps; {iters} iterations",
        text.lines().count(),
        text.len(),
        df.instructions.len(),
        g.stages.len(),
        steps
    );
    println!("parse+lower+ops: min {fmin:.2?}  median {fmed:.2?}  mean {fmean:.2?}");
    println!("parse only:      min {pmin:.2?}  median {pmed:.2?}  mean {pmean:.2?}");
}
