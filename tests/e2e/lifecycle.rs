//! kill -9 mid-job, restart, the job completes; SIGTERM drains; a second SIGTERM
//! during the drain stops at once.

use std::time::{Duration, Instant};

use honeydew::api::pb::JobStatus;
use honeydew::store::{SqliteConfig, SqliteStore, Store};

use crate::support::{Daemon, DataDir, finished, get, result_text, running, submit};

#[tokio::test(flavor = "multi_thread")]
async fn a_job_running_when_the_daemon_is_killed_completes_after_a_restart() {
    let data = DataDir::with_plugins(&["spin"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;
    let id = submit(&channel, "spin.sleep", r#"{"ms": 1500}"#).await;
    running(&channel, &id).await;

    daemon.kill();
    // The socket is left behind, stale; the restart replaces it.
    assert!(data.socket().exists());

    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;
    let job = finished(&channel, &id).await;
    assert_eq!(job.status(), JobStatus::Completed);
    assert_eq!(result_text(&job), r#"{"slept_ms":1500}"#);
    assert_eq!(
        job.attempt, 2,
        "the interrupted attempt counts, then the one that finished"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_running_job_finish_then_exits_cleanly() {
    let data = DataDir::with_plugins(&["spin"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;
    let id = submit(&channel, "spin.sleep", r#"{"ms": 1000}"#).await;
    running(&channel, &id).await;

    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("daemon stopped"), "{stderr}");
    assert!(
        !data.socket().exists(),
        "the socket is removed on a clean stop"
    );

    let daemon = Daemon::start(&data, &[]);
    let job = get(&daemon.connect().await, &id).await;
    assert_eq!(job.status(), JobStatus::Completed);
    assert_eq!(job.attempt, 1, "the drain let the first attempt finish");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_past_the_deadline_puts_the_job_back_to_pending() {
    let data = DataDir::with_plugins(&["spin"]);
    let daemon = Daemon::start(
        &data,
        &["--shutdown-deadline-ms", "200", "--timeout-ms", "120000"],
    );
    let channel = daemon.connect().await;
    let id = submit(&channel, "spin.sleep", r#"{"ms": 60000}"#).await;
    running(&channel, &id).await;

    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "{status:?}\n{stderr}");

    // Read the record with the daemon stopped: the interrupted job waits to run again.
    let store = SqliteStore::open(SqliteConfig::new(data.path().join("honeydew.db")))
        .map(Store::new)
        .unwrap();
    let job = store.get_job(id.parse().unwrap()).await.unwrap();
    assert_eq!(job.status, honeydew::job::JobStatus::Pending);
    assert_eq!(job.error_kind, Some(honeydew::job::ErrorKind::Shutdown));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_during_the_drain_stops_at_once_and_the_job_goes_back_to_pending() {
    let data = DataDir::with_plugins(&["spin"]);
    // A drain deadline far beyond the test's patience: only the second signal can end
    // the drain in time.
    let args = ["--shutdown-deadline-ms", "600000", "--timeout-ms", "600000"];
    let mut daemon = Daemon::start(&data, &args);
    let channel = daemon.connect().await;
    let id = submit(&channel, "spin.sleep", r#"{"ms": 300000}"#).await;
    running(&channel, &id).await;
    drop(channel);

    daemon.signal("TERM");
    assert!(daemon.wait_for_line("shutting down"), "{}", daemon.stderr());
    let second = Instant::now();
    daemon.signal("TERM");
    let status = daemon.wait_for_exit();
    let took = second.elapsed();
    let stderr = daemon.stderr();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(
        took < Duration::from_secs(10),
        "took {took:?} after the second signal\n{stderr}"
    );
    assert!(stderr.contains("second signal: stopping now"), "{stderr}");
    assert!(!data.socket().exists(), "the socket is removed");

    // Nothing lost: the job waits to run again, and does at the next start.
    let store = SqliteStore::open(SqliteConfig::new(data.path().join("honeydew.db")))
        .map(Store::new)
        .unwrap();
    let job = store.get_job(id.parse().unwrap()).await.unwrap();
    assert_eq!(job.status, honeydew::job::JobStatus::Pending);
    assert_eq!(job.error_kind, Some(honeydew::job::ErrorKind::Shutdown));
    drop(store);
    let daemon = Daemon::start(&data, &args);
    running(&daemon.connect().await, &id).await;
}
