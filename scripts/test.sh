#!/usr/bin/env bash
# Runs the whole test suite from a fresh clone: installs test dependencies (spdk-rpc, and QEMU
# plus the test guest for the real-guest vhost tests), checks formatting and lints, builds every
# binary, runs every test, and builds the docs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
export PATH="$PWD/build/venv/bin:$PATH"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== layer check (scripts/check-layers.py)"
python3 scripts/check-layers.py
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build (binaries used by the integration tests)"
cargo build --workspace --bins
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
# One closing line with the totals over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
