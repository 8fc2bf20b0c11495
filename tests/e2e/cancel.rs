//! Cancelling pending, running and finished jobs.

use honeydew::api::pb::{self, CancelOutcome, JobStatus};
use tonic::Code;

use crate::support::{Daemon, DataDir, finished, get, queue, running, submit};

async fn cancel(
    channel: &tonic::transport::Channel,
    id: &str,
) -> Result<CancelOutcome, tonic::Status> {
    let request = pb::CancelJobRequest { job_id: id.into() };
    let response = queue(channel).cancel_job(request).await?;
    Ok(response.into_inner().outcome())
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_a_pending_job_then_a_running_one_then_refuse_a_finished_one() {
    let data = DataDir::with_plugins(&["echo", "spin"]);
    // One worker, held by a job that sleeps for a minute: whatever comes next waits.
    let daemon = Daemon::start(&data, &["--workers", "1", "--timeout-ms", "120000"]);
    let channel = daemon.connect().await;
    let blocker = submit(&channel, "spin.sleep", r#"{"ms": 60000}"#).await;
    running(&channel, &blocker).await;

    let pending = submit(&channel, "echo.echo", "{}").await;
    assert_eq!(get(&channel, &pending).await.status(), JobStatus::Pending);
    assert_eq!(
        cancel(&channel, &pending).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let job = get(&channel, &pending).await;
    assert_eq!(job.status(), JobStatus::Cancelled);
    assert_eq!(job.error_kind(), "cancelled");
    assert_eq!(job.attempt, 0, "a job cancelled while pending never ran");

    assert_eq!(
        cancel(&channel, &blocker).await.unwrap(),
        CancelOutcome::Cancelling
    );
    let job = finished(&channel, &blocker).await;
    assert_eq!(job.status(), JobStatus::Cancelled);
    assert_eq!(job.result, None);

    let status = cancel(&channel, &blocker).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        format!("job {blocker} is already cancelled and cannot be cancelled")
    );

    // The worker is free again.
    let next = submit(&channel, "echo.echo", r#"{"after": "cancel"}"#).await;
    assert_eq!(
        finished(&channel, &next).await.status(),
        JobStatus::Completed
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_interrupts_a_guest_in_an_infinite_loop() {
    let data = DataDir::with_plugins(&["spin"]);
    // Fuel and deadline far beyond the test: only the cancel can stop it.
    let daemon = Daemon::start(
        &data,
        &["--fuel", "1000000000000000", "--timeout-ms", "600000"],
    );
    let channel = daemon.connect().await;

    let id = submit(&channel, "spin.loop", "{}").await;
    running(&channel, &id).await;
    assert_eq!(
        cancel(&channel, &id).await.unwrap(),
        CancelOutcome::Cancelling
    );
    let job = finished(&channel, &id).await;
    assert_eq!(job.status(), JobStatus::Cancelled);
    assert_eq!(job.error_kind(), "cancelled");
}
