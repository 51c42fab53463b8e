#!/bin/sh
# Gather the build context of kiln's own image:
#
#   deploy/image/prepare-context.sh OUTDIR [KILN_BINARY]
#   kiln build -t REGISTRY/kiln:VERSION --push OUTDIR                   # FROM scratch
#   kiln build -f OUTDIR/Dockerfile.debug -t REGISTRY/kiln:debug --push OUTDIR   # + busybox sh
#
# OUTDIR gets:
#   Dockerfile, Dockerfile.debug       copies of the ones next to this script
#   rootfs/usr/local/bin/kiln          the binary (0755; debug info stripped unless KILN_STRIP=0)
#   rootfs/<lib dirs>/...              every shared library `ldd` lists, and the dynamic loader
#   rootfs/etc/ssl/certs/ca-certificates.crt
#   rootfs/etc/passwd, rootfs/etc/group   root, nobody and kiln (uid/gid 1000)
#   rootfs/tmp                         1777
#   home/kiln/.local/share/kiln, home/kiln/.docker   copied with --chown=1000:1000
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

R=$OUT/rootfs
mkdir -p "$R/usr/local/bin" "$R/etc/ssl/certs" "$R/tmp" \
         "$OUT/home/kiln/.local/share/kiln" "$OUT/home/kiln/.docker"
chmod 1777 "$R/tmp"
chmod 0755 "$OUT/home/kiln"
chmod 0700 "$OUT/home/kiln/.docker"

cp "$BIN" "$R/usr/local/bin/kiln"
if [ "${KILN_STRIP:-1}" != 0 ] && command -v strip >/dev/null; then
  strip --strip-debug "$R/usr/local/bin/kiln"
fi
chmod 0755 "$R/usr/local/bin/kiln"

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
  mkdir -p "$R$(dirname "$lib")"
  cp -L "$lib" "$R$lib"   # -L: the file, not the distribution's symlink to it
  chmod 0755 "$R$lib"
done

cp -L "$CA" "$R/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$R/etc/ssl/certs/ca-certificates.crt"

cat > "$R/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
kiln:x:1000:1000:kiln:/home/kiln:/sbin/nologin
PASSWD
cat > "$R/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
kiln:x:1000:
GROUP
chmod 0644 "$R/etc/passwd" "$R/etc/group"

cp "$HERE/Dockerfile" "$HERE/Dockerfile.debug" "$OUT/"
# A .dockerignore is not needed: the context is exactly what the image holds.
echo "prepare-context: $OUT ready ($(du -sh "$OUT" | cut -f1)); kiln $("$BIN" --version 2>/dev/null | cut -d' ' -f2)"
