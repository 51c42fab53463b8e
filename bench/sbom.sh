#!/bin/bash
# SBOM generation benchmark (on demand; not part of the test suite). Run as root
# after scripts/setup.sh (it needs the Debian base layout that the tests seed).
#
#   bench/sbom.sh [WORKDIR]
#
# Trees: (a) the Debian bookworm base of testdata/projects (mmdebstrap minbase,
# unpacked from the cached layout), (b) the same plus python3, a venv with PyPI
# packages and an npm tree is what integration/tests/e2e_attest.rs checks; here (b)
# is a generated tree of 100,000 files with 300 dist-info, 300 npm packages and a
# dpkg database of 200 packages. For each: kiln's scanner + SPDX and + CycloneDX
# (the `scan` example, release build), wall time and peak RSS by GNU time; on the
# Debian tree also cdxgen (npm @cyclonedx/cdxgen, `-t os`), if installed
# (`npm i -g @cyclonedx/cdxgen`, `-t rootfs`: `-t os` reads the running host instead), side by side.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
W=${1:-/var/tmp/kiln-bench-sbom}
mkdir -p "$W"
command -v /usr/bin/time >/dev/null || apt-get install -y -q time
cargo build -q --release -p kiln-sbom --example scan --manifest-path "$REPO/Cargo.toml"
SCAN=$REPO/target/release/examples/scan

# (a) the Debian base rootfs
LAYOUT=$(ls -d /var/tmp/kiln-testdata/debian-*/amd64 2>/dev/null | head -1)
[ -n "$LAYOUT" ] || { echo "no Debian layout: run the e2e tests (seed-registry.sh --debian) first" >&2; exit 1; }
if [ ! -d "$W/debian" ]; then
  mkdir -p "$W/debian"
  M=$(python3 -c "import json,sys; i=json.load(open('$LAYOUT/index.json')); print(i['manifests'][0]['digest'].split(':')[1])")
  for l in $(python3 -c "import json; m=json.load(open('$LAYOUT/blobs/sha256/$M')); print(' '.join(x['digest'].split(':')[1] for x in m['layers']))"); do
    tar -xzf "$LAYOUT/blobs/sha256/$l" -C "$W/debian"
  done
fi

# (b) 100k files with packages of three ecosystems
if [ ! -d "$W/tree100k" ]; then
  python3 - "$W/tree100k" <<'PY'
import os, sys
root = sys.argv[1]
def w(p, t):
    os.makedirs(os.path.dirname(p), exist_ok=True)
    open(p, "w").write(t)
n = 0
for d in range(1064):
    for f in range(94):
        w(f"{root}/srv/data/d{d:04}/f{f:03}.txt", "x" * (f % 7))
        n += 1
status = []
for i in range(200):
    status.append(f"Package: pkg{i}\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.{i}-1\n")
    w(f"{root}/var/lib/dpkg/info/pkg{i}.list", "".join(f"/usr/share/pkg{i}/f{j}\n" for j in range(5)))
    for j in range(5):
        w(f"{root}/usr/share/pkg{i}/f{j}", "data"); n += 1
w(f"{root}/var/lib/dpkg/status", "\n".join(status))
w(f"{root}/etc/os-release", 'ID=debian\nVERSION_ID="12"\n')
for i in range(300):
    w(f"{root}/opt/venv/lib/python3.11/site-packages/p{i}-1.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: p{i}\nVersion: 1.0\nLicense: MIT\n")
    w(f"{root}/app/node_modules/m{i}/package.json", f'{{"name":"m{i}","version":"1.0.{i}","license":"MIT"}}')
    n += 2
print(n, "files")
PY
fi

measure() { # LABEL CMD...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$W/time.txt" "$@" >"$W/out.txt" 2>"$W/err.txt" || { cat "$W/err.txt"; return 1; }
  read -r secs kb <"$W/time.txt"
  printf '%-44s %7.2f s %8.1f MiB   %s\n' "$label" "$secs" "$(echo "$kb/1024" | bc -l)" "$(tail -1 "$W/err.txt" | cut -c1-70)"
}

echo "machine: $(nproc) cores, $(uname -r), $(date -u +%F)"
for t in debian tree100k; do
  echo "files in $t: $(find "$W/$t" -type f | wc -l)"
  measure "kiln scan + SPDX 2.3 ($t)" "$SCAN" "$W/$t" --format spdx -o "$W/$t.spdx.json"
  measure "kiln scan + CycloneDX 1.6 ($t)" "$SCAN" "$W/$t" --format cyclonedx -o "$W/$t.cdx.json"
done
echo "debian: dpkg packages in kiln's SBOM: $(python3 -c "import json; d=json.load(open('$W/debian.cdx.json')); print(sum(1 for c in d['components'] if c.get('purl','').startswith('pkg:deb/')))"), in the rootfs's dpkg status: $(grep -c '^Package:' "$W/debian/var/lib/dpkg/status")"
if command -v cdxgen >/dev/null; then
  measure "cdxgen -t rootfs (debian)" env FETCH_LICENSE=false cdxgen -t rootfs --no-recurse -o "$W/debian.cdxgen.json" "$W/debian"
  echo "debian: dpkg packages in cdxgen's SBOM: $(python3 -c "import json; d=json.load(open('$W/debian.cdxgen.json')); print(len({c['name'] for c in d.get('components',[]) if c.get('purl','').startswith('pkg:deb/')}))") distinct names"
fi
