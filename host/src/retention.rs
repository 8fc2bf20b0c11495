//! Retention: finished jobs (and, with them, their attempts) are kept for an age per
//! state, then pruned.
//!
//! [`RetentionPolicy`] says how long (defaults: completed and cancelled 7 days, failed
//! 30 days) and [`RetentionPolicy::cutoffs`] turns that into instants, with the clock
//! as a parameter. [`run_pruner`] prunes every `interval` through the store, in small
//! batches: each batch is one short write in the writer's queue, so submits and
//! dispatch wait behind it for a few milliseconds at most, never for a whole purge.
//! SQLite reuses the pages a purge frees for the rows that follow, so a daemon whose
//! history is pruned keeps a database of bounded size. `honeydew prune` does the same
//! on demand (`PruneJobs`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::job::JobStatus;
use crate::store::{Store, StoreError};

/// How many jobs one prune batch deletes at most.
pub const PRUNE_BATCH: usize = 500;

/// How long finished jobs are kept, per state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Completed jobs.
    #[serde(with = "humantime_serde")]
    pub completed: Duration,
    /// Failed jobs (kept longer: they are what an operator comes back to read).
    #[serde(with = "humantime_serde")]
    pub failed: Duration,
    /// Cancelled jobs.
    #[serde(with = "humantime_serde")]
    pub cancelled: Duration,
    /// How often the daemon prunes.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        const DAY: u64 = 24 * 60 * 60;
        Self {
            completed: Duration::from_secs(7 * DAY),
            failed: Duration::from_secs(30 * DAY),
            cancelled: Duration::from_secs(7 * DAY),
            interval: Duration::from_secs(10 * 60),
        }
    }
}

/// The longest age a policy may name: a hundred years (beyond, nothing is pruned).
const MAX_AGE: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

impl RetentionPolicy {
    /// Every state kept for `age` (what `honeydew prune --older-than` asks for).
    pub fn uniform(age: Duration) -> Self {
        Self {
            completed: age,
            failed: age,
            cancelled: age,
            ..Self::default()
        }
    }

    /// Checks the numbers read from outside; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval < Duration::from_secs(1) {
            return Err("retention.interval must be at least 1s".into());
        }
        for (name, age) in [
            ("completed", self.completed),
            ("failed", self.failed),
            ("cancelled", self.cancelled),
        ] {
            if age > MAX_AGE {
                return Err(format!("retention.{name} is over a hundred years"));
            }
        }
        Ok(())
    }

    /// For each finished state, the instant before which its jobs are pruned at `now`.
    pub fn cutoffs(&self, now: DateTime<Utc>) -> Vec<(JobStatus, DateTime<Utc>)> {
        [
            (JobStatus::Completed, self.completed),
            (JobStatus::Failed, self.failed),
            (JobStatus::Cancelled, self.cancelled),
        ]
        .into_iter()
        .map(|(status, age)| {
            let age =
                chrono::TimeDelta::from_std(age.min(MAX_AGE)).unwrap_or(chrono::TimeDelta::MAX);
            (
                status,
                now.checked_sub_signed(age)
                    .unwrap_or(DateTime::<Utc>::MIN_UTC),
            )
        })
        .collect()
    }
}

/// Prunes every finished job older than `policy` allows, batch by batch; returns how
/// many were deleted.
pub async fn prune(
    store: &Store,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut deleted = 0;
    for (status, before) in policy.cutoffs(now) {
        loop {
            let batch = store.prune_finished(status, before, PRUNE_BATCH).await?;
            deleted += batch;
            if batch < PRUNE_BATCH {
                break;
            }
            // Let other writes in between batches.
            tokio::task::yield_now().await;
        }
    }
    Ok(deleted)
}

/// Prunes at start and then every `policy.interval` until `stop` fires.
pub async fn run_pruner(store: Store, policy: RetentionPolicy, stop: CancellationToken) {
    loop {
        let started = std::time::Instant::now();
        match prune(&store, &policy, Utc::now()).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(
                deleted,
                duration_ms = started.elapsed().as_millis() as u64,
                "pruned finished jobs past their retention"
            ),
            Err(err) => tracing::warn!(error = %err, "cannot prune finished jobs; will try again"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(policy.interval) => {}
        }
    }
}

/// Serde helper: a `Duration` written as humantime text ("7d", "12h", "90s").
mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(|err| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: {err} (such as \"7d\", \"12h\", \"90s\")"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn defaults_keep_failures_longest() {
        let policy = RetentionPolicy::default();
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        let cutoffs = policy.cutoffs(now);
        assert_eq!(
            cutoffs,
            [
                (
                    JobStatus::Completed,
                    Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).unwrap()
                ),
                (
                    JobStatus::Failed,
                    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
                ),
                (
                    JobStatus::Cancelled,
                    Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).unwrap()
                ),
            ]
        );
    }

    #[test]
    fn policies_read_humantime_and_refuse_nonsense() {
        let policy: RetentionPolicy =
            toml::from_str("completed = \"1h\"\nfailed = \"90d\"").unwrap();
        assert_eq!(policy.completed, Duration::from_secs(3600));
        assert_eq!(policy.failed, Duration::from_secs(90 * 86_400));
        assert_eq!(policy.cancelled, RetentionPolicy::default().cancelled);
        let err = toml::from_str::<RetentionPolicy>("completed = \"soon\"").unwrap_err();
        assert!(
            err.to_string().contains("invalid duration \"soon\""),
            "{err}"
        );
        let policy: RetentionPolicy = toml::from_str("interval = \"0s\"").unwrap();
        assert!(
            policy
                .validate()
                .unwrap_err()
                .contains("retention.interval")
        );
        let huge: RetentionPolicy = toml::from_str("failed = \"1000years\"").unwrap();
        assert!(huge.validate().is_err());
        // Even unvalidated, a huge age means "nothing is old enough", never a panic.
        assert!(huge.cutoffs(Utc::now())[1].1 < Utc::now());
    }
}
