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
//!
//! Workspaces (`crate::workspace`) go with their jobs: after each prune,
//! [`sweep_workspaces`] removes the directory of every job that is gone, failed or
//! cancelled, so a workspace lives exactly as long as its completed job's row. At
//! start-up, before any worker runs, the same sweep in [`Sweep::Start`] also removes
//! what a daemon that died mid-attempt left (the job is pending again, and its next
//! attempt starts clean anyway) and empties the trash. The store needs no list of what
//! it pruned: the directories are the list, and one lookup per directory says whether
//! its job is still there.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::job::{JobId, JobStatus};
use crate::store::{Store, StoreError};
use crate::workspace::Workspaces;

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

/// Prunes every finished job older than `policy` allows, batch by batch, then (given
/// `workspaces`) the workspaces of jobs that are gone; returns how many jobs were
/// deleted.
pub async fn prune(
    store: &Store,
    workspaces: Option<&Workspaces>,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let deleted = prune_jobs(store, policy, now).await?;
    if let Some(workspaces) = workspaces {
        // The jobs are pruned whatever happens here; a workspace missed now goes at the
        // next prune.
        match sweep_workspaces(store, workspaces, Sweep::Finished).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed the workspaces of pruned jobs"),
            Err(err) => {
                tracing::warn!(error = %err, "cannot check the workspaces against the store; will try again")
            }
        }
    }
    Ok(deleted)
}

/// Which workspaces [`sweep_workspaces`] removes besides those of jobs that are gone,
/// failed or cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sweep {
    /// While jobs run: no others, as a pending or running job's attempt may be
    /// starting in its directory.
    Finished,
    /// At start-up, with no attempt running here: also those of pending and running
    /// jobs (an attempt that died with the daemon, or ran here before another daemon
    /// took the job over), and whatever the trash holds.
    Start,
}

/// Removes the workspaces that no job keeps any more (see [`Sweep`]): every directory
/// but those of completed jobs and, while the daemon runs, of pending and running ones.
/// Returns how many were removed; one that cannot be removed is logged and skipped.
pub async fn sweep_workspaces(
    store: &Store,
    workspaces: &Workspaces,
    sweep: Sweep,
) -> Result<usize, StoreError> {
    let listing = {
        let workspaces = workspaces.clone();
        tokio::task::spawn_blocking(move || workspaces.job_ids()).await
    };
    let ids = match listing {
        Ok(Ok(ids)) => ids,
        Ok(Err(err)) => {
            tracing::warn!(root = %workspaces.root().display(), error = %err, "cannot list the workspaces");
            return Ok(0);
        }
        Err(err) => {
            tracing::warn!(error = %err, "the workspace listing task failed");
            return Ok(0);
        }
    };
    let mut removed = 0;
    for id in ids {
        let keep = match store.get_job(id).await {
            Ok(job) => match job.status {
                JobStatus::Completed => true,
                JobStatus::Failed | JobStatus::Cancelled => false,
                JobStatus::Pending | JobStatus::Running => sweep == Sweep::Finished,
            },
            Err(StoreError::NotFound(_)) => false,
            Err(err) => return Err(err),
        };
        if !keep && remove_workspace(workspaces, id).await {
            removed += 1;
        }
    }
    if sweep == Sweep::Start {
        let workspaces = workspaces.clone();
        match tokio::task::spawn_blocking(move || workspaces.empty_trash()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(emptied)) => tracing::info!(emptied, "deleted workspaces left in the trash"),
            Ok(Err(err)) => tracing::warn!(error = %err, "cannot empty the workspaces' trash"),
            Err(err) => tracing::warn!(error = %err, "the trash task failed"),
        }
    }
    Ok(removed)
}

/// Removes job `id`'s workspace on a blocking thread; true when one was removed.
async fn remove_workspace(workspaces: &Workspaces, id: JobId) -> bool {
    let path = workspaces.path_of(id);
    let workspaces = workspaces.clone();
    match tokio::task::spawn_blocking(move || workspaces.remove(id)).await {
        Ok(Ok(removed)) => removed,
        Ok(Err(err)) => {
            tracing::warn!(job_id = %id, path = %path.display(), error = %err, "cannot remove a workspace");
            false
        }
        Err(err) => {
            tracing::warn!(job_id = %id, error = %err, "the workspace removal task failed");
            false
        }
    }
}

/// The job rows of [`prune`].
async fn prune_jobs(
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

/// Prunes (jobs, then workspaces) at start and then every `policy.interval` until
/// `stop` fires.
pub async fn run_pruner(
    store: Store,
    workspaces: Option<Workspaces>,
    policy: RetentionPolicy,
    stop: CancellationToken,
) {
    loop {
        let started = std::time::Instant::now();
        match prune(&store, workspaces.as_ref(), &policy, Utc::now()).await {
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
