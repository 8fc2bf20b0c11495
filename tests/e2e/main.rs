//! End-to-end tests: the real `honeydewd` process on a temporary data directory, the
//! real `honeydew` CLI, a tonic client over the Unix socket, and real plugins from
//! `target/plugins` (build them with `scripts/build-plugins.sh`). Waiting is on the
//! daemon's own signals (its "daemon started" log line, `WatchJob` streams, process
//! exit), never on sleeps.
//!
//! They sit in the workspace's top-level `tests/` but are a test target of the
//! `honeydew` package (see `host/Cargo.toml`), so that cargo builds the binaries under
//! test first and hands their paths over as `CARGO_BIN_EXE_*`.

mod support;

/// Cancelling pending, running and finished jobs.
mod cancel;
/// The `honeydew` command line: output and exit codes.
mod cli;
/// Refusals: unknown command, malformed JSON, oversized payload, out-of-range fields.
mod errors;
/// The data directory's guards: one daemon only, socket mode 0600, stale socket.
mod guard;
/// kill -9 mid-job, restart, the job completes; SIGTERM drains.
mod lifecycle;
/// ListJobs with each filter and with paging.
mod listing;
/// A typed proxy RPC end to end: `github.commits` against a local fake of GitHub.
mod proxy;
/// gRPC health, reflection, and the optional TCP listener.
mod services;
/// Submit, wait, result; the job record as the API reports it.
mod submit;
/// WatchJob follows every transition, retries included.
mod watch;
