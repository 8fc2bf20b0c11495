//! kill -9 mid-job, restart, the job completes; SIGTERM drains.

use honeydew::api::pb::JobStatus;
use honeydew::store::{Store, StoreConfig};

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
    let store = Store::open(StoreConfig::new(data.path().join("honeydew.db"))).unwrap();
    let job = store.get_job(id.parse().unwrap()).await.unwrap();
    assert_eq!(job.status, honeydew::job::JobStatus::Pending);
    assert_eq!(job.error_kind, Some(honeydew::job::ErrorKind::Shutdown));
}
