#!/bin/bash
# Push kiln's busybox base images to a registry (plain HTTP):
#   REGISTRY/base/busybox:latest   linux/amd64
#   REGISTRY/base/busybox:arm64    linux/arm64/v8
#   REGISTRY/base/busybox:multi    an OCI image index with both
# and with --debian also
#   REGISTRY/base/debian:bookworm  linux/amd64, mmdebstrap minbase (testdata/projects)
#
#   seed-registry.sh [--debian] REGISTRY_HOSTPORT   e.g. 127.0.0.1:5000
#   seed-registry.sh --prepare [--debian]           only build the cached layouts
#
# The layouts are built once with make-busybox-image.sh and kept in
# $KILN_TESTDATA_CACHE (default /var/tmp/kiln-testdata); they are rebuilt when
# the .debs, SOURCE_DATE_EPOCH or the scripts change. Building needs root;
# reusing does not. Safe to run concurrently (flock). Idempotent: pushing the
# same bytes again gives the same digests. KILN_SEED_CREDS=USER:PASSWORD for a
# registry with auth.
# The Debian layout (make-debian-image.sh, about 2 minutes and network access
# to deb.debian.org) has its own key and lock, so busybox seeding never waits
# for it; it is kept until its inputs change, because the archive moves on.
set -euo pipefail
die() { echo "seed-registry: ERROR: $*" >&2; exit 1; }
DEBIAN=0 REG=
for a in "$@"; do
  case $a in
    --debian) DEBIAN=1 ;;
    -*) [ "$a" = --prepare ] && [ -z "$REG" ] || die "usage: $0 [--debian] REGISTRY_HOSTPORT | --prepare [--debian]"; REG=$a ;;
    *) [ -z "$REG" ] || die "usage: $0 [--debian] REGISTRY_HOSTPORT | --prepare [--debian]"; REG=$a ;;
  esac
done
[ -n "$REG" ] || die "usage: $0 [--debian] REGISTRY_HOSTPORT | --prepare [--debian]"
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${KILN_TESTDATA_CACHE:-/var/tmp/kiln-testdata}
DEB_CACHE=${KILN_DEB_CACHE:-/var/cache/kiln-testdata/debs}
for t in skopeo python3 flock sha256sum; do
  command -v $t >/dev/null || die "$t not found: run scripts/setup.sh"
done
PY=/usr/bin/python3; [ -x $PY ] || PY=python3

mkdir -p "$CACHE" 2>/dev/null || true
[ -d "$CACHE" ] || die "cannot create $CACHE"
# Key of the cached layouts: inputs that change the bytes.
KEY=$( { echo "epoch=${SOURCE_DATE_EPOCH:-1700000000}"
         ls -l --time-style=+%s "$DEB_CACHE"/busybox-static_*.deb 2>/dev/null || true
         dpkg-query -W -f='${Version}\n' busybox-static 2>/dev/null || true
         cat "$HERE/make-busybox-image.sh" "$0"; } | sha256sum | cut -c1-16)
L=$CACHE/busybox-$KEY

build_layouts() {
  if [ -f "$L/done" ]; then return; fi
  [ "$(id -u)" = 0 ] || die "base layouts not built yet and building needs root: run this once as root (or scripts/setup.sh)"
  echo "seed-registry: building base layouts in $L"
  rm -rf "$L"; mkdir -p "$L"
  "$HERE/make-busybox-image.sh" amd64 "$L/amd64"
  "$HERE/make-busybox-image.sh" arm64 "$L/arm64"
  # The multi-arch layout: index.json -> image index blob -> two manifests.
  $PY - "$L/amd64" "$L/arm64" "$L/multi" <<'PYEOF'
import hashlib, json, os, shutil, sys
srcs, out = sys.argv[1:3], sys.argv[3]
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs)
manifests = []
for src in srcs:
    for name in os.listdir(os.path.join(src, "blobs", "sha256")):
        shutil.copyfile(os.path.join(src, "blobs", "sha256", name), os.path.join(blobs, name))
    desc = dict(json.load(open(os.path.join(src, "index.json")))["manifests"][0])
    desc.pop("annotations", None)
    manifests.append(desc)
dump = lambda o: json.dumps(o, separators=(",", ":"), sort_keys=True).encode()
index = dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
              "manifests": manifests})
digest = "sha256:" + hashlib.sha256(index).hexdigest()
open(os.path.join(blobs, digest[7:]), "wb").write(index)
top = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
       "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest,
                      "size": len(index),
                      "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}
open(os.path.join(out, "index.json"), "wb").write(dump(top))
open(os.path.join(out, "oci-layout"), "wb").write(dump({"imageLayoutVersion": "1.0.0"}))
print("seed-registry: multi index", digest)
PYEOF
  chmod -R a+rX "$L"
  touch "$L/done"
  # drop layouts made from older inputs (unused for an hour)
  find "$CACHE" -maxdepth 1 -name 'busybox-*' ! -path "$L" -mmin +60 -exec rm -rf {} + 2>/dev/null || true
}

exec 9>"$CACHE/.lock"
flock 9
build_layouts
flock -u 9

# The Debian layout: keyed by what changes its bytes (not by this script).
DKEY=$( { echo "epoch=${SOURCE_DATE_EPOCH:-1700000000} mirror=${KILN_DEBIAN_MIRROR:-}"
          cat "$HERE/make-debian-image.sh"; } | sha256sum | cut -c1-16)
D=$CACHE/debian-$DKEY
if [ "$DEBIAN" = 1 ]; then
  exec 8>"$CACHE/.lock-debian"
  flock 8
  if [ ! -f "$D/done" ]; then
    [ "$(id -u)" = 0 ] || die "Debian base layout not built yet and building needs root: run '$0 --prepare --debian' once as root"
    echo "seed-registry: building the Debian base layout in $D (mmdebstrap, about 2 minutes)"
    rm -rf "$D"; mkdir -p "$D"
    "$HERE/make-debian-image.sh" "$D/amd64"
    chmod -R a+rX "$D"
    touch "$D/done"
    find "$CACHE" -maxdepth 1 -name 'debian-*' ! -path "$D" -mmin +60 -exec rm -rf {} + 2>/dev/null || true
  fi
  flock -u 8
fi

if [ "$REG" = --prepare ]; then
  echo "seed-registry: layouts ready in $L$([ "$DEBIAN" = 1 ] && echo " and $D")"
  exit 0
fi

push() { # SRC DEST [extra]
  local src=$1 dest=$2; shift 2
  echo "seed-registry: push $src -> docker://$REG/$dest"
  skopeo copy --quiet --dest-tls-verify=false --preserve-digests \
    ${KILN_SEED_CREDS:+--dest-creds "$KILN_SEED_CREDS"} "$@" "oci:$src" "docker://$REG/$dest" ||
    die "skopeo copy $src -> $REG/$dest failed (is the registry up? scripts/registry.sh start)"
}
push "$L/amd64:latest" base/busybox:latest
push "$L/arm64:latest" base/busybox:arm64
push "$L/multi:multi" base/busybox:multi --all
if [ "$DEBIAN" = 1 ]; then
  push "$D/amd64:bookworm" base/debian:bookworm
fi
echo "seed-registry: done ($REG/base/busybox:{latest,arm64,multi}$([ "$DEBIAN" = 1 ] && echo ", base/debian:bookworm"), layouts in $L)"
