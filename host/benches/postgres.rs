//! The PostgreSQL backend's speed, beside SQLite's from the same run.
//!
//! 1. Durable submits over gRPC (the daemon's own server over a Unix socket) at 1, 16
//!    and 64 clients, against a bare reference from as many clients: one `INSERT` per
//!    transaction into the same `jobs` table, straight through tokio-postgres
//!    (PostgreSQL already merges concurrent commits). SQLite's gRPC submits beside.
//! 2. End to end: `E2E_JOBS` pending no-op `echo.echo` jobs (the real component), the
//!    time from starting 1 or 3 daemons' parts (store, runtime, manager, recovery,
//!    16 workers each, in this process) to the last completion; against a bare loop of
//!    8 clients that each claim one job with `FOR UPDATE SKIP LOCKED` and complete it in
//!    a second transaction, and SQLite's drain at 16 workers. Beside them, one daemon
//!    draining jobs that are all watched: every claim and every finish then announces
//!    its change (as schema v3 did for every job), which shows what that costs.
//!
//! 3. Concurrency keys: one daemon draining `E2E_JOBS` jobs spread over `KEYS`
//!    concurrency keys (one job of a key at a time, keys taking turns: every claim
//!    goes through the key's lock and the skip scan over the keys' lines), against the
//!    same jobs without keys, rounds alternating the two.
//!
//! Each figure is the median of `ROUNDS` runs on fresh schemas of the test server
//! (`scripts/test-postgres.sh` finds or starts one). Run with
//! `cargo bench -p honeydew --bench postgres` after `scripts/build-plugins.sh`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use honeydew::api::pb::{SubmitJobRequest, queue_client::QueueClient};
use honeydew::api::{self, Address, ApiConfig, PluginInventory};
use honeydew::job::JobStatus;
use honeydew::queue::{AnyCommand, Manager, ManagerConfig};
use honeydew::recovery;
use honeydew::runtime::{PluginSummary, Runtime, RuntimeConfig};
use honeydew::scheduler::Scheduler;
use honeydew::store::{PostgresConfig, PostgresStore, SqliteConfig, SqliteStore, Store};
use honeydew::worker::{PoolConfig, WorkerPool};
use honeydew_testkit::TestSchema;

mod support;
use support::{fill, fill_keyed, median, plugin_dir};

const CLIENTS: [usize; 3] = [1, 16, 64];
const RUN_TIME: Duration = Duration::from_millis(1500);
const ROUNDS: usize = 3;
const E2E_JOBS: usize = 5_000;
const BARE_CLIENTS: usize = 8;
const KEYS: usize = 100;

struct NoPlugins;

impl PluginInventory for NoPlugins {
    fn plugins(&self) -> Vec<PluginSummary> {
        Vec::new()
    }
}

async fn postgres(schema: &TestSchema, node: &str) -> Store {
    let config = PostgresConfig::new(schema.url(), node);
    Store::new(PostgresStore::open(config).await.expect("open PostgreSQL"))
}

/// Submits/s over gRPC from `clients` clients back to back, on `store`.
async fn grpc_submits(store: Store, scratch: &Path, clients: usize) -> f64 {
    let dir = tempfile::TempDir::new_in(scratch).expect("temp dir");
    let manager = Arc::new(Manager::new(
        store,
        Arc::new(AnyCommand),
        ManagerConfig::default(),
    ));
    let socket = dir.path().join("honeydew.sock");
    let listener = api::bind_unix_socket(&socket).expect("bind");
    let scheduler = Scheduler::new(Arc::clone(&manager))
        .await
        .expect("scheduler");
    let _server = api::serve(
        manager,
        scheduler,
        Arc::new(NoPlugins),
        ApiConfig::for_sizes(4 << 20, 4 << 20),
        listener,
        None,
    )
    .await
    .expect("serve");
    let mut connected = Vec::new();
    for _ in 0..clients {
        let channel = api::connect(&Address::Unix(socket.clone()))
            .await
            .expect("connect");
        connected.push(QueueClient::new(channel));
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in connected {
        tasks.spawn(async move {
            let mut submitted = 0u64;
            while started.elapsed() < RUN_TIME {
                let request = SubmitJobRequest {
                    command: "github.commits".into(),
                    payload: br#"{"owner":"honeydew","repo":"daemon"}"#.to_vec(),
                    priority: 0,
                    max_retries: None,
                    ..Default::default()
                };
                client.submit_job(request).await.expect("submit");
                submitted += 1;
            }
            submitted
        });
    }
    let total: u64 = tasks.join_all().await.into_iter().sum();
    total as f64 / started.elapsed().as_secs_f64()
}

/// Inserts/s of one `INSERT` per transaction from `clients` connections.
async fn bare_inserts(schema: &TestSchema, clients: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let url = schema.url().to_owned();
        tasks.spawn(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(connection);
            let insert = client
                .prepare(
                    "INSERT INTO jobs (id, command, payload, priority, status, created_at, \
                     run_at, retry_count, max_retries, updated_at) \
                     VALUES ($1, $2, $3, 0, 'pending', now(), now(), 0, 3, now())",
                )
                .await
                .expect("prepare");
            let payload = br#"{"owner":"honeydew","repo":"daemon"}"#.to_vec();
            let mut inserted = 0u64;
            while started.elapsed() < RUN_TIME {
                client
                    .execute(
                        &insert,
                        &[&uuid::Uuid::now_v7(), &"github.commits", &payload],
                    )
                    .await
                    .expect("insert");
                inserted += 1;
            }
            inserted
        });
    }
    let total: u64 = tasks.join_all().await.into_iter().sum();
    total as f64 / started.elapsed().as_secs_f64()
}

/// Starts one daemon's parts on `store`; returns its manager and pool.
async fn daemon(store: Store, plugins: &Path, cache: &Path) -> (Arc<Manager>, WorkerPool) {
    let runtime = Runtime::start(RuntimeConfig::new(plugins, cache))
        .await
        .expect("runtime");
    let manager = Arc::new(Manager::new(
        store,
        runtime.clone(),
        ManagerConfig::default(),
    ));
    recovery::recover(&manager).await.expect("recover");
    let pool = WorkerPool::start(Arc::clone(&manager), runtime, PoolConfig::default());
    (manager, pool)
}

/// Jobs/s from starting `stores.len()` daemons to the last of `count` completions.
async fn drain(stores: Vec<Store>, count: usize, plugins: &Path, cache: &Path) -> f64 {
    let started = Instant::now();
    let mut daemons = Vec::new();
    let (done, mut completions) = tokio::sync::mpsc::unbounded_channel();
    for store in stores {
        let (manager, pool) = daemon(store, plugins, cache).await;
        let mut events = manager.subscribe();
        let done = done.clone();
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                if event.status == JobStatus::Completed && done.send(()).is_err() {
                    break;
                }
            }
        });
        daemons.push(pool);
    }
    for _ in 0..count {
        completions.recv().await.expect("completions");
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    for pool in daemons {
        pool.stop(Duration::from_secs(10)).await;
    }
    rate
}

/// The bare loop: `clients` connections, each claiming one job with `FOR UPDATE SKIP
/// LOCKED` in one transaction and completing it in a second, until none is left.
async fn bare_loop(schema: &TestSchema, clients: usize, count: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let url = schema.url().to_owned();
        tasks.spawn(async move {
            let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(connection);
            let mut done = 0usize;
            loop {
                let tx = client.transaction().await.expect("begin");
                let claimed = tx
                    .query_opt(
                        "UPDATE jobs SET status = 'running', started_at = now() WHERE id = (\
                         SELECT id FROM jobs WHERE status = 'pending' \
                         ORDER BY priority DESC, created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                         RETURNING id, payload",
                        &[],
                    )
                    .await
                    .expect("claim");
                tx.commit().await.expect("commit claim");
                let Some(row) = claimed else { break };
                let id: uuid::Uuid = row.get(0);
                let payload: Vec<u8> = row.get(1);
                client
                    .execute(
                        "UPDATE jobs SET status = 'completed', result = $2, completed_at = now() \
                         WHERE id = $1",
                        &[&id, &payload],
                    )
                    .await
                    .expect("complete");
                done += 1;
            }
            done
        });
    }
    let total: usize = tasks.join_all().await.into_iter().sum();
    assert_eq!(total, count);
    total as f64 / started.elapsed().as_secs_f64()
}

fn scratch() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/bench-scratch"
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let scratch = scratch();
    // HONEYDEW_BENCH_PART=submits, e2e or keys runs one part only.
    let part = std::env::var("HONEYDEW_BENCH_PART").unwrap_or_default();
    println!("PostgreSQL: {}", honeydew_testkit::server_url());
    if part == "keys" {
        keyed_drain(&scratch).await;
        return;
    }
    println!("\n== durable submits (jobs/s, median of {ROUNDS} x {RUN_TIME:?})");
    println!("clients  postgres-grpc  one-insert-per-tx  ratio  sqlite-grpc");
    for clients in CLIENTS.into_iter().filter(|_| part != "e2e") {
        let (mut grpc, mut bare, mut sqlite) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let schema = TestSchema::create().await;
            grpc.push(grpc_submits(postgres(&schema, "bench").await, &scratch, clients).await);
            let schema = TestSchema::create().await;
            drop(postgres(&schema, "bench").await); // its tables
            bare.push(bare_inserts(&schema, clients).await);
            let dir = tempfile::TempDir::new_in(&scratch).expect("dir");
            let store = SqliteStore::open(SqliteConfig::new(dir.path().join("honeydew.db")))
                .map(Store::new)
                .expect("sqlite");
            sqlite.push(grpc_submits(store, &scratch, clients).await);
        }
        let (grpc, bare, sqlite) = (median(grpc), median(bare), median(sqlite));
        println!(
            "{clients:>7}  {grpc:>13.0}  {bare:>17.0}  {:>4.2}x  {sqlite:>11.0}",
            grpc / bare
        );
    }

    if part == "submits" {
        return;
    }
    let plugins = plugin_dir(&scratch);
    let cache = tempfile::TempDir::new_in(&scratch).expect("cache");
    println!("\n== end to end, {E2E_JOBS} no-op echo jobs (jobs/s, median of {ROUNDS})");
    let (mut one, mut three, mut bare, mut sqlite, mut watched) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let schema = TestSchema::create().await;
        let store = postgres(&schema, "node-1").await;
        fill(&store, E2E_JOBS).await;
        one.push(drain(vec![store], E2E_JOBS, plugins.path(), cache.path()).await);

        let schema = TestSchema::create().await;
        let store = postgres(&schema, "node-1").await;
        fill(&store, E2E_JOBS).await;
        honeydew_testkit::run(
            schema.url(),
            "INSERT INTO job_watches (job_id, node_id) SELECT id, 'watcher' FROM jobs",
        )
        .await
        .expect("watch every job");
        watched.push(drain(vec![store], E2E_JOBS, plugins.path(), cache.path()).await);

        let schema = TestSchema::create().await;
        let first = postgres(&schema, "node-1").await;
        fill(&first, E2E_JOBS).await;
        let stores = vec![
            first,
            postgres(&schema, "node-2").await,
            postgres(&schema, "node-3").await,
        ];
        three.push(drain(stores, E2E_JOBS, plugins.path(), cache.path()).await);

        let schema = TestSchema::create().await;
        fill(&postgres(&schema, "filler").await, E2E_JOBS).await;
        bare.push(bare_loop(&schema, BARE_CLIENTS, E2E_JOBS).await);

        let dir = tempfile::TempDir::new_in(&scratch).expect("dir");
        let db = dir.path().join("honeydew.db");
        let store = SqliteStore::open(SqliteConfig::new(&db))
            .map(Store::new)
            .expect("sqlite");
        fill(&store, E2E_JOBS).await;
        drop(store);
        let store = SqliteStore::open(SqliteConfig::new(&db))
            .map(Store::new)
            .expect("sqlite");
        sqlite.push(drain(vec![store], E2E_JOBS, plugins.path(), cache.path()).await);
    }
    let (one, three, bare, sqlite) = (median(one), median(three), median(bare), median(sqlite));
    let watched = median(watched);
    println!(
        "postgres, 1 daemon (16 workers):   {one:>8.0}  {:.2}x the bare loop",
        one / bare
    );
    println!(
        "postgres, 1 daemon, all watched:   {watched:>8.0}  {:.2}x unwatched",
        watched / one
    );
    println!(
        "postgres, 3 daemons (16 workers):  {three:>8.0}  {:.2}x one daemon",
        three / one
    );
    println!("bare loop ({BARE_CLIENTS} clients, claim + complete): {bare:>8.0}");
    println!("sqlite, 1 daemon (16 workers):     {sqlite:>8.0}");
    keyed_drain(&scratch).await;
}

/// Part 3: one daemon's drain of jobs over [`KEYS`] concurrency keys against none.
async fn keyed_drain(scratch: &Path) {
    let plugins = plugin_dir(scratch);
    let cache = tempfile::TempDir::new_in(scratch).expect("cache");
    let mut rates: [Vec<f64>; 2] = Default::default();
    for turn in 0..2 * ROUNDS {
        let keyed = (turn / 2 + turn % 2) % 2;
        let schema = TestSchema::create().await;
        let store = postgres(&schema, "node-1").await;
        fill_keyed(&store, E2E_JOBS, keyed * KEYS).await;
        rates[keyed].push(drain(vec![store], E2E_JOBS, plugins.path(), cache.path()).await);
    }
    let [none, keyed] = rates.map(median);
    println!(
        "\n== concurrency keys, 1 daemon, {E2E_JOBS} no-op echo jobs (jobs/s, median of {ROUNDS})\n\
         postgres, no key: {none:>8.0}\npostgres, {KEYS} keys: {keyed:>8.0}  {:.0}% of no key",
        keyed / none * 100.0
    );
}
