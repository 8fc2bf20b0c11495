//! What a plugin may ask of its own job while it runs, besides returning a result or an
//! error: to snooze it (run it again after a delay, spending no retry) or to cancel it
//! (end it for good, never retried), through the contract's `honeydew:plugin/job`
//! import.
//!
//! The runtime records the request ([`JobRequest`], bounded where it enters: the delay
//! clamped to [`MIN_SNOOZE`]..=[`MAX_SNOOZE`], the reason cut like all guest text) and
//! hands it over only when the attempt's `run` returned, whatever it returned; an
//! attempt that did not return (a trap, the deadline, fuel or memory exhausted, a
//! denied request, a cancel) ends as it would have without it. [`decide`] then turns
//! the request into the job's [`Outcome`], failing a job that asks to snooze once more
//! than `max_snoozes` allows (kind `snooze_limit`), so that no plugin can keep a job
//! alive for ever. Pure: the clock is a parameter. Retry timing is `retry`'s; nothing
//! here counts a retry.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::job::{ErrorKind, Job};
use crate::retry::later_by;
use crate::store::Outcome;

/// The shortest snooze: a plugin asking for less (0 included) waits this long, so a
/// snoozing job cannot spin through attempts.
pub const MIN_SNOOZE: Duration = Duration::from_secs(1);

/// The longest snooze: thirty days. A plugin asking for more waits this long.
pub const MAX_SNOOZE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// How many times one job may snooze unless the configuration says otherwise.
pub const DEFAULT_MAX_SNOOZES: u32 = 100;

/// The most snoozes per job that may be configured.
pub const MAX_CONFIGURABLE_SNOOZES: u32 = 100_000;

/// The reason a snooze records when the plugin gives none.
const DEFAULT_SNOOZE_REASON: &str = "snoozed by its plugin";

/// The reason a cancel records when the plugin gives none.
const DEFAULT_CANCEL_REASON: &str = "cancelled by its plugin";

/// What a plugin asked of its job during an attempt. When it asked several times, the
/// last request stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobRequest {
    /// Run the job again after `delay`, spending no retry.
    Snooze {
        /// How long to wait, within [`MIN_SNOOZE`]..=[`MAX_SNOOZE`].
        delay: Duration,
        /// Why, for the job's record while it waits.
        reason: String,
    },
    /// End the job, `cancelled`, for good.
    Cancel {
        /// Why, for the job's record.
        reason: String,
    },
}

impl JobRequest {
    /// A snooze of `delay_ms` as a plugin asked for it: the delay clamped (see
    /// [`clamp_snooze`]), an empty reason replaced by a default one.
    pub fn snooze(delay_ms: u64, reason: String) -> Self {
        JobRequest::Snooze {
            delay: clamp_snooze(delay_ms),
            reason: or_default(reason, DEFAULT_SNOOZE_REASON),
        }
    }

    /// A cancel as a plugin asked for it; an empty reason is replaced by a default one.
    pub fn cancel(reason: String) -> Self {
        JobRequest::Cancel {
            reason: or_default(reason, DEFAULT_CANCEL_REASON),
        }
    }
}

fn or_default(reason: String, default: &str) -> String {
    if reason.trim().is_empty() {
        default.to_owned()
    } else {
        reason
    }
}

/// A plugin's snooze delay in milliseconds as a bounded [`Duration`]: at least
/// [`MIN_SNOOZE`], at most [`MAX_SNOOZE`], whatever number it sent.
pub fn clamp_snooze(delay_ms: u64) -> Duration {
    Duration::from_millis(delay_ms).clamp(MIN_SNOOZE, MAX_SNOOZE)
}

/// The outcome of an attempt of `job` whose `run` returned at `now` after the plugin
/// asked `request`, when a job may snooze at most `max_snoozes` times: the plugin's
/// cancel, or its snooze, or a permanent `snooze_limit` failure once the job has
/// snoozed `max_snoozes` times already.
pub fn decide(job: &Job, request: JobRequest, max_snoozes: u32, now: DateTime<Utc>) -> Outcome {
    match request {
        JobRequest::Cancel { reason } => Outcome::CancelledByPlugin { reason },
        JobRequest::Snooze { reason, .. } if job.snooze_count >= max_snoozes => Outcome::Failed {
            kind: ErrorKind::SnoozeLimit,
            error: format!(
                "the plugin asked to snooze the job again ({reason}), but it has snoozed {} times, \
                 as often as a job may (max_snoozes = {max_snoozes})",
                job.snooze_count
            ),
        },
        JobRequest::Snooze { delay, reason } => Outcome::Snoozed {
            reason,
            run_at: later_by(now, delay),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn job_with_snoozes(snooze_count: u32) -> Job {
        let mut job = Job::new("snoozer.snooze", vec![], 0, 0);
        job.snooze_count = snooze_count;
        job
    }

    #[test]
    fn snooze_delays_are_clamped_to_a_second_and_thirty_days() {
        let check = |delay_ms: u64, expected: Duration| {
            assert_eq!(clamp_snooze(delay_ms), expected, "{delay_ms} ms");
        };
        check(0, MIN_SNOOZE);
        check(1, MIN_SNOOZE);
        check(999, MIN_SNOOZE);
        check(1000, Duration::from_secs(1));
        check(1500, Duration::from_millis(1500));
        check(3_600_000, Duration::from_secs(3600));
        check(30 * 24 * 3_600_000, MAX_SNOOZE);
        check(30 * 24 * 3_600_000 + 1, MAX_SNOOZE);
        check(u64::MAX, MAX_SNOOZE);
        assert_eq!(MAX_SNOOZE, Duration::from_secs(2_592_000));
    }

    #[test]
    fn a_snooze_runs_the_job_again_after_its_clamped_delay() {
        let now = Utc::now();
        let check = |delay_ms: u64, expected: TimeDelta| {
            let request = JobRequest::snooze(delay_ms, "rate limited".into());
            match decide(&job_with_snoozes(3), request, 100, now) {
                Outcome::Snoozed { reason, run_at } => {
                    assert_eq!(reason, "rate limited");
                    assert_eq!(run_at - now, expected, "{delay_ms} ms");
                }
                other => panic!("expected a snooze, got {other:?}"),
            }
        };
        check(0, TimeDelta::seconds(1));
        check(2500, TimeDelta::milliseconds(2500));
        check(u64::MAX, TimeDelta::days(30));
    }

    #[test]
    fn the_snooze_after_the_last_one_allowed_fails_the_job() {
        let now = Utc::now();
        let request = || JobRequest::snooze(1000, "again".into());
        assert!(matches!(
            decide(&job_with_snoozes(2), request(), 3, now),
            Outcome::Snoozed { .. }
        ));
        for snoozed in [3, 4, u32::MAX] {
            let Outcome::Failed { kind, error } =
                decide(&job_with_snoozes(snoozed), request(), 3, now)
            else {
                panic!("expected a failure after {snoozed} snoozes");
            };
            assert_eq!(kind, ErrorKind::SnoozeLimit);
            assert!(error.contains("max_snoozes = 3"), "{error}");
            assert!(error.contains("(again)"), "{error}");
        }
        // No snooze at all when none is allowed.
        assert!(matches!(
            decide(&job_with_snoozes(0), request(), 0, now),
            Outcome::Failed {
                kind: ErrorKind::SnoozeLimit,
                ..
            }
        ));
    }

    #[test]
    fn a_cancel_ends_the_job_with_the_plugins_reason_whatever_its_snoozes() {
        let outcome = decide(
            &job_with_snoozes(1000),
            JobRequest::cancel("the repository is archived".into()),
            3,
            Utc::now(),
        );
        assert!(
            matches!(&outcome, Outcome::CancelledByPlugin { reason } if reason == "the repository is archived"),
            "{outcome:?}"
        );
    }

    #[test]
    fn an_empty_reason_is_replaced_by_one_that_names_the_plugin() {
        assert_eq!(
            JobRequest::cancel("  ".into()),
            JobRequest::Cancel {
                reason: DEFAULT_CANCEL_REASON.into()
            }
        );
        assert_eq!(
            JobRequest::snooze(5000, String::new()),
            JobRequest::Snooze {
                delay: Duration::from_secs(5),
                reason: DEFAULT_SNOOZE_REASON.into()
            }
        );
    }
}
