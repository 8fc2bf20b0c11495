//! Durable submit throughput at the store level: group commit against one transaction
//! per job, at 1, 16 and 64 concurrent submitters, on the same disk in the same run.
//!
//! Each round measures both modes back to back, each on a fresh database under the
//! target directory (so on the project's disk, not a tmpfs). The medians of `ROUNDS`
//! rounds are reported, and the ratio is the median of each round's group-commit rate
//! over its one-transaction-per-job rate at the same concurrency.
//!
//! Run with `cargo bench -p honeydew --bench submit` (or `just bench`);
//! `HONEYDEW_BENCH_SUBMITTERS=64` runs one concurrency only, for profiling.

use std::time::Instant;

use honeydew::job::Job;
use honeydew::store::{SqliteConfig, SqliteStore, Store};

const ROUNDS: usize = 7;
const CONCURRENCY: [usize; 3] = [1, 16, 64];

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let scratch = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-submit");
    std::fs::create_dir_all(&scratch).expect("scratch dir");

    println!(
        "durable submit throughput, synchronous=FULL, {ROUNDS} rounds, each measuring both \
         modes back to back; medians"
    );
    println!(
        "{:>11} {:>18} {:>18} {:>7}",
        "submitters", "one txn/job (j/s)", "group commit (j/s)", "ratio"
    );
    let only: Option<usize> = std::env::var("HONEYDEW_BENCH_SUBMITTERS")
        .ok()
        .and_then(|value| value.parse().ok());
    for submitters in CONCURRENCY {
        if only.is_some_and(|only| only != submitters) {
            continue;
        }
        // Interleaved, so that drift in a noisy machine's speed hits both modes alike;
        // the ratio is the median of each round's own ratio.
        let mut single = Vec::new();
        let mut grouped = Vec::new();
        let mut ratios = Vec::new();
        for _ in 0..ROUNDS {
            let one = runtime.block_on(rate(&scratch, submitters, 1, jobs_for(submitters, 1)));
            let many =
                runtime.block_on(rate(&scratch, submitters, 1024, jobs_for(submitters, 1024)));
            single.push(one);
            grouped.push(many);
            ratios.push(many / one);
        }
        println!(
            "{submitters:>11} {:>18.0} {:>18.0} {:>6.1}x",
            median(single),
            median(grouped),
            median(ratios)
        );
    }
}

/// Enough jobs for a run of roughly a second at the expected rate.
fn jobs_for(submitters: usize, max_batch: usize) -> usize {
    match (max_batch, submitters) {
        (1, _) => 1_000,
        (_, 1) => 1_000,
        (_, 16) => 16_000,
        _ => 64_000,
    }
}

/// Jobs per second for `total` jobs inserted by `submitters` tasks, each waiting for its
/// own acknowledgement before sending the next.
async fn rate(scratch: &std::path::Path, submitters: usize, max_batch: usize, total: usize) -> f64 {
    let dir = tempfile::TempDir::new_in(scratch).expect("temp dir");
    let config = SqliteConfig {
        max_batch,
        ..SqliteConfig::new(dir.path().join("bench.db"))
    };
    let store = SqliteStore::open(config)
        .map(Store::new)
        .expect("open store");
    let per_task = total / submitters;
    let payload = br#"{"owner":"honeydew","repo":"daemon"}"#.to_vec();
    let started = Instant::now();
    let tasks: Vec<_> = (0..submitters)
        .map(|_| {
            let store = store.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    let job = Job::new("github.commits", payload.clone(), 0, 3);
                    store.insert_job(job).await.expect("insert");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("submitter");
    }
    (per_task * submitters) as f64 / started.elapsed().as_secs_f64()
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
