//! The queue manager: the one place where a job's durable row and its place in the
//! in-memory queue change together.
//!
//! Submit persists first and enqueues second, so an acknowledged job is always on disk;
//! workers take jobs through [`Manager::next_queued`] + [`Manager::claim`] and report
//! through [`Manager::finish`]. Cancellation of a running job fires the token that the
//! worker holds for it. Every change is published as a [`JobEvent`] so watchers need
//! not poll, and logged with the spec's event fields.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{JobQueue, QueuedJob};
use crate::job::{Job, JobId, JobStatus};
use crate::store::{AttemptReport, Claimed, JobFilter, JobPage, Outcome, Store, StoreError};

/// What a command's plugin asks for by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandDefaults {
    /// The plugin's default `max_retries`, used when the submitter gives none.
    pub max_retries: Option<u32>,
}

/// Knows which commands can run. The plugin runtime implements it; submit asks it
/// first so an unknown command is refused at once instead of failing later.
pub trait CommandCatalog: Send + Sync + 'static {
    /// The defaults for `command`, or why it cannot be submitted.
    fn resolve(&self, command: &str) -> Result<CommandDefaults, SubmitError>;
}

/// A catalog that accepts every well-formed command (for tests and tools).
pub struct AnyCommand;

impl CommandCatalog for AnyCommand {
    fn resolve(&self, _command: &str) -> Result<CommandDefaults, SubmitError> {
        Ok(CommandDefaults::default())
    }
}

/// Settings of the manager.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// `max_retries` when neither the submitter nor the plugin gives one.
    pub default_max_retries: u32,
    /// The largest payload accepted.
    pub max_payload_bytes: usize,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            default_max_retries: 3,
            max_payload_bytes: 4 * 1024 * 1024,
        }
    }
}

/// A job to submit.
#[derive(Clone, Debug, Default)]
pub struct SubmitRequest {
    /// `plugin.command`.
    pub command: String,
    /// Input for the plugin.
    pub payload: Vec<u8>,
    /// Higher runs first.
    pub priority: i64,
    /// Retries allowed; the plugin's or the daemon's default when `None`.
    pub max_retries: Option<u32>,
}

/// Why a submit was refused. Nothing was stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The command is not of the form `plugin.command`.
    #[error("invalid command {0:?}: expected PLUGIN.COMMAND, such as \"github.commits\"")]
    MalformedCommand(String),
    /// No plugin serves the command; `hint` says what would.
    #[error("no plugin serves {command:?}{hint}")]
    UnknownCommand {
        /// The command asked for.
        command: String,
        /// A suggestion or the list of what is loaded, starting with ": " or empty.
        hint: String,
    },
    /// The payload is larger than the configured limit.
    #[error("payload is {size} bytes, over the {limit}-byte limit")]
    PayloadTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The store could not persist it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a cancel did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was pending and is now cancelled.
    Cancelled,
    /// The job is running; its sandbox has been told to stop and it will end
    /// `cancelled` (watch it to see when).
    Cancelling,
}

/// Why a cancel was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CancelError {
    /// No such job.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The job already finished.
    #[error("job {id} is already {status} and cannot be cancelled")]
    Finished {
        /// The job.
        id: JobId,
        /// Its terminal status.
        status: JobStatus,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A change of a job's state, as published to watchers.
#[derive(Clone, Debug, PartialEq)]
pub struct JobEvent {
    /// The job.
    pub id: JobId,
    /// Its new status.
    pub status: JobStatus,
    /// Retries so far.
    pub retry_count: u32,
    /// The attempt this event belongs to (0 before the first).
    pub attempt: u32,
    /// The latest error, if the change came from a failure.
    pub error: Option<String>,
    /// When it changed.
    pub at: DateTime<Utc>,
}

/// The queue's front door and the workers' source of jobs.
pub struct Manager {
    store: Store,
    queue: JobQueue,
    catalog: Arc<dyn CommandCatalog>,
    config: ManagerConfig,
    running: Mutex<HashMap<JobId, CancellationToken>>,
    events: broadcast::Sender<JobEvent>,
}

impl Manager {
    /// A manager over `store`, accepting the commands `catalog` knows. Call
    /// [`crate::recovery::recover`] before starting workers.
    pub fn new(store: Store, catalog: Arc<dyn CommandCatalog>, config: ManagerConfig) -> Self {
        Self {
            store,
            queue: JobQueue::new(),
            catalog,
            config,
            running: Mutex::new(HashMap::new()),
            events: broadcast::channel(4096).0,
        }
    }

    /// The store behind the manager.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The in-memory queue.
    pub fn queue(&self) -> &JobQueue {
        &self.queue
    }

    /// Subscribes to every job's state changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    /// Persists a new job and queues it; returns its id once the row is durable.
    pub async fn submit(&self, request: SubmitRequest) -> Result<JobId, SubmitError> {
        let job = self.new_job(request)?;
        self.store.insert_job(job.clone()).await?;
        self.accept(&job);
        Ok(job.id)
    }

    /// Queues a job whose row the caller has just made durable (the scheduler inserts
    /// it together with its trigger record), logs and publishes it.
    pub fn accept(&self, job: &Job) {
        self.queue.push(QueuedJob::from(job));
        tracing::info!(job_id = %job.id, command = %job.command, priority = job.priority, "job submitted");
        self.publish(job, 0);
    }

    /// Validates a request and builds its job, without storing anything.
    pub fn new_job(&self, request: SubmitRequest) -> Result<Job, SubmitError> {
        let SubmitRequest {
            command,
            payload,
            priority,
            max_retries,
        } = request;
        if !is_well_formed(&command) {
            return Err(SubmitError::MalformedCommand(command));
        }
        if payload.len() > self.config.max_payload_bytes {
            return Err(SubmitError::PayloadTooLarge {
                size: payload.len(),
                limit: self.config.max_payload_bytes,
            });
        }
        let defaults = self.catalog.resolve(&command)?;
        let max_retries = max_retries
            .or(defaults.max_retries)
            .unwrap_or(self.config.default_max_retries);
        Ok(Job::new(command, payload, priority, max_retries))
    }

    /// Cancels a job: a pending one at once, a running one by interrupting its sandbox.
    pub async fn cancel(&self, id: JobId) -> Result<CancelOutcome, CancelError> {
        match self.store.cancel_pending(id, Utc::now()).await {
            Ok(()) => {
                self.queue.remove(id);
                tracing::info!(job_id = %id, "job cancelled");
                let _ = self.events.send(JobEvent {
                    id,
                    status: JobStatus::Cancelled,
                    retry_count: 0,
                    attempt: 0,
                    error: None,
                    at: Utc::now(),
                });
                Ok(CancelOutcome::Cancelled)
            }
            Err(StoreError::StaleTransition {
                actual: JobStatus::Running,
                ..
            }) => match self.running_token(id) {
                Some(token) => {
                    token.cancel();
                    tracing::info!(job_id = %id, "cancelling running job");
                    Ok(CancelOutcome::Cancelling)
                }
                // It finished between the two looks: report what it became.
                None => Err(self.finished(id).await),
            },
            Err(StoreError::StaleTransition { actual, .. }) => {
                Err(CancelError::Finished { id, status: actual })
            }
            Err(StoreError::NotFound(id)) => Err(CancelError::NotFound(id)),
            Err(err) => Err(err.into()),
        }
    }

    async fn finished(&self, id: JobId) -> CancelError {
        match self.store.get_job(id).await {
            Ok(job) => CancelError::Finished {
                id,
                status: job.status,
            },
            Err(StoreError::NotFound(id)) => CancelError::NotFound(id),
            Err(err) => err.into(),
        }
    }

    /// One job by id.
    pub async fn get(&self, id: JobId) -> Result<Job, StoreError> {
        self.store.get_job(id).await
    }

    /// Jobs matching `filter`, newest first.
    pub async fn list(&self, filter: JobFilter) -> Result<JobPage, StoreError> {
        self.store.list_jobs(filter).await
    }

    /// Waits for the next eligible job. Cancel-safe: dropping the future loses nothing.
    pub async fn next_queued(&self) -> QueuedJob {
        self.queue.pop().await
    }

    /// Moves a dequeued job to `running` for `worker_id`, with the token that cancels
    /// it. `Ok(None)` when it stopped being pending meanwhile (cancelled).
    pub async fn claim(
        &self,
        queued: QueuedJob,
        worker_id: usize,
    ) -> Result<Option<(Claimed, CancellationToken)>, StoreError> {
        // Register the token before the row says `running`, so a cancel that sees
        // `running` always finds it.
        let token = CancellationToken::new();
        self.lock_running().insert(queued.id, token.clone());
        match self.store.claim(queued.id, worker_id, Utc::now()).await {
            Ok(Some(claimed)) => {
                let job = &claimed.job;
                tracing::info!(job_id = %job.id, command = %job.command, worker_id, "job started");
                self.publish(job, claimed.attempt);
                Ok(Some((claimed, token)))
            }
            Ok(None) => {
                self.lock_running().remove(&queued.id);
                Ok(None)
            }
            Err(err) => {
                self.lock_running().remove(&queued.id);
                self.queue.push(queued);
                Err(err)
            }
        }
    }

    /// Records how an attempt ended, requeues the job when it goes back to pending,
    /// logs and publishes the change.
    pub async fn finish(
        &self,
        claimed: &Claimed,
        outcome: Outcome,
        report: AttemptReport,
    ) -> Result<(), StoreError> {
        let job = &claimed.job;
        self.lock_running().remove(&job.id);
        let duration_ms = report.duration_ms;
        let finished_at = report.finished_at;
        self.store
            .finish(job.id, claimed.attempt, outcome.clone(), report)
            .await?;
        let (status, retry_count, error) = match &outcome {
            Outcome::Completed(_) => {
                tracing::info!(job_id = %job.id, command = %job.command, duration_ms, "job completed");
                (JobStatus::Completed, job.retry_count, None)
            }
            Outcome::Failed { kind, error } => {
                tracing::error!(
                    job_id = %job.id, command = %job.command, error = %error,
                    error_kind = %kind, retry_count = job.retry_count, duration_ms, "job failed"
                );
                (JobStatus::Failed, job.retry_count, Some(error.clone()))
            }
            Outcome::Retry {
                kind,
                error,
                run_at,
            } => {
                let retry_count = job.retry_count + 1;
                tracing::warn!(
                    job_id = %job.id, command = %job.command, error = %error, error_kind = %kind,
                    retry_count, next_retry = %run_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "job retrying"
                );
                self.queue.push(QueuedJob {
                    run_at: *run_at,
                    ..QueuedJob::from(job)
                });
                (JobStatus::Pending, retry_count, Some(error.clone()))
            }
            Outcome::Cancelled => {
                tracing::info!(job_id = %job.id, command = %job.command, duration_ms, "job cancelled");
                (JobStatus::Cancelled, job.retry_count, None)
            }
            Outcome::Interrupted => {
                tracing::warn!(job_id = %job.id, command = %job.command, "job interrupted by shutdown; back to pending");
                self.queue.push(QueuedJob::from(job));
                (JobStatus::Pending, job.retry_count, None)
            }
        };
        let _ = self.events.send(JobEvent {
            id: job.id,
            status,
            retry_count,
            attempt: claimed.attempt,
            error,
            at: finished_at,
        });
        Ok(())
    }

    fn running_token(&self, id: JobId) -> Option<CancellationToken> {
        self.lock_running().get(&id).cloned()
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, CancellationToken>> {
        self.running.lock().expect("running map poisoned")
    }

    fn publish(&self, job: &Job, attempt: u32) {
        let _ = self.events.send(JobEvent {
            id: job.id,
            status: job.status,
            retry_count: job.retry_count,
            attempt,
            error: job.error.clone(),
            at: Utc::now(),
        });
    }
}

/// `plugin.command`: two non-empty parts of letters, digits, `_` and `-`.
fn is_well_formed(command: &str) -> bool {
    let part = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    matches!(command.split_once('.'), Some((plugin, name)) if part(plugin) && part(name))
}

#[cfg(test)]
mod tests {
    use super::is_well_formed;

    #[test]
    fn command_names_must_be_plugin_dot_command() {
        for good in [
            "github.commits",
            "echo.echo",
            "jira.issue",
            "a-b.c_d",
            "github.pullRequests",
        ] {
            assert!(is_well_formed(good), "{good}");
        }
        for bad in [
            "",
            "github",
            ".commits",
            "github.",
            "git hub.x",
            "a.b.c",
            "gh.com mits",
        ] {
            assert!(!is_well_formed(bad), "{bad}");
        }
    }
}
