#!/bin/bash
# A stand-in for `kiln build` made of Buildah, to check the test harness
# itself while kiln is being written:
#
#   KILN_BIN=$PWD/integration/tools/buildah-kiln.sh cargo test -p kiln-integration --test e2e_hello
#
# Implements just the CLI contract the e2e tests use:
#   build [-t REF]... [--push] [--output type=oci,dest=DIR] [-f FILE] [--build-arg K=V]... CONTEXT
# Storage lives in $KILN_ROOT (vfs). Expected differences from kiln: Buildah
# adds /etc/hosts, /etc/hostname, /etc/resolv.conf, /run to RUN layers and an
# io.buildah.version label, and its error messages differ — so the
# hello/bad-syntax/failing-run expectations fail against it on those points.
set -euo pipefail
[ "${1:-}" = build ] || { echo "usage: $0 build [options] CONTEXT" >&2; exit 2; }
shift
ROOT=${KILN_ROOT:-$HOME/.local/share/kiln}
B=(buildah --root "$ROOT/root" --runroot "$ROOT/runroot" --storage-driver vfs)
TAGS=() PUSH=0 OUT="" BUD=()
while [ $# -gt 1 ]; do
  case $1 in
    -t) TAGS+=("$2"); shift 2 ;;
    --push) PUSH=1; shift ;;
    --output) OUT=$2; shift 2 ;;
    -f) BUD+=(-f "$2"); shift 2 ;;
    --build-arg) BUD+=(--build-arg "$2"); shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
CTX=$1
IMG=localhost/kiln-fake-$$
"${B[@]}" bud --isolation chroot --layers --tls-verify=false "${BUD[@]}" -t "$IMG" "$CTX"
for t in "${TAGS[@]}"; do
  if [ "$PUSH" = 1 ]; then
    "${B[@]}" push --tls-verify=false "$IMG" "docker://$t"
  fi
done
if [ -n "$OUT" ]; then
  dest=${OUT#*dest=}; dest=${dest%%,*}
  "${B[@]}" push "$IMG" "oci:$dest:latest"
fi
