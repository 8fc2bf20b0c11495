#!/usr/bin/env bash
# Runs every check and test of the project, as CI does: set-up, plugin build, format,
# lints, then the whole test suite against the freshly built plugin components.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/setup.sh
scripts/build-plugins.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
