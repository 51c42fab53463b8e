#!/bin/bash
# Layer write throughput (tar + compress + both digests, one pass) for gzip,
# zstd and none on ~256 MiB of real files copied from /usr.
#
#   bench/layer-write.sh [SIZE_MIB]      default 256
#
# The input is copied once into $KILN_BENCH_DIR/usr-sample (default
# /var/tmp/kiln-bench) so that the page cache holds it; each codec is run 3
# times and the best time reported (MiB/s of uncompressed tar).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SIZE=${1:-256}
DIR=${KILN_BENCH_DIR:-/var/tmp/kiln-bench}
SAMPLE=$DIR/usr-sample-$SIZE
mkdir -p "$DIR"
if [ ! -f "$SAMPLE.done" ]; then
  rm -rf "$SAMPLE"; mkdir -p "$SAMPLE"
  # Regular files from /usr in a stable order until SIZE MiB.
  limit=$((SIZE * 1024 * 1024)); total=0
  while IFS= read -r -d '' f; do
    s=$(stat -c %s "$f")
    mkdir -p "$SAMPLE/$(dirname "$f")"
    cp -p "$f" "$SAMPLE/$f"
    total=$((total + s))
    [ $total -ge $limit ] && break
  done < <(find /usr/lib /usr/share /usr/bin -type f -print0 2>/dev/null | sort -z)
  touch "$SAMPLE.done"
fi
find "$SAMPLE" -type f -exec cat {} + >/dev/null  # warm the page cache
cd "$REPO"
cargo build --release -q -p kiln-snapshotter --example layer_write
BIN=$REPO/target/release/examples/layer_write
echo "# $(date -u +%Y-%m-%d) $(nproc) cores, $(uname -r), input $(du -sh "$SAMPLE" | cut -f1) in $(find "$SAMPLE" -type f | wc -l) files"
for c in "gzip" "gzip 1" "zstd" "zstd 9" "none"; do
  # shellcheck disable=SC2086
  "$BIN" "$SAMPLE" $c
done
