//! WatchJob follows every transition, retries included.

use honeydew::api::pb::{self, JobStatus};

use crate::support::{Daemon, DataDir, HttpStub, PATIENCE, queue, running, submit, watch_to_end};

#[tokio::test(flavor = "multi_thread")]
async fn watch_sees_every_transition_of_a_job_that_fails_twice_then_succeeds() {
    let counter = HttpStub::start(|_, count| (200, count.to_string())).await;
    let data = DataDir::with_plugins(&["flaky", "spin"]);
    data.configure("[retry]\nbase_ms = 10\njitter = 0.0\n");
    let daemon = Daemon::start(&data, &["--workers", "1", "--timeout-ms", "120000"]);
    let channel = daemon.connect().await;

    // Hold the only worker so the watch begins while the job is surely pending.
    let blocker = submit(&channel, "spin.sleep", r#"{"ms": 60000}"#).await;
    running(&channel, &blocker).await;
    let payload = format!(
        r#"{{"counter_url": "{}/attempts", "failures": 2}}"#,
        counter.base_url
    );
    let id = submit(&channel, "flaky.fail_then_succeed", &payload).await;
    // WatchJob answers only once it has subscribed and read the job: from here on no
    // change can be missed, and the job is surely still pending.
    let request = pb::WatchJobRequest {
        job_id: id.clone(),
        ..Default::default()
    };
    let mut stream = queue(&channel)
        .watch_job(request)
        .await
        .unwrap()
        .into_inner();
    let cancel = pb::CancelJobRequest { job_id: blocker };
    queue(&channel).cancel_job(cancel).await.unwrap();
    let mut updates = Vec::new();
    let collect = async {
        while let Some(update) = stream.message().await.unwrap() {
            updates.push(update);
        }
    };
    tokio::time::timeout(PATIENCE, collect)
        .await
        .expect("the job finishes in time");

    let seen: Vec<(JobStatus, u32, u32)> = updates
        .iter()
        .map(|update| (update.status(), update.attempt, update.retry_count))
        .collect();
    use JobStatus::*;
    assert_eq!(
        seen,
        vec![
            (Pending, 0, 0),
            (Running, 1, 0),
            (Pending, 1, 1),
            (Running, 2, 1),
            (Pending, 2, 2),
            (Running, 3, 2),
            (Completed, 3, 2),
        ]
    );
    assert_eq!(updates[2].error(), "planned failure 1 of 2");
    assert_eq!(updates[4].error(), "planned failure 2 of 2");
    assert!(updates[0].job.is_some(), "the first update carries the job");
    let last = updates
        .last()
        .unwrap()
        .job
        .clone()
        .expect("the last update carries the job");
    assert_eq!(last.result.as_deref(), Some(&br#"{"attempts":3}"#[..]));
    assert_eq!(counter.received().len(), 3, "one request per attempt");
}

#[tokio::test(flavor = "multi_thread")]
async fn watching_a_finished_job_returns_its_final_state_at_once() {
    let data = DataDir::with_plugins(&["echo"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;
    let id = submit(&channel, "echo.echo", r#"{"done": 1}"#).await;
    watch_to_end(&channel, &id).await;

    let updates = watch_to_end(&channel, &id).await;
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].status(), JobStatus::Completed);
    let job = updates[0].job.as_ref().unwrap();
    assert_eq!(job.result.as_deref(), Some(&br#"{"done": 1}"#[..]));
}
