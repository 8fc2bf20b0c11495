//! Start-up recovery: make the store and the in-memory queue agree before any worker
//! runs.
//!
//! A job that was `running` when the daemon died goes back to `pending` (at-least-once:
//! it runs again), the lost attempt counted against its `max_retries` (so a job that
//! kills the daemon fails once its retries are spent, instead of running at every
//! start); the stored pauses are applied, then every pending job, delayed retries with
//! their `run_at` kept, is loaded into the queue in dispatch order. On a shared store
//! (PostgreSQL) recovery touches only this node's own running jobs and loads nothing:
//! the database is the queue. The counts are logged.

use chrono::Utc;

use crate::queue::Manager;
use crate::store::StoreError;

/// What recovery did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Jobs found `running`, now `pending` again.
    pub reset_running: usize,
    /// Jobs found `running` with no retry left, now `failed` (kind `interrupted`).
    pub failed_interrupted: usize,
    /// Pending jobs loaded into the queue (including the reset ones); none on a shared
    /// store.
    pub loaded: usize,
    /// Of those, how many wait for a future `run_at`.
    pub delayed: usize,
}

/// Recovers the store into `manager`'s queue. Run once, before the workers start.
pub async fn recover(manager: &Manager) -> Result<RecoveryReport, StoreError> {
    // The pauses first, so that no job they hold is dispatched meanwhile.
    for pause in manager.store().pauses().await? {
        manager.queue().pause(&pause.target);
    }
    let now = Utc::now();
    let store = manager.store();
    let recovered = store.recover(now).await?;
    // On a shared store the database is the queue: nothing to load, and nothing of
    // the other nodes' to read.
    let pending = match store.shared() {
        Some(_) => Vec::new(),
        None => store.pending_jobs().await?,
    };
    let report = RecoveryReport {
        reset_running: recovered.reset_running,
        failed_interrupted: recovered.failed_interrupted,
        loaded: pending.len(),
        delayed: pending.iter().filter(|job| job.run_at > now).count(),
    };
    for job in pending {
        manager.enqueue(job);
    }
    // Outcomes whose dependents a crash left unsettled.
    manager.settle_dependents().await?;
    tracing::info!(
        reset_running = report.reset_running,
        failed_interrupted = report.failed_interrupted,
        loaded = report.loaded,
        delayed = report.delayed,
        "recovered jobs"
    );
    Ok(report)
}
