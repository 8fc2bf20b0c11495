//! Failure classification and retry timing: what happens after an attempt fails.
//!
//! [`Failure`] carries the retry decision in its type (retriable, with an optional
//! minimum delay, or permanent), never in a string. [`BackoffPolicy::delay`] is the
//! spec's exponential backoff with 10% jitter, and [`decide`] turns a failure into the
//! job's next [`Outcome`]. Everything here is pure: the clock and the random source are
//! parameters, so the arithmetic is tested exactly.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;

use crate::job::{ErrorKind, Job};
use crate::store::Outcome;

/// Why an attempt failed, and whether trying again could help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Worth another attempt, no sooner than `after` when given.
    #[error("{kind}: {message}")]
    Retriable {
        /// What kind of failure.
        kind: ErrorKind,
        /// What went wrong.
        message: String,
        /// A minimum wait asked for by the plugin (a `retry-after`, say).
        after: Option<Duration>,
    },
    /// Another attempt cannot help.
    #[error("{kind}: {message}")]
    Permanent {
        /// What kind of failure.
        kind: ErrorKind,
        /// What went wrong.
        message: String,
    },
}

impl Failure {
    /// A retriable failure with no minimum wait.
    pub fn retriable(kind: ErrorKind, message: impl Into<String>) -> Self {
        Failure::Retriable {
            kind,
            message: message.into(),
            after: None,
        }
    }

    /// A permanent failure.
    pub fn permanent(kind: ErrorKind, message: impl Into<String>) -> Self {
        Failure::Permanent {
            kind,
            message: message.into(),
        }
    }

    /// The failure's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Failure::Retriable { kind, .. } | Failure::Permanent { kind, .. } => *kind,
        }
    }

    /// The failure's message.
    pub fn message(&self) -> &str {
        match self {
            Failure::Retriable { message, .. } | Failure::Permanent { message, .. } => message,
        }
    }
}

/// Exponential backoff: `base * multiplier^retry_count`, capped at `max`, plus up to
/// `jitter` of that as random extra.
#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffPolicy {
    /// Delay before the first retry.
    #[serde(with = "millis", rename = "base_ms")]
    pub base: Duration,
    /// Growth per retry.
    pub multiplier: f64,
    /// The longest delay, before jitter.
    #[serde(with = "millis", rename = "max_ms")]
    pub max: Duration,
    /// Random extra as a fraction of the delay (0.1 = up to 10%).
    pub jitter: f64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(5 * 60),
            jitter: 0.1,
        }
    }
}

impl BackoffPolicy {
    /// The delay before retry number `retry_count + 1` (so `retry_count` 0 waits about
    /// `base`), jittered with `rng`.
    pub fn delay(&self, retry_count: u32, rng: &mut impl Rng) -> Duration {
        let exponent = i32::try_from(retry_count).unwrap_or(i32::MAX);
        let raw = self.base.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = raw.min(self.max.as_secs_f64());
        let jitter = if self.jitter > 0.0 {
            rng.random_range(0.0..=self.jitter) * capped
        } else {
            0.0
        };
        Duration::from_secs_f64(capped + jitter)
    }
}

/// The job's next state after `failure` on its current attempt at `now`: a retry at
/// the later of the backoff and the plugin's `after`, or a final failure when the
/// failure is permanent or the retries are spent.
pub fn decide(
    job: &Job,
    failure: &Failure,
    policy: &BackoffPolicy,
    now: DateTime<Utc>,
    rng: &mut impl Rng,
) -> Outcome {
    match failure {
        Failure::Retriable {
            kind,
            message,
            after,
        } if job.can_retry() => {
            let backoff = policy.delay(job.retry_count, rng);
            let wait = after.map_or(backoff, |after| after.max(backoff));
            Outcome::Retry {
                kind: *kind,
                error: message.clone(),
                run_at: now + TimeDelta::from_std(wait).unwrap_or(TimeDelta::MAX),
            }
        }
        Failure::Retriable { kind, message, .. } => Outcome::Failed {
            kind: *kind,
            error: format!("{message} (gave up after {} retries)", job.retry_count),
        },
        Failure::Permanent { kind, message } => Outcome::Failed {
            kind: *kind,
            error: message.clone(),
        },
    }
}

/// Serde helper: a `Duration` as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn no_jitter() -> BackoffPolicy {
        BackoffPolicy {
            jitter: 0.0,
            ..BackoffPolicy::default()
        }
    }

    fn job_with(retry_count: u32, max_retries: u32) -> Job {
        let mut job = Job::new("flaky.fail", vec![], 0, max_retries);
        job.retry_count = retry_count;
        job
    }

    #[test]
    fn backoff_doubles_from_one_second() {
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<u64> = (0..5)
            .map(|n| no_jitter().delay(n, &mut rng).as_millis() as u64)
            .collect();
        assert_eq!(delays, [1000, 2000, 4000, 8000, 16000]);
    }

    #[test]
    fn backoff_is_capped_at_five_minutes() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(no_jitter().delay(20, &mut rng), Duration::from_secs(300));
        assert_eq!(
            no_jitter().delay(u32::MAX, &mut rng),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn jitter_adds_at_most_ten_percent_and_varies() {
        let policy = BackoffPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        let delays: Vec<Duration> = (0..200).map(|_| policy.delay(3, &mut rng)).collect();
        for delay in &delays {
            assert!(*delay >= Duration::from_secs(8), "{delay:?}");
            assert!(*delay <= Duration::from_millis(8800), "{delay:?}");
        }
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "jitter should spread delays");
    }

    #[test]
    fn retriable_failure_schedules_a_retry_after_the_backoff() {
        let now = Utc::now();
        let mut rng = StdRng::seed_from_u64(1);
        let failure = Failure::retriable(ErrorKind::PluginError, "503 from upstream");
        let outcome = decide(&job_with(2, 5), &failure, &no_jitter(), now, &mut rng);
        match outcome {
            Outcome::Retry {
                run_at,
                error,
                kind,
            } => {
                assert_eq!(run_at - now, TimeDelta::seconds(4));
                assert_eq!(error, "503 from upstream");
                assert_eq!(kind, ErrorKind::PluginError);
            }
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn a_longer_retry_after_hint_wins_and_a_shorter_one_does_not() {
        let now = Utc::now();
        let mut rng = StdRng::seed_from_u64(1);
        let job = job_with(0, 5);
        for (after, expected) in [(30_000, 30_000), (10, 1000)] {
            let failure = Failure::Retriable {
                kind: ErrorKind::PluginError,
                message: "429".into(),
                after: Some(Duration::from_millis(after)),
            };
            let Outcome::Retry { run_at, .. } = decide(&job, &failure, &no_jitter(), now, &mut rng)
            else {
                panic!("expected a retry");
            };
            assert_eq!((run_at - now).num_milliseconds(), expected);
        }
    }

    #[test]
    fn job_fails_once_max_retries_are_spent() {
        let mut rng = StdRng::seed_from_u64(1);
        let failure = Failure::retriable(ErrorKind::Timeout, "deadline passed");
        let outcome = decide(
            &job_with(3, 3),
            &failure,
            &no_jitter(),
            Utc::now(),
            &mut rng,
        );
        let Outcome::Failed { kind, error } = outcome else {
            panic!("expected failure, got {outcome:?}");
        };
        assert_eq!(kind, ErrorKind::Timeout);
        assert_eq!(error, "deadline passed (gave up after 3 retries)");
    }

    #[test]
    fn permanent_failure_is_never_retried() {
        let mut rng = StdRng::seed_from_u64(1);
        let failure = Failure::permanent(ErrorKind::PluginError, "401 bad credentials");
        let outcome = decide(
            &job_with(0, 10),
            &failure,
            &no_jitter(),
            Utc::now(),
            &mut rng,
        );
        assert!(
            matches!(outcome, Outcome::Failed { ref error, .. } if error == "401 bad credentials")
        );
    }

    #[test]
    fn policy_reads_from_toml_with_defaults() {
        let policy: BackoffPolicy = toml::from_str("base_ms = 250\nmultiplier = 3.0").unwrap();
        assert_eq!(policy.base, Duration::from_millis(250));
        assert_eq!(policy.multiplier, 3.0);
        assert_eq!(policy.max, Duration::from_secs(300));
        assert!(toml::from_str::<BackoffPolicy>("base = 1").is_err());
    }
}
