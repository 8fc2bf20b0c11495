//! The queue engine end to end inside one process: manager, worker pool, retries,
//! cancellation, graceful stop and recovery, over a real SQLite file, with a scripted
//! executor standing in for the plugin runtime. Waiting is on job events, not sleeps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use honeydew::job::{ErrorKind, Job, JobId, JobStatus};
use honeydew::queue::{
    AnyCommand, CancelError, CancelOutcome, Manager, ManagerConfig, SubmitRequest,
};
use honeydew::recovery;
use honeydew::retry::{BackoffPolicy, Failure};
use honeydew::store::{JobFilter, Store, StoreConfig};
use honeydew::worker::{BoxFuture, Execution, Executor, PoolConfig, WorkerPool};
use tempfile::TempDir;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

/// Behaves by command name:
/// - `test.ok` returns the payload;
/// - `test.permanent` fails permanently;
/// - `test.flaky` fails retriably as many times as the payload's number, then succeeds;
/// - `test.block` waits for a permit from `release` (honouring cancellation);
/// - `test.stuck` never returns and ignores cancellation.
struct Scripted {
    attempts: Mutex<HashMap<JobId, usize>>,
    order: Mutex<Vec<JobId>>,
    /// How many executions are in progress right now.
    inside: watch::Sender<usize>,
    release: Semaphore,
}

impl Default for Scripted {
    fn default() -> Self {
        Self {
            attempts: Mutex::default(),
            order: Mutex::default(),
            inside: watch::Sender::new(0),
            release: Semaphore::new(0),
        }
    }
}

impl Executor for Scripted {
    fn execute<'a>(&'a self, job: &'a Job, cancel: CancellationToken) -> BoxFuture<'a, Execution> {
        Box::pin(async move {
            self.inside.send_modify(|inside| *inside += 1);
            self.order.lock().unwrap().push(job.id);
            let attempt = {
                let mut attempts = self.attempts.lock().unwrap();
                let count = attempts.entry(job.id).or_default();
                *count += 1;
                *count
            };
            let result = match job.command.as_str() {
                "test.ok" => Ok(job.payload.clone()),
                "test.permanent" => {
                    Err(Failure::permanent(ErrorKind::PluginError, "404 not found"))
                }
                "test.flaky" => {
                    let failures: usize = String::from_utf8_lossy(&job.payload).parse().unwrap();
                    if attempt <= failures {
                        Err(Failure::retriable(
                            ErrorKind::PluginError,
                            format!("503 on attempt {attempt}"),
                        ))
                    } else {
                        Ok(format!("ok after {attempt}").into_bytes())
                    }
                }
                "test.block" => tokio::select! {
                    permit = self.release.acquire() => {
                        permit.unwrap().forget();
                        Ok(b"released".to_vec())
                    }
                    () = cancel.cancelled() => Err(Failure::permanent(ErrorKind::Cancelled, "cancelled")),
                },
                "test.stuck" => std::future::pending().await,
                other => panic!("unscripted command {other}"),
            };
            self.inside.send_modify(|inside| *inside -= 1);
            Execution::of(result)
        })
    }
}

struct Harness {
    _dir: TempDir,
    path: std::path::PathBuf,
    manager: Arc<Manager>,
    executor: Arc<Scripted>,
}

fn fast_backoff() -> BackoffPolicy {
    BackoffPolicy {
        base: Duration::from_millis(5),
        multiplier: 2.0,
        max: Duration::from_millis(50),
        jitter: 0.1,
    }
}

impl Harness {
    fn new() -> Self {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("honeydew.db");
        let manager = manager_at(&path);
        Self {
            _dir: dir,
            path,
            manager,
            executor: Arc::new(Scripted::default()),
        }
    }

    fn start(&self, workers: usize) -> WorkerPool {
        WorkerPool::start(
            Arc::clone(&self.manager),
            self.executor.clone(),
            PoolConfig {
                workers,
                backoff: fast_backoff(),
            },
        )
    }

    async fn submit(&self, command: &str, payload: &str, priority: i64) -> JobId {
        self.manager
            .submit(SubmitRequest {
                command: command.into(),
                payload: payload.into(),
                priority,
                max_retries: None,
            })
            .await
            .unwrap()
    }

    /// Waits (on events, bounded by a generous failsafe) until `id` is in `status`.
    async fn wait_for(&self, id: JobId, status: JobStatus) -> Job {
        let mut events = self.manager.subscribe();
        let wait = async {
            loop {
                let job = self.manager.get(id).await.unwrap();
                if job.status == status {
                    return job;
                }
                assert!(
                    !job.status.is_terminal(),
                    "job ended {} waiting for {status}",
                    job.status
                );
                loop {
                    match events.recv().await {
                        Ok(event) if event.id == id => break,
                        Ok(_) => continue,
                        Err(_) => break,
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .unwrap_or_else(|_| panic!("job {id} never became {status}"))
    }
}

fn manager_at(path: &std::path::Path) -> Arc<Manager> {
    let store = Store::open(StoreConfig::new(path)).unwrap();
    Arc::new(Manager::new(
        store,
        Arc::new(AnyCommand),
        ManagerConfig::default(),
    ))
}

#[tokio::test]
async fn submit_stores_and_queues_and_returns_the_id_at_once() {
    let harness = Harness::new();
    let id = harness.submit("test.ok", "hi", 0).await;
    let job = harness.manager.get(id).await.unwrap();
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.command, "test.ok");
    assert_eq!(
        job.max_retries,
        ManagerConfig::default().default_max_retries
    );
    assert_eq!(harness.manager.queue().len(), 1);
}

#[tokio::test]
async fn submit_refuses_malformed_commands_and_oversized_payloads() {
    let harness = Harness::new();
    let err = harness
        .manager
        .submit(SubmitRequest {
            command: "nodot".into(),
            ..SubmitRequest::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("expected PLUGIN.COMMAND"), "{err}");
    let err = harness
        .manager
        .submit(SubmitRequest {
            command: "test.ok".into(),
            payload: vec![b'x'; ManagerConfig::default().max_payload_bytes + 1],
            ..SubmitRequest::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("over the 4194304-byte limit"),
        "{err}"
    );
    assert!(harness.manager.queue().is_empty());
}

#[tokio::test]
async fn worker_runs_a_job_to_completion_with_its_result() {
    let harness = Harness::new();
    let pool = harness.start(2);
    let id = harness.submit("test.ok", r#"{"hello":"world"}"#, 0).await;
    let job = harness.wait_for(id, JobStatus::Completed).await;
    assert_eq!(job.result.as_deref(), Some(&br#"{"hello":"world"}"#[..]));
    assert!(job.started_at.is_some() && job.completed_at.is_some());
    pool.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn permanent_error_fails_the_job_without_retry() {
    let harness = Harness::new();
    let pool = harness.start(1);
    let id = harness.submit("test.permanent", "", 0).await;
    let job = harness.wait_for(id, JobStatus::Failed).await;
    assert_eq!(job.error.as_deref(), Some("404 not found"));
    assert_eq!(job.error_kind, Some(ErrorKind::PluginError));
    assert_eq!(job.retry_count, 0);
    assert_eq!(harness.manager.store().attempts(id).await.unwrap().len(), 1);
    pool.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn retriable_errors_are_retried_with_backoff_until_success() {
    let harness = Harness::new();
    let pool = harness.start(1);
    let id = harness.submit("test.flaky", "2", 0).await;
    let job = harness.wait_for(id, JobStatus::Completed).await;
    assert_eq!(job.retry_count, 2);
    assert_eq!(job.result.as_deref(), Some(&b"ok after 3"[..]));
    let attempts = harness.manager.store().attempts(id).await.unwrap();
    let outcomes: Vec<_> = attempts
        .iter()
        .map(|a| a.outcome.clone().unwrap())
        .collect();
    assert_eq!(outcomes, ["retrying", "retrying", "completed"]);
    pool.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn job_fails_after_max_retries() {
    let harness = Harness::new();
    let pool = harness.start(1);
    let id = harness
        .manager
        .submit(SubmitRequest {
            command: "test.flaky".into(),
            payload: b"10".to_vec(),
            priority: 0,
            max_retries: Some(2),
        })
        .await
        .unwrap();
    let job = harness.wait_for(id, JobStatus::Failed).await;
    assert_eq!(job.retry_count, 2);
    assert_eq!(
        job.error.as_deref(),
        Some("503 on attempt 3 (gave up after 2 retries)")
    );
    pool.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn higher_priority_runs_first_then_oldest() {
    let harness = Harness::new();
    let low = harness.submit("test.ok", "low", 0).await;
    let urgent = harness.submit("test.ok", "urgent", 100).await;
    let first_mid = harness.submit("test.ok", "mid-1", 5).await;
    let second_mid = harness.submit("test.ok", "mid-2", 5).await;
    let pool = harness.start(1);
    harness.wait_for(low, JobStatus::Completed).await;
    let order = harness.executor.order.lock().unwrap().clone();
    assert_eq!(order, [urgent, first_mid, second_mid, low]);
    pool.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_workers_run_jobs_concurrently() {
    let harness = Harness::new();
    let pool = harness.start(4);
    assert_eq!(pool.size(), 4);
    let ids = [
        harness.submit("test.block", "", 0).await,
        harness.submit("test.block", "", 0).await,
        harness.submit("test.block", "", 0).await,
        harness.submit("test.block", "", 0).await,
    ];
    // None is released yet, so four executions inside at once proves concurrency.
    let mut inside = harness.executor.inside.subscribe();
    tokio::time::timeout(
        Duration::from_secs(20),
        inside.wait_for(|inside| *inside == 4),
    )
    .await
    .expect("four jobs never ran at once")
    .unwrap();
    harness.executor.release.add_permits(4);
    for id in ids {
        harness.wait_for(id, JobStatus::Completed).await;
    }
    pool.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn cancel_pending_job_is_immediate_and_it_never_runs() {
    let harness = Harness::new();
    let id = harness.submit("test.ok", "", 0).await;
    assert_eq!(
        harness.manager.cancel(id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert!(harness.manager.queue().is_empty());
    let pool = harness.start(1);
    let after = harness.submit("test.ok", "", 0).await;
    harness.wait_for(after, JobStatus::Completed).await;
    assert_eq!(
        harness.manager.get(id).await.unwrap().status,
        JobStatus::Cancelled
    );
    assert!(
        harness
            .manager
            .store()
            .attempts(id)
            .await
            .unwrap()
            .is_empty()
    );
    pool.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn cancel_running_job_interrupts_it_and_it_ends_cancelled() {
    let harness = Harness::new();
    let pool = harness.start(1);
    let id = harness.submit("test.stuck", "", 0).await;
    harness.wait_for(id, JobStatus::Running).await;
    assert_eq!(
        harness.manager.cancel(id).await.unwrap(),
        CancelOutcome::Cancelling
    );
    let job = harness.wait_for(id, JobStatus::Cancelled).await;
    assert_eq!(job.error_kind, Some(ErrorKind::Cancelled));
    // The worker is free again.
    let next = harness.submit("test.ok", "", 0).await;
    harness.wait_for(next, JobStatus::Completed).await;
    pool.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn cancel_refuses_finished_and_unknown_jobs_clearly() {
    let harness = Harness::new();
    let pool = harness.start(1);
    let id = harness.submit("test.ok", "", 0).await;
    harness.wait_for(id, JobStatus::Completed).await;
    let err = harness.manager.cancel(id).await.unwrap_err();
    assert!(matches!(
        err,
        CancelError::Finished {
            status: JobStatus::Completed,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        format!("job {id} is already completed and cannot be cancelled")
    );
    let unknown = JobId::new();
    assert!(
        matches!(harness.manager.cancel(unknown).await, Err(CancelError::NotFound(found)) if found == unknown)
    );
    pool.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn list_filters_by_status() {
    let harness = Harness::new();
    let pool = harness.start(1);
    let done = harness.submit("test.ok", "", 0).await;
    let failed = harness.submit("test.permanent", "", 0).await;
    harness.wait_for(done, JobStatus::Completed).await;
    harness.wait_for(failed, JobStatus::Failed).await;
    let page = harness
        .manager
        .list(JobFilter {
            status: Some(JobStatus::Failed),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.jobs.iter().map(|job| job.id).collect::<Vec<_>>(),
        [failed]
    );
    pool.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn graceful_stop_waits_for_jobs_in_flight() {
    let harness = Harness::new();
    let pool = harness.start(2);
    let id = harness.submit("test.block", "", 0).await;
    harness.wait_for(id, JobStatus::Running).await;
    let stopping = tokio::spawn(pool.stop(Duration::from_secs(20)));
    // A job submitted while stopping is not taken.
    let late = harness.submit("test.ok", "", 0).await;
    harness.executor.release.add_permits(1);
    let report = stopping.await.unwrap();
    assert!(report.drained);
    assert_eq!(report.interrupted, 0);
    assert_eq!(
        harness.manager.get(id).await.unwrap().status,
        JobStatus::Completed
    );
    assert_eq!(
        harness.manager.get(late).await.unwrap().status,
        JobStatus::Pending
    );
}

#[tokio::test]
async fn stop_deadline_puts_unfinished_jobs_back_to_pending() {
    let harness = Harness::new();
    let pool = harness.start(1);
    let id = harness.submit("test.stuck", "", 0).await;
    harness.wait_for(id, JobStatus::Running).await;
    let report = pool.stop(Duration::from_millis(50)).await;
    assert!(!report.drained);
    assert_eq!(report.interrupted, 1);
    let job = harness.manager.get(id).await.unwrap();
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(
        job.retry_count, 0,
        "an interruption is not a failed attempt"
    );
    let attempts = harness.manager.store().attempts(id).await.unwrap();
    assert_eq!(attempts[0].error_kind, Some(ErrorKind::Shutdown));
}

#[tokio::test]
async fn restart_recovers_running_and_pending_jobs_in_priority_order_and_runs_them() {
    let harness = Harness::new();
    let pool = harness.start(1);
    let finished = harness.submit("test.ok", "", 50).await;
    harness.wait_for(finished, JobStatus::Completed).await;
    let crashed = harness.submit("test.stuck", "", 1).await;
    harness.wait_for(crashed, JobStatus::Running).await;
    let low = harness.submit("test.ok", "", 0).await;
    let high = harness.submit("test.ok", "", 9).await;
    // The process dies: nothing is shut down, the in-memory state is simply gone.
    drop(pool);

    let manager = manager_at(&harness.path);
    let report = recovery::recover(&manager).await.unwrap();
    assert_eq!(report.reset_running, 1);
    assert_eq!(report.loaded, 3, "completed jobs are not loaded");
    let order: Vec<JobId> =
        std::iter::from_fn(|| manager.queue().try_pop().map(|job| job.id)).collect();
    assert_eq!(order, [high, crashed, low]);
    assert_eq!(
        manager.get(crashed).await.unwrap().status,
        JobStatus::Pending
    );
}
