#!/bin/bash
# Conformance: build every testdata/cases/* with kiln and with Buildah 1.28
# (`buildah bud --layers --isolation chroot`, vfs storage, rootless as the
# build user) and compare the two images with `kiln diff` (as the build user),
# ignoring Buildah 1.28's known artifacts. Slow (minutes); not part of the
# normal suite.
#
#   sudo testdata/conformance.sh [CASE...]       (as root: builds run as kilntest)
#   testdata/conformance.sh [CASE...]            (as the build user itself)
#
# Skipped: cases whose expect.json has "fail" (an expected build failure) or
# "conformance": "skip: REASON". Prints a summary table; the differences of
# each case are in $OUT/NAME.diff (OUT defaults to /tmp/kiln-conformance).
# Differences explained by Buildah-only behaviour are listed in
# testdata/KNOWN_DIFFERENCES.md. Environment: KILN_BIN, KILN_TEST_USER,
# CONFORMANCE_JOBS (parallel cases, default 2), CONFORMANCE_PORT (registry
# port, default a free one).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
KILN=${KILN_BIN:-$REPO/target/debug/kiln}
PORT=${CONFORMANCE_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
JOBS=${CONFORMANCE_JOBS:-2}
OUT=${OUT:-/tmp/kiln-conformance}
die() { echo "conformance: ERROR: $*" >&2; exit 2; }
[ -x "$KILN" ] || die "no kiln binary at $KILN (cargo build -p kiln-builder)"
command -v buildah >/dev/null || die "buildah not installed (scripts/setup.sh)"

if [ "$(id -u)" = 0 ]; then
  BUSER=${KILN_TEST_USER:-kilntest}
  id "$BUSER" >/dev/null 2>&1 || die "no user $BUSER (scripts/setup.sh)"
  AS=(setpriv --reuid="$(id -u "$BUSER")" --regid="$(id -g "$BUSER")" --init-groups --)
else
  BUSER=$(id -un); AS=()
fi

rm -rf "$OUT"; mkdir -p "$OUT"/{ctx,home,run,kiln-root,buildah/root,buildah/runroot,res}
chmod 0700 "$OUT/run"; chmod 755 "$OUT"
[ "$(id -u)" = 0 ] && chown -R "$BUSER:" "$OUT"

REGDIR=$OUT/registry
export KILN_REGISTRY_DIR=$REGDIR
"$REPO/scripts/registry.sh" start "$PORT" >/dev/null || die "registry did not start"
trap '"$REPO/scripts/registry.sh" stop "$PORT" >/dev/null 2>&1' EXIT
REG=127.0.0.1:$PORT
"$HERE/scripts/seed-registry.sh" "$REG" >/dev/null || die "seeding $REG failed"

if [ $# -gt 0 ]; then CASES=("$@"); else
  mapfile -t CASES < <(cd "$HERE/cases" && ls -d */ | tr -d /)
fi

# Extra build flags of a case, one per line: -f, --build-arg, --target, --label, --secret.
case_flags() { # CASE CTX
  python3 - "$HERE/cases/$1/expect.json" "$2" <<'EOF'
import json, sys, os
e = json.load(open(sys.argv[1])); ctx = sys.argv[2]
out = []
if e.get("dockerfile"): out += ["-f", os.path.join(ctx, e["dockerfile"])]
for k, v in e.get("args", {}).items(): out += ["--build-arg", f"{k}={v}"]
if e.get("target"): out += ["--target", e["target"]]
for k, v in e.get("labels", {}).items(): out += ["--label", f"{k}={v}"]
for k, v in e.get("secrets", {}).items(): out += ["--secret", f"id={k},src={os.path.join(ctx, v)}"]
print("\n".join(out))
EOF
}

skip_reason() { # CASE -> reason or empty
  python3 - "$HERE/cases/$1/expect.json" <<'EOF'
import json, sys
try: e = json.load(open(sys.argv[1]))
except FileNotFoundError: print("no expect.json"); sys.exit()
if "fail" in e: print("expected build failure")
elif str(e.get("conformance", "")).startswith("skip"): print(e["conformance"][5:].strip())
EOF
}

run_case() { # CASE
  local c=$1 ctx=$OUT/ctx/$1 res=$OUT/res/$1 flags reason
  reason=$(skip_reason "$c")
  if [ -n "$reason" ]; then echo "skip|$reason" >"$res"; return; fi
  cp -a "$HERE/cases/$c" "$ctx"
  for f in "$ctx"/Dockerfile* "$ctx"/*.Dockerfile; do
    [ -f "$f" ] && sed -i "s/127\.0\.0\.1:5000/$REG/g" "$f"
  done
  [ "$(id -u)" = 0 ] && chown -R "$BUSER:" "$ctx"
  mapfile -t flags < <(case_flags "$c" "$ctx" | sed "/^$/d")
  local envs=(env HOME="$OUT/home" XDG_RUNTIME_DIR="$OUT/run" KILN_ROOT="$OUT/kiln-root"
              PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
  local k=ok b=ok cmp
  "${AS[@]}" "${envs[@]}" "$KILN" build "${flags[@]}" -t "$REG/conf/$c:kiln" --push "$ctx" \
    >"$OUT/$c.kiln.log" 2>&1 || k=FAIL
  "${AS[@]}" "${envs[@]}" buildah --root "$OUT/buildah/root" --runroot "$OUT/buildah/runroot" \
    --storage-driver vfs bud --isolation chroot --layers --tls-verify=false "${flags[@]}" \
    -t "localhost/conf-$c" "$ctx" >"$OUT/$c.buildah.log" 2>&1 &&
  "${AS[@]}" "${envs[@]}" buildah --root "$OUT/buildah/root" --runroot "$OUT/buildah/runroot" \
    --storage-driver vfs push --tls-verify=false "localhost/conf-$c" "docker://$REG/conf/$c:buildah" \
    >>"$OUT/$c.buildah.log" 2>&1 || b=FAIL
  if [ $k = ok ] && [ $b = ok ]; then
    "${AS[@]}" "${envs[@]}" "$KILN" diff --ignore-path /etc/hosts --ignore-path /etc/hostname \
        --ignore-path /etc/resolv.conf --ignore-path /run \
        --ignore-xattr user.overlay. --ignore-label io.buildah.version \
        "$REG/conf/$c:kiln" "$REG/conf/$c:buildah" >"$OUT/$c.diff" 2>&1
    case $? in 0) cmp=same ;; 1) cmp=DIFFER ;; *) cmp=ERROR ;; esac
  else
    cmp=-
  fi
  echo "$k|$b|$cmp" >"$res"
}
export -f run_case case_flags skip_reason
export HERE OUT REG KILN BUSER
export AS_STR="${AS[*]}"

# xargs needs the array: rebuild it in each worker from AS_STR.
printf '%s\n' "${CASES[@]}" | xargs -P "$JOBS" -I{} bash -c 'read -ra AS <<<"$AS_STR"; run_case "$1"' _ {}

printf '\n%-26s %-6s %-8s %s\n' CASE KILN BUILDAH COMPARISON
n_same=0 n_diff=0 n_skip=0 n_fail=0
for c in "${CASES[@]}"; do
  r=$(cat "$OUT/res/$c" 2>/dev/null || echo "FAIL|FAIL|-")
  IFS='|' read -r k b cmp <<<"$r"
  if [ "$k" = skip ]; then
    printf '%-26s %s\n' "$c" "skipped: $b"; n_skip=$((n_skip+1)); continue
  fi
  detail=""
  [ "$cmp" = DIFFER ] && detail=" ($(grep -c '^[-+~] ' "$OUT/$c.diff") differences in $OUT/$c.diff)"
  [ "$cmp" = ERROR ] && detail=" (kiln diff failed: $OUT/$c.diff)"
  printf '%-26s %-6s %-8s %s%s\n' "$c" "$k" "$b" "$cmp" "$detail"
  case $cmp in same) n_same=$((n_same+1)) ;; DIFFER) n_diff=$((n_diff+1)) ;; *) n_fail=$((n_fail+1)) ;; esac
done
echo
echo "$n_same same, $n_diff differ, $n_fail not compared (a build or kiln diff failed), $n_skip skipped; logs in $OUT"
[ $n_diff = 0 ] && [ $n_fail = 0 ]
