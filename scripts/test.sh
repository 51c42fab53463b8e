#!/bin/bash
# README command 2: set the machine up and run the whole test suite.
#
#   scripts/test.sh [cargo test args...]
#
# Runs scripts/setup.sh (as root, or through sudo), then `cargo test
# --workspace`. Run as root, the end-to-end tests drop to the unprivileged
# user kilntest for every kiln/buildah invocation; run as another user they
# build as that user (which then needs its own /etc/subuid range).
# CI: .ci/run (root, CI=true, no stdin, fresh clone).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
export PATH=$PATH:$HOME/.cargo/bin
command -v cargo >/dev/null || { echo "test: cargo not found (install Rust via rustup)" >&2; exit 1; }

echo "==> scripts/setup.sh"
if [ "$(id -u)" = 0 ]; then
  scripts/setup.sh
else
  sudo env KILN_SKIP_BUILD=1 "$REPO/scripts/setup.sh" </dev/null
  cargo build -p kiln-builder
fi

echo "==> cargo test --workspace --no-fail-fast $*"
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
exec cargo test --workspace --no-fail-fast "$@"
