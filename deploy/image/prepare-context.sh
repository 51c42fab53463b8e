#!/bin/sh
# Gather the build context of kiln's own images:
#
#   deploy/image/prepare-context.sh OUTDIR [KILN_BINARY]
#   kiln build -t REGISTRY/kiln:VERSION --push OUTDIR                   # FROM scratch
#   kiln build -f OUTDIR/Dockerfile.debug -t REGISTRY/kiln:debug --push OUTDIR   # + busybox sh
#   kiln build -f OUTDIR/Dockerfile.kaniko --target kaniko -t REGISTRY/kiln:kaniko --push OUTDIR
#   kiln build -f OUTDIR/Dockerfile.kaniko --target kaniko-debug -t REGISTRY/kiln:kaniko-debug --push OUTDIR
#
# OUTDIR gets:
#   Dockerfile, Dockerfile.debug, Dockerfile.kaniko   copies of the ones next to this script
#   rootfs/usr/local/bin/kiln          the binary (0755; debug info stripped unless KILN_STRIP=0)
#   rootfs/<lib dirs>/...              every shared library `ldd` lists, and the dynamic loader
#   rootfs/etc/ssl/certs/ca-certificates.crt
#   rootfs/etc/passwd, rootfs/etc/group   root, nobody and kiln (uid/gid 1000)
#   rootfs/tmp                         1777
#   home/kiln/.local/share/kiln, home/kiln/.docker   copied with --chown=1000:1000
#   kaniko-rootfs/                     the Kaniko-shaped image (Dockerfile.kaniko): the same
#                                      libraries, passwd, group and /tmp, and
#     kaniko/executor                  the binary (kiln acts as `kiln executor` by that name)
#     kaniko/ssl/certs/ca-certificates.crt   where Kaniko's SSL_CERT_DIR points
#     kaniko, kaniko/.docker           0777 (Kaniko: "to allow non root run")
#     kaniko/warmer                    a symlink to it (kiln acts as `kiln warmer` by that name)
#     usr/local/bin/kiln               a symlink to /kaniko/executor
#     etc/nsswitch.conf                Kaniko's (hosts: files dns)
#   kaniko-debug/bin/sh                a symlink to /busybox/sh, as in Kaniko's :debug
#
# KILN_BINARY defaults to target/release/kiln, else target/debug/kiln, of this repository.
# CA_BUNDLE overrides /etc/ssl/certs/ca-certificates.crt. Runs as any user; OUTDIR must
# not exist or be empty.
set -eu
die() { echo "prepare-context: $*" >&2; exit 1; }
[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 OUTDIR [KILN_BINARY]"
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=$1
BIN=${2:-}
if [ -z "$BIN" ]; then
  if [ -x "$REPO/target/release/kiln" ]; then BIN=$REPO/target/release/kiln
  elif [ -x "$REPO/target/debug/kiln" ]; then BIN=$REPO/target/debug/kiln
  else die "no kiln binary: build it (cargo build --release -p kiln-builder) or pass its path"; fi
fi
[ -x "$BIN" ] || die "$BIN is not an executable"
CA=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[ -f "$CA" ] || die "$CA not found (Debian: apt-get install ca-certificates)"
command -v ldd >/dev/null || die "ldd not found (Debian: libc-bin)"
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then die "$OUT exists and is not empty"; fi

# What both image shapes share: libraries and loader, accounts, a world-writable /tmp.
common_rootfs() {
  D=$1
  mkdir -p "$D/etc" "$D/tmp"
  chmod 1777 "$D/tmp"
  # Shared libraries and the loader, at the paths the binary asks for. `ldd` prints
  #   libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)   and   /lib64/ld-linux-x86-64.so.2 (0x…)
  # A statically linked binary gives "not a dynamic executable": nothing to copy.
  ldd "$BIN" 2>/dev/null | while read -r a b c _; do
    case "$b" in
      "=>") lib=$c ;;
      *) lib=$a ;;
    esac
    case "$lib" in
      /*) ;;
      *) continue ;;   # linux-vdso.so.1 and friends live in the kernel
    esac
    [ -f "$lib" ] || die "ldd names $lib, which does not exist"
    mkdir -p "$D$(dirname "$lib")"
    cp -L "$lib" "$D$lib"   # -L: the file, not the distribution's symlink to it
    chmod 0755 "$D$lib"
  done
  cat > "$D/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
kiln:x:1000:1000:kiln:/home/kiln:/sbin/nologin
PASSWD
  cat > "$D/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
kiln:x:1000:
GROUP
  chmod 0644 "$D/etc/passwd" "$D/etc/group"
}

R=$OUT/rootfs
common_rootfs "$R"
mkdir -p "$R/usr/local/bin" "$R/etc/ssl/certs" "$OUT/home/kiln/.local/share/kiln" "$OUT/home/kiln/.docker"
chmod 0755 "$OUT/home/kiln"
chmod 0700 "$OUT/home/kiln/.docker"

cp "$BIN" "$R/usr/local/bin/kiln"
if [ "${KILN_STRIP:-1}" != 0 ] && command -v strip >/dev/null; then
  strip --strip-debug "$R/usr/local/bin/kiln"
fi
chmod 0755 "$R/usr/local/bin/kiln"
cp -L "$CA" "$R/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$R/etc/ssl/certs/ca-certificates.crt"

# Kaniko's layout (its deploy/Dockerfile): everything under /kaniko, the CA bundle in
# SSL_CERT_DIR (rustls reads every file there, so GitLab's documented
# `>> /kaniko/ssl/certs/additional-ca-cert-bundle.crt` adds a CA as with Kaniko).
K=$OUT/kaniko-rootfs
common_rootfs "$K"
mkdir -p "$K/kaniko/.docker" "$K/kaniko/ssl/certs" "$K/usr/local/bin"
cp "$R/usr/local/bin/kiln" "$K/kaniko/executor"
chmod 0755 "$K/kaniko/executor"
ln -s /kaniko/executor "$K/usr/local/bin/kiln"
# Kaniko's warmer image runs /kaniko/warmer: by that name kiln is `kiln warmer`.
ln -s executor "$K/kaniko/warmer"
cp "$R/etc/ssl/certs/ca-certificates.crt" "$K/kaniko/ssl/certs/ca-certificates.crt"
# Kaniko makes /kaniko 0777 so that a non-root run can write there (kiln keeps
# KILN_ROOT in it); .docker too, so that a job running as any uid can write
# config.json (Kaniko's is root's 0755).
chmod 0777 "$K/kaniko" "$K/kaniko/.docker"
chmod 0755 "$K/kaniko/ssl" "$K/kaniko/ssl/certs"
echo "hosts: files dns" > "$K/etc/nsswitch.conf"
chmod 0644 "$K/etc/nsswitch.conf"
mkdir -p "$OUT/kaniko-debug/bin"
ln -s /busybox/sh "$OUT/kaniko-debug/bin/sh"

cp "$HERE/Dockerfile" "$HERE/Dockerfile.debug" "$HERE/Dockerfile.kaniko" "$OUT/"
# A .dockerignore is not needed: the context is exactly what the image holds.
echo "prepare-context: $OUT ready ($(du -sh "$OUT" | cut -f1)); kiln $("$BIN" --version 2>/dev/null | cut -d' ' -f2)"
