//! Durable submit throughput at the store level: group commit against one transaction
//! per job, at 1, 16 and 64 concurrent submitters, on the same disk in the same run.
//!
//! Each configuration runs `ROUNDS` times on a fresh database under the target
//! directory (so on the project's disk, not a tmpfs); the median rate is reported, and
//! the group-commit rate as a ratio of the one-transaction-per-job rate at the same
//! concurrency. Run with `cargo bench -p honeydew --bench submit` (or `just bench`).

use std::time::Instant;

use honeydew::job::Job;
use honeydew::store::{Store, StoreConfig};

const ROUNDS: usize = 5;
const CONCURRENCY: [usize; 3] = [1, 16, 64];

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let scratch = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-submit");
    std::fs::create_dir_all(&scratch).expect("scratch dir");

    println!("durable submit throughput, synchronous=FULL, median of {ROUNDS} rounds");
    println!(
        "{:>11} {:>18} {:>18} {:>7}",
        "submitters", "one txn/job (j/s)", "group commit (j/s)", "ratio"
    );
    // `HONEYDEW_BENCH_SUBMITTERS=64` runs one concurrency only (for profiling).
    let only: Option<usize> = std::env::var("HONEYDEW_BENCH_SUBMITTERS")
        .ok()
        .and_then(|value| value.parse().ok());
    for submitters in CONCURRENCY {
        if only.is_some_and(|only| only != submitters) {
            continue;
        }
        let single = median(ROUNDS, || {
            runtime.block_on(rate(&scratch, submitters, 1, jobs_for(submitters, 1)))
        });
        let grouped = median(ROUNDS, || {
            runtime.block_on(rate(&scratch, submitters, 1024, jobs_for(submitters, 1024)))
        });
        println!(
            "{submitters:>11} {single:>18.0} {grouped:>18.0} {:>6.1}x",
            grouped / single
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
    let config = StoreConfig {
        max_batch,
        ..StoreConfig::new(dir.path().join("bench.db"))
    };
    let store = Store::open(config).expect("open store");
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

fn median(rounds: usize, mut sample: impl FnMut() -> f64) -> f64 {
    let mut samples: Vec<f64> = (0..rounds).map(|_| sample()).collect();
    samples.sort_by(f64::total_cmp);
    samples[rounds / 2]
}
