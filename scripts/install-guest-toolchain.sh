#!/usr/bin/env bash
# Installs what building plugins into wasm32-wasip2 components needs on Debian 12:
# Debian's rustc/cargo 1.96 with std sources (std is built from source), lld's wasm-ld
# and wasi-libc. Idempotent: does nothing when everything is already there.
set -euo pipefail

need=(rustc-web cargo-web rust-web-src lld-19 wasi-libc)
missing=()
for package in "${need[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "installing guest toolchain packages: ${missing[*]}"
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}"
fi

check() {
  [ -e "$1" ] || { echo "guest toolchain incomplete: $1 is missing ($2)" >&2; exit 1; }
}
check /usr/lib/rustlib/src/rust/library/std "std sources, package rust-web-src"
check /usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld "package rustc-web"
check /usr/lib/llvm-19/bin/wasm-ld "package lld-19"
check /usr/lib/wasm32-wasi/libc.a "package wasi-libc"
echo "guest toolchain ready: $(/usr/bin/rustc --version)"
