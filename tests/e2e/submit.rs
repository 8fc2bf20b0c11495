//! Submit, wait, result; the job record as the API reports it.

use honeydew::api::pb::{self, JobStatus};
use serde_json::{Value, json};

use crate::support::{Daemon, DataDir, finished, get, result_text, submit};

#[tokio::test(flavor = "multi_thread")]
async fn submit_then_wait_returns_the_echoed_payload_and_the_plugin_that_ran() {
    let data = DataDir::with_plugins(&["echo"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;

    let id = submit(&channel, "echo.echo", r#"{"hello": "world"}"#).await;
    let job = finished(&channel, &id).await;

    assert_eq!(job.status(), JobStatus::Completed);
    let result: Value = serde_json::from_str(&result_text(&job)).unwrap();
    assert_eq!(result, json!({"hello": "world"}));
    assert_eq!(job.attempt, 1);
    assert_eq!(job.retry_count, 0);
    assert_eq!(job.error, None);
    let plugin = job.plugin.expect("the plugin that ran");
    assert_eq!(plugin.name, "echo");
    assert_eq!(plugin.sha256.len(), 64, "{}", plugin.sha256);
    assert!(job.started_at.is_some() && job.completed_at.is_some());

    // GetJobStatus (the spec's polling call) reports the same finished job.
    let polled = get(&channel, &id).await;
    assert_eq!(polled.status(), JobStatus::Completed);
    assert_eq!(polled.result, job.result);
    assert_eq!(polled.payload, br#"{"hello": "world"}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_payload_reaches_the_plugin_as_an_empty_object() {
    let data = DataDir::with_plugins(&["echo"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;

    let id = submit(&channel, "echo.echo", "").await;
    let job = finished(&channel, &id).await;

    assert_eq!(job.status(), JobStatus::Completed);
    assert_eq!(result_text(&job), "{}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_plugin_error_fails_the_job_with_its_message_and_kind() {
    let data = DataDir::with_plugins(&["permanent"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;

    let id = submit(
        &channel,
        "permanent.fail",
        r#"{"message": "repository not found"}"#,
    )
    .await;
    let job = finished(&channel, &id).await;

    assert_eq!(job.status(), JobStatus::Failed);
    assert!(
        job.error().contains("repository not found"),
        "{:?}",
        job.error
    );
    assert_eq!(job.error_kind(), "plugin_error");
    assert_eq!(job.retry_count, 0, "a permanent error is not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn priority_and_max_retries_are_recorded_as_submitted() {
    let data = DataDir::with_plugins(&["echo"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;

    let request = pb::SubmitJobRequest {
        command: "echo.echo".into(),
        payload: b"{}".to_vec(),
        priority: 42,
        max_retries: Some(7),
        ..Default::default()
    };
    let id = crate::support::queue(&channel)
        .submit_job(request)
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let job = finished(&channel, &id).await;
    assert_eq!(job.priority, 42);
    assert_eq!(job.max_retries, 7);
}
