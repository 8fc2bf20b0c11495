//! The soak: many jobs through one daemon whose retention prunes as it goes; the
//! database file and the daemon's memory stay bounded instead of growing with the
//! number of jobs run.
//!
//! The suite runs a small size; `just soak` runs 100,000 jobs
//! (`HONEYDEW_SOAK_JOBS`). The table printed (`--nocapture`) has the database size
//! (file and WAL) and the daemon's resident memory at each tenth of the run.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use honeydew::api::pb;
use tokio::task::JoinSet;

use crate::support::{Daemon, DataDir, queue, watch_to_end};

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The database's size on disk: the file and its WAL, in KiB.
fn database_kib(data_dir: &Path) -> u64 {
    ["honeydew.db", "honeydew.db-wal"]
        .iter()
        .filter_map(|file| std::fs::metadata(data_dir.join(file)).ok())
        .map(|metadata| metadata.len() / 1024)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_and_memory_stay_bounded_while_retention_prunes() {
    let jobs: usize = std::env::var("HONEYDEW_SOAK_JOBS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(3000);
    let rounds = 10;
    let per_round = (jobs / rounds).max(1);
    let data = DataDir::with_plugins(&["echo"]);
    data.configure("[retention]\ncompleted = \"1s\"\ninterval = \"1s\"\n");
    let daemon = Daemon::start(&data, &["--workers", "8", "--sync", "normal"]);
    let channel = daemon.connect().await;
    let pid = daemon.pid();

    // Each round: submit a tenth of the jobs from 32 clients, wait until the last job
    // of every client is done (one queue, oldest first), prune what retention allows
    // (the daemon's own pruner runs too; the explicit call makes the moment exact),
    // then measure. A run that leaks grows from round to round.
    let mut samples = Vec::new();
    for round in 1..=rounds {
        let submitted = Arc::new(AtomicUsize::new(0));
        let mut clients = JoinSet::new();
        for _ in 0..32 {
            let channel = channel.clone();
            let submitted = Arc::clone(&submitted);
            clients.spawn(async move {
                let mut last = None;
                while submitted.fetch_add(1, Ordering::SeqCst) < per_round {
                    let request = pb::SubmitJobRequest {
                        command: "echo.echo".into(),
                        payload: format!(r#"{{"round": {round}, "pad": "{}"}}"#, "x".repeat(200))
                            .into_bytes(),
                        ..Default::default()
                    };
                    let id = queue(&channel)
                        .submit_job(request)
                        .await
                        .expect("submit")
                        .into_inner()
                        .job_id;
                    last = Some(id);
                }
                last
            });
        }
        let lasts: Vec<String> = clients.join_all().await.into_iter().flatten().collect();
        for id in lasts {
            let updates = watch_to_end(&channel, &id).await;
            let status = updates.last().expect("an update").status();
            assert_eq!(status, pb::JobStatus::Completed, "{id}");
        }
        let pruned = queue(&channel)
            .prune_jobs(pb::PruneJobsRequest {
                older_than_seconds: Some(0),
            })
            .await
            .expect("prune")
            .into_inner()
            .deleted;
        samples.push((
            round * per_round,
            pruned,
            database_kib(data.path()),
            rss_kib(pid),
        ));
    }
    println!(
        "\nsoak: {} echo jobs in {rounds} rounds, retention 1s\n  jobs run   pruned now   database KiB   daemon RSS KiB",
        rounds * per_round
    );
    for (done, pruned, db, rss) in &samples {
        println!("  {done:>8}   {pruned:>10}   {db:>12}   {rss:>14}");
    }
    // Bounded: after the first round neither grows with the number of jobs run. The
    // allowance covers the WAL reaching its checkpoint size and allocator arenas.
    let (_, _, first_db, first_rss) = samples[0];
    for &(done, _, db, rss) in &samples {
        assert!(
            db <= first_db * 2 + 8192,
            "database grew to {db} KiB by job {done}: {samples:?}"
        );
        assert!(
            rss <= first_rss * 2 + 65_536,
            "RSS grew to {rss} KiB by job {done}: {samples:?}"
        );
    }
}
