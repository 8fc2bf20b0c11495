//! The dispatch path end to end: how fast a started daemon drains a full queue of
//! no-op jobs, and how soon it dispatches the first of a large backlog.
//!
//! 1. Drain: a database is filled with `DRAIN_JOBS` pending `echo.echo` jobs (group
//!    commit, before the clock starts); then the daemon's own parts start on it, in
//!    its order (store, plugin runtime with the real `echo` component from
//!    `target/plugins`, manager, recovery, worker pool), and the time to the last
//!    completion is taken. Jobs/s at 2 to 32 workers (16 is the default); the sandbox alone (the
//!    runtime's `execute` in a loop, no store) is the same-run reference, so the ratio
//!    says how much of each job the queue's round trips cost.
//! 2. First dispatch: with `BACKLOG_JOBS` pending, the time from opening the store to
//!    the first job's `running` event (recovery reads the whole backlog first).
//! 3. Observability: the drain at the default workers with Prometheus metrics on
//!    (counted by the manager, the runtime and the egress hook, and scraped every
//!    second, as `--listen-http` does), and with metrics and traces on (a span per
//!    attempt exported over OTLP/gRPC to a collector in this process, which counts
//!    them), against both off; each round runs the three in a rotated order.
//!
//! 4. Concurrency keys: the drain at the default workers with every job carrying one
//!    of `KEYS` concurrency keys (so at most one job of a key runs at a time, and keys
//!    take turns), against the same jobs without keys; rounds alternate the two.
//!
//! `HONEYDEW_BENCH_PART=metrics` runs part 3 alone, `=keys` part 4 alone.
//!
//! `synchronous=FULL`, fresh databases on the project's disk, `ROUNDS` rounds, medians.
//! Run with `cargo bench -p honeydew --bench drain` after `scripts/build-plugins.sh`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use honeydew::job::{Job, JobStatus};
use honeydew::metrics::Metrics;
use honeydew::output::OutputSink;
use honeydew::queue::{Manager, ManagerConfig};
use honeydew::recovery;
use honeydew::runtime::{Runtime, RuntimeConfig};
use honeydew::store::{SqliteConfig, SqliteStore, Store};
use honeydew::traces::Traces;
use honeydew::worker::{DEFAULT_WORKERS, Executor, PoolConfig, WorkerPool};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio_util::sync::CancellationToken;

mod support;
use support::{BUILT_PLUGINS, PAYLOAD, median, plugin_dir};

const DRAIN_JOBS: usize = 20_000;
const BACKLOG_JOBS: usize = 100_000;
const WORKERS: [usize; 5] = [2, 4, 8, 16, 32];
const ROUNDS: usize = 3;
/// Part 3 compares figures a few percent apart on noisy cores: more rounds.
const OBSERVABILITY_ROUNDS: usize = 5;

/// Concurrency keys of part 4.
const KEYS: usize = 100;

/// A fresh database at `path` with `count` pending echo jobs.
async fn fill(path: &Path, count: usize) {
    fill_keyed(path, count, 0).await;
}

/// [`fill`] with the jobs spread over `keys` concurrency keys.
async fn fill_keyed(path: &Path, count: usize, keys: usize) {
    let store = SqliteStore::open(SqliteConfig::new(path))
        .map(Store::new)
        .expect("open store");
    support::fill_keyed(&store, count, keys).await;
}

/// Part 4: the drain with jobs over [`KEYS`] concurrency keys against none.
async fn keyed_dispatch(scratch: &Path, plugins: &Path, cache: &Path) {
    let mut rates: [Vec<f64>; 2] = Default::default();
    for turn in 0..2 * OBSERVABILITY_ROUNDS {
        let keyed = (turn / 2 + turn % 2) % 2;
        let dir = tempfile::TempDir::new_in(scratch).expect("db dir");
        let db = dir.path().join("honeydew.db");
        fill_keyed(&db, DRAIN_JOBS, keyed * KEYS).await;
        let elapsed = run(
            &db,
            plugins,
            cache,
            DEFAULT_WORKERS,
            DRAIN_JOBS,
            false,
            Observe::default(),
        )
        .await;
        rates[keyed].push(DRAIN_JOBS as f64 / elapsed.as_secs_f64());
    }
    let [none, keyed] = rates.map(median);
    println!(
        "concurrency keys (drain, {DEFAULT_WORKERS} workers, median of {OBSERVABILITY_ROUNDS}): \
         no key {none:.0} jobs/s, {KEYS} keys {keyed:.0} jobs/s ({:.0}% of no key)",
        keyed / none * 100.0
    );
}

/// What a run observes besides the jobs: metrics, and traces to this collector.
#[derive(Clone, Copy, Default)]
struct Observe<'a> {
    metrics: bool,
    traces: Option<&'a str>,
}

/// Starts the daemon's parts on `db` and returns when `count` jobs completed (or, with
/// `first_only`, when the first one started); the elapsed time.
async fn run(
    db: &Path,
    plugins: &Path,
    cache: &Path,
    workers: usize,
    count: usize,
    first_only: bool,
    observe: Observe<'_>,
) -> Duration {
    let traces = observe
        .traces
        .map(|endpoint| Traces::start(endpoint).expect("traces"));
    let started = Instant::now();
    let store = SqliteStore::open(SqliteConfig::new(db))
        .map(Store::new)
        .expect("open store");
    let metrics = observe.metrics.then(|| Metrics::new(workers));
    let mut runtime_config = RuntimeConfig::new(plugins, cache);
    runtime_config.metrics = metrics.clone();
    let runtime = Runtime::start(runtime_config).await.expect("runtime");
    let mut manager = Manager::new(store.clone(), runtime.clone(), ManagerConfig::default());
    if let Some(metrics) = &metrics {
        manager = manager.with_metrics(Arc::clone(metrics));
    }
    let manager = Arc::new(manager);
    let scraper = metrics.map(|metrics| {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            loop {
                ticks.tick().await;
                metrics.render(&store, 0).await.expect("scrape");
            }
        })
    });
    let mut events = manager.subscribe();
    recovery::recover(&manager).await.expect("recover");
    let pool = WorkerPool::start(
        Arc::clone(&manager),
        runtime,
        PoolConfig {
            workers,
            ..PoolConfig::default()
        },
    );
    let mut completed = 0;
    loop {
        let event = events.recv().await.expect("events");
        if first_only && event.status == JobStatus::Running {
            break;
        }
        if event.status == JobStatus::Completed {
            completed += 1;
            if completed == count {
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(scraper) = scraper {
        scraper.abort();
    }
    pool.stop(Duration::from_secs(10)).await;
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    elapsed
}

/// The sandbox alone: jobs/s of `execute` in a loop on `workers` tasks.
async fn sandbox_only(plugins: &Path, cache: &Path, workers: usize, count: usize) -> f64 {
    let runtime = Runtime::start(RuntimeConfig::new(plugins, cache))
        .await
        .expect("runtime");
    let job = Arc::new(Job::new("echo.echo", PAYLOAD.to_vec(), 0, 3));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let runtime = Arc::clone(&runtime);
        let job = Arc::clone(&job);
        tasks.spawn(async move {
            for _ in 0..count / workers {
                let execution = runtime
                    .execute(&job, CancellationToken::new(), OutputSink::discard())
                    .await;
                assert!(execution.result.is_ok());
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    count as f64 / started.elapsed().as_secs_f64()
}

/// CPU time this process has used so far (all threads), in user mode and in the
/// kernel, from `/proc/self/stat` in clock ticks (100 a second on Linux).
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command (which may hold spaces) start after its ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat") + 2..]
        .split(' ')
        .collect();
    let ticks = |index: usize| fields[index].parse::<f64>().expect("ticks");
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

/// An OTLP/gRPC trace collector that only counts the spans it is sent.
#[derive(Clone, Default)]
struct CountingCollector {
    spans: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl TraceService for CountingCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        self.spans.fetch_add(spans, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl CountingCollector {
    /// Serves on a free loopback port; its `http://` URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(self.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        url
    }
}

/// Part 3: the drain at the default workers with metrics, and metrics and traces, off
/// and on, alternated.
async fn observability_overhead(scratch: &Path, plugins: &Path, cache: &Path) {
    let collector = CountingCollector::default();
    let endpoint = collector.start().await;
    let mut rates: [Vec<f64>; 3] = Default::default();
    let mut cpu: [Vec<f64>; 3] = Default::default();
    let mut system: [Vec<f64>; 3] = Default::default();
    // Each round runs the three modes in a rotated order (off, metrics, traces; then
    // metrics, traces, off; ...), so that no mode always runs after the same ones.
    for turn in 0..3 * OBSERVABILITY_ROUNDS {
        let mode = (turn / 3 + turn % 3) % 3;
        let dir = tempfile::TempDir::new_in(scratch).expect("db dir");
        let db = dir.path().join("honeydew.db");
        fill(&db, DRAIN_JOBS).await;
        let (user_before, system_before) = cpu_seconds();
        let elapsed = run(
            &db,
            plugins,
            cache,
            DEFAULT_WORKERS,
            DRAIN_JOBS,
            false,
            Observe {
                metrics: mode >= 1,
                traces: (mode == 2).then_some(endpoint.as_str()),
            },
        )
        .await;
        rates[mode].push(DRAIN_JOBS as f64 / elapsed.as_secs_f64());
        let (user_after, system_after) = cpu_seconds();
        let per_job = |seconds: f64| seconds / DRAIN_JOBS as f64 * 1e6;
        cpu[mode].push(per_job(
            user_after - user_before + system_after - system_before,
        ));
        system[mode].push(per_job(system_after - system_before));
    }
    let [off, metrics, traced] = rates.map(median);
    let [cpu_off, cpu_metrics, cpu_traced] = cpu.map(median);
    let [system_off, system_metrics, system_traced] = system.map(median);
    println!(
        "observability (drain, {DEFAULT_WORKERS} workers, median of {OBSERVABILITY_ROUNDS}): off {off:.0} \
         jobs/s, metrics {metrics:.0} jobs/s (overhead {:.1}%), metrics and traces \
         {traced:.0} jobs/s (overhead {:.1}%); {} spans exported",
        (1.0 - metrics / off) * 100.0,
        (1.0 - traced / off) * 100.0,
        collector.spans.load(Ordering::Relaxed)
    );
    println!(
        "  CPU per job (the process, collector included; of it in the kernel): off \
         {cpu_off:.1} us ({system_off:.1}), metrics {cpu_metrics:.1} us ({system_metrics:.1}), \
         metrics and traces {cpu_traced:.1} us ({system_traced:.1})"
    );
}

async fn bench(scratch: PathBuf) {
    let plugins = plugin_dir(&scratch);
    let cache = tempfile::TempDir::new_in(&scratch).expect("cache dir");
    match std::env::var("HONEYDEW_BENCH_PART").as_deref() {
        Ok("metrics") => {
            observability_overhead(&scratch, plugins.path(), cache.path()).await;
            return;
        }
        Ok("keys") => {
            keyed_dispatch(&scratch, plugins.path(), cache.path()).await;
            return;
        }
        _ => {}
    }
    println!("drain of {DRAIN_JOBS} pending echo.echo jobs after a start (median of {ROUNDS})");
    println!("  workers   drain jobs/s   sandbox alone jobs/s   drain / sandbox");
    for workers in WORKERS {
        let mut drains = Vec::new();
        let mut alone = Vec::new();
        for _ in 0..ROUNDS {
            let dir = tempfile::TempDir::new_in(&scratch).expect("db dir");
            let db = dir.path().join("honeydew.db");
            fill(&db, DRAIN_JOBS).await;
            let elapsed = run(
                &db,
                plugins.path(),
                cache.path(),
                workers,
                DRAIN_JOBS,
                false,
                Observe::default(),
            )
            .await;
            drains.push(DRAIN_JOBS as f64 / elapsed.as_secs_f64());
            alone.push(sandbox_only(plugins.path(), cache.path(), workers, DRAIN_JOBS).await);
        }
        let (drain, alone) = (median(drains), median(alone));
        let default = if workers == DEFAULT_WORKERS {
            "   (default)"
        } else {
            ""
        };
        println!(
            "  {workers:>7}   {drain:>12.0}   {alone:>20.0}   {:>15.2}{default}",
            drain / alone
        );
    }
    let mut firsts = Vec::new();
    for _ in 0..ROUNDS {
        let dir = tempfile::TempDir::new_in(&scratch).expect("db dir");
        let db = dir.path().join("honeydew.db");
        fill(&db, BACKLOG_JOBS).await;
        let elapsed = run(
            &db,
            plugins.path(),
            cache.path(),
            4,
            1,
            true,
            Observe::default(),
        )
        .await;
        firsts.push(elapsed.as_secs_f64());
    }
    println!(
        "start to first dispatch with {BACKLOG_JOBS} pending: {:.3} s (median of {ROUNDS})",
        median(firsts)
    );
    observability_overhead(&scratch, plugins.path(), cache.path()).await;
    keyed_dispatch(&scratch, plugins.path(), cache.path()).await;
}

fn main() {
    assert!(
        Path::new(BUILT_PLUGINS).join("echo.wasm").is_file(),
        "{BUILT_PLUGINS}/echo.wasm is missing: run scripts/build-plugins.sh first"
    );
    // On the project's disk, like the daemon's data directory, not a tmpfs.
    let scratch = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-scratch");
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    runtime.block_on(bench(scratch));
}
