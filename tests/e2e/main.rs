//! End-to-end tests: the real `honeydewd` process on a temporary data directory, the
//! real `honeydew` CLI, a tonic client over the Unix socket, and real plugins from
//! `target/plugins` (build them with `scripts/build-plugins.sh`). Waiting is on the
//! daemon's own signals (its "daemon started" and "schedule triggered" log lines,
//! `WatchJob` streams, process exit), never on sleeps. One wait has no signal to await
//! and is bounded instead (see `schedules`): watching that a removed schedule submits
//! nothing more. The crash test's random pauses are the faults it injects, not waits.
//!
//! They sit in the workspace's top-level `tests/` but are a test target of the
//! `honeydew` package (see `host/Cargo.toml`), so that cargo builds the binaries under
//! test first and hands their paths over as `CARGO_BIN_EXE_*`.

mod support;

// Cancelling pending, running and finished jobs.
mod cancel;
// Concurrency limits on both backends, seen by a loopback server counting requests in
// flight: a plugin's limit, one job per key with keys taking turns, two daemons.
mod concurrency;
// github/gitlab/bitbucket.clone against fakes of their APIs: the ref pinned to a commit,
// the archive downloaded with the host-added credential, the files on disk.
mod clone;
// The `honeydew` command line: output and exit codes, `honeydew daemon`, and that it
// links none of the daemon.
mod cli;
// The dashboard in a real headless Chromium on both backends (login, live updates,
// cancel, a screenshot of each page), and its login on a public listener.
mod dashboard;
// kill -9 at random moments: no acknowledged job lost or stuck, duplicates bounded.
mod crash;
// Flow control on both backends: unique jobs, bulk submits.
mod flow;
// Refusals: unknown command, malformed JSON, oversized payload, out-of-range fields,
// invalid schedules.
mod errors;
// gRPC clients other than tonic's on the socket: Python's grpcio, grpcurl.
mod foreign_clients;
// The data directory's guards: one daemon only, socket mode 0600, stale socket, a
// warning for an open data directory.
mod guard;
// Hostile input under load: every hostile fixture, refused requests, raw socket abuse,
// plugin-directory garbage; the daemon keeps serving with bounded memory.
mod hostile;
// The five integrations against fakes of their APIs: every page, max_items with a
// resuming cursor, foreign cursors refused, per-API filters, base_url as one setting.
mod integrations;
// kill -9 mid-job, restart, the job completes; SIGTERM drains; a second one stops.
mod lifecycle;
// ListJobs with each filter and with paging.
mod listing;
// Three daemons on one PostgreSQL: shared queue, each job once, kill -9, SIGSTOP.
mod cluster;
// Prometheus metrics on the HTTP listener: a scrape after known work counts it, on both
// backends; a non-loopback address needs the opt-in, and then the token.
mod metrics;
// Outcomes a plugin asks for, on both backends: snooze (no retry spent), cancel by the
// plugin (never retried), the snooze cap; a 0.1.0 component beside.
mod outcomes;
// A plugin's log lines and progress, on both backends: WatchJob with output, `honeydew
// logs` (--follow, --json), the bar of `honeydew wait` on a pty, the capped tail of a
// flood, a 0.2.0 component; a watch on another PostgreSQL node.
mod progress;
// The daemon on PostgreSQL: --database-url, jobs done, psql reads them, a restart.
mod postgres;
// A typed proxy RPC end to end: `github.commits` against a local fake of GitHub.
mod proxy;
// Rate limits on both backends: a spent quota or a 429 holds every job of the plugin
// until the reset (no request before it, no attempt lost), across a restart and across
// daemons; a declared limit is never exceeded; the waits APIs ask for, cut to
// retry.max_after.
mod rate_limits;
// Redirects followed by the host: each hop checked and given its own host's credential.
mod redirects;
// Cron schedules: jobs every second, removal, restart, misfire policies, the CLI.
mod schedules;
// Many jobs under retention: the database and the daemon's memory stay bounded.
mod soak;
// gRPC health, reflection, and the optional TCP listener with its bearer token.
mod services;
// Submit, wait, result; the job record as the API reports it.
mod submit;
// OpenTelemetry traces to a collector in the test: submit, attempt and the plugin's
// request spans in the client's trace, the request's traceparent; a pass-through without.
mod traces;
// WatchJob follows every transition, retries included.
mod watch;
// The job's workspace: the grant, hostile archives, kept, failed, cancelled, pruned,
// swept at start-up; a plugin built against WIT 0.1.0 still runs.
mod workspace;
