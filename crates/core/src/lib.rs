//! Honeydew's domain, free of I/O: the [`job`] model and its legal transitions, [`concurrency`] limits, the
//! [`schedule`] record, a plugin's [`output`] (log and progress), operators' [`pause`]s, [`rate_limit`]s as APIs state them, and the [`store`] contract that every backend (SQLite,
//! PostgreSQL) keeps. The daemon, its backends and its tests all speak these types, so a
//! backend can change without anything above it changing.

pub mod concurrency;
pub mod job;
pub mod output;
pub mod pause;
pub mod rate_limit;
pub mod schedule;
pub mod store;
