//! Outcomes a plugin asks for itself (`honeydew:plugin/job`), through the daemon with
//! the real `snoozer` fixture, on SQLite and on PostgreSQL alike: a snooze puts the job
//! back to pending without spending a retry and runs it again after the delay; a
//! plugin's cancel ends the job `cancelled` with its reason, never retried; the snooze
//! after `max_snoozes` fails the job; a component built against 0.1.0 runs beside.

use std::time::{Duration, Instant};

use honeydew::api::pb::{self, JobStatus};
use prost_types::Timestamp;
use tonic::transport::Channel;

use crate::support::backend::{Backend, on_both_backends};
use crate::support::{
    DataDir, PATIENCE, finished, get, honeydew, queue, result_text, running, stderr, stdout,
    submit, watch_to_end,
};

on_both_backends!(
    a_snoozed_job_runs_again_after_the_delay_without_spending_a_retry,
    a_snoozed_job_shows_its_reason_and_next_run,
    a_plugin_cancels_its_own_job_for_good_with_its_reason,
    the_snooze_after_max_snoozes_fails_the_job,
    a_plugin_built_against_wit_0_1_0_runs_beside_one_that_snoozes,
);

/// Submits `command` with `payload` and `max_retries`; the job id.
async fn submit_with_retries(
    channel: &Channel,
    command: &str,
    payload: &str,
    max_retries: u32,
) -> String {
    let request = pb::SubmitJobRequest {
        command: command.into(),
        payload: payload.as_bytes().to_vec(),
        max_retries: Some(max_retries),
        ..Default::default()
    };
    queue(channel)
        .submit_job(request)
        .await
        .unwrap_or_else(|status| panic!("submit {command}: {status}"))
        .into_inner()
        .job_id
}

fn millis(timestamp: Option<&Timestamp>) -> i64 {
    let timestamp = timestamp.expect("a timestamp");
    timestamp.seconds * 1000 + i64::from(timestamp.nanos) / 1_000_000
}

async fn a_snoozed_job_runs_again_after_the_delay_without_spending_a_retry(postgres: bool) {
    // One worker, held by a long job, so that the watch surely begins while the job is
    // pending and sees every one of its states.
    let backend = Backend::start(
        postgres,
        &["snoozer", "spin"],
        &["--workers", "1", "--timeout-ms", "120000"],
    )
    .await;
    let channel = backend.daemon.connect().await;
    let blocker = submit(&channel, "spin.sleep", r#"{"ms": 60000}"#).await;
    running(&channel, &blocker).await;
    // No retries: a snooze must not need one.
    let id = submit_with_retries(
        &channel,
        "snoozer.snooze",
        r#"{"snooze_ms": 1000, "times": 1}"#,
        0,
    )
    .await;
    let mut stream = queue(&channel)
        .watch_job(pb::WatchJobRequest {
            job_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    queue(&channel)
        .cancel_job(pb::CancelJobRequest { job_id: blocker })
        .await
        .unwrap();
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
        [
            (Pending, 0, 0),
            (Running, 1, 0),
            (Pending, 1, 0),
            (Running, 2, 0),
            (Completed, 2, 0),
        ],
        "pending again after the snooze, with no retry counted"
    );
    // The reason comes with the update on SQLite; on a shared store the watcher may hear
    // of the change first from the database's announcement, which carries no error
    // (as for a retry), so there the job record says it.
    if !postgres {
        assert_eq!(updates[2].error(), "snooze 1 of 1");
    }
    let job = updates.last().unwrap().job.clone().expect("the final job");
    assert_eq!(
        result_text(&job),
        r#"{"snoozes":1}"#,
        "the second run's result"
    );
    assert_eq!(
        (
            job.retry_count,
            job.max_retries,
            job.snooze_count,
            job.attempt
        ),
        (0, 0, 1, 2)
    );
    assert_eq!((job.error, job.error_kind), (None, None));
    // It ran again only once the delay was over.
    let first_started = millis(updates[1].at.as_ref());
    let run_at = millis(job.run_at.as_ref());
    assert!(
        run_at - first_started >= 1000,
        "run_at {run_at} is a second after the first start {first_started}"
    );
    assert!(millis(job.started_at.as_ref()) >= run_at);
}

async fn a_snoozed_job_shows_its_reason_and_next_run(postgres: bool) {
    let backend = Backend::start(postgres, &["snoozer"], &[]).await;
    let channel = backend.daemon.connect().await;
    let payload = r#"{"snooze_ms": 3600000, "times": 1, "reason": "waiting for the export"}"#;
    let id = submit(&channel, "snoozer.snooze", payload).await;
    // Watch until it is pending again after its first attempt.
    let mut stream = queue(&channel)
        .watch_job(pb::WatchJobRequest {
            job_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let snoozed = async {
        while let Some(update) = stream.message().await.unwrap() {
            if update.status() == JobStatus::Pending && update.attempt == 1 {
                return update;
            }
        }
        panic!("the watch ended before the job snoozed");
    };
    tokio::time::timeout(PATIENCE, snoozed)
        .await
        .expect("the job snoozes in time");

    let job = get(&channel, &id).await;
    assert_eq!(job.status(), JobStatus::Pending);
    assert_eq!(job.error_kind.as_deref(), Some("snoozed"));
    assert_eq!(job.error.as_deref(), Some("waiting for the export"));
    assert_eq!((job.retry_count, job.snooze_count), (0, 1));
    let hour_ms = 3_600_000;
    let waits = millis(job.run_at.as_ref()) - millis(job.started_at.as_ref());
    assert!(
        (hour_ms..hour_ms + 60_000).contains(&waits),
        "runs again an hour after it started, not {waits} ms"
    );
    let status = honeydew(backend.data.path(), &["status", &id], "");
    assert!(status.status.success(), "{}", stderr(&status));
    let text = stdout(&status);
    for line in [
        "status     pending",
        "retries 0 of 3, snoozed once",
        "next run",
        "error      snoozed: waiting for the export",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
    let json = honeydew(backend.data.path(), &["--json", "status", &id], "");
    let value: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("json");
    assert_eq!(
        (
            &value["status"],
            &value["snooze_count"],
            &value["error_kind"]
        ),
        (
            &serde_json::json!("pending"),
            &serde_json::json!(1),
            &serde_json::json!("snoozed")
        )
    );
    // A snoozed job is pending: a cancel takes it at once.
    let cancel = queue(&channel)
        .cancel_job(pb::CancelJobRequest { job_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancel.outcome(), pb::CancelOutcome::Cancelled);
    assert_eq!(get(&channel, &id).await.status(), JobStatus::Cancelled);
}

async fn a_plugin_cancels_its_own_job_for_good_with_its_reason(postgres: bool) {
    let backend = Backend::start(postgres, &["snoozer"], &[]).await;
    let channel = backend.daemon.connect().await;
    // Retries left, and the plugin returns a retriable error besides: its cancel stands.
    let id = submit_with_retries(
        &channel,
        "snoozer.cancel",
        r#"{"reason": "the issue was deleted upstream"}"#,
        5,
    )
    .await;
    let job = finished(&channel, &id).await;
    assert_eq!(job.status(), JobStatus::Cancelled);
    assert_eq!(job.error_kind.as_deref(), Some("cancelled_by_plugin"));
    assert_eq!(job.error.as_deref(), Some("the issue was deleted upstream"));
    assert_eq!((job.attempt, job.retry_count), (1, 0), "not retried");
    assert_eq!(job.result, None);

    let wait = honeydew(backend.data.path(), &["wait", &id], "");
    assert_eq!(
        wait.status.code(),
        Some(1),
        "a cancelled job is not a success"
    );
    assert!(
        stderr(&wait).contains("was cancelled by its plugin: the issue was deleted upstream"),
        "{}",
        stderr(&wait)
    );
    let status = honeydew(backend.data.path(), &["status", &id], "");
    assert!(
        stdout(&status).contains("error      cancelled_by_plugin: the issue was deleted upstream"),
        "{}",
        stdout(&status)
    );
}

async fn the_snooze_after_max_snoozes_fails_the_job(postgres: bool) {
    let data = DataDir::with_plugins(&["snoozer"]);
    data.configure("max_snoozes = 2\n");
    let backend = Backend::start_in(postgres, data, &[]).await;
    let channel = backend.daemon.connect().await;
    let started = Instant::now();
    // It would snooze ten times, each for 0 ms: the daemon makes each a second, and
    // stops it at the third.
    let id = submit(
        &channel,
        "snoozer.snooze",
        r#"{"snooze_ms": 0, "times": 10}"#,
    )
    .await;
    let updates = watch_to_end(&channel, &id).await;
    let job = updates.last().unwrap().job.clone().expect("the final job");
    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(job.error_kind.as_deref(), Some("snooze_limit"));
    let error = job.error.clone().unwrap_or_default();
    assert!(
        error.contains("has snoozed 2 times") && error.contains("max_snoozes = 2"),
        "{error}"
    );
    assert_eq!((job.attempt, job.snooze_count, job.retry_count), (3, 2, 0));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "two snoozes of at least a second each, not {:?}",
        started.elapsed()
    );
}

async fn a_plugin_built_against_wit_0_1_0_runs_beside_one_that_snoozes(postgres: bool) {
    let backend = Backend::start(postgres, &["legacy", "snoozer"], &[]).await;
    let channel = backend.daemon.connect().await;
    let legacy = submit(&channel, "legacy.echo", r#"{"still": "works"}"#).await;
    let snoozer = submit(
        &channel,
        "snoozer.snooze",
        r#"{"snooze_ms": 1000, "times": 1}"#,
    )
    .await;
    let legacy = finished(&channel, &legacy).await;
    assert_eq!(legacy.status(), JobStatus::Completed, "{:?}", legacy.error);
    assert_eq!(result_text(&legacy), r#"{"still": "works"}"#);
    let snoozer = finished(&channel, &snoozer).await;
    assert_eq!(
        snoozer.status(),
        JobStatus::Completed,
        "{:?}",
        snoozer.error
    );
    assert_eq!(snoozer.snooze_count, 1);
}
