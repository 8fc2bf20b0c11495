//! The queue engine end to end inside one process: manager, worker pool, retries,
//! cancellation, graceful stop and recovery, over a real SQLite file (and PostgreSQL
//! for recovery on a shared store), with a scripted executor standing in for the
//! plugin runtime. Waiting is on job events, not sleeps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use honeydew::job::{ErrorKind, Job, JobId, JobStatus};
use honeydew::job_request::JobRequest;
use honeydew::output::OutputSink;
use honeydew::queue::{
    AnyCommand, CancelError, CancelOutcome, Manager, ManagerConfig, SubmitRequest,
};
use honeydew::recovery;
use honeydew::retry::{BackoffPolicy, Failure};
use honeydew::store::{JobFilter, SqliteConfig, SqliteStore, Store};
use honeydew::worker::{BoxFuture, Execution, Executor, PoolConfig, WorkerPool};
use tempfile::TempDir;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

/// Behaves by command name:
/// - `test.ok` returns the payload;
/// - `test.permanent` fails permanently;
/// - `test.flaky` fails retriably as many times as the payload's number, then succeeds;
/// - `test.block` waits for a permit from `release` (honouring cancellation);
/// - `test.block_then_retriable` waits for a permit, then fails retriably;
/// - `test.stuck` never returns and ignores cancellation;
/// - `test.panic` panics (a host bug, as far as the worker can tell);
/// - `test.away` finds no plugin serving it until `plugin_back` is set, then succeeds;
/// - `test.snooze` asks to snooze (10 ms) while the job has snoozed fewer times than
///   the payload's number, returning bytes the worker must discard, then succeeds;
/// - `test.snooze_when_cancelled` waits for its cancellation, then asks to snooze, as a
///   plugin whose `run` returned just as it was cancelled.
struct Scripted {
    attempts: Mutex<HashMap<JobId, usize>>,
    order: Mutex<Vec<JobId>>,
    /// How many executions are in progress right now.
    inside: watch::Sender<usize>,
    release: Semaphore,
    plugin_back: std::sync::atomic::AtomicBool,
}

impl Default for Scripted {
    fn default() -> Self {
        Self {
            attempts: Mutex::default(),
            order: Mutex::default(),
            inside: watch::Sender::new(0),
            release: Semaphore::new(0),
            plugin_back: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Executor for Scripted {
    fn execute<'a>(
        &'a self,
        job: &'a Job,
        cancel: CancellationToken,
        _output: OutputSink,
    ) -> BoxFuture<'a, Execution> {
        Box::pin(async move {
            self.inside.send_modify(|inside| *inside += 1);
            self.order.lock().unwrap().push(job.id);
            let attempt = {
                let mut attempts = self.attempts.lock().unwrap();
                let count = attempts.entry(job.id).or_default();
                *count += 1;
                *count
            };
            let snooze = |reason: String| JobRequest::Snooze {
                delay: Duration::from_millis(10),
                reason,
            };
            let mut request = None;
            let result = match job.command.as_str() {
                "test.ok" => Ok(job.payload.clone()),
                "test.snooze" => {
                    let times: u32 = String::from_utf8_lossy(&job.payload).parse().unwrap();
                    if job.snooze_count < times {
                        request = Some(snooze(format!("snooze {}", job.snooze_count + 1)));
                        Ok(b"discarded".to_vec())
                    } else {
                        Ok(format!("done after {} snoozes", job.snooze_count).into_bytes())
                    }
                }
                "test.snooze_when_cancelled" => {
                    cancel.cancelled().await;
                    request = Some(snooze("as it was cancelled".into()));
                    Ok(b"discarded".to_vec())
                }
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
                "test.block_then_retriable" => {
                    self.release.acquire().await.unwrap().forget();
                    Err(Failure::retriable(
                        ErrorKind::PluginError,
                        "503 after release",
                    ))
                }
                "test.stuck" => std::future::pending().await,
                "test.away" if !self.plugin_back.load(std::sync::atomic::Ordering::SeqCst) => {
                    Err(Failure::permanent(
                        ErrorKind::PluginUnavailable,
                        "waiting for its plugin: plugin \"test\" is not loaded",
                    ))
                }
                "test.away" => Ok(b"back".to_vec()),
                "test.panic" => {
                    self.inside.send_modify(|inside| *inside -= 1);
                    panic!("scripted host bug on attempt {attempt}")
                }
                other => panic!("unscripted command {other}"),
            };
            self.inside.send_modify(|inside| *inside -= 1);
            Execution {
                request,
                ..Execution::of(result)
            }
        })
    }
}

struct Harness {
    _dir: TempDir,
    path: std::path::PathBuf,
    /// The backend itself, for what only SQLite has (its size limit).
    sqlite: SqliteStore,
    manager: Arc<Manager>,
    executor: Arc<Scripted>,
}

fn fast_backoff() -> BackoffPolicy {
    BackoffPolicy {
        base: Duration::from_millis(5),
        multiplier: 2.0,
        max: Duration::from_millis(50),
        jitter: 0.1,
        ..BackoffPolicy::default()
    }
}

impl Harness {
    fn new() -> Self {
        Self::with_store(|path| SqliteConfig::new(path))
    }

    /// A harness whose store waits at most `busy` for a lock another connection holds.
    fn with_busy_timeout(busy: Duration) -> Self {
        Self::with_store(|path| SqliteConfig {
            busy_timeout: busy,
            ..SqliteConfig::new(path)
        })
    }

    fn with_store(config: impl FnOnce(&std::path::Path) -> SqliteConfig) -> Self {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("honeydew.db");
        let sqlite = SqliteStore::open(config(&path)).unwrap();
        let manager = manager_of(Store::new(sqlite.clone()));
        Self {
            _dir: dir,
            path,
            sqlite,
            manager,
            executor: Arc::new(Scripted::default()),
        }
    }

    fn start(&self, workers: usize) -> WorkerPool {
        self.start_with(PoolConfig {
            workers,
            backoff: fast_backoff(),
            ..PoolConfig::default()
        })
    }

    fn start_with(&self, config: PoolConfig) -> WorkerPool {
        WorkerPool::start(Arc::clone(&self.manager), self.executor.clone(), config)
    }

    async fn submit(&self, command: &str, payload: &str, priority: i64) -> JobId {
        self.manager
            .submit(SubmitRequest {
                command: command.into(),
                payload: payload.into(),
                priority,
                ..SubmitRequest::default()
            })
            .await
            .unwrap()
            .id()
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
    manager_with(SqliteConfig::new(path))
}

fn manager_with(config: SqliteConfig) -> Arc<Manager> {
    manager_of(SqliteStore::open(config).map(Store::new).unwrap())
}

fn manager_of(store: Store) -> Arc<Manager> {
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
            unique: None,
            after: Vec::new(),
            trace_parent: None,
            concurrency_key: None,
        })
        .await
        .unwrap()
        .id();
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
    // The barrier: once `stop_taking` returns no worker starts a job, whatever order
    // the tasks run in, so the idle second worker must leave `late` alone.
    pool.stop_taking();
    let stopping = tokio::spawn(pool.stop(Duration::from_secs(20)));
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
    let crashed = harness.submit("test.block", "", 1).await;
    harness.wait_for(crashed, JobStatus::Running).await;
    let low = harness.submit("test.ok", "", 0).await;
    let high = harness.submit("test.ok", "", 9).await;
    // The process dies: nothing is shut down, the in-memory state is simply gone.
    drop(pool);

    let manager = manager_at(&harness.path);
    let report = recovery::recover(&manager).await.unwrap();
    assert_eq!(report.reset_running, 1);
    assert_eq!(report.loaded, 3, "completed jobs are not loaded");
    assert_eq!(
        manager.get(crashed).await.unwrap().status,
        JobStatus::Pending
    );
    // A new pool runs them all, highest priority first, the crashed one again.
    let executor = Arc::new(Scripted::default());
    executor.release.add_permits(1);
    let pool = WorkerPool::start(
        Arc::clone(&manager),
        executor.clone(),
        PoolConfig {
            workers: 1,
            backoff: fast_backoff(),
            ..PoolConfig::default()
        },
    );
    let restarted = Harness {
        _dir: TempDir::new().unwrap(),
        path: harness.path.clone(),
        sqlite: harness.sqlite.clone(),
        manager: Arc::clone(&manager),
        executor: Arc::clone(&executor),
    };
    for id in [high, crashed, low] {
        restarted.wait_for(id, JobStatus::Completed).await;
    }
    assert_eq!(*executor.order.lock().unwrap(), [high, crashed, low]);
    assert_eq!(manager.get(crashed).await.unwrap().retry_count, 1);
    pool.stop(Duration::from_secs(5)).await;
}

/// Regression (issue 11): on PostgreSQL, start-up recovery read every pending row of
/// every node into a queue that a shared store never uses. It now touches only the
/// starting node's own running jobs and reads no pending one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_on_a_shared_store_resets_only_its_own_jobs_and_loads_no_pending_ones() {
    use honeydew::store::{ClaimNext, PostgresConfig, PostgresStore};
    let schema = honeydew_testkit::TestSchema::create().await;
    let open = |node: &str| {
        let config = PostgresConfig {
            pool_size: 2,
            ..PostgresConfig::new(schema.url(), node)
        };
        async move { Store::new(PostgresStore::open(config).await.unwrap()) }
    };
    let (a, b) = (open("a").await, open("b").await);
    let limits = Default::default();
    let mut running = Vec::new();
    for store in [&a, &b] {
        store
            .insert_job(Job::new("test.ok", vec![], 9, 3))
            .await
            .unwrap();
        let ClaimNext::Claimed(claimed) = store
            .shared()
            .unwrap()
            .claim_next(None, &limits, 1)
            .await
            .unwrap()
        else {
            panic!("a job to claim");
        };
        running.push(claimed.job.id);
    }
    for _ in 0..3 {
        a.insert_job(Job::new("test.ok", vec![], 0, 0))
            .await
            .unwrap();
    }
    // Node a dies and starts again.
    drop(a);
    let manager = manager_of(open("a").await);
    let report = recovery::recover(&manager).await.unwrap();
    assert_eq!(
        (report.reset_running, report.loaded),
        (1, 0),
        "its own running job is reset; the pending ones stay in the database"
    );
    let (own, other) = (running[0], running[1]);
    assert_eq!(manager.get(own).await.unwrap().status, JobStatus::Pending);
    assert_eq!(manager.get(other).await.unwrap().status, JobStatus::Running);
}

/// Regression (issue 9, defect 2): a panic in a worker killed its task, leaving the job
/// `running` for ever and the pool one worker smaller, with nothing logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_running_ends_the_attempt_as_host_panic_and_the_pool_keeps_its_size() {
    let harness = Harness::new();
    let pool = harness.start(2);
    let id = harness
        .manager
        .submit(SubmitRequest {
            command: "test.panic".into(),
            max_retries: Some(1),
            ..SubmitRequest::default()
        })
        .await
        .unwrap()
        .id();
    let job = harness.wait_for(id, JobStatus::Failed).await;
    assert_eq!(job.error_kind, Some(ErrorKind::HostPanic));
    assert_eq!(job.retry_count, 1, "host_panic is retriable");
    assert!(
        job.error
            .as_deref()
            .unwrap()
            .contains("scripted host bug on attempt 2"),
        "{job:?}"
    );
    let attempts = harness.manager.store().attempts(id).await.unwrap();
    let outcomes: Vec<_> = attempts
        .iter()
        .map(|a| a.outcome.clone().unwrap())
        .collect();
    assert_eq!(outcomes, ["retrying", "failed"]);
    // Both workers are still there: two blocking jobs run at once.
    assert_eq!(pool.size(), 2);
    let blocked = [
        harness.submit("test.block", "", 0).await,
        harness.submit("test.block", "", 0).await,
    ];
    let mut inside = harness.executor.inside.subscribe();
    tokio::time::timeout(Duration::from_secs(20), inside.wait_for(|n| *n == 2))
        .await
        .expect("two jobs never ran at once: the pool shrank")
        .unwrap();
    harness.executor.release.add_permits(2);
    for id in blocked {
        harness.wait_for(id, JobStatus::Completed).await;
    }
    pool.stop(Duration::from_secs(5)).await;
}

/// Waits for the manager's first event about a job in `status`; returns its id.
async fn first_event(
    events: &mut tokio::sync::broadcast::Receiver<honeydew::queue::JobEvent>,
    status: JobStatus,
) -> JobId {
    let wait = async {
        loop {
            let event = events.recv().await.unwrap();
            if event.status == status {
                return event.id;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("no {status} event came"))
}

/// Polls `future` exactly once, then drops it: a client that hangs up mid-request.
async fn poll_once_then_drop<F: std::future::Future>(future: F) {
    let mut future = std::pin::pin!(future);
    let polled = std::future::poll_fn(|context| {
        std::task::Poll::Ready(future.as_mut().poll(context).is_ready())
    })
    .await;
    assert!(!polled, "the operation finished in a single poll");
}

/// Regression (issue 9, defect 3): a submit dropped between its commit and the push
/// into the queue left a durable job that nothing ran until a restart.
#[tokio::test]
async fn a_submit_dropped_after_it_started_is_still_queued_and_runs() {
    let harness = Harness::new();
    let mut events = harness.manager.subscribe();
    let pool = harness.start(1);
    poll_once_then_drop(harness.manager.submit(SubmitRequest {
        command: "test.ok".into(),
        payload: b"late".to_vec(),
        ..SubmitRequest::default()
    }))
    .await;
    let id = first_event(&mut events, JobStatus::Pending).await;
    let job = harness.wait_for(id, JobStatus::Completed).await;
    assert_eq!(job.result.as_deref(), Some(&b"late"[..]));
    pool.stop(Duration::from_secs(5)).await;
}

/// Regression (issue 9, defect 3): a cancel dropped after its commit lost the
/// `cancelled` event, so `honeydew wait` hung.
#[tokio::test]
async fn a_cancel_dropped_after_it_started_still_announces_cancelled() {
    let harness = Harness::new();
    let id = harness.submit("test.ok", "", 0).await;
    let mut events = harness.manager.subscribe();
    poll_once_then_drop(harness.manager.cancel(id)).await;
    assert_eq!(first_event(&mut events, JobStatus::Cancelled).await, id);
    assert_eq!(
        harness.manager.get(id).await.unwrap().status,
        JobStatus::Cancelled
    );
    assert!(harness.manager.queue().is_empty());
}

/// Holds the database's write lock from another connection, as an operator's
/// `sqlite3` in the middle of a transaction does, until dropped.
struct WriteLock(rusqlite::Connection);

impl WriteLock {
    fn take(path: &std::path::Path) -> Self {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        Self(conn)
    }

    fn release(self) {
        self.0.execute_batch("ROLLBACK").unwrap();
    }
}

/// Regression (issue 9, defect 4): an outcome write that failed (the lock held past
/// the busy timeout) was only logged: the job stayed `running`, watchers hung, and the
/// completed work ran again after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_outcome_write_is_retried_until_it_lands() {
    let harness = Harness::with_busy_timeout(Duration::from_millis(20));
    let pool = harness.start(1);
    let id = harness.submit("test.block", "", 0).await;
    harness.wait_for(id, JobStatus::Running).await;
    let lock = WriteLock::take(&harness.path);
    harness.executor.release.add_permits(1);
    // The attempt ends while the lock is held: its write fails, again and again.
    let mut inside = harness.executor.inside.subscribe();
    inside.wait_for(|n| *n == 0).await.unwrap();
    let mut events = harness.manager.subscribe();
    tokio::time::sleep(Duration::from_millis(300)).await; // several busy timeouts
    assert_eq!(
        harness.manager.get(id).await.unwrap().status,
        JobStatus::Running
    );
    lock.release();
    assert_eq!(first_event(&mut events, JobStatus::Completed).await, id);
    let job = harness.manager.get(id).await.unwrap();
    assert_eq!(job.result.as_deref(), Some(&b"released"[..]));
    assert_eq!(harness.executor.order.lock().unwrap().len(), 1, "ran once");
    pool.stop(Duration::from_secs(5)).await;
}

/// Regression (issue 9, defect 5): a cancel racing the end of an attempt was refused
/// with "already running and cannot be cancelled" (the token went before the commit),
/// and a job that was retrying carried on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_the_end_of_an_attempt_cancels_the_retrying_job() {
    let harness = Harness::with_busy_timeout(Duration::from_millis(20));
    let pool = harness.start(1);
    let id = harness.submit("test.block_then_retriable", "", 0).await;
    harness.wait_for(id, JobStatus::Running).await;
    let lock = WriteLock::take(&harness.path);
    harness.executor.release.add_permits(1);
    let mut inside = harness.executor.inside.subscribe();
    inside.wait_for(|n| *n == 0).await.unwrap();
    // The attempt has ended (retriable) and its outcome is not committed yet.
    assert_eq!(
        harness.manager.cancel(id).await.unwrap(),
        CancelOutcome::Cancelling
    );
    lock.release();
    let job = harness.wait_for(id, JobStatus::Cancelled).await;
    assert_eq!(job.error_kind, Some(ErrorKind::Cancelled));
    assert_eq!(
        harness.executor.order.lock().unwrap().len(),
        1,
        "not retried"
    );
    pool.stop(Duration::from_secs(5)).await;
}

/// Regression (issue 9, defect 7): replacing a plugin by delete-then-copy failed every
/// job dequeued in the gap as `unknown_command`, for good.
#[tokio::test]
async fn a_job_whose_plugin_is_away_waits_pending_and_runs_when_it_is_back() {
    let harness = Harness::new();
    let pool = harness.start(1);
    let mut events = harness.manager.subscribe();
    let id = harness.submit("test.away", "", 0).await;
    // Its attempt found no plugin: the job is pending again, no retry spent, waiting.
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("the job never went back to waiting")
            .unwrap();
        if event.id == id && event.status == JobStatus::Pending && event.attempt == 1 {
            break;
        }
    }
    let job = harness.manager.get(id).await.unwrap();
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.retry_count, 0);
    assert_eq!(job.error_kind, Some(ErrorKind::PluginUnavailable));
    assert!(
        job.error
            .as_deref()
            .unwrap()
            .starts_with("waiting for its plugin")
    );
    assert_eq!(harness.manager.waiting_for_plugin("test"), 1);
    // Other jobs keep running meanwhile.
    let other = harness.submit("test.ok", "", 0).await;
    harness.wait_for(other, JobStatus::Completed).await;
    // The plugin is back: the waiting job runs.
    harness
        .executor
        .plugin_back
        .store(true, std::sync::atomic::Ordering::SeqCst);
    harness.manager.plugin_loaded("test");
    let job = harness.wait_for(id, JobStatus::Completed).await;
    assert_eq!(job.result.as_deref(), Some(&b"back"[..]));
    assert_eq!(job.error_kind, None);
    let attempts = harness.manager.store().attempts(id).await.unwrap();
    let outcomes: Vec<_> = attempts
        .iter()
        .map(|a| a.outcome.clone().unwrap())
        .collect();
    assert_eq!(outcomes, ["parked", "completed"]);
    pool.stop(Duration::from_secs(5)).await;
}

/// An operator can cancel a job that waits for its plugin.
#[tokio::test]
async fn a_job_waiting_for_its_plugin_can_be_cancelled() {
    let harness = Harness::new();
    let pool = harness.start(1);
    let id = harness.submit("test.away", "", 0).await;
    let mut events = harness.manager.subscribe();
    while harness.manager.waiting_for_plugin("test") == 0 {
        let _ = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("the job never waited");
    }
    assert_eq!(
        harness.manager.cancel(id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(harness.manager.waiting_for_plugin("test"), 0);
    harness.manager.plugin_loaded("test");
    let job = harness.wait_for(id, JobStatus::Cancelled).await;
    assert_eq!(job.error_kind, Some(ErrorKind::Cancelled));
    pool.stop(Duration::from_secs(5)).await;
}

/// Fault: the disk fills (here, the database's size limit) while submits and
/// completions arrive. Submits get a clear error and store nothing; no acknowledged job
/// is lost; once space returns, everything goes on by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_refuses_submits_clearly_loses_nothing_and_recovers() {
    let harness = Harness::new();
    let pool = harness.start(2);
    let running = harness.submit("test.block", "", 0).await;
    harness.wait_for(running, JobStatus::Running).await;
    let store = harness.sqlite.clone();
    let used_mib = std::fs::metadata(&harness.path).unwrap().len() / (1024 * 1024) + 1;
    store.limit_size(Some(used_mib)).await.unwrap();

    let mut acknowledged = Vec::new();
    let refused = loop {
        let payload = format!("{{\"pad\": \"{}\"}}", "x".repeat(64 * 1024));
        match harness
            .manager
            .submit(SubmitRequest {
                command: "test.ok".into(),
                payload: payload.into_bytes(),
                ..SubmitRequest::default()
            })
            .await
        {
            Ok(submitted) => acknowledged.push(submitted.id()),
            Err(err) => break err,
        }
        assert!(acknowledged.len() < 10_000, "the size limit never bit");
    };
    let message = refused.to_string();
    assert!(message.starts_with("the job database is full"), "{message}");
    assert!(matches!(
        refused,
        honeydew::queue::SubmitError::Store(honeydew::store::StoreError::Full(_))
    ));
    // The running job ends while the disk is full: its outcome waits for space.
    harness.executor.release.add_permits(1);

    // Space returns: nothing to restart, nothing lost.
    store.limit_size(None).await.unwrap();
    harness.wait_for(running, JobStatus::Completed).await;
    for id in &acknowledged {
        harness.wait_for(*id, JobStatus::Completed).await;
    }
    let after = harness.submit("test.ok", "after", 0).await;
    harness.wait_for(after, JobStatus::Completed).await;
    pool.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_snooze_runs_the_job_again_without_a_retry_until_the_cap_fails_it() {
    let harness = Harness::new();
    let pool = harness.start_with(PoolConfig {
        workers: 1,
        backoff: fast_backoff(),
        max_snoozes: 2,
    });
    let submit = |times: &str| {
        harness.manager.submit(SubmitRequest {
            command: "test.snooze".into(),
            payload: times.into(),
            max_retries: Some(0),
            ..SubmitRequest::default()
        })
    };
    let twice = submit("2").await.unwrap().id();
    let done = harness.wait_for(twice, JobStatus::Completed).await;
    assert_eq!(done.result.as_deref(), Some(&b"done after 2 snoozes"[..]));
    assert_eq!((done.retry_count, done.snooze_count), (0, 2));
    let outcomes: Vec<Option<String>> = harness
        .manager
        .store()
        .attempts(twice)
        .await
        .unwrap()
        .into_iter()
        .map(|attempt| attempt.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [Some("snoozed"), Some("snoozed"), Some("completed")].map(|o| o.map(str::to_owned))
    );

    let thrice = submit("3").await.unwrap().id();
    let failed = harness.wait_for(thrice, JobStatus::Failed).await;
    assert_eq!(failed.error_kind, Some(ErrorKind::SnoozeLimit));
    assert!(
        failed.error.as_deref().unwrap().contains("(snooze 3)"),
        "{:?}",
        failed.error
    );
    assert_eq!((failed.retry_count, failed.snooze_count), (0, 2));
    pool.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_cancel_on_request_beats_a_snooze_asked_as_it_came() {
    let harness = Harness::new();
    let pool = harness.start(1);
    let id = harness.submit("test.snooze_when_cancelled", "", 0).await;
    harness.wait_for(id, JobStatus::Running).await;
    assert_eq!(
        harness.manager.cancel(id).await.unwrap(),
        CancelOutcome::Cancelling
    );
    let job = harness.wait_for(id, JobStatus::Cancelled).await;
    assert_eq!(job.error_kind, Some(ErrorKind::Cancelled));
    assert_eq!(job.snooze_count, 0, "it did not snooze");
    pool.stop(Duration::from_secs(5)).await;
}
