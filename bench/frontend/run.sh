#!/bin/sh
# Frontend benchmarks: parse+lower of a generated 2,000-line Dockerfile, and the
# long fuzz run. Results go to BENCHMARKS.md ("Frontend" section) by hand.
#
#   bench/frontend/run.sh            # parse benchmark only
#   FUZZ_SECS=300 bench/frontend/run.sh   # plus a 5-minute fuzz run
set -eu
cd "$(dirname "$0")/../.."
echo "machine: $(nproc) cpu, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr); date: $(date -u +%Y-%m-%d)"
cargo run --release -q -p kiln-frontend --example parse_bench -- "${LINES:-2000}" "${ITERS:-200}"
if [ -n "${FUZZ_SECS:-}" ]; then
    KILN_FUZZ_SECS="$FUZZ_SECS" cargo test --release -q -p kiln-frontend --test fuzz fuzz_timed -- --nocapture 2>&1 | grep -E 'fuzz_timed|panic'
fi
