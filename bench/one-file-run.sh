#!/bin/bash
# Cost of a one-file RUN on bases of 1k, 10k and 100k files, per snapshotter.
#
#   bench/one-file-run.sh [COUNT...]        default: 1000 10000 100000
#   KILN_BENCH_RUNS=3 bench/one-file-run.sh  three one-file RUN steps in a row
#                                            (native copies the rootfs once, then
#                                            reuses it; each step still walks it)
#
# As root (like the test suite): starts a registry on 127.0.0.1:$KILN_BENCH_PORT
# (default 5055) with scripts/registry.sh, seeds the busybox base, builds and
# pushes bench/base:N (busybox + N small files in /data/<k>/<i>), then times
# `kiln build` (release) of `FROM bench/base:N` + `RUN echo hello > /one` as the
# unprivileged build user, warm: the base is pulled and unpacked by a first,
# untimed build; each timed build still mounts/copies the rootfs, runs the step,
# diffs, writes the layer and exports an OCI layout (--no-cache: the layer cache
# would skip the step). Median of 5 is printed.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PORT=${KILN_BENCH_PORT:-5055}
BUSER=${KILN_TEST_USER:-kilntest}
W=${KILN_BENCH_DIR:-/var/tmp/kiln-bench}/one-file
COUNTS=("$@"); [ ${#COUNTS[@]} -gt 0 ] || COUNTS=(1000 10000 100000)
REPS=${KILN_BENCH_REPS:-5}
RUNS=${KILN_BENCH_RUNS:-1}

cd "$REPO"
cargo build --release -q -p kiln-builder
KILN=$REPO/target/release/kiln
scripts/registry.sh start "$PORT" >/dev/null
testdata/scripts/seed-registry.sh "127.0.0.1:$PORT" >/dev/null
REG=127.0.0.1:$PORT
# Time the step, not the layer cache.
NOCACHE=(); "$KILN" build --help 2>&1 | grep -q -- --no-cache && NOCACHE=(--no-cache)
# Step durations from --progress=json (wall time also counts pull/export).
JSON=(); "$KILN" build --help 2>&1 | grep -q -- --progress && JSON=(--progress json)
step_ms() { # LOG -> sum of duration_ms of finished steps
  python3 -c 'import json,sys
t=0
for l in open(sys.argv[1]):
    try: e=json.loads(l)
    except Exception: continue
    if e.get("event")=="step" and e.get("state")=="done": t+=e.get("duration_ms",0)
print(t)' "$1"
}

rm -rf "$W"; mkdir -p "$W"/{home,root,run}
chmod 700 "$W/run"
cp "$KILN" "$W/kiln"
chown -R "$BUSER:$BUSER" "$W"
as_user() {
  setpriv --reuid="$BUSER" --regid="$BUSER" --init-groups -- \
    env -i HOME="$W/home" KILN_ROOT="$W/root" XDG_RUNTIME_DIR="$W/run" \
    PATH=/usr/local/bin:/usr/bin:/bin "$@"
}
ctx() { # NAME DOCKERFILE-TEXT
  mkdir -p "$W/ctx/$1"; printf '%s\n' "$2" >"$W/ctx/$1/Dockerfile"; chown -R "$BUSER:$BUSER" "$W/ctx"
}

echo "# $(date -u +%Y-%m-%d) $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg), kiln release build; $RUNS one-file RUN step(s); median of $REPS warm builds"
printf '%-8s %-9s %10s %10s   %s\n' files snapshot 'steps(ms)' 'wall(s)' 'all steps(ms)'
for N in "${COUNTS[@]}"; do
  dirs=$(( (N + 999) / 1000 ))
  ctx "base-$N" "FROM $REG/base/busybox:latest
RUN mkdir /data && cd /data && for d in \$(seq 1 $dirs); do mkdir \$d; for f in \$(seq 1 $(( N < 1000 ? N : 1000 ))); do echo \$f > \$d/\$f; done; done"
  as_user "$W/kiln" build --snapshotter overlay -t "$REG/bench/base:$N" --push "$W/ctx/base-$N" >"$W/base-$N.log" 2>&1 \
    || { cat "$W/base-$N.log"; exit 1; }
  steps=$(for r in $(seq 1 "$RUNS"); do echo "RUN echo hello $r > /one$r"; done)
  ctx "run-$N" "FROM $REG/bench/base:$N
$steps"
  for snap in overlay native; do
    as_user "$W/kiln" build --snapshotter $snap "$W/ctx/run-$N" >"$W/warm-$N-$snap.log" 2>&1 \
      || { cat "$W/warm-$N-$snap.log"; exit 1; }
    times=(); steps=()
    for i in $(seq 1 "$REPS"); do
      s=$(date +%s.%N)
      as_user "$W/kiln" build "${NOCACHE[@]}" "${JSON[@]}" --snapshotter $snap --output "type=oci,dest=$W/out-$N-$snap-$i" "$W/ctx/run-$N" \
        >"$W/run-$N-$snap-$i.log" 2>&1 || { cat "$W/run-$N-$snap-$i.log"; exit 1; }
      e=$(date +%s.%N)
      times+=("$(echo "$e - $s" | bc)")
      steps+=("$(step_ms "$W/run-$N-$snap-$i.log")")
      rm -rf "$W/out-$N-$snap-$i"
    done
    mid=$(( (REPS + 1) / 2 ))
    med=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "${mid}p")
    smed=$(printf '%s\n' "${steps[@]}" | sort -n | sed -n "${mid}p")
    printf '%-8s %-9s %10s %10.2f   %s\n' "$N" "$snap" "$smed" "$med" "${steps[*]}"
  done
done
