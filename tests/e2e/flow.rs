//! Flow control through the daemon, on SQLite and on PostgreSQL alike: unique jobs
//! (concurrent duplicates give one job; reject and replace), bulk submits that store
//! every job or none, and retry and cancel one by one or in bulk. Each behaviour runs once per backend (`sqlite_*`,
//! `postgres_*`).

use std::collections::HashSet;

use honeydew::api::pb::{self, JobStatus, OnConflict, SubmitOutcome};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::backend::{Backend, on_both_backends};
use crate::support::{finished, get, honeydew, queue, result_text, stderr, stdout, submit};

on_both_backends!(
    concurrent_duplicate_submits_give_one_job,
    a_unique_submit_may_ask_to_be_refused_or_to_replace_the_payload,
    a_batch_with_one_invalid_job_commits_none,
    the_cli_submits_with_a_unique_key_and_in_batches,
    failed_jobs_are_retried_one_by_one_and_in_bulk,
    pending_jobs_are_cancelled_in_bulk_and_running_ones_finish,
);

fn unique_request(key: &str, on_conflict: OnConflict, payload: &str) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        command: "echo.echo".into(),
        payload: payload.as_bytes().to_vec(),
        unique_key: Some(key.into()),
        on_conflict: on_conflict.into(),
        ..Default::default()
    }
}

async fn list_all(channel: &Channel) -> Vec<pb::Job> {
    queue(channel)
        .list_jobs(pb::ListJobsRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .jobs
}

async fn concurrent_duplicate_submits_give_one_job(postgres: bool) {
    // One worker, held by a long job: the unique job stays pending (an echo job would
    // complete at once and free its key, rightly letting the next submit in).
    let (_backend, channel, blocker) = Backend::held(postgres, 60_000).await;
    let mut submits = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let channel = channel.clone();
        submits.spawn(async move {
            let request = unique_request("report:octo/hello", OnConflict::Existing, "{}");
            queue(&channel)
                .submit_job(request)
                .await
                .expect("submit")
                .into_inner()
        });
    }
    let answers = submits.join_all().await;
    let ids: HashSet<&str> = answers.iter().map(|a| a.job_id.as_str()).collect();
    assert_eq!(ids.len(), 1, "every submit names the one job: {ids:?}");
    let created = answers
        .iter()
        .filter(|a| a.outcome() == SubmitOutcome::Created)
        .count();
    assert_eq!(created, 1, "one of them created it, the others were told");
    assert_eq!(
        list_all(&channel).await.len(),
        2,
        "the blocker and one unique job"
    );
    queue(&channel)
        .cancel_job(pb::CancelJobRequest { job_id: blocker })
        .await
        .unwrap();
    let id = answers[0].job_id.clone();
    assert_eq!(finished(&channel, &id).await.status(), JobStatus::Completed);
    // Once it completed, the key is free again (pending and running count by default).
    let again = queue(&channel)
        .submit_job(unique_request(
            "report:octo/hello",
            OnConflict::Existing,
            "{}",
        ))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(again.outcome(), SubmitOutcome::Created);
    assert_ne!(again.job_id, id);
}

async fn a_unique_submit_may_ask_to_be_refused_or_to_replace_the_payload(postgres: bool) {
    // One worker, held by a long job: the unique jobs stay pending meanwhile.
    let (_backend, channel, blocker) = Backend::held(postgres, 60_000).await;
    let first = queue(&channel)
        .submit_job(unique_request(
            "debounce",
            OnConflict::Existing,
            r#"{"n": 1}"#,
        ))
        .await
        .unwrap()
        .into_inner();
    let refused = queue(&channel)
        .submit_job(unique_request(
            "debounce",
            OnConflict::Reject,
            r#"{"n": 2}"#,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists);
    assert!(
        refused.message().contains(&first.job_id),
        "{}",
        refused.message()
    );
    let replaced = queue(&channel)
        .submit_job(unique_request(
            "debounce",
            OnConflict::Replace,
            r#"{"n": 3}"#,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replaced.outcome(), SubmitOutcome::Replaced);
    assert_eq!(replaced.job_id, first.job_id);
    // Out-of-range values are refused before anything is stored.
    let mut empty_key = unique_request("", OnConflict::Existing, "{}");
    empty_key.unique_key = Some(String::new());
    let status = queue(&channel).submit_job(empty_key).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("unique_key"),
        "{}",
        status.message()
    );
    let window_without_key = pb::SubmitJobRequest {
        command: "echo.echo".into(),
        unique_for_ms: Some(1000),
        ..Default::default()
    };
    let status = queue(&channel)
        .submit_job(window_without_key)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // The worker is freed: the one pending unique job runs with the last payload.
    queue(&channel)
        .cancel_job(pb::CancelJobRequest { job_id: blocker })
        .await
        .unwrap();
    let done = finished(&channel, &first.job_id).await;
    assert_eq!(done.status(), JobStatus::Completed);
    assert_eq!(result_text(&done), r#"{"n": 3}"#);
    assert_eq!(
        list_all(&channel).await.len(),
        2,
        "the blocker and one unique job"
    );
}

async fn a_batch_with_one_invalid_job_commits_none(postgres: bool) {
    let backend = Backend::start(postgres, &["echo"], &[]).await;
    let channel = backend.daemon.connect().await;
    let job = |command: &str, n: usize| pb::SubmitJobRequest {
        command: command.into(),
        payload: format!(r#"{{"n": {n}}}"#).into_bytes(),
        ..Default::default()
    };
    let mut spoiled: Vec<pb::SubmitJobRequest> = (0..5).map(|n| job("echo.echo", n)).collect();
    spoiled[3] = job("nosuch.command", 3);
    let status = queue(&channel)
        .submit_jobs(pb::SubmitJobsRequest { jobs: spoiled })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("job 3 of the batch"),
        "{}",
        status.message()
    );
    let mut bad_json: Vec<pb::SubmitJobRequest> = (0..3).map(|n| job("echo.echo", n)).collect();
    bad_json[1].payload = b"{not json".to_vec();
    let status = queue(&channel)
        .submit_jobs(pb::SubmitJobsRequest { jobs: bad_json })
        .await
        .unwrap_err();
    assert!(
        status.message().starts_with("job 1 of the batch"),
        "{}",
        status.message()
    );
    assert!(
        list_all(&channel).await.is_empty(),
        "a refused batch stores nothing"
    );
    let status = queue(&channel)
        .submit_jobs(pb::SubmitJobsRequest { jobs: vec![] })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let jobs: Vec<pb::SubmitJobRequest> = (0..500).map(|n| job("echo.echo", n)).collect();
    let ids = queue(&channel)
        .submit_jobs(pb::SubmitJobsRequest { jobs })
        .await
        .expect("a valid batch")
        .into_inner()
        .job_ids;
    assert_eq!(ids.len(), 500);
    // In order: the id of the job with payload n is the n-th.
    for n in [0, 250, 499] {
        let done = finished(&channel, &ids[n]).await;
        assert_eq!(done.status(), JobStatus::Completed);
        assert_eq!(result_text(&done), format!(r#"{{"n": {n}}}"#));
    }
    assert_eq!(list_all(&channel).await.len(), 500);
}

async fn the_cli_submits_with_a_unique_key_and_in_batches(postgres: bool) {
    let (backend, channel, _blocker) = Backend::held(postgres, 60_000).await;
    let dir = backend.data.path();
    let unique = [
        "submit",
        "echo.echo",
        "--unique-key",
        "nightly",
        "--unique-for",
        "10m",
    ];
    let first = honeydew(dir, &unique, "");
    assert!(first.status.success(), "{}", stderr(&first));
    let again = honeydew(dir, &unique, "");
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again), stdout(&first), "the holder's id, again");
    assert!(
        stderr(&again).contains("holds the unique key"),
        "{}",
        stderr(&again)
    );
    let mut reject = unique.to_vec();
    reject.extend(["--on-conflict", "reject"]);
    let refused = honeydew(dir, &reject, "");
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains(stdout(&first).trim()),
        "{}",
        stderr(&refused)
    );

    let lines = "{\"command\": \"echo.echo\", \"payload\": {\"n\": 1}}\n\n{\"command\": \"echo.echo\", \"priority\": 5}\n";
    let batch = honeydew(dir, &["submit", "--batch", "-"], lines);
    assert!(batch.status.success(), "{}", stderr(&batch));
    assert_eq!(stdout(&batch).lines().count(), 2, "{}", stdout(&batch));
    let broken = honeydew(
        dir,
        &["submit", "--batch", "-"],
        "{\"command\": \"echo.echo\"}\n{\"comand\": 1}\n",
    );
    assert!(!broken.status.success());
    assert!(stderr(&broken).contains("line 2"), "{}", stderr(&broken));
    assert_eq!(
        list_all(&channel).await.len(),
        4,
        "blocker, unique, two of the batch"
    );
}

async fn failed_jobs_are_retried_one_by_one_and_in_bulk(postgres: bool) {
    let backend = Backend::start(postgres, &["echo", "permanent"], &[]).await;
    let channel = backend.daemon.connect().await;
    let dir = backend.data.path();
    let mut failed = Vec::new();
    for n in 0..3 {
        let id = submit(
            &channel,
            "permanent.fail",
            &format!(r#"{{"message": "no {n}"}}"#),
        )
        .await;
        assert_eq!(finished(&channel, &id).await.status(), JobStatus::Failed);
        failed.push(id);
    }
    let done = submit(&channel, "echo.echo", "{}").await;
    assert_eq!(
        finished(&channel, &done).await.status(),
        JobStatus::Completed
    );

    // One by one: it runs again, as its second attempt.
    let retried = honeydew(dir, &["retry", &failed[0]], "");
    assert!(retried.status.success(), "{}", stderr(&retried));
    let again = finished(&channel, &failed[0]).await;
    assert_eq!((again.status(), again.attempt), (JobStatus::Failed, 2));
    // A completed job is not retried, and says why.
    let refused = honeydew(dir, &["retry", &done], "");
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("only a failed or cancelled job"),
        "{}",
        stderr(&refused)
    );

    // In bulk: every failed job of the command, and no other.
    let bulk = honeydew(
        dir,
        &["retry", "--status", "failed", "--command", "permanent.fail"],
        "",
    );
    assert!(bulk.status.success(), "{}", stderr(&bulk));
    assert_eq!(stdout(&bulk).trim(), "retried 3 jobs");
    for (id, attempts) in failed.iter().zip([3, 2, 2]) {
        let job = finished(&channel, id).await;
        assert_eq!(
            (job.status(), job.attempt),
            (JobStatus::Failed, attempts),
            "{id}"
        );
    }
    assert_eq!(
        get(&channel, &done).await.attempt,
        1,
        "the completed job was left alone"
    );
    let none = honeydew(
        dir,
        &[
            "retry",
            "--command",
            "permanent.fail",
            "--since",
            "1970-01-01T00:00:00Z",
            "--status",
            "cancelled",
        ],
        "",
    );
    assert_eq!(stdout(&none).trim(), "retried 0 jobs", "{}", stderr(&none));
}

async fn pending_jobs_are_cancelled_in_bulk_and_running_ones_finish(postgres: bool) {
    let (backend, channel, blocker) = Backend::held(postgres, 1500).await;
    let dir = backend.data.path();
    let mut waiting = Vec::new();
    for _ in 0..4 {
        waiting.push(submit(&channel, "echo.echo", "{}").await);
    }
    let other = submit(&channel, "spin.sleep", r#"{"ms": 1}"#).await;
    let bulk = honeydew(dir, &["cancel", "--command", "echo.echo"], "");
    assert!(bulk.status.success(), "{}", stderr(&bulk));
    assert_eq!(stdout(&bulk).trim(), "cancelled 4 pending jobs");
    for id in &waiting {
        assert_eq!(get(&channel, id).await.status(), JobStatus::Cancelled);
    }
    let refused = honeydew(
        dir,
        &["cancel", "--status", "running", "--command", "spin.sleep"],
        "",
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("cancel a running job by its id"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        finished(&channel, &blocker).await.status(),
        JobStatus::Completed
    );
    assert_eq!(
        finished(&channel, &other).await.status(),
        JobStatus::Completed
    );
}
