#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian 12 machine, idempotently:
# protoc for the gRPC build, sqlite3 for looking at the database, `just`, and the guest
# toolchain that builds plugins into wasm32-wasip2 components. Fast when all is there.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

need=(protobuf-compiler sqlite3)
missing=()
for package in "${need[@]}"; do dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

if ! command -v just >/dev/null 2>&1; then
  # The PyPI package carries the prebuilt `just` binary: seconds instead of a compile.
  python3 -m pip install --quiet --disable-pip-version-check rust-just
fi

"$root/scripts/install-guest-toolchain.sh"
