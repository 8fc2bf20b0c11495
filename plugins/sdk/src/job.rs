//! The job this attempt belongs to: snooze it (run it again later without spending a
//! retry), cancel it for good, ask how often it has snoozed, or report how far it has
//! got ([`progress`], since contract 0.2.1: `honeydew wait` draws it as a bar).
//!
//! A request is recorded by the daemon, not acted on, until [`Plugin::run`] returns;
//! when a plugin asks several times, the last request stands. Once `run` returns, the
//! request decides how the attempt ends and whatever `run` returned is discarded
//! (result bytes are not stored, an error is neither recorded nor retried). An attempt
//! that does not return normally (a panic, its deadline, fuel or memory exhausted)
//! fails as it would have without the request.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use honeydew_plugin_sdk::{PluginError, job};
//!
//! fn export(ready: bool) -> Result<Vec<u8>, PluginError> {
//!     if !ready {
//!         if job::snooze_count() >= 10 {
//!             return Err(PluginError::permanent("the export never became ready"));
//!         }
//!         job::snooze(Duration::from_secs(30), "the export is not ready yet");
//!         return Ok(Vec::new());
//!     }
//!     Ok(b"{}".to_vec())
//! }
//! ```
//!
//! [`Plugin::run`]: crate::Plugin::run

use std::time::Duration;

use crate::bindings::honeydew::plugin::job as wit;

/// Asks the daemon to run the job again after `delay`, in a fresh attempt, without
/// spending one of its retries; `reason` is the job's error while it waits (kind
/// `snoozed`). Takes effect when `run` returns.
///
/// The daemon clamps `delay` to between 1 second and 30 days, and caps how many times
/// a job may snooze (100 unless its operator says otherwise): the snooze after that
/// fails the job for good (kind `snooze_limit`). [`snooze_count`] tells how close the
/// job is.
pub fn snooze(delay: Duration, reason: &str) {
    wit::snooze(delay_ms(delay), reason);
}

/// Asks the daemon to end the job `cancelled`, for good, whatever retries it has left;
/// `reason` is the job's error (kind `cancelled_by_plugin`). Takes effect when `run`
/// returns. For work that has become pointless, not for failures: return a
/// [`PluginError`](crate::PluginError) for those.
pub fn cancel(reason: &str) {
    wit::cancel(reason);
}

/// How many times this job has snoozed before this attempt: 0 on its first run. Every
/// attempt starts in a fresh sandbox, so this is how a plugin tells a first run from a
/// later one.
pub fn snooze_count() -> u32 {
    wit::snooze_count()
}

/// Reports how far the attempt has got: `done` units of work out of `total` when the
/// plugin knows it, and what it is doing (`message`, cut to 256 bytes by the daemon).
/// Each report replaces the one before; the daemon stores the latest a few times a
/// second at most, so report as often as is convenient. [`crate::paging`] reports the
/// pages it fetched by itself.
pub fn progress(done: u64, total: Option<u64>, message: Option<&str>) {
    report_progress(done, total, message);
}

#[cfg(target_family = "wasm")]
fn report_progress(done: u64, total: Option<u64>, message: Option<&str>) {
    wit::progress(done, total, message);
}

/// Outside a component (the SDK's own native tests) there is no daemon to tell.
#[cfg(not(target_family = "wasm"))]
fn report_progress(_done: u64, _total: Option<u64>, _message: Option<&str>) {}

/// `delay` in whole milliseconds, saturating (the daemon clamps it anyway).
fn delay_ms(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_go_out_in_whole_milliseconds_and_saturate() {
        assert_eq!(delay_ms(Duration::from_secs(30)), 30_000);
        assert_eq!(delay_ms(Duration::from_micros(1500)), 1);
        assert_eq!(delay_ms(Duration::ZERO), 0);
        assert_eq!(delay_ms(Duration::MAX), u64::MAX);
    }
}
