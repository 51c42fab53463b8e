#!/bin/bash
# Build a one-layer busybox base image as an OCI image layout (tag `latest`)
# from Debian's busybox-static package. Run as root (file ownership in the
# layer is set with chown on a temporary rootfs).
#
#   make-busybox-image.sh ARCH OUTDIR        ARCH: amd64 | arm64 (Debian names)
#
# The busybox binary comes from busybox-static_*_ARCH.deb in $KILN_DEB_CACHE
# (default /var/cache/kiln-testdata/debs; scripts/setup.sh downloads it), and
# for the host architecture falls back to the installed /bin/busybox.
# Reproducible: same package + same SOURCE_DATE_EPOCH (default 1700000000)
# give bit-identical blobs, so identical manifest/index digests.
# OUTDIR is replaced atomically (built next to it, then renamed).
#
# The rootfs: /bin/busybox, applet symlinks (-> /bin/busybox) where
# `busybox --list-full` puts them, /etc/passwd and /etc/group (Docker Hub
# busybox's accounts: root, daemon, ..., wheel 10 with root; plus app 1000), /tmp 1777, /root 0700, /home/app owned 1000:1000,
# and empty /dev /proc /sys.
set -euo pipefail

die() { echo "make-busybox-image: ERROR: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: $0 ARCH OUTDIR"
ARCH=$1 OUT=$2
case $ARCH in
  amd64) OCI_ARCH=amd64 ;;
  arm64) OCI_ARCH=arm64 ;;
  *) die "unsupported ARCH $ARCH (amd64|arm64)" ;;
esac
[ "$(id -u)" = 0 ] || die "must run as root (run scripts/setup.sh first, then run this as root)"
for t in dpkg-deb tar gzip sha256sum python3; do
  command -v $t >/dev/null || die "$t not found: run scripts/setup.sh"
done
PY=/usr/bin/python3; [ -x $PY ] || PY=python3

EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
DEB_CACHE=${KILN_DEB_CACHE:-/var/cache/kiln-testdata/debs}
HOST_ARCH=$(dpkg --print-architecture)

W=$(mktemp -d "${TMPDIR:-/tmp}/kiln-busybox-$ARCH.XXXXXX")
trap 'rm -rf "$W"' EXIT
R=$W/rootfs
mkdir -p "$R"

# ----------------------------------------------------------- the busybox binary
DEB=$(ls "$DEB_CACHE"/busybox-static_*_"$ARCH".deb 2>/dev/null | sort | tail -1 || true)
if [ -z "$DEB" ] && [ "$ARCH" != "$HOST_ARCH" ]; then
  # Try to fetch it (root, apt lists with the foreign arch present).
  mkdir -p "$DEB_CACHE"
  (cd "$DEB_CACHE" && apt-get download -q -o APT::Sandbox::User=root "busybox-static:$ARCH" >&2) ||
    die "no busybox-static .deb for $ARCH in $DEB_CACHE: run scripts/setup.sh"
  DEB=$(ls "$DEB_CACHE"/busybox-static_*_"$ARCH".deb | sort | tail -1)
fi
mkdir -p "$R/bin"
if [ -n "$DEB" ]; then
  dpkg-deb -x "$DEB" "$W/deb"
  BB_SRC=$W/deb/bin/busybox
  VERSION=$(dpkg-deb -f "$DEB" Version)
else
  BB_SRC=/bin/busybox
  VERSION=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo unknown)
fi
[ -f "$BB_SRC" ] || die "no busybox binary at $BB_SRC"
install -m 0755 "$BB_SRC" "$R/bin/busybox"

# Applet list: from the target binary (works for arm64 through binfmt/qemu),
# else from the host busybox (same Debian package version, same applets).
LIST=$("$R/bin/busybox" --list-full 2>/dev/null || true)
if [ -z "$LIST" ]; then
  [ -x /bin/busybox ] || die "cannot run $ARCH busybox and no host /bin/busybox for the applet list"
  LIST=$(/bin/busybox --list-full)
fi

# ----------------------------------------------------------- the rootfs
mkdir -p "$R"/{sbin,usr/bin,usr/sbin,etc,dev,proc,sys,tmp,root,home/app}
while IFS= read -r p; do
  [ -n "$p" ] || continue
  [ "$p" = bin/busybox ] && continue
  mkdir -p "$R/$(dirname "$p")"
  ln -sfn /bin/busybox "$R/$p"
done <<<"$LIST"

# The accounts of Docker Hub's busybox image (BuildKit's tests name daemon, wheel,
# www-data, ...), plus kiln's own test user app (1000).
cat >"$R/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$R/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
app:x:1000:
nobody:x:65534:
EOF

chown -R 0:0 "$R"
find "$R" -type d -exec chmod 0755 {} +
chmod 0644 "$R/etc/passwd" "$R/etc/group"
chmod 1777 "$R/tmp"
chmod 0700 "$R/root"
chown 1000:1000 "$R/home/app"

# ----------------------------------------------------------- the layer
(cd "$R" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) >"$W/files"
tar -C "$R" --no-recursion -T "$W/files" \
    --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --numeric-owner --mtime="@$EPOCH" -cf "$W/layer.tar"
gzip -n -9 <"$W/layer.tar" >"$W/layer.tar.gz"

# ----------------------------------------------------------- the layout
mkdir -p "$(dirname "$OUT")"
NEW=$(mktemp -d "$(dirname "$OUT")/.$(basename "$OUT").new.XXXXXX")
EPOCH=$EPOCH OCI_ARCH=$OCI_ARCH VERSION=$VERSION ENTRIES=$(wc -l <"$W/files") \
  $PY - "$W/layer.tar" "$W/layer.tar.gz" "$NEW" <<'PYEOF'
import hashlib, json, os, sys, datetime, shutil
tar_path, gz_path, out = sys.argv[1:4]
epoch = int(os.environ["EPOCH"]); arch = os.environ["OCI_ARCH"]
created = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()

blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs)
def put(data: bytes):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d[7:]), "wb") as f:
        f.write(data)
    return d, len(data)
def dump(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()

diff_id = sha(tar_path)
layer_digest = sha(gz_path)
shutil.copyfile(gz_path, os.path.join(blobs, layer_digest[7:]))
layer_size = os.path.getsize(gz_path)

config = {
    "created": created,
    "architecture": arch,
    "os": "linux",
    "config": {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["sh"],
    },
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    "history": [{
        "created": created,
        "created_by": "make-busybox-image.sh: busybox-static %s (%s), %s entries" % (
            os.environ["VERSION"], arch, os.environ["ENTRIES"].strip()),
        "comment": "kiln testdata base image",
    }],
}
if arch == "arm64":
    config["variant"] = "v8"
cfg_digest, cfg_size = put(dump(config))
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": cfg_digest, "size": cfg_size},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest, "size": layer_size}],
}
m_digest, m_size = put(dump(manifest))
platform = {"architecture": arch, "os": "linux"}
if arch == "arm64":
    platform["variant"] = "v8"
index = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "digest": m_digest, "size": m_size, "platform": platform,
                   "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
}
with open(os.path.join(out, "index.json"), "wb") as f:
    f.write(dump(index))
with open(os.path.join(out, "oci-layout"), "wb") as f:
    f.write(dump({"imageLayoutVersion": "1.0.0"}))
print("make-busybox-image: %s busybox %s: manifest %s layer %s (%s entries)" % (
    arch, os.environ["VERSION"], m_digest, layer_digest, os.environ["ENTRIES"].strip()))
PYEOF
chmod -R a+rX "$NEW"
rm -rf "$OUT.old"
[ -e "$OUT" ] && mv "$OUT" "$OUT.old"
mv "$NEW" "$OUT"
rm -rf "$OUT.old"
