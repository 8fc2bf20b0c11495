//! The job model: what a job is, the states it moves through and which moves are legal.
//!
//! This module owns [`Job`], [`JobStatus`], [`JobId`] and [`ErrorKind`]. It holds no I/O:
//! the store persists jobs, the manager and workers drive the transitions, and every
//! transition they make is first checked here with [`JobStatus::can_transition_to`].

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

/// A job's identity: a UUID v7, so ids sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct JobId(Uuid);

impl JobId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The UUID itself (a store binds it as its native type where it has one).
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for JobId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Where a job is in its life. Terminal states never change again.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum JobStatus {
    /// Waiting for a worker (possibly until `run_at`, after a failed attempt or a
    /// snooze).
    Pending,
    /// A worker is running it.
    Running,
    /// Finished with a result.
    Completed,
    /// Finished with an error that retrying could not fix.
    Failed,
    /// Stopped on request, or by its own plugin.
    Cancelled,
}

impl JobStatus {
    /// Every status, in life order.
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// The lowercase name stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the job is finished for good.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// The legal moves: `pending -> running | cancelled`, `running -> completed | failed
    /// | cancelled | pending` (a retry or a shutdown puts it back). Nothing leaves a
    /// terminal state.
    pub fn can_transition_to(self, next: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, next),
            (Pending, Running)
                | (Pending, Cancelled)
                | (Running, Completed)
                | (Running, Failed)
                | (Running, Cancelled)
                | (Running, Pending)
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of the five.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown job status {0:?} (expected one of: pending, running, completed, failed, cancelled)"
)]
pub struct UnknownStatus(pub String);

impl FromStr for JobStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// Why an attempt did not complete, recorded in `jobs.error_kind` and `job_attempts`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ErrorKind {
    /// The plugin's own error, retriable or permanent as it classified it.
    PluginError,
    /// The guest was still computing when its wall-clock deadline passed (permanent:
    /// a guest that spins would spin again).
    Timeout,
    /// The deadline passed while the guest waited on an outgoing HTTP call (retriable:
    /// the upstream server was slow, not the plugin).
    UpstreamTimeout,
    /// The fuel budget ran out.
    FuelExhausted,
    /// The sandbox asked for more memory than its limit.
    MemoryLimit,
    /// The guest trapped (panic, unreachable, bad arithmetic).
    Trap,
    /// The plugin tried to reach a host its manifest does not grant.
    EgressDenied,
    /// No loaded plugin serves the command.
    UnknownCommand,
    /// Cancelled on request.
    Cancelled,
    /// The daemon stopped while the job ran; it was put back to pending.
    Shutdown,
    /// The daemon died during the attempt (found `running` at start-up); the attempt
    /// counts against `max_retries`.
    Interrupted,
    /// A bug in the host panicked during the attempt; caught, and retried.
    HostPanic,
    /// No loaded plugin serves the command now, though one did at submit: the job
    /// waits, pending, until the plugin is back.
    PluginUnavailable,
    /// The host itself failed (database, instantiation); not the plugin's fault.
    Internal,
    /// A job it depends on failed or was cancelled, so it never ran.
    DependencyFailed,
    /// Not an error: the plugin snoozed the job, which waits, pending, until its
    /// `run_at`; the job's error is the plugin's reason.
    Snoozed,
    /// The plugin cancelled its own job (final, never retried); the job's error is the
    /// plugin's reason.
    CancelledByPlugin,
    /// The plugin asked to snooze a job that had already snoozed as often as the daemon
    /// allows (`max_snoozes`): it failed instead, so no plugin keeps a job for ever.
    SnoozeLimit,
    /// Not an error: a rate limit of its plugin's API holds the job, which waits,
    /// pending, until the quota resets, spending no retry.
    RateLimited,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 19] = [
        ErrorKind::PluginError,
        ErrorKind::Timeout,
        ErrorKind::UpstreamTimeout,
        ErrorKind::FuelExhausted,
        ErrorKind::MemoryLimit,
        ErrorKind::Trap,
        ErrorKind::EgressDenied,
        ErrorKind::UnknownCommand,
        ErrorKind::Cancelled,
        ErrorKind::Shutdown,
        ErrorKind::Interrupted,
        ErrorKind::HostPanic,
        ErrorKind::PluginUnavailable,
        ErrorKind::Internal,
        ErrorKind::DependencyFailed,
        ErrorKind::Snoozed,
        ErrorKind::CancelledByPlugin,
        ErrorKind::SnoozeLimit,
        ErrorKind::RateLimited,
    ];

    /// The snake_case name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::PluginError => "plugin_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::FuelExhausted => "fuel_exhausted",
            ErrorKind::MemoryLimit => "memory_limit",
            ErrorKind::Trap => "trap",
            ErrorKind::EgressDenied => "egress_denied",
            ErrorKind::UnknownCommand => "unknown_command",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Shutdown => "shutdown",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::HostPanic => "host_panic",
            ErrorKind::PluginUnavailable => "plugin_unavailable",
            ErrorKind::Internal => "internal",
            ErrorKind::DependencyFailed => "dependency_failed",
            ErrorKind::Snoozed => "snoozed",
            ErrorKind::CancelledByPlugin => "cancelled_by_plugin",
            ErrorKind::SnoozeLimit => "snooze_limit",
            ErrorKind::RateLimited => "rate_limited",
        }
    }

    /// Parses a stored name; unknown names (from a newer daemon) read as `Internal`.
    pub fn parse(s: &str) -> ErrorKind {
        ErrorKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .unwrap_or(ErrorKind::Internal)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which component ran a job: filled in by the runtime on each attempt.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct PluginRef {
    /// The plugin's name (`github`).
    pub name: String,
    /// The version the plugin reported from `describe`.
    pub version: String,
    /// Hex sha256 of the component file.
    pub sha256: String,
}

/// A unit of work: a command, its payload, and everything that happened to it.
#[derive(Clone, PartialEq, Debug)]
pub struct Job {
    /// Time-ordered unique id.
    pub id: JobId,
    /// `plugin.command`, such as `github.commits`.
    pub command: String,
    /// Input handed to the plugin, usually JSON.
    pub payload: Vec<u8>,
    /// Higher runs first.
    pub priority: i64,
    /// Current state.
    pub status: JobStatus,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When it becomes eligible to run (later than `created_at` after a retriable failure
    /// or a snooze).
    pub run_at: DateTime<Utc>,
    /// When the latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal state.
    pub completed_at: Option<DateTime<Utc>>,
    /// The plugin's output, once completed.
    pub result: Option<Vec<u8>>,
    /// The latest error message.
    pub error: Option<String>,
    /// The kind of the latest error.
    pub error_kind: Option<ErrorKind>,
    /// Failed attempts that were retried so far.
    pub retry_count: u32,
    /// Retries allowed after the first attempt.
    pub max_retries: u32,
    /// Times the plugin snoozed the job so far (a snooze spends no retry).
    pub snooze_count: u32,
    /// The component that ran the latest attempt.
    pub plugin: Option<PluginRef>,
    /// The W3C `traceparent` its attempts continue: the submit's span when the daemon
    /// exports traces, else the submitting client's own, else none.
    pub trace_parent: Option<String>,
    /// The concurrency key it was submitted with (one repository, one tenant...): at
    /// most a few jobs of its plugin with the same key run at once, and keys take
    /// turns (see [`crate::concurrency`]).
    pub concurrency_key: Option<String>,
}

impl Job {
    /// A new pending job, eligible at once.
    pub fn new(
        command: impl Into<String>,
        payload: Vec<u8>,
        priority: i64,
        max_retries: u32,
    ) -> Self {
        Self::new_at(command, payload, priority, max_retries, Utc::now())
    }

    /// A new pending job created at `now`, kept to the millisecond precision the store
    /// records (the clock is a parameter so tests are exact).
    pub fn new_at(
        command: impl Into<String>,
        payload: Vec<u8>,
        priority: i64,
        max_retries: u32,
        now: DateTime<Utc>,
    ) -> Self {
        let now = now.trunc_subsecs(3);
        Self {
            id: JobId::new(),
            command: command.into(),
            payload,
            priority,
            status: JobStatus::Pending,
            created_at: now,
            run_at: now,
            started_at: None,
            completed_at: None,
            result: None,
            error: None,
            error_kind: None,
            retry_count: 0,
            max_retries,
            snooze_count: 0,
            trace_parent: None,
            concurrency_key: None,
            plugin: None,
        }
    }

    /// Whether another attempt is allowed after a retriable failure.
    pub fn can_retry(&self) -> bool {
        self.retry_count < self.max_retries
    }

    /// Moves to `running` at `now`.
    pub fn mark_running(&mut self, now: DateTime<Utc>) -> Result<(), InvalidTransition> {
        self.transition(JobStatus::Running)?;
        self.started_at = Some(now);
        Ok(())
    }

    /// Moves to `completed` with `result`.
    pub fn mark_completed(
        &mut self,
        result: Vec<u8>,
        now: DateTime<Utc>,
    ) -> Result<(), InvalidTransition> {
        self.transition(JobStatus::Completed)?;
        self.result = Some(result);
        self.error = None;
        self.error_kind = None;
        self.completed_at = Some(now);
        Ok(())
    }

    /// Moves to `failed` with `error` of `kind`.
    pub fn mark_failed(
        &mut self,
        kind: ErrorKind,
        error: impl Into<String>,
        now: DateTime<Utc>,
    ) -> Result<(), InvalidTransition> {
        self.transition(JobStatus::Failed)?;
        self.error = Some(error.into());
        self.error_kind = Some(kind);
        self.completed_at = Some(now);
        Ok(())
    }

    /// Moves to `cancelled`.
    pub fn mark_cancelled(&mut self, now: DateTime<Utc>) -> Result<(), InvalidTransition> {
        self.transition(JobStatus::Cancelled)?;
        self.error_kind = Some(ErrorKind::Cancelled);
        self.completed_at = Some(now);
        Ok(())
    }

    /// Puts a running job back to `pending`, eligible at `run_at`, after a retriable
    /// failure (`retry_count` goes up).
    pub fn mark_retrying(
        &mut self,
        kind: ErrorKind,
        error: impl Into<String>,
        run_at: DateTime<Utc>,
    ) -> Result<(), InvalidTransition> {
        self.transition(JobStatus::Pending)?;
        self.retry_count += 1;
        self.error = Some(error.into());
        self.error_kind = Some(kind);
        self.run_at = run_at;
        Ok(())
    }

    fn transition(&mut self, next: JobStatus) -> Result<(), InvalidTransition> {
        if !self.status.can_transition_to(next) {
            return Err(InvalidTransition {
                id: self.id,
                from: self.status,
                to: next,
            });
        }
        self.status = next;
        Ok(())
    }
}

/// A move the state machine forbids, such as completing a cancelled job.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("job {id} cannot go from {from} to {to}")]
pub struct InvalidTransition {
    /// The job.
    pub id: JobId,
    /// Its current status.
    pub from: JobStatus,
    /// The status asked for.
    pub to: JobStatus,
}

/// What the queue keeps of a pending job: enough to order it and to know what holds it
/// back (a pause of its command or plugin), not its payload.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct QueuedJob {
    /// The job.
    pub id: JobId,
    /// Its command, `plugin.command`.
    pub command: std::sync::Arc<str>,
    /// Higher runs first.
    pub priority: i64,
    /// Older runs first among equal priorities.
    pub created_at: DateTime<Utc>,
    /// Not eligible before this instant.
    pub run_at: DateTime<Utc>,
    /// Its concurrency key, if it has one.
    pub concurrency_key: Option<std::sync::Arc<str>>,
}

impl From<&Job> for QueuedJob {
    fn from(job: &Job) -> Self {
        Self {
            id: job.id,
            command: job.command.as_str().into(),
            priority: job.priority,
            created_at: job.created_at,
            run_at: job.run_at,
            concurrency_key: job.concurrency_key.as_deref().map(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn job() -> Job {
        Job::new("echo.echo", b"{}".to_vec(), 0, 3)
    }

    #[test]
    fn new_job_ids_are_unique_and_time_ordered() {
        let ids: Vec<JobId> = (0..1000).map(|_| JobId::new()).collect();
        let unique: HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn new_job_is_pending_and_eligible_at_creation() {
        let now = Utc::now().trunc_subsecs(3);
        let job = Job::new_at("echo.echo", vec![], 5, 2, now);
        assert_eq!(job.status, JobStatus::Pending);
        assert_eq!(job.created_at, now);
        assert_eq!(job.run_at, now);
        assert_eq!(job.priority, 5);
        assert_eq!(job.retry_count, 0);
    }

    #[test]
    fn job_id_round_trips_through_text() {
        let id = JobId::new();
        assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
        assert!("not-a-uuid".parse::<JobId>().is_err());
    }

    #[test]
    fn status_round_trips_and_rejects_unknown_names() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>().unwrap(), status);
        }
        let err = "done".parse::<JobStatus>().unwrap_err();
        assert!(err.to_string().contains("\"done\""));
    }

    #[test]
    fn legal_transitions_are_exactly_the_documented_ones() {
        use JobStatus::*;
        let legal: HashSet<(JobStatus, JobStatus)> = [
            (Pending, Running),
            (Pending, Cancelled),
            (Running, Completed),
            (Running, Failed),
            (Running, Cancelled),
            (Running, Pending),
        ]
        .into();
        for from in JobStatus::ALL {
            for to in JobStatus::ALL {
                assert_eq!(
                    from.can_transition_to(to),
                    legal.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn completing_twice_is_refused() {
        let now = Utc::now();
        let mut job = job();
        job.mark_running(now).unwrap();
        job.mark_completed(b"ok".to_vec(), now).unwrap();
        let err = job.mark_completed(b"again".to_vec(), now).unwrap_err();
        assert_eq!(err.from, JobStatus::Completed);
        assert_eq!(job.result.as_deref(), Some(&b"ok"[..]));
    }

    #[test]
    fn retry_counts_up_and_respects_max_retries() {
        let now = Utc::now();
        let mut job = job();
        for attempt in 0..3 {
            assert!(job.can_retry(), "attempt {attempt}");
            job.mark_running(now).unwrap();
            job.mark_retrying(ErrorKind::PluginError, "boom", now)
                .unwrap();
        }
        assert_eq!(job.retry_count, 3);
        assert!(!job.can_retry());
        job.mark_running(now).unwrap();
        job.mark_failed(ErrorKind::PluginError, "boom", now)
            .unwrap();
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.error_kind, Some(ErrorKind::PluginError));
    }

    #[test]
    fn cancelled_job_cannot_run() {
        let now = Utc::now();
        let mut job = job();
        job.mark_cancelled(now).unwrap();
        assert!(job.mark_running(now).is_err());
    }

    #[test]
    fn error_kinds_round_trip() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(kind.as_str()), kind);
        }
    }
}
