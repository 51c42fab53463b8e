#!/bin/bash
# Build a one-layer Debian bookworm base image (linux/amd64) as an OCI image
# layout (tag `bookworm`) with mmdebstrap, for the real-project tests
# (testdata/projects). Run as root: mmdebstrap's root mode sets file owners.
#
#   make-debian-image.sh OUTDIR
#
# The rootfs is `mmdebstrap --variant=minbase` with merged /usr (88 packages,
# about 121 MB) and apt sources for bookworm, bookworm-updates and
# bookworm-security on deb.debian.org over plain HTTP, so RUN steps can
# apt-get install. Like Docker Hub's debian image it carries no apt lists, no
# package caches, no logs and an empty /dev (device nodes cannot be made by
# a rootless builder anyway).
# With the same archive state and SOURCE_DATE_EPOCH (default 1700000000) the
# blobs are bit-identical; the archive moves on, so the layout is cached by
# seed-registry.sh rather than rebuilt.
# OUTDIR is replaced atomically (built next to it, then renamed).
set -euo pipefail

die() { echo "make-debian-image: ERROR: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: $0 OUTDIR"
OUT=$1
[ "$(id -u)" = 0 ] || die "must run as root"
for t in mmdebstrap tar gzip sha256sum python3; do
  command -v $t >/dev/null || die "$t not found: run scripts/setup.sh"
done
HOOKS=/usr/share/mmdebstrap/hooks/merged-usr
[ -d "$HOOKS" ] || die "$HOOKS missing (mmdebstrap too old?)"
PY=/usr/bin/python3; [ -x $PY ] || PY=python3

EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
MIRROR=${KILN_DEBIAN_MIRROR:-http://deb.debian.org}

W=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-debian.XXXXXX")
trap 'rm -rf "$W"' EXIT
R=$W/rootfs

# ----------------------------------------------------------- the rootfs
# The host's apt configuration (proxies, snapshot pins) must not leak in;
# the sources are given explicitly so security updates are reachable too.
SOURCE_DATE_EPOCH=$EPOCH mmdebstrap --mode=root --variant=minbase --arch=amd64 \
  --hook-dir="$HOOKS" --format=directory \
  --aptopt='Acquire::Languages "none"' \
  bookworm "$R" \
  "deb $MIRROR/debian bookworm main" \
  "deb $MIRROR/debian bookworm-updates main" \
  "deb $MIRROR/debian-security bookworm-security main" >&2 ||
  die "mmdebstrap failed (is $MIRROR reachable?)"

# What Docker Hub's debian image leaves out: state of this one bootstrap.
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/* "$R"/var/cache/ldconfig/aux-cache \
       "$R"/var/log/* "$R"/dev/* "$R"/tmp/* "$R"/etc/apt/apt.conf.d/99mmdebstrap \
       "$R"/etc/hostname "$R"/etc/resolv.conf
mkdir -p "$R"/var/lib/apt/lists/partial "$R"/var/cache/apt/archives/partial
: >"$R/etc/machine-id"
chmod 1777 "$R/tmp"
PKGS=$(chroot "$R" dpkg-query -W -f='.\n' | wc -l)
VERSION=$(cat "$R/etc/debian_version")

# ----------------------------------------------------------- the layer
(cd "$R" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) >"$W/files"
tar -C "$R" --no-recursion -T "$W/files" \
    --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --numeric-owner --mtime="@$EPOCH" -cf "$W/layer.tar"
gzip -n -6 <"$W/layer.tar" >"$W/layer.tar.gz"

# ----------------------------------------------------------- the layout
mkdir -p "$(dirname "$OUT")"
NEW=$(mktemp -d "$(dirname "$OUT")/.$(basename "$OUT").new.XXXXXX")
EPOCH=$EPOCH VERSION=$VERSION PKGS=$PKGS ENTRIES=$(wc -l <"$W/files") \
  $PY - "$W/layer.tar" "$W/layer.tar.gz" "$NEW" <<'PYEOF'
import datetime, hashlib, json, os, shutil, sys
tar_path, gz_path, out = sys.argv[1:4]
epoch = int(os.environ["EPOCH"])
created = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()

blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs)
def put(data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d[7:]), "wb") as f:
        f.write(data)
    return d, len(data)
dump = lambda o: json.dumps(o, separators=(",", ":"), sort_keys=True).encode()

diff_id = sha(tar_path)
layer_digest = sha(gz_path)
shutil.copyfile(gz_path, os.path.join(blobs, layer_digest[7:]))
config = {
    "created": created, "architecture": "amd64", "os": "linux",
    "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
               "Cmd": ["bash"]},
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    "history": [{"created": created,
                 "created_by": "make-debian-image.sh: mmdebstrap minbase bookworm (Debian %s, %s packages, %s entries)"
                               % (os.environ["VERSION"], os.environ["PKGS"].strip(), os.environ["ENTRIES"].strip()),
                 "comment": "kiln testdata base image"}],
}
cfg_digest, cfg_size = put(dump(config))
manifest = {
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_size},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest,
                "size": os.path.getsize(gz_path)}],
}
m_digest, m_size = put(dump(manifest))
index = {
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m_digest, "size": m_size,
                   "platform": {"architecture": "amd64", "os": "linux"},
                   "annotations": {"org.opencontainers.image.ref.name": "bookworm"}}],
}
with open(os.path.join(out, "index.json"), "wb") as f:
    f.write(dump(index))
with open(os.path.join(out, "oci-layout"), "wb") as f:
    f.write(dump({"imageLayoutVersion": "1.0.0"}))
print("make-debian-image: Debian %s: manifest %s layer %s (%s entries)" % (
    os.environ["VERSION"], m_digest, layer_digest, os.environ["ENTRIES"].strip()))
PYEOF
chmod -R a+rX "$NEW"
rm -rf "$OUT.old"
[ -e "$OUT" ] && mv "$OUT" "$OUT.old"
mv "$NEW" "$OUT"
rm -rf "$OUT.old"
