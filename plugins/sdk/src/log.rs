//! Log lines kept with the job's attempt (`wasi:logging`, since contract 0.2.1): read
//! them with `honeydew logs JOB`, or follow them while the job runs with
//! `honeydew logs JOB --follow`.
//!
//! The daemon cuts each line to 2 KiB and keeps each attempt's last 2000 lines within
//! 256 KiB, so a plugin may log freely: a flood costs it only the older lines. Never log
//! a secret (the daemon adds credentials itself; the plugin never holds them anyway).
//!
//! ```no_run
//! use honeydew_plugin_sdk::log;
//!
//! log::info("listing commits");
//! honeydew_plugin_sdk::warn!("page {} came back empty", 3);
//! ```

use crate::bindings::wasi::logging::logging as wit;

/// How serious a line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very fine detail.
    Trace,
    /// Detail for whoever debugs the plugin.
    Debug,
    /// Ordinary progress.
    Info,
    /// Something unexpected that the plugin got past.
    Warn,
    /// Something failed.
    Error,
}

/// Logs `message` at `level`.
pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => wit::Level::Trace,
        Level::Debug => wit::Level::Debug,
        Level::Info => wit::Level::Info,
        Level::Warn => wit::Level::Warn,
        Level::Error => wit::Level::Error,
    };
    emit(level, message);
}

#[cfg(target_family = "wasm")]
fn emit(level: wit::Level, message: &str) {
    wit::log(level, "", message);
}

/// Outside a component (the SDK's own native tests) there is no daemon to log to.
#[cfg(not(target_family = "wasm"))]
fn emit(_level: wit::Level, _message: &str) {}

/// Logs `message` at level trace.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Logs `message` at level debug.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Logs `message` at level info.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Logs `message` at level warn.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Logs `message` at level error.
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Logs a formatted line at level info: `info!("page {n}")`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Info, &::std::format!($($arg)*)) };
}

/// Logs a formatted line at level debug.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Debug, &::std::format!($($arg)*)) };
}

/// Logs a formatted line at level warn.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Warn, &::std::format!($($arg)*)) };
}

/// Logs a formatted line at level error.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Error, &::std::format!($($arg)*)) };
}
