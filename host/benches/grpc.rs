//! The API's speed end to end over a real Unix socket, in one process: durable submit
//! throughput over gRPC at 1, 16 and 64 concurrent clients (each on its own
//! connection) with group commit against one transaction per job (`max_batch = 1`),
//! and submit-to-running latency on an idle daemon.
//!
//! The server is the daemon's own ([`honeydew::api::serve`] over a [`Manager`] and a
//! SQLite store with `synchronous=FULL`, on the project's disk); commands are accepted
//! by [`AnyCommand`] so no plugin is needed. Throughput runs have no workers, so only
//! submission is measured. The latency run starts 4 workers with an executor that
//! returns at once, and times each job from the moment the client sends `SubmitJob`
//! until the manager publishes the job's `running` event (claim committed), one job at
//! a time. `HONEYDEW_BENCH_PART=bulk` instead compares `SubmitJobs` of 10,000 jobs
//! from one client with `SubmitJob` from 64. Each throughput figure is the median of `ROUNDS` runs on fresh databases.
//! The disk's fsync time dominates and varies; run on a quiet machine. Run with
//! `cargo bench -p honeydew --bench grpc` (or `just bench`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use honeydew::api::pb::{SubmitJobRequest, SubmitJobsRequest, queue_client::QueueClient};
use honeydew::api::{self, Address, ApiConfig, PluginInventory, RunningServer};
use honeydew::job::{Job, JobStatus};
use honeydew::output::OutputSink;
use honeydew::queue::{AnyCommand, Manager, ManagerConfig};
use honeydew::runtime::PluginSummary;
use honeydew::scheduler::Scheduler;
use honeydew::store::{SqliteConfig, SqliteStore, Store};
use honeydew::worker::{BoxFuture, Execution, Executor, PoolConfig, WorkerPool};
use tokio_util::sync::CancellationToken;

const CONCURRENCY: [usize; 3] = [1, 16, 64];
const RUN_TIME: Duration = Duration::from_millis(1500);
const ROUNDS: usize = 3;
const LATENCY_SAMPLES: usize = 1000;
const BULK_JOBS: usize = 10_000;

struct NoPlugins;

impl PluginInventory for NoPlugins {
    fn plugins(&self) -> Vec<PluginSummary> {
        Vec::new()
    }
}

/// Completes every job at once with its payload.
struct Instant0;

impl Executor for Instant0 {
    fn execute<'a>(
        &'a self,
        job: &'a Job,
        _cancel: CancellationToken,
        _output: OutputSink,
    ) -> BoxFuture<'a, Execution> {
        Box::pin(async move { Execution::of(Ok(job.payload.clone())) })
    }
}

struct Server {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    manager: Arc<Manager>,
    running: RunningServer,
}

async fn start(scratch: &Path, max_batch: usize) -> Server {
    let dir = tempfile::TempDir::new_in(scratch).expect("temp dir");
    let store_config = SqliteConfig {
        max_batch,
        ..SqliteConfig::new(dir.path().join("honeydew.db"))
    };
    let store = SqliteStore::open(store_config)
        .map(Store::new)
        .expect("open store");
    let manager = Arc::new(Manager::new(
        store,
        Arc::new(AnyCommand),
        ManagerConfig::default(),
    ));
    let socket = dir.path().join("honeydew.sock");
    let listener = api::bind_unix_socket(&socket).expect("bind socket");
    let config = ApiConfig::for_sizes(4 << 20, 4 << 20);
    // Not started: the benchmark has no schedules.
    let scheduler = Scheduler::new(Arc::clone(&manager))
        .await
        .expect("scheduler");
    let running = api::serve(
        Arc::clone(&manager),
        scheduler,
        Arc::new(NoPlugins),
        config,
        listener,
        None,
    )
    .await
    .expect("serve");
    Server {
        _dir: dir,
        socket,
        manager,
        running,
    }
}

async fn client(socket: &Path) -> QueueClient<tonic::transport::Channel> {
    QueueClient::new(
        api::connect(&Address::Unix(socket.to_path_buf()))
            .await
            .expect("connect"),
    )
}

fn request() -> SubmitJobRequest {
    SubmitJobRequest {
        command: "github.commits".into(),
        payload: br#"{"owner":"honeydew","repo":"daemon"}"#.to_vec(),
        priority: 0,
        max_retries: None,
        ..Default::default()
    }
}

/// Jobs per second acknowledged by `clients` clients submitting back to back.
async fn throughput(scratch: &Path, clients: usize, max_batch: usize) -> f64 {
    let server = start(scratch, max_batch).await;
    let mut connected = Vec::with_capacity(clients);
    for _ in 0..clients {
        connected.push(client(&server.socket).await);
    }
    let started = Instant::now();
    let tasks: Vec<_> = connected
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut submitted = 0u64;
                while started.elapsed() < RUN_TIME {
                    client.submit_job(request()).await.expect("submit");
                    submitted += 1;
                }
                submitted
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("client task");
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    server
        .running
        .finish(Duration::from_secs(1))
        .await
        .expect("stop server");
    rate
}

/// Jobs per second stored by one client sending `SubmitJobs` of `BULK_JOBS` jobs back
/// to back.
async fn bulk_throughput(scratch: &Path) -> f64 {
    let server = start(scratch, 1024).await;
    let mut client = client(&server.socket).await;
    let batch = SubmitJobsRequest {
        jobs: (0..BULK_JOBS).map(|_| request()).collect(),
    };
    let started = Instant::now();
    let mut total = 0u64;
    while started.elapsed() < RUN_TIME {
        let ids = client
            .submit_jobs(batch.clone())
            .await
            .expect("bulk submit")
            .into_inner()
            .job_ids;
        total += ids.len() as u64;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    server
        .running
        .finish(Duration::from_secs(1))
        .await
        .expect("stop server");
    rate
}

/// Submit-to-running latencies, in microseconds, sorted.
async fn latencies(scratch: &Path) -> (Vec<u64>, Vec<u64>) {
    let server = start(scratch, 1024).await;
    let pool = WorkerPool::start(
        Arc::clone(&server.manager),
        Arc::new(Instant0),
        PoolConfig {
            workers: 4,
            ..PoolConfig::default()
        },
    );
    let mut client = client(&server.socket).await;
    let mut to_running = Vec::with_capacity(LATENCY_SAMPLES);
    let mut acknowledged = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        let mut events = server.manager.subscribe();
        let sent = Instant::now();
        let id = client
            .submit_job(request())
            .await
            .expect("submit")
            .into_inner()
            .job_id;
        acknowledged.push(sent.elapsed().as_micros() as u64);
        let mut running_at = None;
        loop {
            let event = events.recv().await.expect("event");
            if event.id.to_string() != id {
                continue;
            }
            if event.status == JobStatus::Running {
                running_at = Some(sent.elapsed());
            }
            if event.status.is_terminal() {
                break;
            }
        }
        to_running.push(running_at.expect("a running event").as_micros() as u64);
    }
    pool.stop(Duration::from_secs(1)).await;
    server
        .running
        .finish(Duration::from_secs(1))
        .await
        .expect("stop server");
    to_running.sort_unstable();
    acknowledged.sort_unstable();
    (acknowledged, to_running)
}

fn median(mut sample: impl FnMut() -> f64) -> f64 {
    let mut samples: Vec<f64> = (0..ROUNDS).map(|_| sample()).collect();
    samples.sort_by(f64::total_cmp);
    samples[ROUNDS / 2]
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-grpc");
    std::fs::create_dir_all(&scratch).expect("scratch dir");

    if std::env::var("HONEYDEW_BENCH_PART").as_deref() == Ok("bulk") {
        let singles = median(|| runtime.block_on(throughput(&scratch, 64, 1024)));
        let bulk = median(|| runtime.block_on(bulk_throughput(&scratch)));
        println!(
            "SubmitJobs of {BULK_JOBS}, one client: {bulk:.0} jobs/s; SubmitJob from 64 clients \
             (group commit): {singles:.0} jobs/s; ratio {:.1}x",
            bulk / singles
        );
        return;
    }

    println!(
        "durable SubmitJob throughput over gRPC (Unix socket), synchronous=FULL, \
         median of {ROUNDS} runs of {} ms",
        RUN_TIME.as_millis()
    );
    println!(
        "{:>8} {:>18} {:>18} {:>7}",
        "clients", "one txn/job (j/s)", "group commit (j/s)", "ratio"
    );
    for clients in CONCURRENCY {
        let single = median(|| runtime.block_on(throughput(&scratch, clients, 1)));
        let grouped = median(|| runtime.block_on(throughput(&scratch, clients, 1024)));
        println!(
            "{clients:>8} {single:>18.0} {grouped:>18.0} {:>6.1}x",
            grouped / single
        );
    }

    let (acknowledged, to_running) = runtime.block_on(latencies(&scratch));
    println!("idle daemon, {LATENCY_SAMPLES} jobs one at a time, 4 workers:");
    println!(
        "  SubmitJob acknowledged (durable):  p50 {:.3} ms  p99 {:.3} ms",
        percentile(&acknowledged, 0.5),
        percentile(&acknowledged, 0.99)
    );
    println!(
        "  submit sent -> job running:        p50 {:.3} ms  p99 {:.3} ms",
        percentile(&to_running, 0.5),
        percentile(&to_running, 0.99)
    );
}
