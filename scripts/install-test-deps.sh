#!/usr/bin/env bash
# Installs what the test suite needs, idempotently: SPDK's own JSON-RPC client (`spdk-rpc`,
# PyPI package spdk==26.9) in a virtualenv under build/venv, and the real-guest tests' QEMU
# and test guest (tests/guest/build-guest.sh: apt-installs qemu-system-x86 and cpio if missing,
# builds build/guest/{vmlinuz,initramfs.cpio.gz} from Debian packages; a no-op when cached).
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SPDK_PY_VERSION=26.9
venv=build/venv
if [ ! -x "$venv/bin/spdk-rpc" ] || ! "$venv/bin/pip" show spdk 2>/dev/null | grep -q "^Version: $SPDK_PY_VERSION$"; then
  echo "install-test-deps: installing spdk==$SPDK_PY_VERSION (spdk-rpc) into $venv"
  mkdir -p build
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's python3 needs python3-venv for `-m venv`.
    (apt-get update -qq && apt-get install -y -qq python3-venv) >/dev/null
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "spdk==$SPDK_PY_VERSION"
fi
"$venv/bin/spdk-rpc" --help >/dev/null
echo "install-test-deps: spdk-rpc ready at $venv/bin/spdk-rpc"

# The guest for tests/tests/vhost_guest.rs. Cached by build-guest.sh (keyed on its own hash).
tests/guest/build-guest.sh
command -v qemu-system-x86_64 >/dev/null ||
  { echo "install-test-deps: qemu-system-x86_64 is still missing" >&2; exit 1; }
echo "install-test-deps: test guest ready in build/guest ($(qemu-system-x86_64 --version | head -n1))"
