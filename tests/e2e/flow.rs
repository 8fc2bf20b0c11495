//! Flow control through the daemon, on SQLite and on PostgreSQL alike: unique jobs
//! (concurrent duplicates give one job; reject and replace), bulk submits that store
//! every job or none, retry and cancel one by one or in bulk, and pauses of plugins,
//! commands and schedules that survive a restart. Each behaviour runs once per backend
//! (`sqlite::*`, `postgres::*`).

use std::collections::HashSet;

use honeydew::api::pb::{self, JobStatus, OnConflict, SubmitOutcome};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::backend::{Backend, on_both_backends};
use crate::support::{
    finished, get, honeydew, queue, result_text, running, stderr, stdout, submit,
};

on_both_backends!(
    concurrent_duplicate_submits_give_one_job,
    a_unique_submit_may_ask_to_be_refused_or_to_replace_the_payload,
    a_batch_with_one_invalid_job_commits_none,
    the_cli_submits_with_a_unique_key_and_in_batches,
    failed_jobs_are_retried_one_by_one_and_in_bulk,
    pending_jobs_are_cancelled_in_bulk_and_running_ones_finish,
    a_pause_holds_pending_jobs_across_a_restart_and_running_ones_finish,
    a_paused_schedule_submits_nothing_until_resumed,
    explain_names_each_reason_a_job_is_not_running,
    a_job_after_others_runs_once_they_completed_and_is_cancelled_when_one_fails,
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

async fn a_pause_holds_pending_jobs_across_a_restart_and_running_ones_finish(postgres: bool) {
    // One worker: a job that is not held runs before any submitted after it.
    let backend = Backend::start(postgres, &["echo", "spin"], &["--workers", "1"]).await;
    let channel = backend.daemon.connect().await;
    let dir = backend.data.path().to_owned();

    // A command paused while one of its jobs runs: that one finishes, the next waits.
    let running_one = submit(&channel, "spin.sleep", r#"{"ms": 600}"#).await;
    running(&channel, &running_one).await;
    let paused = honeydew(&dir, &["pause", "spin.sleep"], "");
    assert!(paused.status.success(), "{}", stderr(&paused));
    assert_eq!(
        stdout(&paused).trim(),
        "paused spin.sleep: its pending jobs wait until `honeydew resume spin.sleep`"
    );
    let again = honeydew(&dir, &["pause", "spin.sleep"], "");
    assert_eq!(stdout(&again).trim(), "spin.sleep was already paused");
    let held_sleep = submit(&channel, "spin.sleep", r#"{"ms": 1}"#).await;
    assert_eq!(
        finished(&channel, &running_one).await.status(),
        JobStatus::Completed,
        "a running job finishes"
    );

    // A plugin paused: its job waits while a later job of another command runs.
    assert!(honeydew(&dir, &["pause", "echo"], "").status.success());
    let held_echo = submit(&channel, "echo.echo", r#"{"held": true}"#).await;
    let resumed = honeydew(&dir, &["resume", "spin.sleep"], "");
    assert_eq!(
        stdout(&resumed).trim(),
        "resumed spin.sleep",
        "{}",
        stderr(&resumed)
    );
    assert_eq!(
        finished(&channel, &held_sleep).await.status(),
        JobStatus::Completed,
        "resumed jobs run"
    );
    assert_eq!(get(&channel, &held_echo).await.status(), JobStatus::Pending);

    // The pause is stored: after a restart it still holds.
    let (backend, channel) = backend.restart().await;
    let listed = honeydew(&dir, &["pause", "--json"], "");
    let listed: serde_json::Value = serde_json::from_str(&stdout(&listed)).expect("JSON");
    let targets: Vec<&str> = listed
        .as_array()
        .expect("an array")
        .iter()
        .map(|pause| pause["target"].as_str().expect("a target"))
        .collect();
    assert_eq!(targets, ["echo"]);
    let probe = submit(&channel, "spin.sleep", r#"{"ms": 1}"#).await;
    assert_eq!(
        finished(&channel, &probe).await.status(),
        JobStatus::Completed
    );
    let held = get(&channel, &held_echo).await;
    assert_eq!(
        (held.status(), held.attempt),
        (JobStatus::Pending, 0),
        "held through the restart, never claimed"
    );

    let resumed = honeydew(&dir, &["resume", "echo"], "");
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let done = finished(&channel, &held_echo).await;
    assert_eq!(done.status(), JobStatus::Completed);
    assert_eq!(result_text(&done), r#"{"held": true}"#);
    let not_paused = honeydew(&dir, &["resume", "echo"], "");
    assert_eq!(stdout(&not_paused).trim(), "echo was not paused");
    let nothing = honeydew(&dir, &["pause"], "");
    assert_eq!(stdout(&nothing).trim(), "nothing is paused");

    let refused = honeydew(&dir, &["pause", "echo.echo.echo"], "");
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("cannot pause \"echo.echo.echo\": name a plugin"),
        "{}",
        stderr(&refused)
    );
    drop(backend);
}

async fn a_paused_schedule_submits_nothing_until_resumed(postgres: bool) {
    let mut backend = Backend::start(postgres, &["echo"], &[]).await;
    let channel = backend.daemon.connect().await;
    let dir = backend.data.path().to_owned();
    let echo_jobs = || async {
        list_all(&channel)
            .await
            .into_iter()
            .filter(|job| job.command == "echo.echo")
            .count()
    };
    let added = honeydew(
        &dir,
        &[
            "schedule",
            "add",
            "ticker",
            "--cron",
            "* * * * * *",
            "echo.echo",
        ],
        "",
    );
    assert!(added.status.success(), "{}", stderr(&added));
    assert!(backend.daemon.wait_for_line("schedule triggered"));

    let paused = honeydew(&dir, &["schedule", "pause", "ticker"], "");
    assert!(paused.status.success(), "{}", stderr(&paused));
    assert!(stdout(&paused).starts_with("paused schedule ticker ("));
    assert!(backend.daemon.wait_for_line("schedule paused"));
    let listed = honeydew(&dir, &["schedule", "ls", "--json"], "");
    let listed: serde_json::Value = serde_json::from_str(&stdout(&listed)).expect("JSON");
    assert_eq!(listed[0]["enabled"], false);
    assert_eq!(listed[0]["next_run_at"], serde_json::Value::Null);
    let submitted = echo_jobs().await;
    // Nothing announces a job not submitted: watch for a while instead.
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    assert_eq!(echo_jobs().await, submitted, "no job while paused");

    let resumed = honeydew(&dir, &["schedule", "resume", "ticker", "--json"], "");
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let resumed: serde_json::Value = serde_json::from_str(&stdout(&resumed)).expect("JSON");
    assert_eq!(resumed["enabled"], true);
    assert!(resumed["next_run_at"].is_string(), "{resumed}");
    assert!(backend.daemon.wait_for_line("schedule resumed"));
    assert!(backend.daemon.wait_for_line("schedule triggered"));
    assert!(echo_jobs().await > submitted);
    let unknown = honeydew(&dir, &["schedule", "pause", "nope"], "");
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("nope"), "{}", stderr(&unknown));
}

/// `honeydew explain ID --json`, parsed.
fn explain(dir: &std::path::Path, id: &str) -> serde_json::Value {
    let output = honeydew(dir, &["explain", id, "--json"], "");
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_str(&stdout(&output)).expect("JSON")
}

async fn explain_names_each_reason_a_job_is_not_running(postgres: bool) {
    let mut backend = Backend::start(
        postgres,
        &["echo", "spin", "flaky"],
        &["--workers", "2", "--timeout-ms", "120000"],
    )
    .await;
    let channel = backend.daemon.connect().await;
    let dir = backend.data.path().to_owned();
    let first_blocker = submit(&channel, "spin.sleep", r#"{"ms": 60000}"#).await;
    running(&channel, &first_blocker).await;
    // A retriable failure with a long backoff, on the other worker.
    let backing_off = queue(&channel)
        .submit_job(pb::SubmitJobRequest {
            command: "flaky.retriable_after".into(),
            payload: br#"{"retry_after_ms": 600000}"#.to_vec(),
            max_retries: Some(1),
            ..Default::default()
        })
        .await
        .expect("submit")
        .into_inner()
        .job_id;
    let updates = crate::support::watch_until(&channel, &backing_off, |update| {
        update.status() == JobStatus::Pending && update.retry_count == 1
    })
    .await;
    assert!(!updates.is_empty());
    let second_blocker = submit(&channel, "spin.sleep", r#"{"ms": 60000}"#).await;
    running(&channel, &second_blocker).await;

    let low = submit(&channel, "echo.echo", "{}").await;
    let high = queue(&channel)
        .submit_job(pb::SubmitJobRequest {
            command: "echo.echo".into(),
            priority: 5,
            ..Default::default()
        })
        .await
        .expect("submit")
        .into_inner()
        .job_id;

    let running_one = explain(&dir, &first_blocker);
    assert_eq!(running_one["holdup"], "not_waiting");
    assert!(
        running_one["explanation"]
            .as_str()
            .unwrap()
            .contains("is not waiting: it is running since"),
        "{running_one}"
    );
    let behind = explain(&dir, &low);
    assert_eq!(
        (&behind["holdup"], &behind["ahead"]),
        (&"queued".into(), &1.into()),
        "{behind}"
    );
    let text = honeydew(&dir, &["explain", &low], "");
    assert!(
        stdout(&text).contains("queued behind 1 eligible job of higher priority"),
        "{}",
        stdout(&text)
    );
    let next = explain(&dir, &high);
    assert_eq!(
        (&next["holdup"], &next["ahead"]),
        (&"queued".into(), &0.into()),
        "{next}"
    );
    assert!(
        next["explanation"]
            .as_str()
            .unwrap()
            .contains("next in line")
    );

    let later = explain(&dir, &backing_off);
    assert_eq!(later["holdup"], "not_yet_due", "{later}");
    let until: chrono::DateTime<chrono::Utc> = later["until"]
        .as_str()
        .unwrap()
        .parse()
        .expect("an instant");
    assert!(
        until > chrono::Utc::now() + chrono::TimeDelta::minutes(8),
        "{until}"
    );
    assert!(
        later["explanation"]
            .as_str()
            .unwrap()
            .contains("it is retry 1 of 1 after a failure"),
        "{later}"
    );

    assert!(honeydew(&dir, &["pause", "echo"], "").status.success());
    let paused = explain(&dir, &high);
    assert_eq!(
        (&paused["holdup"], &paused["paused_by"]),
        (&"paused".into(), &"echo".into())
    );
    assert!(
        paused["explanation"]
            .as_str()
            .unwrap()
            .contains("echo is paused (since"),
        "{paused}"
    );

    for file in ["flaky.wasm", "flaky.toml"] {
        std::fs::remove_file(dir.join("plugins").join(file)).expect("remove plugin");
    }
    assert!(backend.daemon.wait_for_line("plugin unloaded"));
    let orphan = explain(&dir, &backing_off);
    assert_eq!(orphan["holdup"], "no_plugin", "{orphan}");
    assert!(
        orphan["explanation"]
            .as_str()
            .unwrap()
            .contains("no plugin loaded on this daemon serves flaky.retriable_after"),
        "{orphan}"
    );

    let cancelled = honeydew(&dir, &["cancel", &first_blocker], "");
    assert!(cancelled.status.success(), "{}", stderr(&cancelled));
    finished(&channel, &first_blocker).await;
    let done = explain(&dir, &first_blocker);
    assert_eq!(done["status"], "cancelled");
    assert!(
        done["explanation"]
            .as_str()
            .unwrap()
            .contains("was cancelled at"),
        "{done}"
    );
    let unknown = honeydew(
        &dir,
        &["explain", "0193a1b2-0000-7000-8000-000000000000"],
        "",
    );
    assert!(!unknown.status.success());
}

async fn a_job_after_others_runs_once_they_completed_and_is_cancelled_when_one_fails(
    postgres: bool,
) {
    let backend = Backend::start(postgres, &["echo", "spin", "permanent"], &[]).await;
    let channel = backend.daemon.connect().await;
    let dir = backend.data.path().to_owned();
    let slow = submit(&channel, "spin.sleep", r#"{"ms": 400}"#).await;
    let quick = submit(&channel, "echo.echo", "{}").await;
    let after = honeydew(
        &dir,
        &[
            "submit",
            "echo.echo",
            "--payload",
            r#"{"after": true}"#,
            "--after",
            &slow,
            "--after",
            &quick,
        ],
        "",
    );
    assert!(after.status.success(), "{}", stderr(&after));
    let dependent = stdout(&after).trim().to_owned();
    let explained = explain(&dir, &dependent);
    if explained["status"] == "pending" {
        assert_eq!(explained["holdup"], "dependencies", "{explained}");
    }
    let done = finished(&channel, &dependent).await;
    assert_eq!(done.status(), JobStatus::Completed);
    let slow_job = get(&channel, &slow).await;
    assert_eq!(slow_job.status(), JobStatus::Completed);
    let started = done.started_at.expect("started");
    let slow_done = slow_job.completed_at.expect("completed");
    assert!(
        (started.seconds, started.nanos) >= (slow_done.seconds, slow_done.nanos),
        "ran only after its dependency completed"
    );

    // A failing dependency cancels its dependents, and theirs, without running them.
    let failing = submit(&channel, "permanent.fail", "{}").await;
    let first = honeydew(&dir, &["submit", "echo.echo", "--after", &failing], "");
    let first = stdout(&first).trim().to_owned();
    let second = honeydew(&dir, &["submit", "echo.echo", "--after", &first], "");
    let second = stdout(&second).trim().to_owned();
    assert_eq!(
        finished(&channel, &failing).await.status(),
        JobStatus::Failed
    );
    for id in [&first, &second] {
        let job = finished(&channel, id).await;
        assert_eq!(job.status(), JobStatus::Cancelled, "{job:?}");
        assert_eq!(job.error_kind.as_deref(), Some("dependency_failed"));
        assert_eq!(job.attempt, 0, "never ran");
    }
    let unknown = honeydew(
        &dir,
        &[
            "submit",
            "echo.echo",
            "--after",
            "0193a1b2-0000-7000-8000-000000000000",
        ],
        "",
    );
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("no job 0193a1b2-0000-7000-8000-000000000000 to wait for"),
        "{}",
        stderr(&unknown)
    );
}
