//! "Never panic" check: garbage bytes, token soup and every truncation/mutation of real
//! Dockerfiles go through parse + base_images + lower + needed + ops; any panic fails
//! the test. The fixed tests are deterministic (fixed-seed xorshift). `fuzz_timed`
//! is the long-running fuzzer: a few seconds by default, `KILN_FUZZ_SECS=300` for five
//! minutes (`KILN_FUZZ_SEED` to reproduce a run); it prints the seed and the number of
//! inputs, and on a panic the offending input.

use kiln_frontend::*;
use std::collections::BTreeMap;

#[path = "../../integration/src/fuzzrng.rs"]
mod fuzzrng;
use fuzzrng::Rng;

const CORPUS: &[&str] = &[
    "FROM 127.0.0.1:5000/base/busybox:latest\nWORKDIR /app\nCOPY hello.txt ./\nRUN echo \"built by RUN\" > /app/built.txt && chmod 0640 /app/built.txt\nENV GREETING=\"hello world\"\nCMD [\"cat\", \"/app/hello.txt\"]\n",
    "# syntax=docker/dockerfile:1\n# escape=`\nARG BASE=alpine\nFROM --platform=$BUILDPLATFORM ${BASE:-x} AS build\nARG TARGETARCH\nRUN --mount=type=cache,target=/c `\n    echo $TARGETARCH\nCOPY --from=build --chown=1:1 a b\nFROM build\nCOPY <<EOF /x\n${TARGETARCH}\nEOF\n",
    "ARG V=1\nFROM x AS a\nARG V\nENV A=${V:+set} B=${V#1} C=${V//1/2} D=\"${V%%*}\"\nRUN <<-EOT bash\n\techo $A\n\tEOT\nHEALTHCHECK --interval=1m --retries=2 CMD [\"true\"]\nEXPOSE 80-82/udp 443\nVOLUME [\"/v\"]\nONBUILD RUN x\nSHELL [\"/bin/bash\",\"-c\"]\nFROM scratch\nCOPY --from=a /a /a\nCOPY --from=0 /b /b\nLABEL a=b \"c d\"=e\nUSER ${U:-nobody}\nSTOPSIGNAL SIGTERM\nENTRYPOINT [\"/a\"]\n",
    "FROM a AS one\nCOPY --from=two /x /x\nFROM b AS two\nRUN --mount=from=one,target=/o,ro true\nADD --checksum=sha256:00 --keep-git-dir --unpack https://x /y\n",
    // issue 12: heredocs in ONBUILD and with a blank before the name, mount fields
    // from variables, SOURCE_DATE_EPOCH defaults and stages, --parents pivots.
    "#!/usr/bin/env kiln\n# check=skip=all\nARG SOURCE_DATE_EPOCH=src\nFROM scratch AS src\nADD https://e/x.tar /\nFROM x AS b\nONBUILD RUN <<EOF\necho $X\nEOF\nRUN << EOF sh\nls\nEOF\nRUN <<- \"E\\'F\" cat\n\tx\nE'F\nARG T=cache\nRUN --mount=type=$T,target=/c,id=${T}x --mount=$T true\nCOPY --parents ./a/./b/**/*.c /o/\nENV C a\\\\b\\\\\nENV D x\nCOPY <<EOF /foo\nEOF\nWORKDIR /w\n",
];

const TOKENS: &[&str] = &[
    "FROM ",
    "RUN ",
    "COPY ",
    "ADD ",
    "ENV ",
    "ARG ",
    "LABEL ",
    "EXPOSE ",
    "VOLUME ",
    "WORKDIR ",
    "USER ",
    "STOPSIGNAL ",
    "HEALTHCHECK ",
    "SHELL ",
    "ONBUILD ",
    "MAINTAINER ",
    "CMD ",
    "ENTRYPOINT ",
    " AS ",
    "--from=",
    "--mount=",
    "--platform=",
    "--link",
    "--chown=",
    "--exclude=",
    "--interval=",
    "--retries=",
    "type=cache,",
    "target=",
    "$",
    "${",
    "}",
    ":-",
    ":+",
    ":?",
    "#",
    "##",
    "%",
    "%%",
    "/",
    "//",
    "\\",
    "`",
    "\"",
    "'",
    "<<",
    "<<-",
    "EOF",
    "\n",
    "\r\n",
    "\t",
    " ",
    "=",
    "[",
    "]",
    ",",
    "# escape=`\n",
    "# syntax=x\n",
    "scratch",
    "0",
    "1",
    "a",
    "A",
    "*",
    "?",
    "[a-z]",
    "\u{feff}",
    "é",
    "NONE",
    "CMD",
    "80/tcp",
    "1-3",
    "-",
];

fn opts() -> Vec<LowerOptions> {
    vec![
        LowerOptions::default(),
        LowerOptions {
            build_args: BTreeMap::from([("V".into(), "2".into()), ("BASE".into(), "".into())]),
            target: Some("a".into()),
            target_platform: Platform::new("linux", "arm", Some("v7")),
            build_platform: Platform::new("linux", "amd64", None),
            base_env: BTreeMap::from([("x".into(), vec![("PATH".into(), "/bin".into())])]),
            base_onbuild: BTreeMap::from([("x".into(), vec!["RUN echo $V".into(), "COPY --from=0 a b".into()])]),
            // Every stage lowered for real: errors in unused stages are reached too.
            all_stages: true,
        },
    ]
}

fn exercise(text: &str) {
    let Ok(df) = parse("Dockerfile", text) else { return };
    for o in opts() {
        let _ = base_images(&df, &o);
        if let Ok(g) = lower(&df, &o) {
            let n = g.needed();
            assert!(n.last() == Some(&g.target));
            assert!(n.iter().all(|&i| i.0 < g.stages.len()));
            for op in g.ops() {
                assert!(op.inputs.iter().all(|i| i.op < op.id), "{op:?}");
            }
        }
    }
}

#[test]
fn errors_render_without_panicking() {
    for text in ["", "\n", "X", "FROM", "RUN \\", "\u{feff}", "FROM x\nCOPY <<E\n"] {
        if let Err(e) = parse("Dockerfile", text).and_then(|df| lower(&df, &LowerOptions::default())) {
            let _ = e.to_string();
            let _ = e.location();
        }
    }
}

#[test]
fn truncations_of_real_dockerfiles() {
    for doc in CORPUS {
        assert!(parse("Dockerfile", doc).is_ok(), "{doc}");
        for (i, _) in doc.char_indices() {
            exercise(&doc[..i]);
            exercise(&doc[i..]);
        }
    }
}

#[test]
fn random_bytes() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let len = r.below(200);
        let bytes: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
        exercise(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn token_soup_and_mutations() {
    let mut r = Rng(42);
    for _ in 0..5000 {
        let n = r.below(40);
        let mut s = String::from("FROM x\n");
        for _ in 0..n {
            s.push_str(TOKENS[r.below(TOKENS.len())]);
        }
        exercise(&s);
    }
    for doc in CORPUS {
        for _ in 0..1000 {
            let mut s = doc.to_string();
            for _ in 0..1 + r.below(4) {
                let idx: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
                let at = idx[r.below(idx.len())];
                if r.below(2) == 0 {
                    s.insert_str(at, TOKENS[r.below(TOKENS.len())]);
                } else if let Some(c) = s[at..].chars().next() {
                    s.replace_range(at..at + c.len_utf8(), "");
                }
            }
            exercise(&s);
        }
    }
}

/// Golden-case Dockerfiles join the corpus of the timed fuzzer.
fn corpus() -> Vec<String> {
    let mut v: Vec<String> = CORPUS.iter().map(|s| s.to_string()).collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut paths: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path().join("Dockerfile")).collect();
        paths.sort();
        for p in paths {
            if let Ok(t) = std::fs::read_to_string(p) {
                v.push(t);
            }
        }
    }
    v
}

fn mutate(r: &mut Rng, doc: &str) -> String {
    let mut s = doc.to_string();
    for _ in 0..1 + r.below(8) {
        let idx: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
        let at = idx[r.below(idx.len())];
        match r.below(5) {
            0 | 1 => s.insert_str(at, TOKENS[r.below(TOKENS.len())]),
            2 => {
                if let Some(c) = s[at..].chars().next() {
                    s.replace_range(at..at + c.len_utf8(), "");
                }
            }
            3 => {
                // duplicate a slice of up to 16 chars
                let piece: String = s[at..].chars().take(1 + r.below(16)).collect();
                s.insert_str(at, &piece);
            }
            _ => s.insert(at, char::from_u32(r.below(0x250) as u32).unwrap_or('x')),
        }
    }
    s
}

#[test]
fn fuzz_timed() {
    let (seed, secs) = fuzzrng::seed_and_secs(2.0);
    let corpus = corpus();
    let mut r = Rng(seed);
    let start = std::time::Instant::now();
    let mut n: u64 = 0;
    let mut bytes: u64 = 0;
    while start.elapsed().as_secs_f64() < secs {
        let input = match r.below(4) {
            0 => {
                let len = r.below(300);
                let b: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
                String::from_utf8_lossy(&b).into_owned()
            }
            1 => {
                let mut s = String::from(if r.below(2) == 0 { "FROM x AS a\n" } else { "" });
                for _ in 0..r.below(60) {
                    s.push_str(TOKENS[r.below(TOKENS.len())]);
                }
                s
            }
            _ => {
                let doc = &corpus[r.below(corpus.len())];
                mutate(&mut r, doc)
            }
        };
        bytes += input.len() as u64;
        let res = std::panic::catch_unwind(|| exercise(&input));
        if res.is_err() {
            panic!("panic on input (seed {seed}, input #{n}): {input:?}");
        }
        n += 1;
    }
    eprintln!(
        "fuzz_timed: seed {seed}, {n} inputs ({bytes} bytes) in {:.1}s, corpus {} docs, no panic",
        start.elapsed().as_secs_f64(),
        corpus.len()
    );
}
