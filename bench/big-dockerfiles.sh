#!/bin/bash
# Dockerfiles with very many instructions (issue 19): planning and building must
# stay linear. On demand, not part of the test suite; run as root after
# scripts/setup.sh (kiln is run as the unprivileged user kilntest, Buildah too).
#
#   bench/big-dockerfiles.sh [WORKDIR]
#
# Cases (generated here): N ENV lines in one stage (FROM scratch, then COPY one
# file); 100,000 mixed instructions (ENV/LABEL/RUN/WORKDIR, plan only); a chain of
# stages each COPY --from the one before. Wall time and peak RSS by GNU time, each
# build on a fresh state directory; Buildah (`buildah bud --layers=false`, vfs)
# builds the same ENV Dockerfiles side by side.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
W=${1:-/var/tmp/kiln-bench-big-df}
U=kilntest
KILN=$REPO/target/release/kiln
command -v /usr/bin/time >/dev/null || apt-get install -y -q time
cargo build -q --release -p kiln-builder --manifest-path "$REPO/Cargo.toml"
rm -rf "$W"; mkdir -p "$W"; chown "$U" "$W"
AS=(setpriv --reuid=$U --regid=$U --init-groups env HOME="$W")
measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "$label|%e s|%M KiB" -o "$W/time.txt" "$@" >/dev/null 2>"$W/err.txt" || { echo "$label|failed: $(tail -1 "$W/err.txt")"; return; }
  cat "$W/time.txt"
}
ctx() { # name, python generating the Dockerfile
  mkdir -p "$W/$1"; echo x > "$W/$1/f"; python3 -c "$2" > "$W/$1/Dockerfile"; chown -R $U "$W/$1"
}
for n in 20000 100000; do
  ctx env$n "print('FROM scratch')
for i in range($n): print(f'ENV V{i}=value{i}')
print('COPY f /f')"
  measure "kiln plan, $n ENV" "${AS[@]}" "$KILN" plan "$W/env$n"
  measure "kiln build, $n ENV" "${AS[@]}" env KILN_ROOT="$W/root-env$n" "$KILN" build --progress quiet -o type=oci,dest="$W/env$n.tar" "$W/env$n"
  measure "buildah bud, $n ENV" timeout 600 "${AS[@]}" buildah --root "$W/bh-root-$n" --runroot "$W/bh-run-$n" --storage-driver vfs bud --layers=false -q "$W/env$n"
done
ctx mix "print('FROM busybox')
for i in range(25000): print(f'ENV V{i}=value{i}\nLABEL l{i}=\$V{i}\nRUN echo \$V{i}\nWORKDIR /w{i}')"
measure "kiln plan, 100000 mixed" "${AS[@]}" "$KILN" plan "$W/mix"
for n in 1000 2000; do
  ctx stages$n "print('FROM scratch AS s0\nCOPY f /f')
for i in range(1,$n): print(f'FROM scratch AS s{i}\nCOPY --from=s{i-1} /f /f')"
  measure "kiln plan, $n chained stages" "${AS[@]}" "$KILN" plan "$W/stages$n"
  measure "kiln build, $n chained stages" "${AS[@]}" env KILN_ROOT="$W/root-st$n" "$KILN" build --progress quiet -o type=oci,dest="$W/st$n.tar" "$W/stages$n"
done
