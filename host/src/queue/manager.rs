//! The queue manager: the one place where a job's durable row and its place in the
//! in-memory queue change together.
//!
//! Submit persists first and enqueues second, so an acknowledged job is always on disk;
//! workers take jobs through [`Manager::next_queued`] + [`Manager::claim`] and report
//! through [`Manager::finish`]. Cancellation of a running job fires the token that the
//! worker holds for it. Every change is published as a [`JobEvent`] so watchers need
//! not poll, and logged with the spec's event fields.
//!
//! Each two-step operation is one unit that completes once started: submit (commit,
//! then enqueue and publish) and cancel (commit, then dequeue and publish) run in a task
//! of their own, so a client that hangs up halfway (a deadline, a reset connection)
//! cannot leave a committed job out of the queue or a cancellation unannounced. An
//! attempt's outcome is written until it lands (an operator's `sqlite3` holding the
//! write lock, a full disk): the job keeps its cancellation token until the commit, so
//! `running` in the store always means a cancel can reach it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{JobQueue, QueuedJob};
use crate::job::{Job, JobId, JobStatus};
use crate::metrics::{Metrics, StoreWrite};
use crate::pause::{InvalidTarget, Pause, validate_target};
use crate::store::{
    AfterInsert, AttemptReport, BulkFilter, ClaimNext, Claimed, JobChange, JobFilter, JobPage,
    MAX_DEPENDENCIES, Outcome, Settled, Store, StoreError, UniqueInsert, Uniqueness,
};
use crate::traces::SubmitSpan;
use honeydew_core::concurrency::{ConcurrencyLimits, validate_key};

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

    /// The commands this daemon can run now, when it knows them (a worker on a shared
    /// store claims only those); `None` for every command.
    fn served(&self) -> Option<Vec<String>> {
        None
    }

    /// The concurrency limits of the plugins loaded now, with the daemon's overrides.
    fn concurrency_limits(&self) -> ConcurrencyLimits {
        ConcurrencyLimits::default()
    }
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
    /// At most one job with this key at a time (see [`UniqueRequest`]).
    pub unique: Option<UniqueRequest>,
    /// Jobs this one waits for (see [`JobStore::insert_after`](crate::store::JobStore::insert_after)).
    pub after: Vec<JobId>,
    /// The submitting client's W3C `traceparent`, already checked
    /// ([`crate::traces::valid_traceparent`]): the submit's span continues its trace.
    pub trace_parent: Option<String>,
    /// Its concurrency key (see [`honeydew_core::concurrency`]).
    pub concurrency_key: Option<String>,
}

/// A unique key on a submit: while a job holding the key blocks (it is in one of
/// `states`, created within `within`), a new submit with it stores no job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniqueRequest {
    /// The key: 1 to [`MAX_UNIQUE_KEY_BYTES`] bytes.
    pub key: String,
    /// Only a holder this recent blocks; `None`: any holder.
    pub within: Option<Duration>,
    /// The states in which a holder blocks; empty: pending and running.
    pub states: Vec<JobStatus>,
    /// What a blocked submit does.
    pub on_conflict: OnConflict,
}

/// What a submit blocked by its unique key does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnConflict {
    /// Answers the holder's id, as if it had been submitted (the default).
    #[default]
    Existing,
    /// Refuses, naming the holder.
    Reject,
    /// Gives a pending holder the new payload (debounce); a running one is answered
    /// as with [`OnConflict::Existing`].
    Replace,
}

/// The longest unique key.
pub const MAX_UNIQUE_KEY_BYTES: usize = 512;

/// The longest unique window: ten years.
pub const MAX_UNIQUE_WITHIN: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The most jobs one bulk submit may carry.
pub const MAX_BATCH_JOBS: usize = 10_000;

/// What a submit did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// A new job, stored.
    New(JobId),
    /// A job holding the submit's unique key, which was answered instead.
    Existing(JobId),
    /// A pending job holding the unique key, which took the new payload.
    Replaced(JobId),
}

impl Submitted {
    /// The job the submit stands for.
    pub fn id(self) -> JobId {
        match self {
            Submitted::New(id) | Submitted::Existing(id) | Submitted::Replaced(id) => id,
        }
    }
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
    /// The unique key or its window is out of bounds.
    #[error("{0}")]
    InvalidUnique(String),
    /// The concurrency key is out of bounds.
    #[error("{0}")]
    InvalidConcurrencyKey(String),
    /// Its unique key is held by another job, and the submit asked to be refused.
    #[error("job {0} already holds this unique key")]
    AlreadyExists(JobId),
    /// The dependencies asked for are out of bounds.
    #[error("{0}")]
    InvalidDependencies(String),
    /// A job it should wait for does not exist.
    #[error("no job {0} to wait for")]
    UnknownDependency(JobId),
    /// A job of a bulk submit was refused: none was stored.
    #[error("job {index} of the batch: {error}")]
    InBatch {
        /// Its place in the batch, from 0.
        index: usize,
        /// Why.
        error: Box<SubmitError>,
    },
    /// A bulk submit with no job, or more than [`MAX_BATCH_JOBS`].
    #[error("a batch carries 1 to {MAX_BATCH_JOBS} jobs, not {0}")]
    BatchSize(usize),
    /// The store could not persist it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a pause or a resume was refused.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    /// The target names no plugin or command.
    #[error(transparent)]
    Invalid(#[from] InvalidTarget),
    /// The store could not record it.
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
    /// The job is `running` but no worker of this daemon holds it (it kept moving
    /// while the cancel looked); nothing was changed.
    #[error("job {0} is changing state right now: try the cancel again")]
    Busy(JobId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long an outcome write waits before its first retry; doubles up to
/// [`OUTCOME_RETRY_MAX`].
const OUTCOME_RETRY_FIRST: Duration = Duration::from_millis(50);

/// The longest wait between two tries of an outcome write.
const OUTCOME_RETRY_MAX: Duration = Duration::from_secs(5);

/// On a shared store, the longest a worker with nothing to do waits before it looks at
/// the database again, should a wake-up have been lost.
const SHARED_SAFETY_POLL: Duration = Duration::from_secs(5);

/// How many jobs one write of a bulk retry or cancel changes.
const BULK_BATCH: usize = 500;

/// How many times a cancel looks again at a job that keeps moving under it.
const CANCEL_LOOKS: usize = 50;

/// How long a cancel for an attempt this node has not registered yet is kept, waiting
/// for the claim that registers it (on a shared store, the request can overtake it).
const EARLY_CANCEL_KEPT: Duration = Duration::from_secs(60);

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

/// A job a worker of this daemon runs: its cancellation token, and how many plugin
/// loads had happened when it was claimed.
struct Running {
    token: CancellationToken,
    plugin_loads: u64,
    /// The queue entry whose concurrency slots the attempt holds (the in-memory queue
    /// only; on a shared store the database counts what runs).
    slots: Option<QueuedJob>,
}

/// The queue's front door and the workers' source of jobs.
pub struct Manager {
    store: Store,
    queue: Arc<JobQueue>,
    catalog: Arc<dyn CommandCatalog>,
    config: ManagerConfig,
    running: Mutex<HashMap<JobId, Running>>,
    /// On a shared store: cancels that reached this node for an attempt before its claim
    /// registered the token, by (job, attempt), with when they came. Always locked
    /// after `running`, never before.
    early_cancels: Mutex<HashMap<(JobId, u32), std::time::Instant>>,
    /// Jobs waiting for their plugin to be loaded again, by plugin name.
    parked: Mutex<HashMap<String, HashMap<JobId, QueuedJob>>>,
    /// Counts plugin loads, so that a job whose attempt began before a load is queued
    /// again rather than parked (the plugin it missed may be the one just loaded).
    plugin_loads: std::sync::atomic::AtomicU64,
    events: broadcast::Sender<JobEvent>,
    /// The ids of jobs whose output (log lines, progress) was just stored here.
    output_written: broadcast::Sender<JobId>,
    /// Where submits, attempts and store writes are counted, when metrics are served.
    metrics: Option<Arc<Metrics>>,
    /// The concurrency limits in force (the catalog's, read at start and at each
    /// change of the plugin set); a shared store's claims are given them.
    limits: std::sync::RwLock<Arc<ConcurrencyLimits>>,
}

impl Manager {
    /// A manager over `store`, accepting the commands `catalog` knows. Call
    /// [`crate::recovery::recover`] before starting workers.
    pub fn new(store: Store, catalog: Arc<dyn CommandCatalog>, config: ManagerConfig) -> Self {
        let limits = catalog.concurrency_limits();
        let queue = JobQueue::new();
        queue.set_limits(limits.clone());
        Self {
            store,
            queue: Arc::new(queue),
            limits: std::sync::RwLock::new(Arc::new(limits)),
            catalog,
            config,
            running: Mutex::new(HashMap::new()),
            early_cancels: Mutex::new(HashMap::new()),
            parked: Mutex::new(HashMap::new()),
            plugin_loads: std::sync::atomic::AtomicU64::new(0),
            events: broadcast::channel(4096).0,
            output_written: broadcast::channel(1024).0,
            metrics: None,
        }
    }

    /// This manager, counting into `metrics` (see [`crate::metrics`]).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// How many jobs this daemon's workers are running (or claiming) now.
    pub fn running_jobs(&self) -> usize {
        self.lock_running().len()
    }

    /// Awaits the store write `write`, timing it as `operation` when metrics are on.
    async fn timed<T>(&self, operation: StoreWrite, write: impl Future<Output = T>) -> T {
        let Some(metrics) = &self.metrics else {
            return write.await;
        };
        let started = std::time::Instant::now();
        let written = write.await;
        metrics.store_write(operation, started.elapsed());
        written
    }

    /// Counts an attempt of `job` that starts now.
    fn attempt_started(&self, job: &Job) {
        if let Some(metrics) = &self.metrics {
            let eligible_at = job.run_at.max(job.created_at);
            metrics.attempt_started(&job.command, eligible_at, Utc::now());
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

    /// Subscribes to the ids of jobs whose output this daemon stores from now on (see
    /// [`crate::output`]); another node's is announced by the shared store.
    pub fn subscribe_output(&self) -> broadcast::Receiver<JobId> {
        self.output_written.subscribe()
    }

    /// Announces that output of job `id` was stored.
    pub fn output_written(&self, id: JobId) {
        let _ = self.output_written.send(id);
    }

    /// Persists a new job and queues it; returns its id once the row is durable.
    ///
    /// Cancel-safe: once called, the commit and the enqueue happen together even if
    /// the returned future is dropped (the client hung up).
    pub async fn submit(
        self: &Arc<Self>,
        request: SubmitRequest,
    ) -> Result<Submitted, SubmitError> {
        let span = SubmitSpan::start(request.trace_parent.as_deref(), Some(&request.command), 1);
        let submitted = self.submit_in(request, span.trace_parent()).await;
        match &submitted {
            Ok(submitted) => span.end(Ok(&submitted.id().to_string())),
            Err(err) => span.end(Err(&err.to_string())),
        }
        submitted
    }

    /// [`Manager::submit`] of a job whose attempts continue `trace_parent`.
    async fn submit_in(
        self: &Arc<Self>,
        request: SubmitRequest,
        trace_parent: Option<String>,
    ) -> Result<Submitted, SubmitError> {
        let unique = request.unique.clone().map(uniqueness).transpose()?;
        let after = dependencies(&request.after, unique.is_some())?;
        let job = Job {
            trace_parent,
            ..self.new_job(request)?
        };
        let this = Arc::clone(self);
        complete_once_started(async move {
            if !after.is_empty() {
                return this.submit_after(job, after).await;
            }
            let Some((unique, on_conflict)) = unique else {
                this.timed(StoreWrite::Submit, this.store.insert_job(job.clone()))
                    .await?;
                this.submit_written(1);
                this.accept(&job);
                return Ok(Submitted::New(job.id));
            };
            let inserted = this.store.insert_unique(job.clone(), unique);
            match this.timed(StoreWrite::SubmitUnique, inserted).await? {
                UniqueInsert::Inserted => {
                    this.submit_written(1);
                    this.accept(&job);
                    Ok(Submitted::New(job.id))
                }
                UniqueInsert::Replaced(holder) => {
                    tracing::info!(job_id = %holder, command = %job.command, "pending job took a newer payload (unique key, replace)");
                    Ok(Submitted::Replaced(holder))
                }
                UniqueInsert::Held(holder) if on_conflict == OnConflict::Reject => {
                    Err(SubmitError::AlreadyExists(holder))
                }
                UniqueInsert::Held(holder) => Ok(Submitted::Existing(holder)),
            }
        })
        .await
        .unwrap_or_else(|panic| Err(SubmitError::Store(StoreError::Commit(panic))))
    }

    /// Stores `job` waiting for the jobs `after`; queues it when they all completed
    /// already.
    async fn submit_after(&self, job: Job, after: Vec<JobId>) -> Result<Submitted, SubmitError> {
        match self.store.insert_after(job.clone(), after).await {
            Ok(AfterInsert::Waiting(0)) => self.accept(&job),
            Ok(AfterInsert::Waiting(waiting)) => {
                tracing::info!(job_id = %job.id, command = %job.command, priority = job.priority, waiting, "job submitted; it waits for its dependencies");
                self.publish(&job, 0);
            }
            Ok(AfterInsert::Cancelled(dependency)) => {
                tracing::info!(job_id = %job.id, command = %job.command, %dependency, "job submitted and cancelled: a job it depends on already failed or was cancelled");
                let cancelled = Job {
                    status: JobStatus::Cancelled,
                    ..job.clone()
                };
                self.publish(&cancelled, 0);
            }
            Err(StoreError::NotFound(missing)) => {
                return Err(SubmitError::UnknownDependency(missing));
            }
            Err(err) => return Err(err.into()),
        }
        Ok(Submitted::New(job.id))
    }

    /// Persists every job of `requests` in one transaction, or none (the first refused
    /// one is named), and queues them; their ids in order. Cancel-safe like
    /// [`Manager::submit`]. Unique keys are not taken in a batch.
    pub async fn submit_batch(
        self: &Arc<Self>,
        requests: Vec<SubmitRequest>,
    ) -> Result<Vec<JobId>, SubmitError> {
        // One span for the batch (its one commit), under the first job's traceparent:
        // a batch comes from one client call, which sends one.
        let client = requests.first().and_then(|r| r.trace_parent.clone());
        let span = SubmitSpan::start(client.as_deref(), None, requests.len());
        let submitted = self.submit_batch_in(requests, span.trace_parent()).await;
        match &submitted {
            Ok(ids) => span.end(Ok(&ids.first().map(JobId::to_string).unwrap_or_default())),
            Err(err) => span.end(Err(&err.to_string())),
        }
        submitted
    }

    /// [`Manager::submit_batch`] of jobs whose attempts continue `trace_parent`.
    async fn submit_batch_in(
        self: &Arc<Self>,
        requests: Vec<SubmitRequest>,
        trace_parent: Option<String>,
    ) -> Result<Vec<JobId>, SubmitError> {
        if requests.is_empty() || requests.len() > MAX_BATCH_JOBS {
            return Err(SubmitError::BatchSize(requests.len()));
        }
        let mut jobs = Vec::with_capacity(requests.len());
        for (index, request) in requests.into_iter().enumerate() {
            let refused = |error| SubmitError::InBatch {
                index,
                error: Box::new(error),
            };
            if request.unique.is_some() {
                return Err(refused(SubmitError::InvalidUnique(
                    "a unique key is not taken in a batch: submit that job on its own".into(),
                )));
            }
            if !request.after.is_empty() {
                return Err(refused(SubmitError::InvalidDependencies(
                    "dependencies are not taken in a batch: submit that job on its own".into(),
                )));
            }
            jobs.push(Job {
                trace_parent: trace_parent.clone(),
                ..self.new_job(request).map_err(refused)?
            });
        }
        let this = Arc::clone(self);
        complete_once_started(async move {
            this.timed(
                StoreWrite::SubmitBatch,
                this.store.insert_jobs(jobs.clone()),
            )
            .await?;
            this.submit_written(jobs.len());
            for job in &jobs {
                this.accept(job);
            }
            Ok(jobs.iter().map(|job| job.id).collect())
        })
        .await
        .unwrap_or_else(|panic| Err(SubmitError::Store(StoreError::Commit(panic))))
    }

    /// Queues a job whose row the caller has just made durable (the scheduler inserts
    /// it together with its trigger record), logs and publishes it.
    pub fn accept(&self, job: &Job) {
        if let Some(metrics) = &self.metrics {
            metrics.job_submitted(&job.command);
        }
        self.enqueue(QueuedJob::from(job));
        tracing::info!(job_id = %job.id, command = %job.command, priority = job.priority, "job submitted");
        self.publish(job, 0);
    }

    fn submit_written(&self, jobs: usize) {
        if let Some(metrics) = &self.metrics {
            metrics.submit_written(jobs);
        }
    }

    /// Validates a request and builds its job, without storing anything.
    pub fn new_job(&self, request: SubmitRequest) -> Result<Job, SubmitError> {
        let SubmitRequest {
            command,
            payload,
            priority,
            max_retries,
            unique: _,
            after: _,
            trace_parent,
            concurrency_key,
        } = request;
        if let Some(key) = &concurrency_key {
            validate_key(key).map_err(|err| SubmitError::InvalidConcurrencyKey(err.to_string()))?;
        }
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
        Ok(Job {
            trace_parent,
            concurrency_key,
            ..Job::new(command, payload, priority, max_retries)
        })
    }

    /// Cancels a job: a pending one at once, a running one by interrupting its sandbox.
    /// The answer is cancelled, cancelling, or the terminal state the job had already
    /// reached: never "running and cannot be cancelled", however the cancel races the
    /// end of an attempt.
    ///
    /// Cancel-safe like [`Manager::submit`]: a cancel that committed is announced even
    /// if the caller went away.
    pub async fn cancel(self: &Arc<Self>, id: JobId) -> Result<CancelOutcome, CancelError> {
        let this = Arc::clone(self);
        complete_once_started(async move { this.cancel_unit(id).await })
            .await
            .unwrap_or_else(|panic| Err(CancelError::Store(StoreError::Commit(panic))))
    }

    async fn cancel_unit(&self, id: JobId) -> Result<CancelOutcome, CancelError> {
        for look in 0..CANCEL_LOOKS {
            let job = match self.store.get_job(id).await {
                Ok(job) => job,
                Err(StoreError::NotFound(id)) => return Err(CancelError::NotFound(id)),
                Err(err) => return Err(err.into()),
            };
            match job.status {
                JobStatus::Pending => match self.store.cancel_pending(id, Utc::now()).await {
                    Ok(()) => {
                        self.cancelled_while_pending(&job);
                        self.settle_after_cancels().await;
                        return Ok(CancelOutcome::Cancelled);
                    }
                    // A worker claimed it (or it finished) meanwhile: look again.
                    Err(StoreError::StaleTransition { .. }) => continue,
                    Err(StoreError::NotFound(id)) => return Err(CancelError::NotFound(id)),
                    Err(err) => return Err(err.into()),
                },
                // A running job's sandbox is stopped through its token: no write needed,
                // so this works even while the database refuses writes.
                JobStatus::Running => {
                    if let Some(token) = self.running_token(id) {
                        token.cancel();
                        tracing::info!(job_id = %id, "cancelling running job");
                        return Ok(CancelOutcome::Cancelling);
                    }
                    // Another node runs it (or this one, before its claim registered
                    // the token): the database records the request and tells that
                    // node, which stops the sandbox. `None`: it stopped running
                    // meanwhile, so look again.
                    if let Some(shared) = self.store.shared() {
                        if let Some((node, attempt)) = shared.request_cancel(id).await? {
                            tracing::info!(job_id = %id, node_id = %node, attempt, "asked the node running the job to cancel it");
                            return Ok(CancelOutcome::Cancelling);
                        }
                        continue;
                    }
                    // Its outcome has just been committed (the token goes after the
                    // commit): the next look sees where it went.
                    if look > 0 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                status => return Err(CancelError::Finished { id, status }),
            }
        }
        Err(CancelError::Busy(id))
    }

    /// Pauses `target`, a plugin or a command: stored first (so it survives a restart
    /// and holds on every node of a shared store), then the queue holds its jobs back.
    /// Running jobs finish. False when it already was paused.
    pub async fn pause(&self, target: &str) -> Result<bool, PauseError> {
        validate_target(target)?;
        let paused = self.store.pause(target.to_owned(), Utc::now()).await?;
        self.queue.pause(target);
        if paused {
            tracing::info!(target, "paused: its pending jobs wait until it is resumed");
        }
        Ok(paused)
    }

    /// Ends the pause of `target`: its jobs are claimed again, in their order. False
    /// when it was not paused.
    pub async fn resume(&self, target: &str) -> Result<bool, PauseError> {
        validate_target(target)?;
        let resumed = self.store.resume(target.to_owned()).await?;
        self.queue.resume(target);
        if resumed {
            tracing::info!(target, "resumed");
        }
        Ok(resumed)
    }

    /// Every pause, by target.
    pub async fn pauses(&self) -> Result<Vec<Pause>, StoreError> {
        self.store.pauses().await
    }

    /// Puts a failed or cancelled job back to pending with a fresh retry budget, and
    /// queues it. [`StoreError::StaleTransition`] when it is in another state.
    pub async fn retry(&self, id: JobId) -> Result<(), StoreError> {
        let queued = self.store.retry_job(id, Utc::now()).await?;
        self.requeued(queued);
        Ok(())
    }

    /// Retries every job in `status` (failed or cancelled) of `command` (any when
    /// `None`) submitted since `since`, in batches; how many.
    pub async fn retry_matching(
        &self,
        status: JobStatus,
        command: Option<String>,
        since: Option<DateTime<Utc>>,
    ) -> Result<usize, StoreError> {
        let filter = BulkFilter {
            status,
            command,
            since,
            after: None,
        };
        let count = self
            .in_batches(
                filter.clone(),
                |filter| self.store.retry_matching(filter, Utc::now(), BULK_BATCH),
                |job: &QueuedJob| job.id,
                |job| self.requeued(job),
            )
            .await?;
        tracing::info!(status = %filter.status, command = filter.command.as_deref(), count, "jobs retried in bulk");
        Ok(count)
    }

    /// Cancels every pending job of `command` (any when `None`) submitted since
    /// `since`, in batches; how many.
    pub async fn cancel_matching(
        &self,
        command: Option<String>,
        since: Option<DateTime<Utc>>,
    ) -> Result<usize, StoreError> {
        let filter = BulkFilter {
            status: JobStatus::Pending,
            command,
            since,
            after: None,
        };
        let count = self
            .in_batches(
                filter.clone(),
                |filter| self.store.cancel_matching(filter, Utc::now(), BULK_BATCH),
                |id: &JobId| *id,
                |id| self.dequeued_as_cancelled(id),
            )
            .await?;
        if count > 0 {
            self.settle_after_cancels().await;
        }
        tracing::info!(
            command = filter.command.as_deref(),
            count,
            "pending jobs cancelled in bulk"
        );
        Ok(count)
    }

    /// Runs a bulk action `batch` by [`BULK_BATCH`] jobs at a time, each batch after the
    /// last id of the one before (so each job is visited once), handing every job
    /// changed to `each`; how many.
    async fn in_batches<T, Fut>(
        &self,
        mut filter: BulkFilter,
        batch: impl Fn(BulkFilter) -> Fut,
        id_of: impl Fn(&T) -> JobId,
        mut each: impl FnMut(T),
    ) -> Result<usize, StoreError>
    where
        Fut: Future<Output = Result<Vec<T>, StoreError>>,
    {
        let mut count = 0;
        loop {
            let changed = batch(filter.clone()).await?;
            count += changed.len();
            let full = changed.len() == BULK_BATCH;
            filter.after = changed.last().map(&id_of);
            for job in changed {
                each(job);
            }
            if !full {
                return Ok(count);
            }
        }
    }

    /// Queues a job that a retry put back to pending, and publishes it.
    fn requeued(&self, queued: QueuedJob) {
        let id = queued.id;
        self.enqueue(queued);
        tracing::info!(job_id = %id, "job retried on request: pending again with a fresh retry budget");
        let _ = self.events.send(JobEvent {
            id,
            status: JobStatus::Pending,
            retry_count: 0,
            attempt: 0,
            error: None,
            at: Utc::now(),
        });
    }

    /// Takes a just-cancelled pending job out of the queue, logs and publishes it.
    fn cancelled_while_pending(&self, job: &Job) {
        self.queue.remove(job.id);
        if let Some(waiting) = self.lock_parked().get_mut(plugin_of(&job.command)) {
            waiting.remove(&job.id);
        }
        tracing::info!(job_id = %job.id, command = %job.command, "job cancelled");
        let _ = self.events.send(JobEvent {
            id: job.id,
            status: JobStatus::Cancelled,
            retry_count: job.retry_count,
            attempt: 0,
            error: None,
            at: Utc::now(),
        });
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

    /// Waits for the next job and claims it for `worker_id`: from the in-memory queue,
    /// or, when the store is shared by several daemons, from the database (the best
    /// eligible job this daemon serves, woken by submits anywhere). `None` when `stop`
    /// fires while waiting; a claim once begun is carried through, so no job is left
    /// `running` without a worker. `Some(Ok(None))`: the job went elsewhere meanwhile.
    pub async fn next_job(
        &self,
        worker_id: usize,
        stop: &CancellationToken,
    ) -> Option<Result<Option<(Claimed, CancellationToken)>, StoreError>> {
        let Some(shared) = self.store.shared() else {
            let queued = tokio::select! {
                biased;
                () = stop.cancelled() => return None,
                queued = self.next_queued() => queued,
            };
            return Some(self.claim(queued, worker_id).await);
        };
        let mut wake = shared.wake_ups();
        loop {
            wake.borrow_and_update();
            let limits = self.concurrency_limits();
            let next = self
                .timed(
                    StoreWrite::Claim,
                    shared.claim_next(self.catalog.served(), &limits, worker_id),
                )
                .await;
            let due = match next {
                Ok(ClaimNext::Claimed(claimed)) => {
                    let token = CancellationToken::new();
                    let running = Running {
                        token: token.clone(),
                        plugin_loads: self.plugin_loads.load(std::sync::atomic::Ordering::SeqCst),
                        slots: None,
                    };
                    let early = {
                        let mut registered = self.lock_running();
                        registered.insert(claimed.job.id, running);
                        self.lock_early_cancels()
                            .remove(&(claimed.job.id, claimed.attempt))
                            .is_some()
                    };
                    let job = &claimed.job;
                    if early {
                        tracing::info!(job_id = %job.id, attempt = claimed.attempt, "cancelling a job as it starts: its cancel came first");
                        token.cancel();
                    }
                    tracing::info!(job_id = %job.id, command = %job.command, worker_id, "job started");
                    self.attempt_started(job);
                    self.publish(job, claimed.attempt);
                    return Some(Ok(Some((*claimed, token))));
                }
                Ok(ClaimNext::NothingUntil(due)) => due,
                Err(err) => return Some(Err(err)),
            };
            let wait = due
                .and_then(|due| (due - Utc::now()).to_std().ok())
                .unwrap_or(SHARED_SAFETY_POLL)
                .min(SHARED_SAFETY_POLL);
            tokio::select! {
                biased;
                () = stop.cancelled() => return None,
                _ = wake.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Queues a pending job for the workers, unless the store is shared: then the
    /// database is the queue, and every worker claims from it.
    pub(crate) fn enqueue(&self, job: QueuedJob) {
        if self.store.shared().is_none() {
            self.queue.push(job);
        }
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
        let running = Running {
            token: token.clone(),
            plugin_loads: self.plugin_loads.load(std::sync::atomic::Ordering::SeqCst),
            slots: Some(queued.clone()),
        };
        self.lock_running().insert(queued.id, running);
        let claim = self.store.claim(queued.id, worker_id, Utc::now());
        match self.timed(StoreWrite::Claim, claim).await {
            Ok(Some(claimed)) => {
                let job = &claimed.job;
                tracing::info!(job_id = %job.id, command = %job.command, worker_id, "job started");
                self.attempt_started(job);
                self.publish(job, claimed.attempt);
                Ok(Some((claimed, token)))
            }
            Ok(None) => {
                self.unregister(queued.id);
                Ok(None)
            }
            Err(err) => {
                self.unregister(queued.id);
                self.enqueue(queued);
                Err(err)
            }
        }
    }

    /// Forgets the running attempt of job `id` and frees the concurrency slots it held.
    fn unregister(&self, id: JobId) -> Option<Running> {
        let running = self.lock_running().remove(&id);
        if let Some(slots) = running.as_ref().and_then(|running| running.slots.as_ref()) {
            self.queue.release(slots);
        }
        running
    }

    /// Records how an attempt ended, requeues the job when it goes back to pending,
    /// logs and publishes the change.
    ///
    /// The write is retried with backoff until it lands, or until `give_up` fires (the
    /// daemon's drain deadline): a locked, full or failing database delays the outcome
    /// but never loses it. Until the commit the job keeps its cancellation token. A
    /// cancel that arrived while a retriable failure or a snooze was being written is
    /// honoured once the job is back to pending: it ends `cancelled` instead of running
    /// again.
    pub async fn finish(
        &self,
        claimed: &Claimed,
        outcome: Outcome,
        report: AttemptReport,
        give_up: &CancellationToken,
    ) -> Result<(), StoreError> {
        let job = &claimed.job;
        let duration_ms = report.duration_ms;
        let finished_at = report.finished_at;
        let written = self
            .write_until_landed(job.id, "job outcome", give_up, || {
                let finish =
                    self.store
                        .finish(job.id, claimed.attempt, outcome.clone(), report.clone());
                self.timed(StoreWrite::Finish, finish)
            })
            .await;
        let running = self.unregister(job.id);
        let settled = written?;
        self.settled(settled);
        if let Some(shared) = self.store.shared()
            && !self
                .concurrency_limits()
                .limited(&job.command, job.concurrency_key.as_deref())
                .is_empty()
            && let Err(err) = shared.wake_all().await
        {
            // Other nodes' idle workers look again at their safety poll instead.
            tracing::warn!(job_id = %job.id, error = %err, "cannot announce a freed concurrency slot");
        }
        if let Some(metrics) = &self.metrics {
            metrics.attempt_finished(
                &job.command,
                &outcome,
                Duration::from_millis(duration_ms),
                report.fuel_used,
            );
        }
        let cancel_requested = running.as_ref().is_some_and(|r| r.token.is_cancelled());
        let loads_at_claim = running.map_or(0, |r| r.plugin_loads);
        if cancel_requested
            && matches!(
                outcome,
                Outcome::Retry { .. } | Outcome::Snoozed { .. } | Outcome::RateLimited { .. }
            )
        {
            let cancelled = self
                .write_until_landed(job.id, "cancellation", give_up, || {
                    self.store.cancel_pending(job.id, Utc::now())
                })
                .await;
            match cancelled {
                Ok(()) => {
                    tracing::info!(job_id = %job.id, command = %job.command, "job cancelled instead of run again: the cancel came as the attempt ended");
                    let _ = self.events.send(JobEvent {
                        id: job.id,
                        status: JobStatus::Cancelled,
                        retry_count: job.retry_count + outcome.retry().0,
                        attempt: claimed.attempt,
                        error: None,
                        at: Utc::now(),
                    });
                    return Ok(());
                }
                Err(err) => {
                    // Still pending (the store would not take the cancel): it retries.
                    tracing::error!(job_id = %job.id, error = %err, "cannot record the cancellation of a retrying job");
                }
            }
        }
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
                self.enqueue(QueuedJob {
                    run_at: *run_at,
                    ..QueuedJob::from(job)
                });
                (JobStatus::Pending, retry_count, Some(error.clone()))
            }
            Outcome::Snoozed { reason, run_at } => {
                tracing::info!(
                    job_id = %job.id, command = %job.command, reason = %reason,
                    snooze_count = job.snooze_count + 1, duration_ms,
                    next_run = %run_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "job snoozed by its plugin"
                );
                self.enqueue(QueuedJob {
                    run_at: *run_at,
                    ..QueuedJob::from(job)
                });
                (JobStatus::Pending, job.retry_count, Some(reason.clone()))
            }
            Outcome::RateLimited { reason, run_at } => {
                tracing::info!(
                    job_id = %job.id, command = %job.command, reason = %reason, duration_ms,
                    next_run = %run_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "job held by a rate limit; pending until the reset, no retry spent"
                );
                self.enqueue(QueuedJob {
                    run_at: *run_at,
                    ..QueuedJob::from(job)
                });
                (JobStatus::Pending, job.retry_count, Some(reason.clone()))
            }
            Outcome::Cancelled => {
                tracing::info!(job_id = %job.id, command = %job.command, duration_ms, "job cancelled");
                (JobStatus::Cancelled, job.retry_count, None)
            }
            Outcome::CancelledByPlugin { reason } => {
                tracing::info!(job_id = %job.id, command = %job.command, reason = %reason, duration_ms, "job cancelled by its plugin");
                (JobStatus::Cancelled, job.retry_count, Some(reason.clone()))
            }
            Outcome::Parked { reason } => {
                tracing::warn!(job_id = %job.id, command = %job.command, reason = %reason, "job waits for its plugin");
                self.park(job, loads_at_claim);
                (JobStatus::Pending, job.retry_count, Some(reason.clone()))
            }
            Outcome::Interrupted => {
                tracing::warn!(job_id = %job.id, command = %job.command, "job interrupted by shutdown; back to pending");
                self.enqueue(QueuedJob::from(job));
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

    /// Queues the jobs an outcome or a settling released, and publishes the ones it
    /// cancelled for a failed dependency.
    fn settled(&self, settled: Settled) {
        for job in settled.released {
            tracing::info!(job_id = %job.id, command = %job.command, "job's dependencies completed: queued");
            self.enqueue(job);
        }
        for id in settled.cancelled {
            tracing::info!(job_id = %id, "job cancelled: a job it depends on failed or was cancelled");
            self.dequeued_as_cancelled(id);
        }
    }

    /// Takes a pending job that the store has just cancelled out of the queue, and
    /// publishes the change.
    fn dequeued_as_cancelled(&self, id: JobId) {
        self.queue.remove(id);
        let _ = self.events.send(JobEvent {
            id,
            status: JobStatus::Cancelled,
            retry_count: 0,
            attempt: 0,
            error: None,
            at: Utc::now(),
        });
    }

    /// After cancels of pending jobs: whoever waited on them is cancelled too. A failure
    /// here only delays that until the next settling.
    async fn settle_after_cancels(&self) {
        if let Err(err) = self.settle_dependents().await {
            tracing::warn!(error = %err, "cannot settle the jobs waiting on cancelled ones yet");
        }
    }

    /// Settles every job that waits for others (see [`JobStore::settle_dependents`](crate::store::JobStore::settle_dependents)):
    /// after cancels and recoveries, and now and then on a shared store.
    pub async fn settle_dependents(&self) -> Result<(), StoreError> {
        let settled = self.store.settle_dependents(Utc::now()).await?;
        self.settled(settled);
        Ok(())
    }

    /// Holds `job` until its plugin is loaded again ([`Manager::plugin_loaded`]). If a
    /// plugin was loaded since the attempt was claimed (`loads_at_claim`), it may be
    /// the one this job missed: the job is queued again at once instead.
    fn park(&self, job: &Job, loads_at_claim: u64) {
        let plugin = plugin_of(&job.command).to_owned();
        let mut parked = self.lock_parked();
        // Read under the lock `plugin_loaded` takes: a load either sees this job parked
        // or has already moved the counter.
        if self.plugin_loads.load(std::sync::atomic::Ordering::SeqCst) != loads_at_claim {
            drop(parked);
            self.enqueue(QueuedJob::from(job));
            return;
        }
        parked
            .entry(plugin)
            .or_default()
            .insert(job.id, QueuedJob::from(job));
    }

    /// The plugin set changed: the concurrency limits its manifests (and the daemon's
    /// configuration) declare now are put in force.
    pub fn plugins_changed(&self) {
        let limits = self.catalog.concurrency_limits();
        let changed = **self.limits.read().expect("limits lock poisoned") != limits;
        if changed {
            tracing::info!(?limits, "concurrency limits changed");
            *self.limits.write().expect("limits lock poisoned") = Arc::new(limits.clone());
            self.queue.set_limits(limits);
        }
    }

    /// The concurrency limits in force.
    pub fn concurrency_limits(&self) -> Arc<ConcurrencyLimits> {
        Arc::clone(&self.limits.read().expect("limits lock poisoned"))
    }

    /// Plugin `name` was loaded (or replaced): the jobs waiting for it are queued again.
    pub fn plugin_loaded(&self, name: &str) {
        let waiting = {
            let mut parked = self.lock_parked();
            self.plugin_loads
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            parked.remove(name).unwrap_or_default()
        };
        if waiting.is_empty() {
            return;
        }
        tracing::info!(plugin = %name, jobs = waiting.len(), "plugin is back; its waiting jobs are queued again");
        for job in waiting.into_values() {
            self.enqueue(job);
        }
    }

    /// Whether a plugin loaded here serves `command`.
    pub(super) fn serves(&self, command: &str) -> bool {
        self.catalog.resolve(command).is_ok()
    }

    /// How many jobs this daemon's workers run now.
    pub(super) fn running_here(&self) -> usize {
        self.lock_running().len()
    }

    /// How many jobs wait for plugin `name`.
    pub fn waiting_for_plugin(&self, name: &str) -> usize {
        self.lock_parked().get(name).map_or(0, HashMap::len)
    }

    fn lock_parked(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<JobId, QueuedJob>>> {
        self.parked.lock().expect("parked jobs poisoned")
    }

    /// Runs `write` until it succeeds, backing off between tries; gives up at once on
    /// an answer that another try cannot change (the job moved or is gone), or when
    /// `give_up` fires.
    async fn write_until_landed<T, F, Fut>(
        &self,
        id: JobId,
        what: &str,
        give_up: &CancellationToken,
        mut write: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut delay = OUTCOME_RETRY_FIRST;
        let mut tries = 1u32;
        loop {
            let err = match write().await {
                Ok(written) => {
                    if tries > 1 {
                        tracing::info!(job_id = %id, tries, "recorded the {what} after retrying");
                    }
                    return Ok(written);
                }
                Err(err @ (StoreError::StaleTransition { .. } | StoreError::NotFound(_))) => {
                    return Err(err);
                }
                Err(err) => err,
            };
            if give_up.is_cancelled() {
                tracing::error!(job_id = %id, error = %err, "cannot record the {what}, and the daemon is stopping: the job stays running until recovery at the next start");
                return Err(err);
            }
            tracing::warn!(job_id = %id, error = %err, tries, retry_in_ms = delay.as_millis() as u64, "cannot record the {what}; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = give_up.cancelled() => {}
            }
            delay = (delay * 2).min(OUTCOME_RETRY_MAX);
            tries += 1;
        }
    }

    /// On a shared store: a cancel of attempt `attempt` of job `id` reached this node
    /// (from the node that was asked). Stops the sandbox if a worker here runs it; if
    /// the claim has not registered it yet, the cancel waits for it.
    pub fn cancel_requested(&self, id: JobId, attempt: u32) {
        let running = self.lock_running();
        if let Some(job) = running.get(&id) {
            if !job.token.is_cancelled() {
                tracing::info!(job_id = %id, attempt, "cancelling running job on another node's request");
                job.token.cancel();
            }
            return;
        }
        let mut early = self.lock_early_cancels();
        let now = std::time::Instant::now();
        early.retain(|_, came| now.duration_since(*came) < EARLY_CANCEL_KEPT);
        early.insert((id, attempt), now);
    }

    /// On a shared store: a change of a job's state announced by the database, perhaps
    /// made by another node, published to this node's watchers. A change this node made
    /// itself arrives twice; watchers ignore what is not news.
    pub fn republish(&self, change: JobChange) {
        let _ = self.events.send(JobEvent {
            id: change.id,
            status: change.status,
            retry_count: change.retry_count,
            attempt: change.attempt,
            error: None,
            at: Utc::now(),
        });
    }

    fn lock_early_cancels(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(JobId, u32), std::time::Instant>> {
        self.early_cancels.lock().expect("early cancels poisoned")
    }

    fn running_token(&self, id: JobId) -> Option<CancellationToken> {
        self.lock_running()
            .get(&id)
            .map(|running| running.token.clone())
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Running>> {
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

/// The store's question for a unique request, checked, and what to do if blocked.
fn uniqueness(unique: UniqueRequest) -> Result<(Uniqueness, OnConflict), SubmitError> {
    let UniqueRequest {
        key,
        within,
        states,
        on_conflict,
    } = unique;
    if key.is_empty() || key.len() > MAX_UNIQUE_KEY_BYTES {
        return Err(SubmitError::InvalidUnique(format!(
            "unique_key is {} bytes: use 1 to {MAX_UNIQUE_KEY_BYTES}",
            key.len()
        )));
    }
    let within = match within {
        None => None,
        Some(within) if within.is_zero() || within > MAX_UNIQUE_WITHIN => {
            return Err(SubmitError::InvalidUnique(format!(
                "unique_for is {}: use 1 ms to 10 years, or none for ever",
                humantime::format_duration(within)
            )));
        }
        Some(within) => {
            Some(chrono::TimeDelta::from_std(within).expect("ten years fit in a TimeDelta"))
        }
    };
    let states = if states.is_empty() {
        Uniqueness::DEFAULT_STATES.to_vec()
    } else {
        states
    };
    let unique = Uniqueness {
        key,
        within,
        states,
        replace: on_conflict == OnConflict::Replace,
    };
    Ok((unique, on_conflict))
}

/// The plugin part of `plugin.command`.
fn plugin_of(command: &str) -> &str {
    command
        .split_once('.')
        .map_or(command, |(plugin, _)| plugin)
}

/// Runs `unit` in a task of its own and waits for it: dropping the returned future does
/// not stop the unit. `Err` carries the message of a panic inside it.
async fn complete_once_started<T: Send + 'static>(
    unit: impl Future<Output = T> + Send + 'static,
) -> Result<T, String> {
    tokio::spawn(unit).await.map_err(|err| {
        tracing::error!(error = %err, "a queue operation panicked");
        format!("internal error: {err}")
    })
}

/// `plugin.command`: two non-empty parts of letters, digits, `_` and `-`.
/// The distinct jobs a submit waits for, checked: at most [`MAX_DEPENDENCIES`], not
/// with a unique key.
fn dependencies(after: &[JobId], unique: bool) -> Result<Vec<JobId>, SubmitError> {
    let mut distinct = after.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() > MAX_DEPENDENCIES {
        return Err(SubmitError::InvalidDependencies(format!(
            "a job waits for at most {MAX_DEPENDENCIES} others, not {}",
            distinct.len()
        )));
    }
    if unique && !distinct.is_empty() {
        return Err(SubmitError::InvalidDependencies(
            "a job with a unique key cannot also wait for others".into(),
        ));
    }
    Ok(distinct)
}

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
    use super::*;

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

    /// A manager over a store that is never opened for writing here.
    fn manager(max_payload_bytes: usize) -> (tempfile::TempDir, Manager) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::store::SqliteStore::open(crate::store::SqliteConfig::new(dir.path().join("db")))
                .map(Store::new)
                .unwrap();
        let config = ManagerConfig {
            max_payload_bytes,
            ..ManagerConfig::default()
        };
        (dir, Manager::new(store, Arc::new(AnyCommand), config))
    }

    proptest::proptest! {
        /// Payload limits: whatever the sizes and retries a client sends, a submit is
        /// accepted exactly when it fits, refused with the sizes named otherwise, and
        /// never panics.
        #[test]
        fn payload_limits_accept_what_fits_and_name_the_sizes_otherwise(
            limit in 0usize..4096,
            size in 0usize..8192,
            retries in proptest::option::of(proptest::num::u32::ANY),
            priority in proptest::num::i64::ANY,
        ) {
            let (_dir, manager) = manager(limit);
            let request = SubmitRequest {
                command: "echo.echo".into(),
                payload: vec![b'x'; size],
                priority,
                max_retries: retries,
                unique: None,
                after: Vec::new(),
                trace_parent: None,
                concurrency_key: None,
            };
            match manager.new_job(request) {
                Ok(job) => {
                    proptest::prop_assert!(size <= limit);
                    proptest::prop_assert_eq!(job.priority, priority);
                }
                Err(SubmitError::PayloadTooLarge { size: got, limit: max }) => {
                    proptest::prop_assert!(size > limit);
                    proptest::prop_assert_eq!((got, max), (size, limit));
                }
                Err(other) => proptest::prop_assert!(false, "unexpected {other}"),
            }
        }

        /// Command names from outside are judged without panicking.
        #[test]
        fn any_command_text_is_judged_without_panicking(command in "\\PC{0,40}") {
            let _ = is_well_formed(&command);
        }
    }
}
