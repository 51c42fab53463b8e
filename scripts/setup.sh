#!/bin/bash
# Prepare this machine for kiln's demo and end-to-end tests. Run as root.
# Idempotent: a second run changes nothing. Offline except Debian's apt archive
# and crates.io.
#
#   1. apt: docker-registry uidmap busybox-static qemu-user-static buildah skopeo
#      umoci apache2-utils jq python3 curl mmdebstrap (for the Debian base of
#      testdata/projects) bubblewrap (pods of deploy_kaniko.rs) rpm (an RPM database
#      for sbom/tests; apt-get update only
#      when needed);
#      arm64 as a foreign architecture and busybox-static .debs (amd64+arm64)
#      downloaded into $KILN_DEB_CACHE (default /var/cache/kiln-testdata/debs)
#      the SBOM validators (spdx-tools, cyclonedx-python-lib) in /opt/kiln-sbom-venv (PyPI)
#   2. the unprivileged user `kilntest` with a 65536-wide subuid/subgid range
#   3. make the repository readable and target/ executable by kilntest
#   4. the busybox base image layouts (testdata/scripts/seed-registry.sh --prepare)
#   5. cargo build -p kiln-builder (into the shared target dir), and make
#      target/debug/kiln executable by kilntest
#
# Environment: KILN_SKIP_BUILD=1 skips step 5; CARGO (default: cargo on PATH,
# or ~/.cargo/bin/cargo).
set -euo pipefail

log() { echo "setup: $*"; }
die() { echo "setup: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (try: sudo $0)"

REPO=$(cd "$(dirname "$0")/.." && pwd)
TEST_USER=${KILN_TEST_USER:-kilntest}
DEB_CACHE=${KILN_DEB_CACHE:-/var/cache/kiln-testdata/debs}
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(docker-registry uidmap busybox-static qemu-user-static buildah skopeo umoci git mmdebstrap
          apache2-utils jq python3 curl ca-certificates openssl bubblewrap rpm
          zstd e2fsprogs
          # Building ISA-L (snapshotter's isal-sys, the gzip inflate of layer blobs);
          # isal's igzip is bench/inflate.sh's reference.
          nasm autoconf automake libtool make isal
          # Docker's engine with its 2021 BuildKit: the second peer of bench/ (not the tests).
          docker.io)

# ---------------------------------------------------------------- 1. packages
installed() { dpkg-query -W -f='${db:Status-Status}\n' "$1" 2>/dev/null | grep -qx installed; }

APT_UPDATED=0
apt_update() {
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    apt-get update -q || die "apt-get update failed"
    APT_UPDATED=1
  fi
}

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  log "dpkg --add-architecture arm64"
  dpkg --add-architecture arm64
  apt_update
fi

missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  # Lists may be absent on a fresh image: update first.
  apt_update
  log "apt-get install ${missing[*]}"
  apt-get install -y -q --no-install-recommends "${missing[@]}" || die "apt-get install failed"
else
  log "packages already installed: ${PACKAGES[*]}"
fi
for b in /usr/bin/docker-registry /usr/bin/newuidmap /usr/bin/newgidmap /usr/bin/skopeo \
         /usr/bin/buildah /usr/bin/umoci /usr/bin/jq /usr/bin/python3 /bin/busybox /usr/bin/bwrap /usr/bin/rpmbuild; do
  [ -x "$b" ] || die "$b missing after install"
done

# busybox-static .debs for the base images (the arm64 one cannot be installed
# next to the amd64 one; it is only downloaded and unpacked with dpkg-deb -x).
mkdir -p "$DEB_CACHE"
chmod 0755 "$DEB_CACHE"
HOST_ARCH=$(dpkg --print-architecture)
for arch in amd64 arm64; do
  if ls "$DEB_CACHE"/busybox-static_*_"$arch".deb >/dev/null 2>&1; then
    log "busybox-static:$arch .deb already in $DEB_CACHE"
    continue
  fi
  if ! apt-cache show "busybox-static:$arch" >/dev/null 2>&1; then apt_update; fi
  log "apt-get download busybox-static:$arch -> $DEB_CACHE"
  (cd "$DEB_CACHE" && apt-get download -q -o APT::Sandbox::User=root "busybox-static:$arch") ||
    { [ "$arch" = "$HOST_ARCH" ] && log "(no .deb for $arch; the installed /bin/busybox will be used)"; } ||
    die "could not download busybox-static:$arch"
done

# binfmt for arm64: qemu-user-static normally registers qemu-aarch64 through
# systemd-binfmt/binfmt-support; without them register it by hand from its
# binfmt.d entry (with the F flag, so it works inside chroots/namespaces).
BINFMT=/proc/sys/fs/binfmt_misc
if [ -d "$BINFMT" ] && [ ! -e "$BINFMT/register" ]; then
  mount -t binfmt_misc binfmt_misc "$BINFMT" 2>/dev/null || true
fi
if [ -e "$BINFMT/register" ] && [ ! -e "$BINFMT/qemu-aarch64" ] && [ -f /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
  line=$(head -1 /usr/lib/binfmt.d/qemu-aarch64.conf)
  interp=$(echo "$line" | awk -F: '{print $(NF-1)}')
  if [ ! -x "$interp" ] && [ -x /usr/bin/qemu-aarch64-static ]; then
    # The -P wrapper is absent on some images: use the static binary, flag F only.
    line=$(echo "$line" | awk -F: -v OFS=: '{$(NF-1)="/usr/bin/qemu-aarch64-static"; $NF="F"; print}')
  fi
  log "register binfmt: ${line%%:\\x7f*}... -> $(echo "$line" | awk -F: '{print $(NF-1)}')"
  echo "$line" >"$BINFMT/register" || log "WARNING: binfmt registration failed"
fi
if [ -e "$BINFMT/qemu-aarch64" ]; then
  log "binfmt qemu-aarch64: registered"
else
  log "WARNING: binfmt qemu-aarch64 not registered (arm64 RUN steps will not work)"
fi

# SBOM validators for integration/tests/e2e_attest.rs and sbom/tests: the reference
# tools (PyPI spdx-tools, cyclonedx-python-lib) in their own virtualenv.
SBOM_VENV=/opt/kiln-sbom-venv
if ! "$SBOM_VENV/bin/python3" -c 'import spdx_tools, cyclonedx.validation.json, jsonschema' 2>/dev/null; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    apt_update; apt-get install -y -q --no-install-recommends python3-venv || die "apt-get install python3-venv failed"
  fi
  log "virtualenv $SBOM_VENV: spdx-tools cyclonedx-python-lib[json-validation]"
  rm -rf "$SBOM_VENV"
  python3 -m venv "$SBOM_VENV" || die "python3 -m venv $SBOM_VENV failed"
  "$SBOM_VENV/bin/pip" install -q spdx-tools 'cyclonedx-python-lib[json-validation]' || die "pip install of the SBOM validators failed (PyPI)"
fi
[ -x "$SBOM_VENV/bin/pyspdxtools" ] || die "$SBOM_VENV/bin/pyspdxtools missing after install"
chmod -R a+rX "$SBOM_VENV"

# ---------------------------------------------------------------- 2. test user
if ! id -u "$TEST_USER" >/dev/null 2>&1; then
  log "useradd $TEST_USER"
  useradd --create-home --home-dir "/home/$TEST_USER" --shell /bin/bash --user-group "$TEST_USER"
else
  log "user $TEST_USER exists ($(id "$TEST_USER"))"
fi
# Its primary group must have a name (a lost /etc/group line breaks setpriv and chown).
getent group "$(id -g "$TEST_USER")" >/dev/null || { log "groupadd $TEST_USER"; groupadd -g "$(id -g "$TEST_USER")" "$TEST_USER"; }
[ -d "/home/$TEST_USER" ] || { mkdir -p "/home/$TEST_USER"; chown "$TEST_USER:$TEST_USER" "/home/$TEST_USER"; }

# A 65536-wide range that overlaps no other entry.
add_range() { # FILE
  local f=$1
  touch "$f"
  if grep -q "^$TEST_USER:" "$f"; then
    log "$f: $(grep "^$TEST_USER:" "$f" | head -1)"
    return
  fi
  local start=200000 end
  while :; do
    end=$((start + 65536))
    # any existing range [s, s+n) intersecting [start, end)?
    if awk -F: -v a="$start" -v b="$end" 'NF>=3 && $2<b && $2+$3>a {found=1} END {exit !found}' "$f"; then
      start=$((start + 65536))
    else
      break
    fi
  done
  log "$f: add $TEST_USER:$start:65536"
  echo "$TEST_USER:$start:65536" >>"$f"
}
add_range /etc/subuid
add_range /etc/subgid

# ---------------------------------------------------------------- 3. permissions
# kilntest must reach the repository (test data, scripts) and run target/ binaries.
p=$REPO
while [ "$p" != "/" ]; do
  if ! setpriv --reuid="$(id -u "$TEST_USER")" --regid="$(id -g "$TEST_USER")" --init-groups test -x "$p" 2>/dev/null; then
    log "chmod o+x $p (so $TEST_USER can traverse it)"
    chmod o+x "$p"
  fi
  p=$(dirname "$p")
done
for d in "$REPO/testdata" "$REPO/scripts"; do
  if [ -d "$d" ] && [ -n "$(find "$d" ! -perm -o+r -print -quit)" ]; then
    log "chmod -R o+rX $d"
    chmod -R o+rX "$d"
  fi
done

# ---------------------------------------------------------------- 4. base layouts
# Build the busybox base image layouts once (needs root); tests and the demo
# then only push them (testdata/scripts/seed-registry.sh).
log "building/reusing busybox base layouts"
"$REPO/testdata/scripts/seed-registry.sh" --prepare | sed 's/^/setup: /'

# ---------------------------------------------------------------- 5. build kiln
if [ "${KILN_SKIP_BUILD:-0}" != 1 ]; then
  CARGO=${CARGO:-$(command -v cargo || echo "$HOME/.cargo/bin/cargo")}
  [ -x "$CARGO" ] || die "cargo not found (install rustup/cargo, or set CARGO=)"
  log "$CARGO build -p kiln-builder"
  (cd "$REPO" && "$CARGO" build -p kiln-builder) || die "cargo build -p kiln-builder failed"
  TARGET=${CARGO_TARGET_DIR:-$REPO/target}
  case $TARGET in /*) ;; *) TARGET=$REPO/$TARGET ;; esac
  [ -x "$TARGET/debug/kiln" ] || die "$TARGET/debug/kiln missing after build"
  p=$TARGET/debug
  while [ "$p" != "/" ]; do
    if ! setpriv --reuid="$(id -u "$TEST_USER")" --regid="$(id -g "$TEST_USER")" --init-groups test -x "$p" 2>/dev/null; then
      log "chmod o+x $p"
      chmod o+x "$p"
    fi
    p=$(dirname "$p")
  done
  setpriv --reuid="$(id -u "$TEST_USER")" --regid="$(id -g "$TEST_USER")" --init-groups test -x "$TARGET/debug/kiln" ||
    die "$TEST_USER cannot execute $TARGET/debug/kiln"
  log "kiln: $TARGET/debug/kiln"
fi

log "done"
