//! The job-store boundary: what the queue, workers, scheduler, recovery, retention and
//! API need from a durable store, in domain types only.
//!
//! [`JobStore`] is the contract every backend keeps (SQLite embedded, PostgreSQL for
//! several daemons); [`Store`] is the cheap, cloneable handle the rest of the daemon
//! holds, so that nothing above this line changes with the backend. The contract is
//! written down once more as executable tests: the `honeydew-store` crate's contract
//! suite runs every behaviour below against each backend.
//!
//! The rules a backend keeps:
//! - a write is answered only after it is durable (claims excepted: a claim lost in a
//!   crash only means the job runs again, which recovery does anyway);
//! - every state change is guarded by the state it leaves (and, for a running job, by
//!   its attempt), so a transition whose guard no longer holds changes nothing and comes
//!   back as [`StoreError::StaleTransition`];
//! - a scheduled instant submits at most one job.

use std::ops::Deref;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::concurrency::{ConcurrencyLimits, Scope};
use crate::job::{ErrorKind, Job, JobId, JobStatus, PluginRef, QueuedJob};
use crate::output::{AttemptOutput, JobOutput, LogQuery};
use crate::pause::Pause;
use crate::rate_limit::RateLimitHold;
use crate::schedule::Schedule;

/// A job a worker has just moved to `running`, with the number of this attempt.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// The job as it now stands (status `running`).
    pub job: Job,
    /// 1 for the first attempt; counts every start, including ones a shutdown cut.
    pub attempt: u32,
}

/// What a finished attempt reports, besides its outcome.
#[derive(Clone, Debug, Default)]
pub struct AttemptReport {
    /// When the attempt ended.
    pub finished_at: DateTime<Utc>,
    /// How long it ran.
    pub duration_ms: u64,
    /// Fuel the sandbox burned, when the executor measures it.
    pub fuel_used: Option<u64>,
    /// The component that ran it, when a plugin was involved.
    pub plugin: Option<PluginRef>,
}

/// How an attempt ended, and so which state the job moves to from `running`.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// `completed` with this result.
    Completed(Vec<u8>),
    /// `failed` for good.
    Failed {
        /// What kind of failure.
        kind: ErrorKind,
        /// The message.
        error: String,
    },
    /// Back to `pending` with `retry_count + 1`, eligible at `run_at`.
    Retry {
        /// What kind of failure.
        kind: ErrorKind,
        /// The message.
        error: String,
        /// When the next attempt may start.
        run_at: DateTime<Utc>,
    },
    /// Back to `pending`, eligible at `run_at`, with `snooze_count + 1` and no retry
    /// spent: the plugin asked to run again later (kind `snoozed`, `reason` as the
    /// job's error while it waits).
    Snoozed {
        /// The plugin's reason.
        reason: String,
        /// When the next attempt may start.
        run_at: DateTime<Utc>,
    },
    /// Back to `pending`, eligible at `run_at`, no retry and no snooze spent: a rate
    /// limit of the plugin's API held the attempt (kind `rate_limited`, `reason` as the
    /// job's error while it waits).
    RateLimited {
        /// Which limit, and until when.
        reason: String,
        /// When the quota resets.
        run_at: DateTime<Utc>,
    },
    /// `cancelled` on request while running.
    Cancelled,
    /// `cancelled` by the job's own plugin, for good (kind `cancelled_by_plugin`,
    /// `reason` as the job's error).
    CancelledByPlugin {
        /// The plugin's reason.
        reason: String,
    },
    /// Back to `pending` unchanged: the daemon stopped before the attempt finished.
    Interrupted,
    /// Back to `pending`, no retry spent: no loaded plugin serves the command just now
    /// (it is being replaced, say); the job waits for the plugin, `reason` says so.
    Parked {
        /// What the job waits for, shown as its error while it waits.
        reason: String,
    },
}

impl Outcome {
    /// The state the job moves to.
    pub fn status(&self) -> JobStatus {
        match self {
            Outcome::Completed(_) => JobStatus::Completed,
            Outcome::Failed { .. } => JobStatus::Failed,
            Outcome::Cancelled | Outcome::CancelledByPlugin { .. } => JobStatus::Cancelled,
            Outcome::Retry { .. }
            | Outcome::Snoozed { .. }
            | Outcome::RateLimited { .. }
            | Outcome::Interrupted
            | Outcome::Parked { .. } => JobStatus::Pending,
        }
    }

    /// The attempt's recorded outcome (`job_attempts.outcome`).
    pub fn attempt_outcome(&self) -> &'static str {
        match self {
            Outcome::Completed(_) => "completed",
            Outcome::Failed { .. } => "failed",
            Outcome::Retry { .. } => "retrying",
            Outcome::Snoozed { .. } => "snoozed",
            Outcome::RateLimited { .. } => "rate_limited",
            Outcome::Cancelled | Outcome::CancelledByPlugin { .. } => "cancelled",
            Outcome::Interrupted => "interrupted",
            Outcome::Parked { .. } => "parked",
        }
    }

    /// The error kind and message the job records, if the attempt did not complete.
    pub fn error(&self) -> Option<(ErrorKind, &str)> {
        match self {
            Outcome::Failed { kind, error } | Outcome::Retry { kind, error, .. } => {
                Some((*kind, error))
            }
            Outcome::Snoozed { reason, .. } => Some((ErrorKind::Snoozed, reason)),
            Outcome::RateLimited { reason, .. } => Some((ErrorKind::RateLimited, reason)),
            Outcome::Cancelled => Some((ErrorKind::Cancelled, "cancelled on request")),
            Outcome::CancelledByPlugin { reason } => Some((ErrorKind::CancelledByPlugin, reason)),
            Outcome::Interrupted => Some((ErrorKind::Shutdown, "interrupted by daemon shutdown")),
            Outcome::Parked { reason } => Some((ErrorKind::PluginUnavailable, reason)),
            Outcome::Completed(_) => None,
        }
    }

    /// The retry this outcome spends (1 for [`Outcome::Retry`], else 0) and the instant
    /// the job becomes eligible again, if it moves.
    pub fn retry(&self) -> (u32, Option<DateTime<Utc>>) {
        match self {
            Outcome::Retry { run_at, .. } => (1, Some(*run_at)),
            Outcome::Snoozed { run_at, .. } | Outcome::RateLimited { run_at, .. } => {
                (0, Some(*run_at))
            }
            _ => (0, None),
        }
    }

    /// The snooze this outcome counts: 1 for [`Outcome::Snoozed`], else 0.
    pub fn snoozes(&self) -> u32 {
        u32::from(matches!(self, Outcome::Snoozed { .. }))
    }
}

/// Which jobs to list. Results come newest first.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub status: Option<JobStatus>,
    /// Only jobs of this command.
    pub command: Option<String>,
    /// At most this many (capped at [`LIST_LIMIT_MAX`]; 0 means [`LIST_LIMIT_DEFAULT`]).
    pub limit: usize,
    /// Continue after this job (the previous page's `next_cursor`).
    pub cursor: Option<JobId>,
    /// Read payloads and results too; without it they come back empty, unread.
    pub with_bodies: bool,
}

/// A listing's page size when the filter names none.
pub const LIST_LIMIT_DEFAULT: usize = 50;
/// The largest page a listing returns.
pub const LIST_LIMIT_MAX: usize = 1000;

impl JobFilter {
    /// The page size this filter asks for, within the bounds.
    pub fn page_size(&self) -> usize {
        match self.limit {
            0 => LIST_LIMIT_DEFAULT,
            n => n.min(LIST_LIMIT_MAX),
        }
    }
}

/// One page of [`JobStore::list_jobs`].
#[derive(Clone, Debug)]
pub struct JobPage {
    /// The jobs, newest first.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<JobId>,
}

impl JobPage {
    /// A page from up to `limit + 1` jobs read newest first: the extra one, when
    /// present, only says that another page follows.
    pub fn from_overfetch(mut jobs: Vec<Job>, limit: usize) -> Self {
        let next_cursor = if jobs.len() > limit {
            jobs.truncate(limit);
            jobs.last().map(|job| job.id)
        } else {
            None
        };
        Self { jobs, next_cursor }
    }
}

/// What recovery found at start-up.
#[derive(Clone, Debug, Default)]
pub struct RecoveredJobs {
    /// Jobs that were `running` when the daemon died, now `pending` again (the lost
    /// attempt counted as a retry).
    pub reset_running: usize,
    /// Jobs that were `running` when the daemon died with no retry left: `failed`
    /// (kind `interrupted`). A job that kills the daemon every time ends here.
    pub failed_interrupted: usize,
}

/// One recorded attempt of a job, as [`JobStore::attempts`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRow {
    /// 1-based attempt number.
    pub attempt: u32,
    /// The worker that ran it.
    pub worker_id: Option<u32>,
    /// `completed`, `failed`, `retrying`, `snoozed`, `rate_limited`, `cancelled`,
    /// `interrupted`, `parked`; `None` while open.
    pub outcome: Option<String>,
    /// The error's kind, if it failed.
    pub error_kind: Option<ErrorKind>,
    /// The error's message, if it failed.
    pub error: Option<String>,
    /// How long it ran.
    pub duration_ms: Option<u64>,
    /// Fuel burned, when measured.
    pub fuel_used: Option<u64>,
}

/// How many jobs of one command are in one state, as [`JobStore::count_jobs`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobCount {
    /// `plugin.command`.
    pub command: String,
    /// The state.
    pub status: JobStatus,
    /// How many jobs of `command` are in `status` (never 0: absent pairs are not listed).
    pub count: u64,
}

/// How many jobs reached each final state within one minute, as
/// [`JobStore::finished_per_minute`] reads it (the dashboard's throughput and failures).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedMinute {
    /// The minute's first instant (seconds and below zero, UTC).
    pub minute: DateTime<Utc>,
    /// Jobs that completed in it.
    pub completed: u64,
    /// Jobs that failed for good in it.
    pub failed: u64,
    /// Jobs cancelled in it.
    pub cancelled: u64,
}

/// What a backend's group commit has done since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Transactions committed (each one fsync when durable).
    pub commits: u64,
    /// Writes those commits carried: `writes / commits` is the mean batch size.
    pub writes: u64,
    /// Commits made without an fsync of their own: batches of claims only.
    pub relaxed_commits: u64,
}

/// The message a recovered job records as its error.
pub const DIED_DURING_ATTEMPT: &str = "the daemon died during the attempt";

/// What can go wrong in a store. Callers branch on `StaleTransition`, `NotFound`, `Full`
/// and the schedule variants; the rest are reported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database refused an operation.
    #[error("database error: {0}")]
    Database(String),
    /// The disk (or the database's size limit) is full: the write did not happen.
    /// Writes succeed again by themselves once space returns.
    #[error(
        "the job database is full ({0}): free disk space or raise its size limit; nothing was stored"
    )]
    Full(String),
    /// The commit that carried this write failed; the write did not happen.
    #[error("database commit failed: {0}")]
    Commit(String),
    /// The database was written by a newer daemon.
    #[error(
        "database schema version {found} is newer than this daemon supports ({supported}); upgrade honeydewd"
    )]
    SchemaTooNew {
        /// Version found in the database.
        found: u32,
        /// Newest version this binary knows.
        supported: u32,
    },
    /// A schema migration could not be applied; the database was left as it was.
    #[error("cannot migrate the database to schema version {version}: {reason}")]
    Migration {
        /// The version the migration leads to.
        version: u32,
        /// Why it was refused.
        reason: String,
    },
    /// No job has this id.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// No schedule has this name or id.
    #[error("no schedule named or with id {0:?}")]
    ScheduleNotFound(String),
    /// Another schedule already has this name.
    #[error("a schedule named {0:?} already exists")]
    DuplicateSchedule(String),
    /// A guarded transition found the job in another state and changed nothing.
    #[error("job {id} is {actual}, not {expected}: transition ignored")]
    StaleTransition {
        /// The job.
        id: JobId,
        /// The state the transition required.
        expected: JobStatus,
        /// The state the job is actually in.
        actual: JobStatus,
    },
    /// A stored value could not be read back (a hand-edited row, say).
    #[error("corrupt row for job {id}: {reason}")]
    Corrupt {
        /// The job's id as stored.
        id: String,
        /// What was wrong.
        reason: String,
    },
    /// The store is closed or its connection broke; the write did not happen.
    #[error("the store is closed or its connection failed")]
    Closed,
    /// The database could not be opened or prepared.
    #[error("cannot open database {target}: {reason}")]
    Open {
        /// The file or server (without credentials).
        target: String,
        /// Why.
        reason: String,
    },
}

/// Which jobs a bulk retry or cancel acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkFilter {
    /// Only jobs in this state.
    pub status: JobStatus,
    /// Only jobs of this command.
    pub command: Option<String>,
    /// Only jobs submitted at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only jobs whose id comes after this one (the previous batch's last), so that a
    /// bulk action visits each job once however the jobs move meanwhile.
    pub after: Option<JobId>,
}

/// What a submit with a unique key asks: which earlier job holding the key blocks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uniqueness {
    /// The key (chosen by the submitter: a repository, a tenant, a day...).
    pub key: String,
    /// Only a holder created within this long blocks; `None`: any holder, for ever.
    pub within: Option<chrono::TimeDelta>,
    /// Only a holder in one of these states blocks (pending and running by default).
    pub states: Vec<JobStatus>,
    /// Whether a pending holder takes the new payload instead (debounce).
    pub replace: bool,
}

impl Uniqueness {
    /// The states that block by default: a job waiting or running.
    pub const DEFAULT_STATES: [JobStatus; 2] = [JobStatus::Pending, JobStatus::Running];

    /// Whether a holder in `status`, created at `created_at`, blocks a new job at `now`.
    pub fn blocks(&self, status: JobStatus, created_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.states.contains(&status)
            && self
                .within
                .is_none_or(|within| now.signed_duration_since(created_at) < within)
    }
}

/// What an outcome or a settling did to the jobs waiting for others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Jobs whose dependencies all completed: pending and eligible now.
    pub released: Vec<QueuedJob>,
    /// Jobs cancelled (kind `dependency_failed`) because one they depend on failed or
    /// was cancelled.
    pub cancelled: Vec<JobId>,
}

/// How a job with dependencies was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterInsert {
    /// Pending, waiting for this many dependencies to complete (0: eligible now).
    Waiting(usize),
    /// Cancelled at once: this dependency had already failed or been cancelled.
    Cancelled(JobId),
}

/// The most jobs one job may depend on.
pub const MAX_DEPENDENCIES: usize = 64;

/// What a submit with a unique key did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UniqueInsert {
    /// No blocking holder: the new job is stored and holds the key now.
    Inserted,
    /// A blocking holder exists; nothing was stored.
    Held(JobId),
    /// A pending holder took the new payload (and priority); no new job.
    Replaced(JobId),
}

/// The durable job store, whatever the backend. Every method is one unit of work that
/// either happens entirely or not at all.
#[async_trait::async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Inserts a new pending job; returns once the row is durable.
    async fn insert_job(&self, job: Job) -> Result<(), StoreError>;

    /// Inserts every job, in one transaction: all of them are durable, or none is.
    async fn insert_jobs(&self, jobs: Vec<Job>) -> Result<(), StoreError>;

    /// Inserts `job` unless a job holding `unique.key` blocks it (see [`Uniqueness`]),
    /// race-free among concurrent submits, on every node. When it is inserted, `job`
    /// holds the key from then on.
    async fn insert_unique(&self, job: Job, unique: Uniqueness)
    -> Result<UniqueInsert, StoreError>;

    /// Puts a failed or cancelled job back to `pending`, due now, with a fresh retry
    /// budget (`retry_count` and `snooze_count` 0, error cleared; its attempts so far
    /// are kept).
    /// [`StoreError::StaleTransition`] when it is in another state.
    async fn retry_job(&self, id: JobId, now: DateTime<Utc>) -> Result<QueuedJob, StoreError>;

    /// Like [`JobStore::retry_job`] for up to `limit` jobs matching `filter` (whose
    /// status must be failed or cancelled), in id order; what was retried.
    async fn retry_matching(
        &self,
        filter: BulkFilter,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<QueuedJob>, StoreError>;

    /// Cancels up to `limit` pending jobs matching `filter` (whose status must be
    /// pending), in id order; the ids cancelled.
    async fn cancel_matching(
        &self,
        filter: BulkFilter,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError>;

    /// Moves a pending, eligible job to `running` and opens its attempt. `Ok(None)` when
    /// the job is no longer pending (cancelled meanwhile, claimed elsewhere) or not yet
    /// eligible at `now`.
    async fn claim(
        &self,
        id: JobId,
        worker_id: usize,
        now: DateTime<Utc>,
    ) -> Result<Option<Claimed>, StoreError>;

    /// Ends attempt `attempt` of a running job with `outcome`. A job that is not running
    /// that attempt any more is left alone: [`StoreError::StaleTransition`]. A retry or
    /// a snooze adds to `retry_count` or `snooze_count` ([`Outcome::retry`],
    /// [`Outcome::snoozes`]); nothing else changes either.
    async fn finish(
        &self,
        id: JobId,
        attempt: u32,
        outcome: Outcome,
        report: AttemptReport,
    ) -> Result<Settled, StoreError>;

    /// Inserts a new job that waits for the jobs `after` to complete, in one
    /// transaction: eligible once all of them completed, cancelled (kind
    /// `dependency_failed`) once one of them fails or is cancelled, which may be at
    /// once. [`StoreError::NotFound`] for a dependency that does not exist.
    async fn insert_after(&self, job: Job, after: Vec<JobId>) -> Result<AfterInsert, StoreError>;

    /// Brings every job that waits for others in line with them: cancels (with every
    /// job waiting on it in turn) each one whose dependency failed or was cancelled,
    /// and releases each one whose dependencies all completed. Idempotent; run after
    /// cancels and recoveries, and now and then, since those do not settle their
    /// dependents themselves.
    async fn settle_dependents(&self, now: DateTime<Utc>) -> Result<Settled, StoreError>;

    /// The jobs job `id` depends on, with their statuses (a pruned one is absent).
    async fn dependencies(&self, id: JobId) -> Result<Vec<(JobId, JobStatus)>, StoreError>;

    /// Cancels a pending job. [`StoreError::StaleTransition`] when it is not pending.
    async fn cancel_pending(&self, id: JobId, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Start-up recovery: every `running` job the daemon died under (on a shared
    /// queue, only this node's) has its open attempt marked `interrupted` and counted
    /// against `max_retries`: back to `pending` while retries are left, `failed` (kind
    /// `interrupted`) once they are spent. No other job is read or touched.
    async fn recover(&self, now: DateTime<Utc>) -> Result<RecoveredJobs, StoreError>;

    /// Every pending job that waits on no other, delayed retries included, in dispatch
    /// order: what a daemon whose queue lives in memory loads at start-up, after
    /// [`JobStore::recover`]. A [`SharedQueue`]'s daemons never call it (the database
    /// is their queue, and reading it whole at every start would grow with the backlog).
    async fn pending_jobs(&self) -> Result<Vec<QueuedJob>, StoreError>;

    /// Deletes up to `limit` jobs in `status` (a finished one) that finished before
    /// `before`, with their attempts; returns how many. One short write: call it again
    /// while it returns `limit`.
    async fn prune_finished(
        &self,
        status: JobStatus,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, StoreError>;

    /// One job by id.
    async fn get_job(&self, id: JobId) -> Result<Job, StoreError>;

    /// One job by id with the number of its latest attempt (0 before the first), read
    /// together so the two always belong to the same moment.
    async fn get_job_with_attempt(&self, id: JobId) -> Result<(Job, u32), StoreError>;

    /// Jobs matching `filter`, newest first, one page at a time.
    async fn list_jobs(&self, filter: JobFilter) -> Result<JobPage, StoreError>;

    /// Every attempt of a job, oldest first.
    async fn attempts(&self, id: JobId) -> Result<Vec<AttemptRow>, StoreError>;

    /// How many jobs each command has in each state, by command then state (in
    /// [`JobStatus::ALL`] order); pairs with no job are left out. One read, so the
    /// counts belong to one moment; it reads every job row (the metrics scrape).
    async fn count_jobs(&self) -> Result<Vec<JobCount>, StoreError>;

    /// How many jobs reached a final state (by `completed_at`) at or after `since`, by
    /// minute, oldest first; minutes when none did are left out. One
    /// read over the jobs (no index covers `completed_at`): meant for the dashboard's
    /// charts of the last hour, not for a hot path.
    async fn finished_per_minute(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<FinishedMinute>, StoreError>;

    /// Appends attempt output of job `id`: its new log lines (each attempt's log then
    /// trimmed to its tail, the last [`crate::output::MAX_LOG_LINES`] lines within
    /// [`crate::output::MAX_LOG_BYTES`]) and its latest progress, in one write that
    /// need not survive power loss. A line whose (attempt, seq) is already stored is
    /// skipped; output of a job that is gone is dropped.
    async fn append_output(&self, id: JobId, output: AttemptOutput) -> Result<(), StoreError>;

    /// The log lines of job `id` that `query` asks for, in order (attempt, then seq),
    /// and the progress of its latest attempt (or of the attempt asked for).
    /// [`StoreError::NotFound`] when there is no such job.
    async fn job_output(&self, id: JobId, query: LogQuery) -> Result<JobOutput, StoreError>;

    /// Adds a schedule; [`StoreError::DuplicateSchedule`] when its name is taken.
    async fn insert_schedule(&self, schedule: Schedule) -> Result<(), StoreError>;

    /// Removes the schedule named `key` (or with id `key`) and returns it.
    async fn delete_schedule(&self, key: String) -> Result<Schedule, StoreError>;

    /// Every schedule, by name.
    async fn list_schedules(&self) -> Result<Vec<Schedule>, StoreError>;

    /// One schedule by id.
    async fn get_schedule(&self, id: Uuid) -> Result<Schedule, StoreError>;

    /// Records that schedule `id` fired for `scheduled_for` and inserts its `job`, in one
    /// transaction. `Ok(false)` (and no job) when that instant was already triggered, or
    /// the schedule is paused or gone.
    async fn trigger_schedule(
        &self,
        id: Uuid,
        scheduled_for: DateTime<Utc>,
        next_run_at: Option<DateTime<Utc>>,
        job: Job,
    ) -> Result<bool, StoreError>;

    /// Records why an instant of schedule `id` submitted no job, and moves its
    /// `next_run_at` on.
    async fn record_schedule_error(
        &self,
        id: Uuid,
        error: String,
        at: DateTime<Utc>,
        next_run_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError>;

    /// Moves a schedule's `next_run_at` (after skipping missed instants, say).
    async fn set_schedule_next_run(
        &self,
        id: Uuid,
        next_run_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError>;

    /// Pauses schedule `key` (its name or id) when `enabled` is false, resumes it when
    /// true; the schedule as it is now. [`StoreError::ScheduleNotFound`] when none has
    /// that name or id.
    async fn set_schedule_enabled(
        &self,
        key: String,
        enabled: bool,
    ) -> Result<Schedule, StoreError>;

    /// Pauses `target`, a plugin or a command (see [`crate::pause`]) from `at`; false
    /// when it already was paused (the first pause's time stays).
    async fn pause(&self, target: String, at: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Ends the pause of `target`; false when there was none. On a shared store, every
    /// node's idle workers look again.
    async fn resume(&self, target: String) -> Result<bool, StoreError>;

    /// Every pause, by target.
    async fn pauses(&self) -> Result<Vec<Pause>, StoreError>;

    /// Records a spent quota (see [`crate::rate_limit`]): from the commit on, no node
    /// claims a job of `hold.plugin` before `hold.until`. A hold of the same plugin,
    /// host and credential keeps the later end. Holds that ended are dropped.
    async fn hold_rate_limit(&self, hold: RateLimitHold) -> Result<(), StoreError>;

    /// Every hold still live at `now`, by plugin, host and credential.
    async fn rate_limit_holds(&self, now: DateTime<Utc>) -> Result<Vec<RateLimitHold>, StoreError>;

    /// How many pending jobs a claim at `now` would take before job `id`: eligible,
    /// not held by a pause, and of higher priority, or of its priority and older.
    async fn count_ahead(&self, id: JobId, now: DateTime<Utc>) -> Result<u64, StoreError>;

    /// How many jobs of `scope` (a plugin, a command, or a key within a plugin) are
    /// `running`, on every node.
    async fn running_in(&self, scope: Scope) -> Result<u64, StoreError>;

    /// What group commit has done so far.
    fn commit_stats(&self) -> CommitStats;

    /// Where the data lives, for logs and errors: a file path or a server and database,
    /// never a password.
    fn describe(&self) -> String;

    /// The queue several daemons share, when this backend is one they can share; `None`
    /// for a store only one daemon opens (SQLite), whose queue is kept in memory.
    fn shared(&self) -> Option<&dyn SharedQueue> {
        None
    }
}

/// What [`SharedQueue::claim_next`] found.
#[derive(Clone, Debug)]
pub enum ClaimNext {
    /// A job, now `running` on this node.
    Claimed(Box<Claimed>),
    /// Nothing eligible now; the earliest instant a pending job among the commands
    /// becomes eligible, if any is pending.
    NothingUntil(Option<DateTime<Utc>>),
}

/// What [`SharedQueue::rescue_expired`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rescued {
    /// Jobs of dead nodes back to `pending`, the lost attempt counted as a retry.
    pub reset: usize,
    /// Jobs of dead nodes with no retry left, now `failed` (kind `interrupted`).
    pub failed: usize,
    /// Jobs of dead nodes whose cancel had been asked for, now `cancelled`.
    pub cancelled: usize,
}

/// The queue of a store several daemons (nodes) share: the database is the queue, each
/// node claims from it, and each node's running jobs are leased to it by its
/// heartbeat.
///
/// A node claims only the commands it serves, best first across every node (priority,
/// then age), never a job another node is claiming at the same moment. A node whose
/// heartbeat is older than the lease is presumed dead: any other node puts its running
/// jobs back (counting the lost attempt), and since every outcome is fenced by
/// (job id, attempt), the presumed-dead node changes nothing if it wakes up.
#[async_trait::async_trait]
pub trait SharedQueue: Send + Sync {
    /// This node's id: the jobs it runs carry it.
    fn node_id(&self) -> &str;

    /// Records that this node is alive, renewing the lease on its running jobs.
    async fn heartbeat(&self) -> Result<(), StoreError>;

    /// Claims the best eligible pending job among `commands` (every command when
    /// `None`) for `worker_id` on this node, within `limits`: a job whose plugin,
    /// command or key runs as many jobs as its limit allows (counted on every node) is
    /// left pending, and keys take turns (see [`crate::concurrency`]).
    async fn claim_next(
        &self,
        commands: Option<Vec<String>>,
        limits: &ConcurrencyLimits,
        worker_id: usize,
    ) -> Result<ClaimNext, StoreError>;

    /// Wakes every node's idle workers: a slot of a concurrency limit was freed.
    async fn wake_all(&self) -> Result<(), StoreError>;

    /// How many nodes (this one included) heartbeat within `lease_ms`, by the
    /// database's clock: the live ones, which share a declared rate limit.
    async fn live_nodes(&self, lease_ms: u64) -> Result<u32, StoreError>;

    /// Puts back the running jobs of every other node whose heartbeat is older than
    /// `lease_ms` (by the database's clock, so nodes' clocks need not agree).
    async fn rescue_expired(&self, lease_ms: u64) -> Result<Rescued, StoreError>;

    /// Wake-ups: the value changes whenever work may have arrived (a submit, a retry or
    /// a rescue on any node). Mark it seen before claiming and wait for a change after
    /// claiming nothing, and no wake-up is lost; some may be spurious.
    fn wake_ups(&self) -> tokio::sync::watch::Receiver<u64>;

    /// The state changes of every job some node [watches](SharedQueue::watch),
    /// whichever node made them (this one included), as the database announces them.
    /// Best effort: a lagging receiver or a lost connection misses some, so a follower
    /// also reads the job again now and then.
    fn job_changes(&self) -> tokio::sync::broadcast::Receiver<JobChange>;

    /// Has the changes of jobs `ids` announced to every node from now on (they are not
    /// otherwise: announcing every change costs every claim and every finish). Counted
    /// per job on this node: each call pairs with one [`SharedQueue::unwatch`], and the
    /// announcements stop when the last watch of a job ends. A job need not exist yet.
    async fn watch(&self, ids: &[JobId]) -> Result<(), StoreError>;

    /// Ends one watch of each of `ids` begun by [`SharedQueue::watch`].
    async fn unwatch(&self, ids: &[JobId]) -> Result<(), StoreError>;

    /// What other nodes ask of this one: cancels of the jobs it runs, schedule changes,
    /// and a [`ClusterSignal::Resynced`] whenever some of these may have been missed.
    fn signals(&self) -> tokio::sync::broadcast::Receiver<ClusterSignal>;

    /// Asks the node running job `id` to cancel it: records the request on the job's
    /// current attempt (so that it holds even if the node misses the message, and an
    /// attempt ending in a retry or a snooze ends `cancelled` instead) and tells that node. The
    /// node and attempt, or `None` when the job is not running.
    async fn request_cancel(&self, id: JobId) -> Result<Option<(String, u32)>, StoreError>;

    /// This node's running jobs whose cancel was requested, with their attempts: read
    /// after a [`ClusterSignal::Resynced`] and now and then, so that no request is lost.
    async fn cancels_requested(&self) -> Result<Vec<(JobId, u32)>, StoreError>;
}

/// A job's state change, as a shared store announces it to every node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobChange {
    /// The job.
    pub id: JobId,
    /// Its status after the change.
    pub status: JobStatus,
    /// Its attempt counter after the change.
    pub attempt: u32,
    /// Its retries after the change.
    pub retry_count: u32,
}

/// A message from the shared store to this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterSignal {
    /// Cancel attempt `attempt` of job `id`, which this node runs.
    CancelRequested {
        /// The job.
        id: JobId,
        /// The attempt the cancel is for.
        attempt: u32,
    },
    /// Schedules were added, removed or changed, on some node.
    SchedulesChanged,
    /// New output (log lines, progress) of job `id`, which some node watches, was
    /// stored, on some node.
    OutputWritten {
        /// The job.
        id: JobId,
    },
    /// The connection that carries these came back: some may have been lost, so look
    /// again at what they would have said.
    Resynced,
}

/// The handle the daemon holds: one backend behind [`JobStore`], shared by clones.
#[derive(Clone)]
pub struct Store(Arc<dyn JobStore>);

impl Store {
    /// Wraps a backend.
    pub fn new(backend: impl JobStore) -> Self {
        Self(Arc::new(backend))
    }
}

impl Deref for Store {
    type Target = dyn JobStore;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Store").field(&self.0.describe()).finish()
    }
}
