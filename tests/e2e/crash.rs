//! The crash test: N jobs, K `kill -9` of the daemon at random moments (during submits
//! and during runs), a restart after each; at the end every acknowledged job is
//! terminal, none is lost, and duplicate executions stay within the bound the crashes
//! allow.
//!
//! Every execution is recorded outside the daemon, by a loopback HTTP server that the
//! `fetch` fixture calls with the job's own tag. The bound on duplicates is the number
//! of jobs the database showed `running` right after each kill: only an attempt cut
//! short can run again (at-least-once). The small size runs with the test suite;
//! `just crash-test` runs N=5000, K=20 (`HONEYDEW_CRASH_JOBS`, `HONEYDEW_CRASH_KILLS`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use honeydew::api::pb;
use rand::Rng;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::support::{Daemon, DataDir, HttpStub, PATIENCE, queue};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// What the run came to, as the table prints it.
#[derive(Debug, Default)]
struct Tally {
    jobs: usize,
    kills: usize,
    acknowledged: usize,
    lost: usize,
    stuck: usize,
    duplicates: usize,
    bound: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_at_random_moments_loses_no_acknowledged_job() {
    let jobs = setting("HONEYDEW_CRASH_JOBS", 300);
    let kills = setting("HONEYDEW_CRASH_KILLS", 3);

    let executions: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let recorder = {
        let executions = Arc::clone(&executions);
        HttpStub::start(move |request, _| {
            let tag = request
                .line
                .split_whitespace()
                .nth(1)
                .and_then(|path| path.strip_prefix("/run/"))
                .unwrap_or_default()
                .to_owned();
            *executions.lock().unwrap().entry(tag).or_default() += 1;
            (200, "{}".into())
        })
        .await
    };

    let data = DataDir::with_plugins(&["fetch"]);
    let args = ["--workers", "8"];
    let mut daemon = Daemon::start(&data, &args);
    let (channels, channel) = watch::channel(Some(daemon.connect().await));

    // The submitter: one job after another, each with its own tag; an error (the
    // daemon died under the call) leaves that submit unacknowledged, and the next
    // waits for the daemon to be back.
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let submitter = {
        let acknowledged = Arc::clone(&acknowledged);
        let mut channel = channel.clone();
        let base_url = recorder.base_url.clone();
        tokio::spawn(async move {
            for n in 0..jobs {
                let tag = format!("job-{n}");
                let payload = format!(r#"{{"url": "{base_url}/run/{tag}"}}"#);
                let current: Option<Channel> = channel
                    .wait_for(Option::is_some)
                    .await
                    .expect("the test keeps the channel")
                    .clone();
                let request = pb::SubmitJobRequest {
                    command: "fetch.get".into(),
                    payload: payload.into_bytes(),
                    max_retries: Some(50),
                    ..Default::default()
                };
                if let Ok(response) = queue(&current.expect("some")).submit_job(request).await {
                    let id = response.into_inner().job_id;
                    acknowledged.lock().unwrap().push((id, tag));
                }
            }
        })
    };

    // The killer: K times, after a random moment, kill -9, count what was running,
    // restart.
    let mut tally = Tally {
        jobs,
        kills,
        ..Tally::default()
    };
    for _ in 0..kills {
        let pause = rand::rng().random_range(20..400);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        channels.send_replace(None);
        daemon.kill();
        tally.bound += running_in_the_record(&data);
        daemon = Daemon::start(&data, &args);
        channels.send_replace(Some(daemon.connect().await));
    }
    tokio::time::timeout(PATIENCE * 4, submitter)
        .await
        .expect("the submitter finished")
        .expect("the submitter did not panic");

    // Every acknowledged job reaches a terminal state.
    let channel = daemon.connect().await;
    let acknowledged = acknowledged.lock().unwrap().clone();
    tally.acknowledged = acknowledged.len();
    let deadline = tokio::time::Instant::now() + PATIENCE * 4;
    let mut open: HashSet<String> = acknowledged.iter().map(|(id, _)| id.clone()).collect();
    let mut missing = HashSet::new();
    while !open.is_empty() && tokio::time::Instant::now() < deadline {
        let mut still_open = HashSet::new();
        for id in &open {
            let request = pb::GetJobStatusRequest { job_id: id.clone() };
            match queue(&channel).get_job_status(request).await {
                Ok(response) => {
                    let job = response.into_inner().job.expect("a job");
                    let terminal = matches!(
                        job.status(),
                        pb::JobStatus::Completed | pb::JobStatus::Failed | pb::JobStatus::Cancelled
                    );
                    if !terminal {
                        still_open.insert(id.clone());
                    } else if job.status() != pb::JobStatus::Completed {
                        panic!("job {id} ended {:?}: {:?}", job.status(), job.error);
                    }
                }
                Err(status) if status.code() == tonic::Code::NotFound => {
                    missing.insert(id.clone());
                }
                Err(status) => panic!("status of {id}: {status}"),
            }
        }
        if still_open.len() == open.len() && !still_open.is_empty() {
            // Nothing finished in this round: wait for the next job to end.
            let id = still_open.iter().next().expect("one").clone();
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                crate::support::watch_to_end(&channel, &id),
            )
            .await;
        }
        open = still_open;
    }
    tally.stuck = open.len();

    let executions = executions.lock().unwrap().clone();
    for (id, tag) in &acknowledged {
        match executions.get(tag) {
            None => tally.lost += 1,
            Some(&count) if missing.contains(id) => {
                tally.lost += 1;
                tally.duplicates += count - 1;
            }
            Some(&count) => tally.duplicates += count - 1,
        }
    }
    // Unacknowledged submits that were committed anyway ran too; their repeats count.
    let acknowledged_tags: HashSet<&String> = acknowledged.iter().map(|(_, tag)| tag).collect();
    tally.duplicates += executions
        .iter()
        .filter(|(tag, _)| !acknowledged_tags.contains(tag))
        .map(|(_, count)| count - 1)
        .sum::<usize>();

    println!(
        "\ncrash test\n  jobs (N)                  {}\n  kills (K)                 {}\n  acknowledged submits      {}\n  lost                      {}\n  stuck                     {}\n  duplicate executions      {}\n  bound (running at a kill) {}\n",
        tally.jobs,
        tally.kills,
        tally.acknowledged,
        tally.lost,
        tally.stuck,
        tally.duplicates,
        tally.bound
    );
    assert_eq!(tally.lost, 0, "{tally:?}");
    assert_eq!(tally.stuck, 0, "{tally:?}");
    assert!(tally.duplicates <= tally.bound, "{tally:?}");
    assert!(
        tally.acknowledged >= jobs - kills,
        "at most one submit is cut short per kill: {tally:?}"
    );
}

/// How many jobs the database shows `running` (the daemon is dead: these are the
/// attempts its death cut short).
fn running_in_the_record(data: &DataDir) -> usize {
    let db = rusqlite::Connection::open(data.path().join("honeydew.db")).expect("open db");
    db.query_row(
        "SELECT COUNT(*) FROM jobs WHERE status = 'running'",
        [],
        |row| row.get::<_, i64>(0),
    )
    .expect("count running") as usize
}
