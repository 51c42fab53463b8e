#!/bin/bash
# README command 1: build the hello example with kiln, rootless, against a
# local registry, and show the result.
#
#   scripts/demo.sh
#
# 1. scripts/setup.sh (as root, or through sudo)
# 2. a registry on 127.0.0.1:5000 (scripts/registry.sh start), seeded with the
#    busybox base images (testdata/scripts/seed-registry.sh)
# 3. as the unprivileged user kilntest:
#      kiln build -t 127.0.0.1:5000/demo/hello:1 --push testdata/cases/hello
#      kiln build --output type=oci,dest=<tmp>/hello-oci testdata/cases/hello
# 4. pulls the image back and prints its files and config.
# The registry keeps running (scripts/registry.sh stop to stop it).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
PORT=5000
REG=127.0.0.1:$PORT
TEST_USER=${KILN_TEST_USER:-kilntest}
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo --preserve-env=CARGO_TARGET_DIR,KILN_SKIP_BUILD "$@"; fi
}
as_kilntest() {
  if [ "$(id -u)" = 0 ]; then
    setpriv --reuid="$TEST_USER" --regid="$TEST_USER" --init-groups -- \
      env HOME="/home/$TEST_USER" USER="$TEST_USER" LOGNAME="$TEST_USER" "$@"
  else
    sudo -u "$TEST_USER" -H -- "$@"
  fi
}

say "setup (scripts/setup.sh)"
if [ "$(id -u)" = 0 ]; then
  scripts/setup.sh
else
  # cargo is usually in the invoking user's PATH, not root's: build as this user.
  sudo env KILN_SKIP_BUILD=1 "$REPO/scripts/setup.sh"
  cargo build -p kiln-builder
fi
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
KILN=${KILN_BIN:-$TARGET/debug/kiln}
[ -x "$KILN" ] || { echo "demo: $KILN missing: run cargo build -p kiln-builder" >&2; exit 1; }

say "registry on $REG"
as_root scripts/registry.sh start "$PORT"

say "base images"
as_root testdata/scripts/seed-registry.sh "$REG"

WORK=$(as_kilntest mktemp -d /tmp/kiln-demo.XXXXXX)

say "kiln build -t $REG/demo/hello:1 --push testdata/cases/hello   (as $TEST_USER)"
as_kilntest "$KILN" build -t "$REG/demo/hello:1" --push testdata/cases/hello

say "kiln build --output type=oci,dest=$WORK/hello-oci testdata/cases/hello   (as $TEST_USER)"
as_kilntest "$KILN" build --output "type=oci,dest=$WORK/hello-oci" testdata/cases/hello
echo "layout: $WORK/hello-oci"; cat "$WORK/hello-oci/index.json"; echo

say "pulled back: $REG/demo/hello:1"
PULL=$(mktemp -d /tmp/kiln-demo-pull.XXXXXX)
trap 'rm -rf "$PULL"' EXIT
skopeo copy --quiet --src-tls-verify=false "docker://$REG/demo/hello:1" "oci:$PULL/img:img"
MANIFEST=$(jq -r '.manifests[0].digest' "$PULL/img/index.json" | cut -d: -f2)
echo "# manifest"; jq . "$PULL/img/blobs/sha256/$MANIFEST"
i=0
for layer in $(jq -r '.layers[].digest' "$PULL/img/blobs/sha256/$MANIFEST" | cut -d: -f2); do
  n=$(tar -tzf "$PULL/img/blobs/sha256/$layer" | wc -l)
  echo "# layer $i sha256:$layer ($n entries)"
  if [ "$n" -gt 40 ]; then
    tar --numeric-owner -tvzf "$PULL/img/blobs/sha256/$layer" | grep -v -- '-> /bin/busybox' | head -40
    echo "   ... (busybox applet symlinks omitted)"
  else
    tar --numeric-owner -tvzf "$PULL/img/blobs/sha256/$layer"
  fi
  i=$((i + 1))
done
echo "# config"
skopeo inspect --tls-verify=false --config "docker://$REG/demo/hello:1" | jq .
say "done (registry still running: scripts/registry.sh stop $PORT)"
