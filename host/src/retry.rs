//! Failure classification and retry timing: what happens after an attempt fails.
//!
//! [`Failure`] carries the retry decision in its type (retriable, with an optional
//! minimum delay, or permanent), never in a string. [`BackoffPolicy::delay`] is the
//! spec's exponential backoff with 10% jitter, and [`decide`] turns a failure into the
//! job's next [`Outcome`]. Everything here is pure: the clock and the random source are
//! parameters, so the arithmetic is tested exactly. Every delay is bounded before it
//! meets a timestamp ([`BackoffPolicy::max_after`]), and every sum of a time and a delay
//! is checked: a value from outside (a plugin's `retry-after`, a config file) can make
//! a retry later, never panic a worker or write a time the store cannot read back.

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

/// The longest retry delay a plugin may ask for, unless the configuration says otherwise.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// The longest any retry delay may be configured to: a week.
pub const MAX_CONFIGURABLE_DELAY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

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
    /// The longest wait a plugin's `retry-after` may impose; longer ones are cut to this.
    #[serde(with = "millis", rename = "max_after_ms")]
    pub max_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(5 * 60),
            jitter: 0.1,
            max_after: DEFAULT_MAX_RETRY_AFTER,
        }
    }
}

impl BackoffPolicy {
    /// Checks a policy read from outside: finite numbers in range, delays of at most a
    /// week. The error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !self.multiplier.is_finite() || !(1.0..=100.0).contains(&self.multiplier) {
            return Err(format!(
                "retry.multiplier must be between 1 and 100, not {}",
                self.multiplier
            ));
        }
        if !self.jitter.is_finite() || !(0.0..=1.0).contains(&self.jitter) {
            return Err(format!(
                "retry.jitter must be between 0 and 1, not {}",
                self.jitter
            ));
        }
        for (field, value) in [
            ("base_ms", self.base),
            ("max_ms", self.max),
            ("max_after_ms", self.max_after),
        ] {
            if value > MAX_CONFIGURABLE_DELAY {
                return Err(format!(
                    "retry.{field} is {} ms, over the maximum of {} ms (a week)",
                    value.as_millis(),
                    MAX_CONFIGURABLE_DELAY.as_millis()
                ));
            }
        }
        if self.base > self.max {
            return Err(format!(
                "retry.base_ms ({}) is larger than retry.max_ms ({})",
                self.base.as_millis(),
                self.max.as_millis()
            ));
        }
        Ok(())
    }

    /// The delay before retry number `retry_count + 1` (so `retry_count` 0 waits about
    /// `base`), jittered with `rng`. Never panics, whatever the policy's numbers: a
    /// result that does not fit is `max` plus its jitter.
    pub fn delay(&self, retry_count: u32, rng: &mut impl Rng) -> Duration {
        let exponent = i32::try_from(retry_count).unwrap_or(i32::MAX);
        let max = self.max.as_secs_f64();
        let raw = self.base.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = if raw.is_finite() {
            raw.clamp(0.0, max)
        } else {
            max
        };
        let jitter = if self.jitter.is_finite() && self.jitter > 0.0 {
            rng.random_range(0.0..=self.jitter.min(1.0)) * capped
        } else {
            0.0
        };
        Duration::try_from_secs_f64(capped + jitter).unwrap_or(self.max)
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
            let after = after.map(|after| after.min(policy.max_after));
            let wait = after.map_or(backoff, |after| after.max(backoff));
            Outcome::Retry {
                kind: *kind,
                error: message.clone(),
                run_at: later_by(now, wait),
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

/// `now + wait`, never past the latest instant the store can keep (the end of year
/// 9999) and never panicking: an absurd wait means "as late as can be recorded".
pub fn later_by(now: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(wait)
        .ok()
        .and_then(|delta| now.checked_add_signed(delta))
        .map_or(LATEST_STORABLE, |at| at.min(LATEST_STORABLE))
}

/// The latest instant an RFC 3339 timestamp with a four-digit year can hold.
pub const LATEST_STORABLE: DateTime<Utc> = match DateTime::from_timestamp(253_402_300_799, 0) {
    Some(at) => at,
    None => panic!("9999-12-31T23:59:59Z is a valid instant"),
};

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

    /// Regression (issue 9, defect 1): a 20-digit `retry_after_ms` used to panic the
    /// worker on `now + TimeDelta`, and a 16-digit one stored a `run_at` after year 9999
    /// that the store could not read back.
    #[test]
    fn a_huge_retry_after_is_cut_to_max_after_and_never_panics() {
        let now = Utc::now();
        let mut rng = StdRng::seed_from_u64(1);
        let job = job_with(0, 5);
        for ms in [u64::MAX, 1_000_000_000_000_000, 1_000_000_000_000] {
            let failure = Failure::Retriable {
                kind: ErrorKind::PluginError,
                message: "429".into(),
                after: Some(Duration::from_millis(ms)),
            };
            let Outcome::Retry { run_at, .. } = decide(&job, &failure, &no_jitter(), now, &mut rng)
            else {
                panic!("expected a retry");
            };
            assert_eq!(run_at - now, TimeDelta::hours(1), "retry_after_ms {ms}");
        }
    }

    #[test]
    fn later_by_saturates_at_the_latest_storable_instant() {
        let now = Utc::now();
        assert_eq!(later_by(now, Duration::MAX), LATEST_STORABLE);
        assert_eq!(
            later_by(now, Duration::from_secs(20_000 * 365 * 86_400)),
            LATEST_STORABLE
        );
        assert_eq!(
            later_by(now, Duration::from_secs(5)),
            now + TimeDelta::seconds(5)
        );
        assert_eq!(LATEST_STORABLE.to_rfc3339(), "9999-12-31T23:59:59+00:00");
    }

    proptest::proptest! {
        /// Whatever numbers a policy holds (validated or not), a delay is a number.
        #[test]
        fn delays_never_panic(
            base_ms in proptest::num::u64::ANY,
            max_ms in proptest::num::u64::ANY,
            multiplier in proptest::num::f64::ANY,
            jitter in proptest::num::f64::ANY,
            retry_count in proptest::num::u32::ANY,
            seed in proptest::num::u64::ANY,
        ) {
            let policy = BackoffPolicy {
                base: Duration::from_millis(base_ms),
                max: Duration::from_millis(max_ms),
                multiplier,
                jitter,
                max_after: DEFAULT_MAX_RETRY_AFTER,
            };
            let mut rng = StdRng::seed_from_u64(seed);
            let delay = policy.delay(retry_count, &mut rng);
            proptest::prop_assert!(delay <= policy.max.saturating_mul(2));
        }

        /// Any policy `validate` accepts gives delays within `max` plus its jitter.
        #[test]
        fn valid_policies_stay_within_max_plus_jitter(
            base_ms in 0u64..=60_000,
            extra_ms in 0u64..=600_000,
            multiplier in 1.0f64..=100.0,
            jitter in 0.0f64..=1.0,
            retry_count in proptest::num::u32::ANY,
        ) {
            let policy = BackoffPolicy {
                base: Duration::from_millis(base_ms),
                max: Duration::from_millis(base_ms + extra_ms),
                multiplier,
                jitter,
                max_after: DEFAULT_MAX_RETRY_AFTER,
            };
            proptest::prop_assert!(policy.validate().is_ok());
            let mut rng = StdRng::seed_from_u64(u64::from(retry_count));
            let delay = policy.delay(retry_count, &mut rng);
            proptest::prop_assert!(delay.as_secs_f64() <= policy.max.as_secs_f64() * (1.0 + jitter) + 1e-6);
        }
    }

    #[test]
    fn out_of_range_policies_are_refused_naming_the_field() {
        let check = |toml: &str, expected: &str| {
            let policy: BackoffPolicy = toml::from_str(toml).unwrap();
            let error = policy.validate().unwrap_err();
            assert!(error.contains(expected), "{toml}: {error}");
        };
        check("multiplier = 0.5", "retry.multiplier");
        check("multiplier = -2.0", "retry.multiplier");
        check("jitter = -0.1", "retry.jitter");
        check("jitter = 3.0", "retry.jitter");
        check("max_ms = 18446744073709551615", "retry.max_ms");
        check("max_after_ms = 999999999999", "retry.max_after_ms");
        check("base_ms = 10000\nmax_ms = 5000", "larger than retry.max_ms");
        assert!(BackoffPolicy::default().validate().is_ok());
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
