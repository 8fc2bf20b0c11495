//! The job-store backends behind [`honeydew_core::store::JobStore`]: [`sqlite`], the
//! embedded default (one file in the data directory), and, for several daemons on one
//! database, PostgreSQL. This crate is the only one that holds SQL or sees a database
//! driver; everything above it speaks [`honeydew_core::store::Store`].

pub mod postgres;
pub mod sqlite;

pub use postgres::{PostgresConfig, PostgresStore};
pub use sqlite::{SqliteConfig, SqliteStore, SyncMode};
