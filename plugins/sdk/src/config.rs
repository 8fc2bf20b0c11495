//! Configuration from the `[config]` table of the plugin's manifest, read through
//! `wasi:config/store`.
//!
//! Values are operator-owned settings such as an API's base URL. Secrets never come
//! this way: the daemon adds credentials to outgoing requests itself (`[[auth]]`).

use crate::bindings::wasi::config::store;

/// The value of `key` in the manifest's `[config]` table, or `None` when it is not set.
///
/// The daemon's store is the manifest's table held in memory; should it ever report
/// an error, the key reads as not set.
pub fn get(key: &str) -> Option<String> {
    store::get(key).ok().flatten()
}

/// The value of `key`, or `default` when it is not set.
pub fn get_or(key: &str, default: &str) -> String {
    get(key).unwrap_or_else(|| default.to_owned())
}
