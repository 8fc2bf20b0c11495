#!/usr/bin/env bash
# Runs every check and test of the project, as CI does: set-up, plugin build, format,
# lints, then the whole test suite against the freshly built plugin components and a
# real PostgreSQL server (one found here, or a throwaway cluster stopped afterwards).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/setup.sh
scripts/build-plugins.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The plugin workspace's own checks and unit tests, run natively (from the root, so
# rustup's toolchain with rustfmt and clippy applies, not the wasm build settings).
cargo fmt --manifest-path plugins/Cargo.toml --all --check
CARGO_TARGET_DIR=target/guest-native cargo clippy --manifest-path plugins/Cargo.toml \
  --workspace --all-targets --locked -- -D warnings
results=$(mktemp)
trap 'rm -f "$results"; scripts/test-postgres.sh stop' EXIT
HONEYDEW_TEST_DATABASE_URL=$(scripts/test-postgres.sh start)
export HONEYDEW_TEST_DATABASE_URL
CARGO_TARGET_DIR=target/guest-native cargo test --manifest-path plugins/Cargo.toml \
  --workspace --locked 2>&1 | tee -a "$results"
cargo test --workspace --locked 2>&1 | tee -a "$results"
# One closing line over every test binary above (pipefail already stopped on failure).
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "tests: %d passed, %d failed\n", passed, failed }' "$results"
