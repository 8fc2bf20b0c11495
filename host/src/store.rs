//! The job store as the daemon sees it: the contract and its domain types from
//! `honeydew-core`, and the backends of `honeydew-store`. Nothing in this crate holds
//! SQL; it picks a backend at start-up and then speaks only [`Store`].

pub use honeydew_core::store::*;
pub use honeydew_store::{PostgresConfig, PostgresStore, SqliteConfig, SqliteStore, SyncMode};
