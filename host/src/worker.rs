//! The worker pool: N async workers that take jobs from the manager and run them
//! through an [`Executor`].
//!
//! Waiting for work ([`crate::queue::Manager::next_job`]) may be interrupted at any
//! time; running a job may not, except by the job's own cancellation token or by the
//! shutdown deadline. [`WorkerPool::stop`] names that deadline: workers stop taking
//! jobs at once, in-flight jobs get until the deadline, and any still running then are
//! dropped mid-flight and put back to `pending` (error kind `shutdown`), so nothing is
//! lost. Workers are tasks, not threads: a job waiting on HTTP holds no thread.
//!
//! How an attempt ends is decided here from what the executor reports: a result, a
//! classified failure ([`crate::retry::decide`]), or the plugin's own request to snooze
//! or cancel its job ([`crate::job_request::decide`]), which wins over whatever `run`
//! returned but not over a cancel on request (a snoozed job would only run again).
//!
//! The pool is supervised. A panic while a job runs (a host bug) is caught around that
//! attempt: it is logged at `error` with the job id and ends the attempt as a retriable
//! `host_panic`. A worker task that dies anyway is replaced by the pool's supervisor, so
//! the pool keeps its size until it is stopped.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::FutureExt;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::job::{ErrorKind, Job, PluginRef};
use crate::job_request::{self, DEFAULT_MAX_SNOOZES, JobRequest};
use crate::output::{AttemptOutputs, OutputSink};
use crate::queue::Manager;
use crate::retry::{self, BackoffPolicy, Failure};
use crate::store::{AttemptReport, Claimed, Outcome, StoreError};
use crate::traces::AttemptSpan;

/// A boxed future, as [`Executor::execute`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an executor reports about one attempt.
#[derive(Debug)]
pub struct Execution {
    /// Result bytes, or a classified failure.
    pub result: Result<Vec<u8>, Failure>,
    /// Fuel the sandbox burned, when measured.
    pub fuel_used: Option<u64>,
    /// The component that ran, when a plugin was involved.
    pub plugin: Option<PluginRef>,
    /// What the plugin asked of its job (its last request), reported only when its
    /// `run` returned: it then decides the outcome instead of `result`.
    pub request: Option<JobRequest>,
}

impl Execution {
    /// An execution with only a result, nothing measured.
    pub fn of(result: Result<Vec<u8>, Failure>) -> Self {
        Self {
            result,
            fuel_used: None,
            plugin: None,
            request: None,
        }
    }
}

/// Runs one attempt of a job. The plugin runtime is the production executor.
pub trait Executor: Send + Sync + 'static {
    /// Runs `job`, stopping as soon as `cancel` fires (the job was cancelled), writing
    /// what its plugin logs and reports as progress into `output`.
    fn execute<'a>(
        &'a self,
        job: &'a Job,
        cancel: CancellationToken,
        output: OutputSink,
    ) -> BoxFuture<'a, Execution>;
}

/// How many jobs run at once unless configured. Jobs are mostly waiting on HTTP, and
/// a worker waiting holds no thread, so the default is well above the core count;
/// each running sandbox may use up to its memory limit (64 MiB by default).
pub const DEFAULT_WORKERS: usize = 16;

/// The most workers a pool may have: a bound on a value that comes from outside.
pub const MAX_WORKERS: usize = 1024;

/// Settings of the pool.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// How many jobs run at once.
    pub workers: usize,
    /// Retry timing.
    pub backoff: BackoffPolicy,
    /// How many times one job may snooze; the snooze after that fails it.
    pub max_snoozes: u32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            workers: DEFAULT_WORKERS,
            backoff: BackoffPolicy::default(),
            max_snoozes: DEFAULT_MAX_SNOOZES,
        }
    }
}

/// How a stop went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every in-flight job finished before the deadline.
    pub drained: bool,
    /// Jobs interrupted at the deadline and put back to pending.
    pub interrupted: usize,
}

/// A running pool of workers.
pub struct WorkerPool {
    stop_taking: CancellationToken,
    interrupt: CancellationToken,
    alive: Arc<AtomicUsize>,
    supervisor: JoinHandle<usize>,
}

impl WorkerPool {
    /// Starts `config.workers` workers on the current runtime, under a supervisor that
    /// replaces any that die.
    pub fn start(manager: Arc<Manager>, executor: Arc<dyn Executor>, config: PoolConfig) -> Self {
        let stop_taking = CancellationToken::new();
        let interrupt = CancellationToken::new();
        let size = config.workers.max(1);
        let alive = Arc::new(AtomicUsize::new(size));
        let template = Worker {
            id: 0,
            manager,
            executor,
            backoff: config.backoff,
            max_snoozes: config.max_snoozes,
            stop_taking: stop_taking.clone(),
            interrupt: interrupt.clone(),
        };
        let supervisor = tokio::spawn(supervise(template, size, Arc::clone(&alive)));
        tracing::info!(workers = size, "worker pool started");
        Self {
            stop_taking,
            interrupt,
            alive,
            supervisor,
        }
    }

    /// How many workers are alive.
    pub fn size(&self) -> usize {
        self.alive.load(Ordering::SeqCst)
    }

    /// Stops taking jobs now (the first step of [`WorkerPool::stop`]): once this
    /// returns, no worker starts another job.
    pub fn stop_taking(&self) {
        self.stop_taking.cancel();
    }

    /// A token that cuts [`WorkerPool::stop`]'s drain short when cancelled: running
    /// jobs are interrupted at once and put back to pending, as at the deadline.
    pub fn interrupter(&self) -> CancellationToken {
        self.interrupt.clone()
    }

    /// Stops taking jobs, lets in-flight jobs finish until `deadline` (or until the
    /// [`WorkerPool::interrupter`] fires), then interrupts the rest and puts them back
    /// to pending.
    pub async fn stop(mut self, deadline: Duration) -> ShutdownReport {
        self.stop_taking.cancel();
        let interrupted = match tokio::time::timeout(deadline, &mut self.supervisor).await {
            Ok(joined) => joined.unwrap_or(0),
            Err(_) => {
                self.interrupt.cancel();
                (&mut self.supervisor).await.unwrap_or(0)
            }
        };
        // Cut short by the deadline or by an `interrupter` (a second signal).
        let drained = !self.interrupt.is_cancelled();
        tracing::info!(drained, interrupted, "worker pool stopped");
        ShutdownReport {
            drained,
            interrupted,
        }
    }
}

impl Drop for WorkerPool {
    /// A pool dropped without [`WorkerPool::stop`] ends its workers where they are, as
    /// a crash would (their jobs stay `running` until recovery).
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

/// Runs `size` copies of `template` (ids 1..=size) and replaces any that panic until
/// the pool is told to stop taking jobs; returns how many jobs the workers interrupted.
async fn supervise(template: Worker, size: usize, alive: Arc<AtomicUsize>) -> usize {
    let mut workers = JoinSet::new();
    let mut ids = HashMap::new();
    let spawn = |workers: &mut JoinSet<usize>, ids: &mut HashMap<tokio::task::Id, usize>, id| {
        let handle = workers.spawn(template.with_id(id).run());
        ids.insert(handle.id(), id);
    };
    for id in 1..=size {
        spawn(&mut workers, &mut ids, id);
    }
    let mut interrupted = 0;
    while let Some(joined) = workers.join_next_with_id().await {
        match joined {
            Ok((task, count)) => {
                ids.remove(&task);
                interrupted += count;
            }
            Err(err) => {
                let id = ids.remove(&err.id()).unwrap_or(0);
                if template.stop_taking.is_cancelled() {
                    tracing::error!(worker_id = id, error = %err, "worker died while stopping");
                } else {
                    tracing::error!(worker_id = id, error = %err, "worker died; starting a new one in its place");
                    spawn(&mut workers, &mut ids, id);
                    continue;
                }
            }
        }
        alive.fetch_sub(1, Ordering::SeqCst);
    }
    interrupted
}

struct Worker {
    id: usize,
    manager: Arc<Manager>,
    executor: Arc<dyn Executor>,
    backoff: BackoffPolicy,
    max_snoozes: u32,
    stop_taking: CancellationToken,
    interrupt: CancellationToken,
}

impl Worker {
    /// A copy of this worker under another id (the supervisor's template).
    fn with_id(&self, id: usize) -> Worker {
        Worker {
            id,
            manager: Arc::clone(&self.manager),
            executor: Arc::clone(&self.executor),
            backoff: self.backoff,
            max_snoozes: self.max_snoozes,
            stop_taking: self.stop_taking.clone(),
            interrupt: self.interrupt.clone(),
        }
    }

    /// The worker loop; returns how many jobs it had to interrupt.
    async fn run(self) -> usize {
        let mut rng = SmallRng::from_os_rng();
        let mut interrupted = 0;
        loop {
            // Waiting may be interrupted (the queue loses nothing); a claim is not.
            let Some(next) = self.manager.next_job(self.id, &self.stop_taking).await else {
                break;
            };
            let claimed = match next {
                Ok(Some(claimed)) => claimed,
                Ok(None) => continue,
                Err(err) => {
                    tracing::error!(worker_id = self.id, error = %err, "cannot claim a job");
                    // The store is failing; do not spin on it.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Kept aside, so that a panic inside `work` can still end the attempt.
            let (held, token) = (claimed.0.clone(), claimed.1.clone());
            match AssertUnwindSafe(self.work(claimed, &mut rng))
                .catch_unwind()
                .await
            {
                Ok(true) => interrupted += 1,
                Ok(false) => {}
                Err(panic) => self.after_panic(held, token, panic, &mut rng).await,
            }
        }
        interrupted
    }

    /// Ends an attempt during which the host panicked: logged with the job id, then a
    /// retriable `host_panic` (a host bug is not the job's fault, and may not recur).
    async fn after_panic(
        &self,
        claimed: Claimed,
        cancel: CancellationToken,
        panic: Box<dyn std::any::Any + Send>,
        rng: &mut SmallRng,
    ) {
        let message = panic
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        tracing::error!(
            job_id = %claimed.job.id, command = %claimed.job.command, worker_id = self.id,
            panic = %message, "the host panicked while running a job; the attempt ends as host_panic"
        );
        let failure = Failure::retriable(
            ErrorKind::HostPanic,
            format!("the daemon hit an internal error while running the job: {message}"),
        );
        let outcome = if cancel.is_cancelled() {
            Outcome::Cancelled
        } else {
            retry::decide(&claimed.job, &failure, &self.backoff, Utc::now(), rng)
        };
        let report = AttemptReport {
            finished_at: Utc::now(),
            ..AttemptReport::default()
        };
        if let Err(err) = self
            .manager
            .finish(&claimed, outcome, report, &self.interrupt)
            .await
        {
            tracing::error!(job_id = %claimed.job.id, worker_id = self.id, error = %err, "cannot record job outcome");
        }
    }

    /// How an attempt of `job` that reported `result` and the plugin's `request` ends,
    /// `cancelled` telling whether a cancel on request fired meanwhile.
    fn outcome(
        &self,
        job: &Job,
        result: Result<Vec<u8>, Failure>,
        request: Option<JobRequest>,
        cancelled: bool,
        now: chrono::DateTime<Utc>,
        rng: &mut SmallRng,
    ) -> Outcome {
        match (result, request) {
            // A cancel on request beats a snooze, which would only run the job again.
            (_, Some(JobRequest::Snooze { .. })) if cancelled => Outcome::Cancelled,
            // The plugin's request stands for its attempt, whatever `run` returned.
            (_, Some(request)) => job_request::decide(job, request, self.max_snoozes, now),
            // A result that made it out counts, even if a cancel raced it.
            (Ok(bytes), None) => Outcome::Completed(bytes),
            (Err(_), None) if cancelled => Outcome::Cancelled,
            // The command was valid at submit but no plugin serves it now: the job
            // waits for its plugin instead of failing (a redeploy in progress).
            (Err(failure), None) if failure.kind() == ErrorKind::PluginUnavailable => {
                Outcome::Parked {
                    reason: failure.message().to_owned(),
                }
            }
            // A rate limit of the plugin's API held the attempt: pending again at the
            // reset, spending no retry (see `rate_limits`).
            (Err(failure), None) if failure.kind() == ErrorKind::RateLimited => {
                crate::rate_limits::outcome(&failure, now)
            }
            (Err(failure), None) => retry::decide(job, &failure, &self.backoff, now, rng),
        }
    }

    /// Runs one claimed job to its next state; true when the shutdown deadline cut it.
    async fn work(
        &self,
        (claimed, cancel): (Claimed, CancellationToken),
        rng: &mut SmallRng,
    ) -> bool {
        let started = Instant::now();
        // The attempt's span: its plugin's requests run in its context.
        let span = AttemptSpan::start(&claimed.job, claimed.attempt);
        let output =
            AttemptOutputs::start(Arc::clone(&self.manager), claimed.job.id, claimed.attempt);
        let run = self
            .executor
            .execute(&claimed.job, cancel.clone(), output.sink());
        let execution = tokio::select! {
            execution = opentelemetry::context::FutureExt::with_context(run, span.context()) => Some(execution),
            () = cancel.cancelled() => None,
            () = self.interrupt.cancelled() => None,
        };
        // The whole log is stored before the outcome, which a watcher may be waiting for.
        output.finish().await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let now = Utc::now();
        let cancelled = cancel.is_cancelled();
        let (outcome, fuel_used, plugin) = match execution {
            None if cancelled => (Outcome::Cancelled, None, None),
            None => (Outcome::Interrupted, None, None),
            Some(Execution {
                result,
                fuel_used,
                plugin,
                request,
            }) => {
                let outcome = self.outcome(&claimed.job, result, request, cancelled, now, rng);
                let outcome = crate::rate_limits::bounded(outcome, claimed.attempt);
                (outcome, fuel_used, plugin)
            }
        };
        let was_interrupted = matches!(outcome, Outcome::Interrupted);
        span.end(&outcome, fuel_used);
        let report = AttemptReport {
            finished_at: now,
            duration_ms,
            fuel_used,
            plugin,
        };
        // Retried until it lands or the drain deadline passes; then the row stays
        // `running` and recovery puts it back to pending at the next start.
        match self
            .manager
            .finish(&claimed, outcome, report, &self.interrupt)
            .await
        {
            Ok(()) => {}
            // Fenced: the job left this attempt while it ran (on a shared store, another
            // daemon took this one for dead and rescued it). Its outcome stands.
            Err(err @ StoreError::StaleTransition { .. }) => tracing::warn!(
                job_id = %claimed.job.id, attempt = claimed.attempt, worker_id = self.id,
                error = %err, "the job moved on while this attempt ran; its outcome is dropped"
            ),
            Err(err) => {
                tracing::error!(job_id = %claimed.job.id, worker_id = self.id, error = %err, "cannot record job outcome")
            }
        }
        was_interrupted
    }
}
