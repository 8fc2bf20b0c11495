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
//!    attempt exported over OTLP/gRPC), against both off; each round runs the modes in
//!    a rotated order. Traces go to one of two collectors in this process: one that
//!    only takes each export's bytes and answers (its spans are counted after the
//!    clock stops), standing for a collector on another machine, and one that decodes
//!    every export as it comes (tonic and prost), whose work then shares the daemon's
//!    two cores, as a collector beside it would.
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

/// An OTLP/gRPC trace collector that decodes every export and counts its spans.
#[derive(Clone, Default)]
struct DecodingCollector {
    spans: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl TraceService for DecodingCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.spans
            .fetch_add(spans_in(&request.into_inner()), Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn spans_in(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .map(|scope| scope.spans.len())
        .sum()
}

impl DecodingCollector {
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

/// An OTLP/gRPC trace collector that keeps each export's body as it came and answers
/// at once (an empty `ExportTraceServiceResponse`, status OK), decoding nothing while
/// the daemon runs: [`RawCollector::spans`] decodes what it kept, later.
#[derive(Clone, Default)]
struct RawCollector {
    bodies: Arc<std::sync::Mutex<Vec<bytes::Bytes>>>,
}

impl RawCollector {
    /// Serves HTTP/2 on a free loopback port; its `http://` URL.
    async fn start(&self) -> String {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let bodies = Arc::clone(&self.bodies);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let bodies = Arc::clone(&bodies);
                let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                    let bodies = Arc::clone(&bodies);
                    async move {
                        let body: hyper::body::Incoming = request.into_body();
                        let bytes = body.collect().await?.to_bytes();
                        bodies.lock().expect("bodies").push(bytes);
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        // One gRPC frame: uncompressed, an empty message.
                        let frames = futures_util::stream::iter([
                            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                bytes::Bytes::from_static(&[0, 0, 0, 0, 0]),
                            )),
                            Ok(hyper::body::Frame::trailers(trailers)),
                        ]);
                        hyper::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(http_body_util::StreamBody::new(frames))
                            .map_err(|err| -> Box<dyn std::error::Error + Send + Sync> {
                                Box::new(err)
                            })
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        url
    }

    /// The spans of every export kept so far: each body is gRPC frames (a flag byte,
    /// a 4-byte length, the message).
    fn spans(&self) -> usize {
        use prost::Message;
        let bodies = self.bodies.lock().expect("bodies");
        let mut spans = 0;
        for body in bodies.iter() {
            let mut rest = &body[..];
            while rest.len() >= 5 {
                let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
                let message = &rest[5..5 + length];
                spans += spans_in(&ExportTraceServiceRequest::decode(message).expect("OTLP"));
                rest = &rest[5 + length..];
            }
        }
        spans
    }
}

/// Part 3: the drain at the default workers off, with metrics, and with metrics and
/// traces (to each collector), in rotated order.
async fn observability_overhead(scratch: &Path, plugins: &Path, cache: &Path) {
    const MODES: usize = 4;
    let raw = RawCollector::default();
    let raw_endpoint = raw.start().await;
    let decoding = DecodingCollector::default();
    let decoding_endpoint = decoding.start().await;
    let mut rates: [Vec<f64>; MODES] = Default::default();
    let mut cpu: [Vec<f64>; MODES] = Default::default();
    let mut system: [Vec<f64>; MODES] = Default::default();
    // Each round runs the modes in a rotated order (off, metrics, traces, traces
    // decoded; then metrics, traces, traces decoded, off; ...), so that no mode always
    // runs after the same ones.
    for turn in 0..MODES * OBSERVABILITY_ROUNDS {
        let mode = (turn / MODES + turn % MODES) % MODES;
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
                traces: match mode {
                    2 => Some(raw_endpoint.as_str()),
                    3 => Some(decoding_endpoint.as_str()),
                    _ => None,
                },
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
    let [off, metrics, traced, decoded] = rates.map(median);
    let [cpu_off, cpu_metrics, cpu_traced, cpu_decoded] = cpu.map(median);
    let [sys_off, sys_metrics, sys_traced, sys_decoded] = system.map(median);
    let overhead = |rate: f64| (1.0 - rate / off) * 100.0;
    println!(
        "observability (drain, {DEFAULT_WORKERS} workers, median of {OBSERVABILITY_ROUNDS}): off \
         {off:.0} jobs/s; metrics {metrics:.0} jobs/s (overhead {:.1}%); metrics and traces \
         {traced:.0} jobs/s (overhead {:.1}%; {} spans exported); the same with the \
         collector decoding beside it {decoded:.0} jobs/s (overhead {:.1}%; {} spans)",
        overhead(metrics),
        overhead(traced),
        raw.spans(),
        overhead(decoded),
        decoding.spans.load(Ordering::Relaxed)
    );
    println!(
        "  CPU per job (the process, collectors included; of it in the kernel): off \
         {cpu_off:.1} us ({sys_off:.1}), metrics {cpu_metrics:.1} us ({sys_metrics:.1}), \
         metrics and traces {cpu_traced:.1} us ({sys_traced:.1}), decoded beside it \
         {cpu_decoded:.1} us ({sys_decoded:.1})"
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
