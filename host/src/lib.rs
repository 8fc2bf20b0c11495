//! Honeydew: a local job daemon that runs commands as sandboxed WebAssembly components.
//!
//! A job is submitted through the [`queue::Manager`], persisted by the [`store`], run by
//! a [`worker::WorkerPool`] through an [`worker::Executor`], and retried by the rules in
//! [`retry`] (or snoozed or cancelled by its own plugin, [`job_request`]). [`recovery`] makes a restart lose nothing. See `ARCHITECTURE.md` for the
//! map of modules and the invariants they keep.

pub use honeydew_core::{job, pause, rate_limit, schedule};

pub mod api;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod http;
pub mod job_request;
pub mod metrics;
pub mod output;
pub mod queue;
pub mod rate_limits;
pub mod recovery;
pub mod retention;
pub mod retry;
pub mod runtime;
pub mod scheduler;
pub mod store;
pub mod telemetry;
pub mod traces;
pub mod worker;
pub mod workspace;
