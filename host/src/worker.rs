//! The worker pool: N async workers that take jobs from the manager and run them
//! through an [`Executor`].
//!
//! Waiting for work ([`crate::queue::Manager::next_queued`]) may be interrupted at any
//! time; running a job may not, except by the job's own cancellation token or by the
//! shutdown deadline. [`WorkerPool::stop`] names that deadline: workers stop taking
//! jobs at once, in-flight jobs get until the deadline, and any still running then are
//! dropped mid-flight and put back to `pending` (error kind `shutdown`), so nothing is
//! lost. Workers are tasks, not threads: a job waiting on HTTP holds no thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::job::{Job, PluginRef};
use crate::queue::Manager;
use crate::retry::{self, BackoffPolicy, Failure};
use crate::store::{AttemptReport, Claimed, Outcome};

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
}

impl Execution {
    /// An execution with only a result, nothing measured.
    pub fn of(result: Result<Vec<u8>, Failure>) -> Self {
        Self {
            result,
            fuel_used: None,
            plugin: None,
        }
    }
}

/// Runs one attempt of a job. The plugin runtime is the production executor.
pub trait Executor: Send + Sync + 'static {
    /// Runs `job`, stopping as soon as `cancel` fires (the job was cancelled).
    fn execute<'a>(&'a self, job: &'a Job, cancel: CancellationToken) -> BoxFuture<'a, Execution>;
}

/// Settings of the pool.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// How many jobs run at once.
    pub workers: usize,
    /// Retry timing.
    pub backoff: BackoffPolicy,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            backoff: BackoffPolicy::default(),
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
    workers: JoinSet<usize>,
}

impl WorkerPool {
    /// Starts `config.workers` workers on the current runtime.
    pub fn start(manager: Arc<Manager>, executor: Arc<dyn Executor>, config: PoolConfig) -> Self {
        let stop_taking = CancellationToken::new();
        let interrupt = CancellationToken::new();
        let mut workers = JoinSet::new();
        for worker_id in 1..=config.workers.max(1) {
            let worker = Worker {
                id: worker_id,
                manager: Arc::clone(&manager),
                executor: Arc::clone(&executor),
                backoff: config.backoff,
                stop_taking: stop_taking.clone(),
                interrupt: interrupt.clone(),
            };
            workers.spawn(worker.run());
        }
        tracing::info!(workers = config.workers.max(1), "worker pool started");
        Self {
            stop_taking,
            interrupt,
            workers,
        }
    }

    /// How many workers are alive.
    pub fn size(&self) -> usize {
        self.workers.len()
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
        let mut interrupted = 0;
        let in_time = tokio::time::timeout(deadline, async {
            while let Some(joined) = self.workers.join_next().await {
                interrupted += joined.unwrap_or(0);
            }
        })
        .await
        .is_ok();
        if !in_time {
            self.interrupt.cancel();
            while let Some(joined) = self.workers.join_next().await {
                interrupted += joined.unwrap_or(0);
            }
        }
        let drained = !self.interrupt.is_cancelled();
        tracing::info!(drained, interrupted, "worker pool stopped");
        ShutdownReport {
            drained,
            interrupted,
        }
    }
}

struct Worker {
    id: usize,
    manager: Arc<Manager>,
    executor: Arc<dyn Executor>,
    backoff: BackoffPolicy,
    stop_taking: CancellationToken,
    interrupt: CancellationToken,
}

impl Worker {
    /// The worker loop; returns how many jobs it had to interrupt.
    async fn run(self) -> usize {
        let mut rng = SmallRng::from_os_rng();
        let mut interrupted = 0;
        loop {
            // Waiting may be interrupted: the queue loses nothing when this is dropped.
            let queued = tokio::select! {
                biased;
                () = self.stop_taking.cancelled() => break,
                queued = self.manager.next_queued() => queued,
            };
            let claimed = match self.manager.claim(queued, self.id).await {
                Ok(Some(claimed)) => claimed,
                Ok(None) => continue,
                Err(err) => {
                    tracing::error!(job_id = %queued.id, worker_id = self.id, error = %err, "cannot claim job");
                    // The store is failing; do not spin on it.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if self.work(claimed, &mut rng).await {
                interrupted += 1;
            }
        }
        interrupted
    }

    /// Runs one claimed job to its next state; true when the shutdown deadline cut it.
    async fn work(
        &self,
        (claimed, cancel): (Claimed, CancellationToken),
        rng: &mut SmallRng,
    ) -> bool {
        let started = Instant::now();
        let execution = tokio::select! {
            execution = self.executor.execute(&claimed.job, cancel.clone()) => Some(execution),
            () = cancel.cancelled() => None,
            () = self.interrupt.cancelled() => None,
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let now = Utc::now();
        let cancelled = cancel.is_cancelled();
        let (outcome, fuel_used, plugin) = match execution {
            // A result that made it out counts, even if a cancel raced it.
            Some(Execution {
                result: Ok(bytes),
                fuel_used,
                plugin,
            }) => (Outcome::Completed(bytes), fuel_used, plugin),
            Some(execution) if cancelled => {
                (Outcome::Cancelled, execution.fuel_used, execution.plugin)
            }
            None if cancelled => (Outcome::Cancelled, None, None),
            None => (Outcome::Interrupted, None, None),
            Some(Execution {
                result: Err(failure),
                fuel_used,
                plugin,
            }) => {
                let outcome = retry::decide(&claimed.job, &failure, &self.backoff, now, rng);
                (outcome, fuel_used, plugin)
            }
        };
        let was_interrupted = matches!(outcome, Outcome::Interrupted);
        let report = AttemptReport {
            finished_at: now,
            duration_ms,
            fuel_used,
            plugin,
        };
        if let Err(err) = self.manager.finish(&claimed, outcome, report).await {
            // The row stays `running`; recovery puts it back to pending at next start.
            tracing::error!(job_id = %claimed.job.id, worker_id = self.id, error = %err, "cannot record job outcome");
        }
        was_interrupted
    }
}
