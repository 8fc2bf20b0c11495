# Every developer command. Recipes are thin: CI calls the scripts they name.

# List the recipes.
default:
    @just --list

# Install the project's tools (apt packages, just, the guest toolchain); idempotent.
setup:
    scripts/setup.sh

# Build every plugin under plugins/ into target/plugins/NAME.wasm + NAME.toml.
plugins:
    scripts/build-plugins.sh

# Scaffold a new plugin crate under plugins/NAME.
new-plugin NAME:
    scripts/new-plugin.sh {{NAME}}

# Install honeydew and honeydewd into ~/.local/bin, the bundled plugins into
# ~/.honeydew/plugins (never over an edited manifest), and the systemd user unit.
install:
    scripts/install.sh

# Build the daemon and the CLI.
build:
    cargo build --workspace

# Everything CI runs: format, lints, the whole test suite.
test:
    scripts/test.sh

# The dashboard in headless chromium on both backends (screenshots in target/dashboard-screenshots/).
dashboard-test: setup plugins
    HONEYDEW_TEST_DATABASE_URL="${HONEYDEW_TEST_DATABASE_URL:-$(scripts/test-postgres.sh start)}" cargo test -p honeydew --test e2e dashboard

# The crash test at full size: N jobs, K kill -9 at random moments, a restart after each.
crash-test jobs="5000" kills="20":
    HONEYDEW_CRASH_JOBS={{jobs}} HONEYDEW_CRASH_KILLS={{kills}} cargo test -p honeydew --test e2e crash:: -- --nocapture

# The soak at full size: 100k jobs under retention; database size and RSS per round.
soak jobs="100000":
    HONEYDEW_SOAK_JOBS={{jobs}} cargo test -p honeydew --test e2e soak:: -- --nocapture

# Three daemons on one PostgreSQL at full size: 10k jobs each run once, kill -9, SIGSTOP.
cluster-test jobs="10000":
    HONEYDEW_TEST_DATABASE_URL=$(scripts/test-postgres.sh start) HONEYDEW_CLUSTER_JOBS={{jobs}} cargo test -p honeydew --test e2e cluster:: -- --nocapture

# Run the daemon with the bundled plugins and put a few real jobs through it.
run:
    scripts/run.sh

# Throughput and latency benchmarks (figures go into issue notes).
bench:
    cargo bench -p honeydew
