#!/bin/bash
# Inflate speed on one gzip layer (issue 18: why kiln inflates with ISA-L).
#   bench/inflate.sh [FILE.gz]    default: the biggest layer of bench/big-base.py's base
# Best of 3 wall times each: kiln's decoder (ISA-L) and flate2's zlib-rs backend
# (snapshotter/examples/inflate.rs, release build), GNU gzip and ISA-L's igzip CLI.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
FILE=${1:-/var/tmp/kiln-bigbase/big-1.tar.gz}
[ -f "$FILE" ] || { echo "inflate.sh: $FILE missing (run bench/big-base.py once to build the base)" >&2; exit 1; }
command -v igzip >/dev/null || { echo "inflate.sh: igzip missing: apt-get install isal" >&2; exit 1; }
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -1)); $(stat -c %s "$FILE") bytes: $FILE"
(cd "$REPO" && cargo run -q --release -p kiln-snapshotter --example inflate -- "$FILE" 3)
best() {
  local name=$1; shift
  local b=
  for _ in 1 2 3; do
    local s; s=$(date +%s.%N); "$@" < "$FILE" > /dev/null; local e; e=$(date +%s.%N)
    b=$(python3 -c "print(min(float('${b:-1e9}'), $e - $s))")
  done
  printf '%s: %.3f s\n' "$name" "$b"
}
best "GNU gzip -d" gzip -dc
best "igzip -d (ISA-L's CLI)" igzip -dc
