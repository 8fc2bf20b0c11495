//! The store contract, run against every backend: the same behaviours, the same
//! answers, on a real SQLite file and on a real PostgreSQL server. A behaviour the queue,
//! the workers, the scheduler, recovery, retention or the API rely on belongs here;
//! what only one backend has (SQLite's query plans and WAL, say) is tested beside it.

mod support;

use std::collections::HashSet;

use chrono::{SubsecRound, TimeDelta, Utc};
use honeydew_core::concurrency::Scope;
use honeydew_core::job::{ErrorKind, Job, JobId, JobStatus, PluginRef};
use honeydew_core::output::{
    AttemptOutput, JobProgress, LogLevel, LogLine, LogQuery, MAX_LOG_BYTES, MAX_LOG_LINE_BYTES,
    MAX_LOG_LINES,
};
use honeydew_core::rate_limit::RateLimitHold;
use honeydew_core::schedule::{MisfirePolicy, Schedule};
use honeydew_core::store::{
    AttemptReport, BulkFilter, Claimed, FinishedMinute, JobCount, JobFilter, Outcome, Store,
    StoreError, UniqueInsert, Uniqueness,
};
use support::Fixture;

/// Runs each named behaviour once per backend: `sqlite::NAME` and `postgres::NAME`.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Fixture::sqlite()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Fixture::postgres().await).await
                }
            )*
        }
    };
}

contract!(
    inserted_job_reads_back_identically,
    unknown_id_is_not_found,
    claim_moves_pending_to_running_once_and_opens_an_attempt,
    claim_refuses_a_job_that_is_not_yet_due,
    a_second_completion_changes_nothing_and_says_so,
    finish_records_the_attempt_and_the_plugin_that_ran_it,
    retry_goes_back_to_pending_with_a_later_run_at_and_counts,
    cancel_pending_works_once_and_refuses_running_jobs,
    list_filters_by_status_and_command_and_pages_newest_first,
    recovery_after_a_crash_resets_running_and_keeps_delayed_retries,
    listing_by_status_finds_pending_and_finished_jobs_newest_first,
    a_time_past_year_9999_is_refused_and_the_job_stays_readable,
    a_job_that_kills_the_daemon_fails_once_its_retries_are_spent,
    an_outcome_of_an_attempt_that_is_not_the_latest_changes_nothing,
    two_handles_racing_for_one_job_claim_it_once,
    concurrent_submits_share_commits_and_are_all_durable_after_reopening,
    a_failing_submit_does_not_fail_the_others_in_its_commit,
    pruning_deletes_old_finished_jobs_with_their_attempts_and_keeps_the_rest,
    schedules_round_trip_and_their_names_are_unique,
    a_scheduled_instant_submits_one_job_however_often_it_fires,
    payloads_and_results_keep_their_exact_bytes,
    a_bulk_insert_stores_every_job_or_none,
    concurrent_submits_with_one_unique_key_store_one_job,
    a_unique_key_is_held_only_in_the_states_and_window_asked_for,
    a_replacing_submit_gives_a_pending_holder_the_new_payload,
    a_pruned_holder_frees_its_key,
    retry_puts_a_failed_job_back_with_a_fresh_budget,
    bulk_retry_and_cancel_act_on_matching_jobs_in_batches,
    pauses_are_stored_once_listed_and_ended,
    a_paused_schedule_triggers_no_job_until_resumed,
    a_dependent_waits_for_every_dependency_and_a_failure_cancels_its_chain,
    jobs_are_counted_by_command_and_state,
    finished_jobs_are_counted_by_minute_and_final_state,
    a_snooze_puts_the_job_back_later_without_spending_a_retry,
    a_plugin_cancel_ends_the_job_for_good_with_its_reason,
    rate_limit_holds_are_shared_keep_the_later_end_and_expire,
    a_rate_limited_attempt_waits_for_the_reset_without_spending_a_retry,
    a_jobs_trace_context_is_kept_from_its_submit_to_its_claims,
    attempt_output_keeps_its_tail_reads_in_order_and_goes_with_its_job,
    a_jobs_concurrency_key_is_kept_and_running_jobs_are_counted_by_scope,
);

fn job(command: &str, payload: &[u8], priority: i64) -> Job {
    Job::new(command, payload.to_vec(), priority, 3)
}

async fn insert_running(store: &Store, job: &Job) -> Claimed {
    store.insert_job(job.clone()).await.unwrap();
    store.claim(job.id, 1, Utc::now()).await.unwrap().unwrap()
}

fn report() -> AttemptReport {
    AttemptReport {
        finished_at: Utc::now(),
        duration_ms: 12,
        fuel_used: Some(3456),
        plugin: Some(PluginRef {
            name: "echo".into(),
            version: "0.1.0".into(),
            sha256: "ab".repeat(32),
        }),
    }
}

async fn inserted_job_reads_back_identically(fx: Fixture) {
    let store = fx.open().await;
    let job = job("echo.echo", br#"{"x":1}"#, 7);
    store.insert_job(job.clone()).await.unwrap();
    assert_eq!(store.get_job(job.id).await.unwrap(), job);
}

async fn unknown_id_is_not_found(fx: Fixture) {
    let store = fx.open().await;
    let id = honeydew_core::job::JobId::new();
    assert!(matches!(store.get_job(id).await, Err(StoreError::NotFound(found)) if found == id));
}

async fn claim_moves_pending_to_running_once_and_opens_an_attempt(fx: Fixture) {
    let store = fx.open().await;
    let job = job("echo.echo", b"{}", 0);
    store.insert_job(job.clone()).await.unwrap();
    let (_, attempt) = store.get_job_with_attempt(job.id).await.unwrap();
    assert_eq!(attempt, 0, "no attempt before the first claim");
    let claimed = store.claim(job.id, 4, Utc::now()).await.unwrap().unwrap();
    assert_eq!(claimed.attempt, 1);
    let (running, attempt) = store.get_job_with_attempt(job.id).await.unwrap();
    assert_eq!((running.status, attempt), (JobStatus::Running, 1));
    assert_eq!(claimed.job.status, JobStatus::Running);
    assert!(claimed.job.started_at.is_some());
    assert!(store.claim(job.id, 5, Utc::now()).await.unwrap().is_none());
    let attempts = store.attempts(job.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].worker_id, Some(4));
    assert_eq!(attempts[0].outcome, None);
}

async fn claim_refuses_a_job_that_is_not_yet_due(fx: Fixture) {
    let store = fx.open().await;
    let mut job = job("echo.echo", b"{}", 0);
    job.run_at = (Utc::now() + TimeDelta::hours(1)).trunc_subsecs(3);
    store.insert_job(job.clone()).await.unwrap();
    assert!(store.claim(job.id, 1, Utc::now()).await.unwrap().is_none());
}

async fn a_second_completion_changes_nothing_and_says_so(fx: Fixture) {
    let store = fx.open().await;
    let job = job("echo.echo", b"{}", 0);
    let claimed = insert_running(&store, &job).await;
    store
        .finish(
            job.id,
            claimed.attempt,
            Outcome::Completed(b"first".to_vec()),
            report(),
        )
        .await
        .unwrap();
    let err = store
        .finish(
            job.id,
            claimed.attempt,
            Outcome::Completed(b"second".to_vec()),
            report(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::StaleTransition {
                expected: JobStatus::Running,
                actual: JobStatus::Completed,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("is completed, not running"),
        "{err}"
    );
    let stored = store.get_job(job.id).await.unwrap();
    assert_eq!(stored.result.as_deref(), Some(&b"first"[..]));
}

async fn finish_records_the_attempt_and_the_plugin_that_ran_it(fx: Fixture) {
    let store = fx.open().await;
    let job = job("echo.echo", b"{}", 0);
    let claimed = insert_running(&store, &job).await;
    store
        .finish(
            job.id,
            claimed.attempt,
            Outcome::Completed(b"ok".to_vec()),
            report(),
        )
        .await
        .unwrap();
    let stored = store.get_job(job.id).await.unwrap();
    assert_eq!(stored.status, JobStatus::Completed);
    assert_eq!(stored.plugin.unwrap().name, "echo");
    let attempts = store.attempts(job.id).await.unwrap();
    assert_eq!(attempts[0].outcome.as_deref(), Some("completed"));
    assert_eq!(attempts[0].fuel_used, Some(3456));
    assert_eq!(attempts[0].duration_ms, Some(12));
}

async fn retry_goes_back_to_pending_with_a_later_run_at_and_counts(fx: Fixture) {
    let store = fx.open().await;
    let job = job("flaky.fail", b"{}", 0);
    let claimed = insert_running(&store, &job).await;
    let run_at = (Utc::now() + TimeDelta::seconds(30)).trunc_subsecs(3);
    let outcome = Outcome::Retry {
        kind: ErrorKind::PluginError,
        error: "503".into(),
        run_at,
    };
    store
        .finish(job.id, claimed.attempt, outcome, report())
        .await
        .unwrap();
    let stored = store.get_job(job.id).await.unwrap();
    assert_eq!(stored.status, JobStatus::Pending);
    assert_eq!(stored.retry_count, 1);
    assert_eq!(stored.run_at, run_at);
    assert_eq!(stored.error.as_deref(), Some("503"));
    assert_eq!(stored.completed_at, None);
    let attempts = store.attempts(job.id).await.unwrap();
    assert_eq!(attempts[0].outcome.as_deref(), Some("retrying"));
}

async fn cancel_pending_works_once_and_refuses_running_jobs(fx: Fixture) {
    let store = fx.open().await;
    let pending = job("echo.echo", b"{}", 0);
    store.insert_job(pending.clone()).await.unwrap();
    store.cancel_pending(pending.id, Utc::now()).await.unwrap();
    let stored = store.get_job(pending.id).await.unwrap();
    assert_eq!(stored.status, JobStatus::Cancelled);
    assert_eq!(stored.error_kind, Some(ErrorKind::Cancelled));
    assert!(matches!(
        store.cancel_pending(pending.id, Utc::now()).await,
        Err(StoreError::StaleTransition {
            actual: JobStatus::Cancelled,
            ..
        })
    ));
    let running = job("echo.echo", b"{}", 0);
    insert_running(&store, &running).await;
    assert!(matches!(
        store.cancel_pending(running.id, Utc::now()).await,
        Err(StoreError::StaleTransition {
            actual: JobStatus::Running,
            ..
        })
    ));
}

async fn list_filters_by_status_and_command_and_pages_newest_first(fx: Fixture) {
    let store = fx.open().await;
    let mut echoes = Vec::new();
    for _ in 0..5 {
        let job = job("echo.echo", b"{}", 0);
        store.insert_job(job.clone()).await.unwrap();
        echoes.push(job.id);
    }
    let other = job("github.commits", b"{}", 0);
    insert_running(&store, &other).await;

    let page = store
        .list_jobs(JobFilter {
            command: Some("echo.echo".into()),
            limit: 2,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = page.jobs.iter().map(|job| job.id).collect();
    assert_eq!(ids, [echoes[4], echoes[3]]);
    let rest = store
        .list_jobs(JobFilter {
            command: Some("echo.echo".into()),
            limit: 10,
            cursor: page.next_cursor,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = rest.jobs.iter().map(|job| job.id).collect();
    assert_eq!(ids, [echoes[2], echoes[1], echoes[0]]);
    assert_eq!(rest.next_cursor, None);

    let running = store
        .list_jobs(JobFilter {
            status: Some(JobStatus::Running),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(running.jobs.len(), 1);
    assert_eq!(running.jobs[0].id, other.id);
}

async fn recovery_after_a_crash_resets_running_and_keeps_delayed_retries(fx: Fixture) {
    let store = fx.open().await;
    let interrupted = job("echo.echo", b"{}", 1);
    let claimed = insert_running(&store, &interrupted).await;
    let waiting = job("echo.echo", b"{}", 9);
    store.insert_job(waiting.clone()).await.unwrap();
    let retrying = job("flaky.fail", b"{}", 5);
    let retry_claim = insert_running(&store, &retrying).await;
    let run_at = (Utc::now() + TimeDelta::minutes(5)).trunc_subsecs(3);
    store
        .finish(
            retrying.id,
            retry_claim.attempt,
            Outcome::Retry {
                kind: ErrorKind::PluginError,
                error: "503".into(),
                run_at,
            },
            report(),
        )
        .await
        .unwrap();
    let finished = job("echo.echo", b"{}", 100);
    let done = insert_running(&store, &finished).await;
    store
        .finish(
            finished.id,
            done.attempt,
            Outcome::Completed(vec![]),
            report(),
        )
        .await
        .unwrap();
    // The process dies: no shutdown, the handle is simply gone.
    drop(store);

    let store = fx.open().await;
    let recovered = store.recover(Utc::now()).await.unwrap();
    assert_eq!(recovered.reset_running, 1);
    let pending = store.pending_jobs().await.unwrap();
    let order: Vec<_> = pending.iter().map(|job| job.id).collect();
    assert_eq!(order, [waiting.id, retrying.id, interrupted.id]);
    assert_eq!(pending[1].run_at, run_at);
    assert_eq!(
        store.get_job(interrupted.id).await.unwrap().status,
        JobStatus::Pending
    );
    let attempts = store.attempts(claimed.job.id).await.unwrap();
    assert_eq!(attempts[0].outcome.as_deref(), Some("interrupted"));
    assert_eq!(attempts[0].error_kind, Some(ErrorKind::Interrupted));
    assert_eq!(store.get_job(interrupted.id).await.unwrap().retry_count, 1);
    // The next run of the interrupted job is attempt 2.
    let again = store
        .claim(interrupted.id, 1, Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.attempt, 2);
}

async fn listing_by_status_finds_pending_and_finished_jobs_newest_first(fx: Fixture) {
    let store = fx.open().await;
    let mut pending = Vec::new();
    for n in 0..5 {
        let job = job("echo.echo", b"{}", n % 3);
        store.insert_job(job.clone()).await.unwrap();
        pending.push(job.id);
    }
    let done = job("echo.echo", b"{}", 9);
    let claimed = insert_running(&store, &done).await;
    store
        .finish(
            done.id,
            claimed.attempt,
            Outcome::Completed(b"{}".to_vec()),
            report(),
        )
        .await
        .unwrap();
    let list = |status| {
        let store = store.clone();
        async move {
            store
                .list_jobs(JobFilter {
                    status: Some(status),
                    ..JobFilter::default()
                })
                .await
                .unwrap()
                .jobs
                .into_iter()
                .map(|job| job.id)
                .collect::<Vec<_>>()
        }
    };
    pending.reverse();
    assert_eq!(list(JobStatus::Pending).await, pending);
    assert_eq!(list(JobStatus::Completed).await, vec![done.id]);
    assert!(list(JobStatus::Failed).await.is_empty());
}

/// Regression (issue 9, defect 1): a retry at year 33713 used to be written as
/// `+33713-...`, which no read could parse back, so status, watch and every listing that
/// met the row failed, and the next start exited in recovery.
async fn a_time_past_year_9999_is_refused_and_the_job_stays_readable(fx: Fixture) {
    let store = fx.open().await;
    let job = job("flaky.retriable_after", b"{}", 0);
    let claimed = insert_running(&store, &job).await;
    let far = Utc::now() + TimeDelta::days(365 * 31_700);
    let outcome = Outcome::Retry {
        kind: ErrorKind::PluginError,
        error: "429".into(),
        run_at: far,
    };
    let refused = store
        .finish(job.id, claimed.attempt, outcome, report())
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("outside the years 0000-9999"),
        "{refused}"
    );
    assert_eq!(
        store.get_job(job.id).await.unwrap().status,
        JobStatus::Running
    );
    let page = store.list_jobs(JobFilter::default()).await.unwrap();
    assert_eq!(page.jobs.len(), 1);
    drop(store);
    let reopened = fx.open().await;
    reopened.recover(Utc::now()).await.unwrap();
    assert_eq!(reopened.pending_jobs().await.unwrap().len(), 1);
}

/// Regression (issue 9, defect 12): recovery put `running` back to `pending` without
/// counting the interrupted attempt, so a job that killed the daemon ran again at every
/// start, for ever.
async fn a_job_that_kills_the_daemon_fails_once_its_retries_are_spent(fx: Fixture) {
    let poison = Job::new("crash.daemon", b"{}".to_vec(), 0, 1);
    {
        let store = fx.open().await;
        insert_running(&store, &poison).await;
    }
    // First start after the crash: one retry was allowed, so it runs again.
    {
        let store = fx.open().await;
        let recovered = store.recover(Utc::now()).await.unwrap();
        assert_eq!(
            (recovered.reset_running, recovered.failed_interrupted),
            (1, 0)
        );
        let job = store.get_job(poison.id).await.unwrap();
        assert_eq!((job.status, job.retry_count), (JobStatus::Pending, 1));
        assert_eq!(job.error_kind, Some(ErrorKind::Interrupted));
        store
            .claim(poison.id, 1, Utc::now())
            .await
            .unwrap()
            .unwrap();
    }
    // It killed the daemon again: no retry is left, so it fails for good.
    let store = fx.open().await;
    let recovered = store.recover(Utc::now()).await.unwrap();
    assert_eq!(
        (recovered.reset_running, recovered.failed_interrupted),
        (0, 1)
    );
    assert!(store.pending_jobs().await.unwrap().is_empty());
    let job = store.get_job(poison.id).await.unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error_kind, Some(ErrorKind::Interrupted));
    assert_eq!(
        job.error.as_deref(),
        Some("the daemon died during the attempt (gave up after 1 retries)")
    );
    assert!(job.completed_at.is_some());
    let attempts = store.attempts(poison.id).await.unwrap();
    let outcomes: Vec<_> = attempts.iter().map(|a| a.outcome.as_deref()).collect();
    assert_eq!(outcomes, [Some("interrupted"), Some("interrupted")]);
}

/// Fencing: once a job has moved on to a later attempt (a rescuer claimed it again, say),
/// the outcome of the earlier one changes nothing.
async fn an_outcome_of_an_attempt_that_is_not_the_latest_changes_nothing(fx: Fixture) {
    let store = fx.open().await;
    let job = job("echo.echo", b"{}", 0);
    let first = insert_running(&store, &job).await;
    drop(store);
    // The daemon died; recovery counted the lost attempt and the job ran again.
    let store = fx.open().await;
    store.recover(Utc::now()).await.unwrap();
    let second = store.claim(job.id, 2, Utc::now()).await.unwrap().unwrap();
    assert_eq!((first.attempt, second.attempt), (1, 2));
    let late = store
        .finish(
            job.id,
            first.attempt,
            Outcome::Completed(b"late".to_vec()),
            report(),
        )
        .await;
    assert!(
        matches!(late, Err(StoreError::StaleTransition { .. })),
        "{late:?}"
    );
    let stored = store.get_job(job.id).await.unwrap();
    assert_eq!((stored.status, stored.result), (JobStatus::Running, None));
    store
        .finish(
            job.id,
            second.attempt,
            Outcome::Completed(b"ok".to_vec()),
            report(),
        )
        .await
        .unwrap();
    let stored = store.get_job(job.id).await.unwrap();
    assert_eq!(stored.result.as_deref(), Some(&b"ok"[..]));
}

/// Two handles on one database (two daemons) claiming the same job: exactly one wins.
async fn two_handles_racing_for_one_job_claim_it_once(fx: Fixture) {
    let (one, two) = (fx.open().await, fx.open().await);
    let jobs: Vec<Job> = (0..50).map(|n| job("echo.echo", b"{}", n)).collect();
    for job in &jobs {
        one.insert_job(job.clone()).await.unwrap();
    }
    let race = |store: Store, jobs: Vec<Job>| {
        tokio::spawn(async move {
            let mut won = Vec::new();
            for job in jobs {
                if store.claim(job.id, 1, Utc::now()).await.unwrap().is_some() {
                    won.push(job.id);
                }
            }
            won
        })
    };
    let (a, b) = (race(one, jobs.clone()), race(two, jobs.clone()));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(
        a.len() + b.len(),
        jobs.len(),
        "each job claimed exactly once"
    );
    let a: HashSet<_> = a.into_iter().collect();
    assert!(b.iter().all(|id| !a.contains(id)));
}

/// Group commit: concurrent submits share commits, and every acknowledged one is there
/// after the store is opened again.
async fn concurrent_submits_share_commits_and_are_all_durable_after_reopening(fx: Fixture) {
    let store = fx.open().await;
    let before = store.commit_stats();
    let tasks: Vec<_> = (0..64)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..20 {
                    let job = Job::new("echo.echo", format!("{task}-{n}").into_bytes(), n, 3);
                    store.insert_job(job.clone()).await.unwrap();
                    ids.push(job.id);
                }
                ids
            })
        })
        .collect();
    let mut acknowledged = HashSet::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    let after = store.commit_stats();
    assert_eq!(after.writes - before.writes, 64 * 20);
    assert!(
        after.commits - before.commits < 64 * 20,
        "submits waiting together share a commit: {before:?} -> {after:?}"
    );
    drop(store);
    let reopened = fx.open().await;
    reopened.recover(Utc::now()).await.unwrap();
    let pending = reopened.pending_jobs().await.unwrap();
    let stored: HashSet<_> = pending.iter().map(|job| job.id).collect();
    assert_eq!(stored, acknowledged);
}

/// One submit that cannot be stored (a duplicate id) fails alone; the submits that
/// shared its commit are stored.
async fn a_failing_submit_does_not_fail_the_others_in_its_commit(fx: Fixture) {
    let store = fx.open().await;
    let jobs: Vec<Job> = (0..32).map(|n| job("echo.echo", b"{}", n)).collect();
    let duplicate = jobs[7].clone();
    let mut submits = Vec::new();
    for job in jobs.iter().cloned().chain([duplicate]) {
        let store = store.clone();
        submits.push(tokio::spawn(async move { store.insert_job(job).await }));
    }
    let mut failed = 0;
    for submit in submits {
        match submit.await.unwrap() {
            Ok(()) => {}
            Err(StoreError::Database(_)) => failed += 1,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(failed, 1, "only the duplicate fails");
    for job in &jobs {
        assert!(store.get_job(job.id).await.is_ok());
    }
}

/// Retention deletes finished jobs past their age with their attempts, batch by batch,
/// and leaves pending, running and recent ones alone.
async fn pruning_deletes_old_finished_jobs_with_their_attempts_and_keeps_the_rest(fx: Fixture) {
    let store = fx.open().await;
    let mut old = Vec::new();
    for _ in 0..5 {
        // Created and finished ten days ago (a job finishes after it was created, and
        // its id, a UUID v7, carries its creation time).
        let ten_days_ago = Utc::now() - TimeDelta::days(10);
        let mut job = Job::new_at("echo.echo", b"{}".to_vec(), 0, 3, ten_days_ago);
        let seconds = u64::try_from(ten_days_ago.timestamp()).unwrap();
        job.id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, seconds, 0)).into();
        let claimed = insert_running(&store, &job).await;
        let report = AttemptReport {
            finished_at: Utc::now() - TimeDelta::days(10),
            ..report()
        };
        store
            .finish(job.id, claimed.attempt, Outcome::Completed(vec![]), report)
            .await
            .unwrap();
        old.push(job.id);
    }
    let recent = job("echo.echo", b"{}", 0);
    let claimed = insert_running(&store, &recent).await;
    store
        .finish(
            recent.id,
            claimed.attempt,
            Outcome::Completed(vec![]),
            report(),
        )
        .await
        .unwrap();
    let pending = job("echo.echo", b"{}", 0);
    store.insert_job(pending.clone()).await.unwrap();
    let running = job("echo.echo", b"{}", 0);
    insert_running(&store, &running).await;

    let cutoff = Utc::now() - TimeDelta::days(1);
    assert_eq!(
        store
            .prune_finished(JobStatus::Failed, cutoff, 10)
            .await
            .unwrap(),
        0,
        "another state is left alone"
    );
    assert_eq!(
        store
            .prune_finished(JobStatus::Pending, cutoff, 10)
            .await
            .unwrap(),
        0,
        "an unfinished state is never pruned"
    );
    assert_eq!(
        store
            .prune_finished(JobStatus::Completed, cutoff, 3)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .prune_finished(JobStatus::Completed, cutoff, 3)
            .await
            .unwrap(),
        2
    );
    for id in old {
        assert!(matches!(
            store.get_job(id).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(store.attempts(id).await.unwrap().is_empty());
    }
    for id in [recent.id, pending.id, running.id] {
        assert!(store.get_job(id).await.is_ok());
    }
}

fn schedule(name: &str) -> Schedule {
    Schedule {
        id: uuid::Uuid::now_v7(),
        name: name.into(),
        cron_expr: "*/5 * * * *".into(),
        timezone: "Europe/Paris".into(),
        command: "echo.echo".into(),
        payload: br#"{"from":"cron"}"#.to_vec(),
        priority: 3,
        max_retries: Some(2),
        misfire: MisfirePolicy::RunOnce,
        enabled: true,
        created_at: Utc::now().trunc_subsecs(3),
        last_run_at: None,
        next_run_at: Some((Utc::now() + TimeDelta::minutes(5)).trunc_subsecs(3)),
        last_job_id: None,
        last_scheduled_for: None,
        last_error: None,
        last_error_at: None,
    }
}

async fn schedules_round_trip_and_their_names_are_unique(fx: Fixture) {
    let store = fx.open().await;
    let nightly = schedule("nightly");
    store.insert_schedule(nightly.clone()).await.unwrap();
    assert_eq!(store.get_schedule(nightly.id).await.unwrap(), nightly);
    let again = store.insert_schedule(schedule("nightly")).await;
    assert!(
        matches!(&again, Err(StoreError::DuplicateSchedule(name)) if name == "nightly"),
        "{again:?}"
    );
    store.insert_schedule(schedule("hourly")).await.unwrap();
    let names: Vec<_> = store
        .list_schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|schedule| schedule.name)
        .collect();
    assert_eq!(names, ["hourly", "nightly"]);
    let at = Utc::now().trunc_subsecs(3);
    let next = Some(at + TimeDelta::minutes(5));
    store
        .record_schedule_error(nightly.id, "no plugin".into(), at, next)
        .await
        .unwrap();
    let stored = store.get_schedule(nightly.id).await.unwrap();
    assert_eq!(
        (
            stored.last_error.as_deref(),
            stored.last_error_at,
            stored.next_run_at
        ),
        (Some("no plugin"), Some(at), next)
    );
    store.set_schedule_next_run(nightly.id, None).await.unwrap();
    assert_eq!(
        store.get_schedule(nightly.id).await.unwrap().next_run_at,
        None
    );
    assert_eq!(
        store.delete_schedule("nightly".into()).await.unwrap().id,
        nightly.id
    );
    let hourly = store.list_schedules().await.unwrap().remove(0);
    assert_eq!(
        store
            .delete_schedule(hourly.id.to_string())
            .await
            .unwrap()
            .name,
        "hourly",
        "a schedule is found by id as well as by name"
    );
    assert!(matches!(
        store.delete_schedule("nightly".into()).await,
        Err(StoreError::ScheduleNotFound(_))
    ));
}

/// Each instant triggers at most once, however many times (or daemons) fire it.
async fn a_scheduled_instant_submits_one_job_however_often_it_fires(fx: Fixture) {
    let (one, two) = (fx.open().await, fx.open().await);
    let nightly = schedule("nightly");
    one.insert_schedule(nightly.clone()).await.unwrap();
    let instant = (Utc::now() + TimeDelta::minutes(1)).trunc_subsecs(0);
    let fire = |store: Store| {
        let job = Job::new("echo.echo", nightly.payload.clone(), 3, 2);
        let id = nightly.id;
        tokio::spawn(async move {
            let triggered = store
                .trigger_schedule(
                    id,
                    instant,
                    Some(instant + TimeDelta::minutes(5)),
                    job.clone(),
                )
                .await
                .unwrap();
            (triggered, job.id)
        })
    };
    let racers: Vec<_> = (0..8)
        .map(|n| fire(if n % 2 == 0 { one.clone() } else { two.clone() }))
        .collect();
    let mut submitted = Vec::new();
    for racer in racers {
        let (triggered, id) = racer.await.unwrap();
        if triggered {
            submitted.push(id);
        } else {
            assert!(matches!(
                one.get_job(id).await,
                Err(StoreError::NotFound(_))
            ));
        }
    }
    assert_eq!(submitted.len(), 1, "one job for the instant");
    let stored = one.get_schedule(nightly.id).await.unwrap();
    assert_eq!(stored.last_scheduled_for, Some(instant));
    assert_eq!(stored.last_job_id, Some(submitted[0]));
    // An earlier instant fired late changes nothing either.
    let late = Job::new("echo.echo", vec![], 0, 0);
    let earlier = instant - TimeDelta::minutes(5);
    assert!(
        !one.trigger_schedule(nightly.id, earlier, None, late)
            .await
            .unwrap()
    );
}

/// A payload and a result come back byte for byte, JSON or not.
async fn payloads_and_results_keep_their_exact_bytes(fx: Fixture) {
    let store = fx.open().await;
    let binary = vec![0u8, 159, 146, 150, 255, b'{'];
    let job = job("echo.echo", &binary, 0);
    let claimed = insert_running(&store, &job).await;
    let result = "{\"name\":\"caf\u{e9}\"}\n".as_bytes().to_vec();
    store
        .finish(
            job.id,
            claimed.attempt,
            Outcome::Completed(result.clone()),
            report(),
        )
        .await
        .unwrap();
    let stored = store.get_job(job.id).await.unwrap();
    assert_eq!(stored.payload, binary);
    assert_eq!(stored.result, Some(result));
    let summary = store
        .list_jobs(JobFilter::default())
        .await
        .unwrap()
        .jobs
        .remove(0);
    assert!(
        summary.payload.is_empty() && summary.result.is_none(),
        "summaries skip bodies"
    );
    let full = store
        .list_jobs(JobFilter {
            with_bodies: true,
            ..JobFilter::default()
        })
        .await
        .unwrap()
        .jobs
        .remove(0);
    assert_eq!(full.payload, binary);
}

/// The default uniqueness of `key`: held while pending or running, for ever.
fn unique(key: &str) -> Uniqueness {
    Uniqueness {
        key: key.into(),
        within: None,
        states: Uniqueness::DEFAULT_STATES.to_vec(),
        replace: false,
    }
}

async fn a_bulk_insert_stores_every_job_or_none(fx: Fixture) {
    let store = fx.open().await;
    let batch: Vec<Job> = (0..2500).map(|n| job("echo.echo", b"{}", n % 5)).collect();
    store.insert_jobs(batch.clone()).await.unwrap();
    for job in &batch {
        assert_eq!(store.get_job(job.id).await.unwrap().id, job.id);
    }
    // A batch whose last job cannot be stored (its id is taken) stores none of them.
    let mut spoiled: Vec<Job> = (0..10).map(|_| job("echo.echo", b"{}", 0)).collect();
    spoiled.push(batch[7].clone());
    assert!(store.insert_jobs(spoiled.clone()).await.is_err());
    for job in &spoiled[..10] {
        assert!(
            matches!(store.get_job(job.id).await, Err(StoreError::NotFound(_))),
            "a failed batch left {} behind",
            job.id
        );
    }
}

async fn concurrent_submits_with_one_unique_key_store_one_job(fx: Fixture) {
    let store = fx.open().await;
    let submits = (0..24).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let job = job("github.commits", b"{}", 0);
            let id = job.id;
            (
                id,
                store
                    .insert_unique(job, unique("repo:octo/hello"))
                    .await
                    .unwrap(),
            )
        })
    });
    let answers: Vec<_> = futures_util::future::join_all(submits)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let inserted: Vec<_> = answers
        .iter()
        .filter(|(_, answer)| *answer == UniqueInsert::Inserted)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(inserted.len(), 1, "one submit stored its job: {answers:?}");
    let holder = inserted[0];
    for (id, answer) in &answers {
        if *id != holder {
            assert_eq!(*answer, UniqueInsert::Held(holder), "the others name it");
            assert!(matches!(
                store.get_job(*id).await,
                Err(StoreError::NotFound(_))
            ));
        }
    }
    // Another key is another job.
    let other = job("github.commits", b"{}", 0);
    assert_eq!(
        store
            .insert_unique(other, unique("repo:octo/world"))
            .await
            .unwrap(),
        UniqueInsert::Inserted
    );
}

async fn a_unique_key_is_held_only_in_the_states_and_window_asked_for(fx: Fixture) {
    let store = fx.open().await;
    let first = job("echo.echo", b"{}", 0);
    assert_eq!(
        store
            .insert_unique(first.clone(), unique("k"))
            .await
            .unwrap(),
        UniqueInsert::Inserted
    );
    // Running still holds it by default.
    let claimed = store.claim(first.id, 1, Utc::now()).await.unwrap().unwrap();
    assert_eq!(
        store
            .insert_unique(job("echo.echo", b"{}", 0), unique("k"))
            .await
            .unwrap(),
        UniqueInsert::Held(first.id)
    );
    store
        .finish(
            first.id,
            claimed.attempt,
            Outcome::Completed(vec![]),
            report(),
        )
        .await
        .unwrap();
    // A submit that counts completed jobs within an hour is still held...
    let completed_too = Uniqueness {
        states: vec![JobStatus::Pending, JobStatus::Running, JobStatus::Completed],
        within: Some(TimeDelta::hours(1)),
        ..unique("k")
    };
    assert_eq!(
        store
            .insert_unique(job("echo.echo", b"{}", 0), completed_too.clone())
            .await
            .unwrap(),
        UniqueInsert::Held(first.id)
    );
    // ... but not one whose window is shorter than the holder's age.
    let later = Job::new_at(
        "echo.echo",
        b"{}".to_vec(),
        0,
        3,
        Utc::now() + TimeDelta::hours(2),
    );
    assert_eq!(
        store
            .insert_unique(later.clone(), completed_too)
            .await
            .unwrap(),
        UniqueInsert::Inserted
    );
    // The default (pending, running) is not held by a completed job either; the key
    // now belongs to `later`, which is pending.
    assert_eq!(
        store
            .insert_unique(job("echo.echo", b"{}", 0), unique("k"))
            .await
            .unwrap(),
        UniqueInsert::Held(later.id)
    );
}

async fn a_replacing_submit_gives_a_pending_holder_the_new_payload(fx: Fixture) {
    let store = fx.open().await;
    let first = job("echo.echo", b"{\"n\": 1}", 0);
    store
        .insert_unique(first.clone(), unique("debounce"))
        .await
        .unwrap();
    let replace = Uniqueness {
        replace: true,
        ..unique("debounce")
    };
    let second = job("echo.echo", b"{\"n\": 2}", 0);
    assert_eq!(
        store
            .insert_unique(second.clone(), replace.clone())
            .await
            .unwrap(),
        UniqueInsert::Replaced(first.id)
    );
    assert_eq!(
        store.get_job(first.id).await.unwrap().payload,
        b"{\"n\": 2}"
    );
    assert!(matches!(
        store.get_job(second.id).await,
        Err(StoreError::NotFound(_))
    ));
    // A running holder keeps what it runs with: the submit is held.
    store.claim(first.id, 1, Utc::now()).await.unwrap().unwrap();
    let third = job("echo.echo", b"{\"n\": 3}", 0);
    assert_eq!(
        store.insert_unique(third, replace).await.unwrap(),
        UniqueInsert::Held(first.id)
    );
    assert_eq!(
        store.get_job(first.id).await.unwrap().payload,
        b"{\"n\": 2}"
    );
}

async fn a_pruned_holder_frees_its_key(fx: Fixture) {
    let store = fx.open().await;
    let ten_days_ago = Utc::now() - TimeDelta::days(10);
    let mut old = Job::new_at("echo.echo", b"{}".to_vec(), 0, 3, ten_days_ago);
    let seconds = u64::try_from(ten_days_ago.timestamp()).unwrap();
    old.id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, seconds, 0)).into();
    let ever = Uniqueness {
        states: JobStatus::ALL.to_vec(),
        ..unique("once")
    };
    store
        .insert_unique(old.clone(), ever.clone())
        .await
        .unwrap();
    let claimed = store.claim(old.id, 1, Utc::now()).await.unwrap().unwrap();
    let report = AttemptReport {
        finished_at: ten_days_ago,
        ..report()
    };
    store
        .finish(old.id, claimed.attempt, Outcome::Completed(vec![]), report)
        .await
        .unwrap();
    assert_eq!(
        store
            .insert_unique(job("echo.echo", b"{}", 0), ever.clone())
            .await
            .unwrap(),
        UniqueInsert::Held(old.id),
        "held in every state, for ever"
    );
    let cutoff = Utc::now() - TimeDelta::days(1);
    assert_eq!(
        store
            .prune_finished(JobStatus::Completed, cutoff, 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .insert_unique(job("echo.echo", b"{}", 0), ever)
            .await
            .unwrap(),
        UniqueInsert::Inserted,
        "the key went with its job"
    );
}

async fn fail(store: &Store, job: &Job) {
    let claimed = insert_running(store, job).await;
    let failed = Outcome::Failed {
        kind: ErrorKind::PluginError,
        error: "boom".into(),
    };
    store
        .finish(job.id, claimed.attempt, failed, report())
        .await
        .unwrap();
}

async fn retry_puts_a_failed_job_back_with_a_fresh_budget(fx: Fixture) {
    let store = fx.open().await;
    let failed = job("echo.echo", b"{}", 3);
    fail(&store, &failed).await;
    let now = Utc::now().trunc_subsecs(3);
    let queued = store.retry_job(failed.id, now).await.unwrap();
    assert_eq!(
        (queued.id, queued.priority, queued.run_at),
        (failed.id, 3, now)
    );
    let back = store.get_job(failed.id).await.unwrap();
    assert_eq!(back.status, JobStatus::Pending);
    assert_eq!(
        (back.retry_count, back.error.clone(), back.completed_at),
        (0, None, None)
    );
    // It runs again as its second attempt; the first is kept.
    let again = store
        .claim(failed.id, 1, Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.attempt, 2);
    assert_eq!(store.attempts(failed.id).await.unwrap().len(), 2);
    // A running (or pending, or completed) job is not retried.
    assert!(matches!(
        store.retry_job(failed.id, Utc::now()).await,
        Err(StoreError::StaleTransition { .. })
    ));
    assert!(matches!(
        store.retry_job(JobId::new(), Utc::now()).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn bulk_retry_and_cancel_act_on_matching_jobs_in_batches(fx: Fixture) {
    let store = fx.open().await;
    let mut failed = Vec::new();
    for n in 0..7 {
        let command = if n < 5 { "github.commits" } else { "echo.echo" };
        let job = job(command, b"{}", 0);
        fail(&store, &job).await;
        failed.push(job.id);
    }
    let filter = BulkFilter {
        status: JobStatus::Failed,
        command: Some("github.commits".into()),
        since: None,
        after: None,
    };
    // Two batches of three, then the rest, each after the previous one's last id.
    let first = store
        .retry_matching(filter.clone(), Utc::now(), 3)
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    let second = BulkFilter {
        after: first.last().map(|job| job.id),
        ..filter.clone()
    };
    let rest = store.retry_matching(second, Utc::now(), 3).await.unwrap();
    assert_eq!(rest.len(), 2);
    let retried: HashSet<_> = first.iter().chain(&rest).map(|job| job.id).collect();
    assert_eq!(retried, failed[..5].iter().copied().collect());
    for id in &failed[5..] {
        assert_eq!(store.get_job(*id).await.unwrap().status, JobStatus::Failed);
    }
    // A `since` later than every job matches none.
    let later = BulkFilter {
        status: JobStatus::Failed,
        command: None,
        since: Some(Utc::now() + TimeDelta::hours(1)),
        after: None,
    };
    assert!(
        store
            .retry_matching(later, Utc::now(), 100)
            .await
            .unwrap()
            .is_empty()
    );

    // The five are pending again: cancel them in bulk, and nothing else.
    let pending = BulkFilter {
        status: JobStatus::Pending,
        command: Some("github.commits".into()),
        since: None,
        after: None,
    };
    let other = job("echo.echo", b"{}", 0);
    store.insert_job(other.clone()).await.unwrap();
    let cancelled = store
        .cancel_matching(pending, Utc::now(), 100)
        .await
        .unwrap();
    assert_eq!(cancelled.len(), 5);
    for id in &cancelled {
        assert_eq!(
            store.get_job(*id).await.unwrap().status,
            JobStatus::Cancelled
        );
    }
    assert_eq!(
        store.get_job(other.id).await.unwrap().status,
        JobStatus::Pending
    );
}

async fn pauses_are_stored_once_listed_and_ended(fx: Fixture) {
    let (one, two) = (fx.open().await, fx.open().await);
    let at = Utc::now().trunc_subsecs(3);
    assert!(one.pause("github".into(), at).await.unwrap());
    assert!(
        !two.pause("github".into(), at + TimeDelta::seconds(5))
            .await
            .unwrap(),
        "already paused"
    );
    assert!(one.pause("echo.echo".into(), at).await.unwrap());
    let listed = two.pauses().await.unwrap();
    let listed: Vec<(&str, _)> = listed
        .iter()
        .map(|pause| (pause.target.as_str(), pause.paused_at))
        .collect();
    assert_eq!(
        listed,
        [("echo.echo", at), ("github", at)],
        "by target, the first pause's time kept"
    );
    assert!(two.resume("github".into()).await.unwrap());
    assert!(!one.resume("github".into()).await.unwrap(), "not paused");
    let left: Vec<String> = one
        .pauses()
        .await
        .unwrap()
        .into_iter()
        .map(|pause| pause.target)
        .collect();
    assert_eq!(left, ["echo.echo"]);
}

async fn a_paused_schedule_triggers_no_job_until_resumed(fx: Fixture) {
    let store = fx.open().await;
    let nightly = schedule("nightly");
    store.insert_schedule(nightly.clone()).await.unwrap();
    let paused = store
        .set_schedule_enabled("nightly".into(), false)
        .await
        .unwrap();
    assert!(!paused.enabled);
    let instant = (Utc::now() + TimeDelta::minutes(1)).trunc_subsecs(0);
    let job = Job::new("echo.echo", vec![], 0, 0);
    assert!(
        !store
            .trigger_schedule(nightly.id, instant, None, job.clone())
            .await
            .unwrap(),
        "a paused schedule's instant submits nothing"
    );
    assert!(matches!(
        store.get_job(job.id).await,
        Err(StoreError::NotFound(_))
    ));
    let resumed = store
        .set_schedule_enabled(nightly.id.to_string(), true)
        .await
        .unwrap();
    assert!(resumed.enabled);
    assert!(
        store
            .trigger_schedule(nightly.id, instant, None, job.clone())
            .await
            .unwrap()
    );
    assert_eq!(store.get_job(job.id).await.unwrap().id, job.id);
    let unknown = store.set_schedule_enabled("nope".into(), false).await;
    assert!(
        matches!(&unknown, Err(StoreError::ScheduleNotFound(key)) if key == "nope"),
        "{unknown:?}"
    );
}

async fn complete(store: &Store, claimed: &Claimed) -> honeydew_core::store::Settled {
    let report = AttemptReport {
        finished_at: Utc::now(),
        ..AttemptReport::default()
    };
    store
        .finish(
            claimed.job.id,
            claimed.attempt,
            Outcome::Completed(vec![]),
            report,
        )
        .await
        .unwrap()
}

async fn a_dependent_waits_for_every_dependency_and_a_failure_cancels_its_chain(fx: Fixture) {
    use honeydew_core::store::AfterInsert;
    let store = fx.open().await;
    let (first, second) = (job("echo.echo", b"", 0), job("echo.echo", b"", 0));
    let first_run = insert_running(&store, &first).await;
    store.insert_job(second.clone()).await.unwrap();
    let dependent = job("echo.echo", b"", 9);
    assert_eq!(
        store
            .insert_after(dependent.clone(), vec![first.id, second.id])
            .await
            .unwrap(),
        AfterInsert::Waiting(2)
    );
    // Waiting: not claimable, whatever its priority.
    assert!(
        store
            .claim(dependent.id, 1, Utc::now())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.dependencies(dependent.id).await.unwrap(),
        [
            (first.id, JobStatus::Running),
            (second.id, JobStatus::Pending)
        ]
    );
    assert_eq!(complete(&store, &first_run).await, Default::default());
    let second_run = store
        .claim(second.id, 1, Utc::now())
        .await
        .unwrap()
        .unwrap();
    let settled = complete(&store, &second_run).await;
    assert_eq!(
        settled
            .released
            .iter()
            .map(|job| job.id)
            .collect::<Vec<_>>(),
        [dependent.id],
        "released by its last dependency"
    );
    assert!(
        store
            .claim(dependent.id, 1, Utc::now())
            .await
            .unwrap()
            .is_some()
    );

    // A chain a -> b -> c: a fails, b and c are cancelled.
    let a = job("echo.echo", b"", 0);
    let a_run = insert_running(&store, &a).await;
    let b = job("echo.echo", b"", 0);
    let c = job("echo.echo", b"", 0);
    store.insert_after(b.clone(), vec![a.id]).await.unwrap();
    store.insert_after(c.clone(), vec![b.id]).await.unwrap();
    let report = AttemptReport {
        finished_at: Utc::now(),
        ..AttemptReport::default()
    };
    let failure = Outcome::Failed {
        kind: ErrorKind::PluginError,
        error: "boom".into(),
    };
    let settled = store
        .finish(a.id, a_run.attempt, failure, report)
        .await
        .unwrap();
    let mut cancelled = settled.cancelled.clone();
    cancelled.sort();
    let mut expected = vec![b.id, c.id];
    expected.sort();
    assert_eq!(cancelled, expected);
    for id in [b.id, c.id] {
        let stored = store.get_job(id).await.unwrap();
        assert_eq!(stored.status, JobStatus::Cancelled);
        assert_eq!(stored.error_kind, Some(ErrorKind::DependencyFailed));
    }
    // A dependent of a job already failed is cancelled at once; an unknown one refused.
    let late = job("echo.echo", b"", 0);
    assert_eq!(
        store.insert_after(late.clone(), vec![a.id]).await.unwrap(),
        AfterInsert::Cancelled(a.id)
    );
    let missing = JobId::new();
    assert!(matches!(
        store.insert_after(job("echo.echo", b"", 0), vec![missing]).await,
        Err(StoreError::NotFound(id)) if id == missing
    ));
    // A pending dependency cancelled by hand: the settling sweep cancels its dependent.
    let d = job("echo.echo", b"", 0);
    store.insert_job(d.clone()).await.unwrap();
    let e = job("echo.echo", b"", 0);
    store.insert_after(e.clone(), vec![d.id]).await.unwrap();
    store.cancel_pending(d.id, Utc::now()).await.unwrap();
    let settled = store.settle_dependents(Utc::now()).await.unwrap();
    assert_eq!(settled.cancelled, [e.id]);
    assert_eq!(
        store.settle_dependents(Utc::now()).await.unwrap(),
        Default::default()
    );
}

async fn jobs_are_counted_by_command_and_state(fx: Fixture) {
    let store = fx.open().await;
    assert_eq!(
        store.count_jobs().await.unwrap(),
        [],
        "an empty store counts nothing"
    );
    for _ in 0..3 {
        store.insert_job(job("echo.echo", b"{}", 0)).await.unwrap();
    }
    let running = job("echo.echo", b"{}", 0);
    insert_running(&store, &running).await;
    let completed = job("echo.echo", b"{}", 0);
    let claimed = insert_running(&store, &completed).await;
    store
        .finish(
            completed.id,
            claimed.attempt,
            Outcome::Completed(b"{}".to_vec()),
            report(),
        )
        .await
        .unwrap();
    fail(&store, &job("permanent.fail", b"{}", 0)).await;
    let cancelled = job("permanent.fail", b"{}", 0);
    store.insert_job(cancelled.clone()).await.unwrap();
    store
        .cancel_pending(cancelled.id, Utc::now())
        .await
        .unwrap();

    let count = |command: &str, status, count| JobCount {
        command: command.into(),
        status,
        count,
    };
    assert_eq!(
        store.count_jobs().await.unwrap(),
        [
            count("echo.echo", JobStatus::Pending, 3),
            count("echo.echo", JobStatus::Running, 1),
            count("echo.echo", JobStatus::Completed, 1),
            count("permanent.fail", JobStatus::Failed, 1),
            count("permanent.fail", JobStatus::Cancelled, 1),
        ]
    );
}

async fn finished_jobs_are_counted_by_minute_and_final_state(fx: Fixture) {
    let store = fx.open().await;
    let minute =
        |at: chrono::DateTime<Utc>| at.trunc_subsecs(0) - TimeDelta::seconds(at.timestamp() % 60);
    let now = Utc::now();
    let this_minute = minute(now);
    let earlier = this_minute - TimeDelta::minutes(7);
    let long_ago = this_minute - TimeDelta::hours(3);
    // Each job ends at a chosen instant: its report's `finished_at`.
    let end = |store: &Store, outcome: Outcome, at: chrono::DateTime<Utc>| {
        let store = store.clone();
        async move {
            let job = job("echo.echo", b"{}", 0);
            let claimed = insert_running(&store, &job).await;
            let report = AttemptReport {
                finished_at: at,
                ..report()
            };
            store
                .finish(job.id, claimed.attempt, outcome, report)
                .await
                .unwrap();
        }
    };
    let completed = || Outcome::Completed(b"{}".to_vec());
    let failed = || Outcome::Failed {
        kind: ErrorKind::PluginError,
        error: "boom".into(),
    };
    end(&store, completed(), earlier + TimeDelta::seconds(5)).await;
    end(
        &store,
        completed(),
        earlier + TimeDelta::milliseconds(59_999),
    )
    .await;
    end(&store, failed(), earlier + TimeDelta::seconds(30)).await;
    end(&store, completed(), this_minute + TimeDelta::seconds(1)).await;
    end(
        &store,
        Outcome::Cancelled,
        this_minute + TimeDelta::seconds(2),
    )
    .await;
    end(&store, completed(), long_ago).await;
    // Neither a retry (pending again) nor a job still running is counted.
    let retried = job("echo.echo", b"{}", 0);
    let claimed = insert_running(&store, &retried).await;
    let retry = Outcome::Retry {
        kind: ErrorKind::PluginError,
        error: "again".into(),
        run_at: now,
    };
    store
        .finish(retried.id, claimed.attempt, retry, report())
        .await
        .unwrap();
    insert_running(&store, &job("echo.echo", b"{}", 0)).await;

    let since = this_minute - TimeDelta::hours(1);
    assert_eq!(
        store.finished_per_minute(since).await.unwrap(),
        [
            FinishedMinute {
                minute: earlier,
                completed: 2,
                failed: 1,
                cancelled: 0,
            },
            FinishedMinute {
                minute: this_minute,
                completed: 1,
                failed: 0,
                cancelled: 1,
            },
        ],
        "the last hour, by minute, the job of three hours ago left out"
    );
    assert_eq!(
        store
            .finished_per_minute(this_minute + TimeDelta::seconds(2))
            .await
            .unwrap()
            .iter()
            .map(|minute| (minute.completed, minute.cancelled))
            .collect::<Vec<_>>(),
        [(0, 1)],
        "only jobs that ended at or after `since`"
    );
}

async fn a_snooze_puts_the_job_back_later_without_spending_a_retry(fx: Fixture) {
    let store = fx.open().await;
    // No retries at all: a snooze must not need one.
    let job = Job::new("snoozer.snooze", b"{}".to_vec(), 0, 0);
    let first = insert_running(&store, &job).await;
    let run_at = (Utc::now() + TimeDelta::seconds(30)).trunc_subsecs(3);
    let snooze = |reason: &str, run_at| Outcome::Snoozed {
        reason: reason.into(),
        run_at,
    };
    store
        .finish(job.id, first.attempt, snooze("not yet", run_at), report())
        .await
        .unwrap();
    let (back, attempt) = store.get_job_with_attempt(job.id).await.unwrap();
    assert_eq!(back.status, JobStatus::Pending);
    assert_eq!((back.retry_count, back.snooze_count, attempt), (0, 1, 1));
    assert_eq!(back.run_at, run_at);
    assert_eq!(
        (back.error_kind, back.error.as_deref(), back.completed_at),
        (Some(ErrorKind::Snoozed), Some("not yet"), None)
    );
    let attempts = store.attempts(job.id).await.unwrap();
    assert_eq!(attempts[0].outcome.as_deref(), Some("snoozed"));
    assert_eq!(attempts[0].error_kind, Some(ErrorKind::Snoozed));
    assert_eq!(attempts[0].error.as_deref(), Some("not yet"));
    // Not before its time; then it runs again, as a new attempt.
    assert!(store.claim(job.id, 1, Utc::now()).await.unwrap().is_none());
    let second = store.claim(job.id, 1, run_at).await.unwrap().unwrap();
    assert_eq!((second.attempt, second.job.snooze_count), (2, 1));
    // The first attempt's late snooze is fenced out.
    assert!(matches!(
        store
            .finish(job.id, first.attempt, snooze("stale", run_at), report())
            .await,
        Err(StoreError::StaleTransition { .. })
    ));
    store
        .finish(
            job.id,
            second.attempt,
            snooze("still not", run_at),
            report(),
        )
        .await
        .unwrap();
    let third = store.claim(job.id, 1, run_at).await.unwrap().unwrap();
    store
        .finish(
            job.id,
            third.attempt,
            Outcome::Completed(b"done".to_vec()),
            report(),
        )
        .await
        .unwrap();
    let done = store.get_job(job.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!((done.retry_count, done.snooze_count), (0, 2));
    assert_eq!((done.error, done.error_kind), (None, None));
    let outcomes: Vec<Option<String>> = store
        .attempts(job.id)
        .await
        .unwrap()
        .into_iter()
        .map(|attempt| attempt.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [Some("snoozed"), Some("snoozed"), Some("completed")].map(|o| o.map(str::to_owned))
    );

    // A manual retry gives a fresh snooze budget along with the retry budget.
    let snoozed_then_failed = job_of_snoozes(&store, 3).await;
    store
        .retry_job(snoozed_then_failed, Utc::now())
        .await
        .unwrap();
    let retried = store.get_job(snoozed_then_failed).await.unwrap();
    assert_eq!((retried.snooze_count, retried.retry_count), (0, 0));
}

/// A job that snoozed `times` times, then failed; its id.
async fn job_of_snoozes(store: &Store, times: u32) -> JobId {
    let job = job("snoozer.snooze", b"{}", 0);
    store.insert_job(job.clone()).await.unwrap();
    for _ in 0..times {
        let claimed = store.claim(job.id, 1, Utc::now()).await.unwrap().unwrap();
        let outcome = Outcome::Snoozed {
            reason: "later".into(),
            run_at: Utc::now().trunc_subsecs(3),
        };
        store
            .finish(job.id, claimed.attempt, outcome, report())
            .await
            .unwrap();
    }
    let claimed = store.claim(job.id, 1, Utc::now()).await.unwrap().unwrap();
    assert_eq!(claimed.job.snooze_count, times);
    let failed = Outcome::Failed {
        kind: ErrorKind::SnoozeLimit,
        error: "too many".into(),
    };
    store
        .finish(job.id, claimed.attempt, failed, report())
        .await
        .unwrap();
    job.id
}

async fn a_plugin_cancel_ends_the_job_for_good_with_its_reason(fx: Fixture) {
    let store = fx.open().await;
    // Retries left: a plugin's cancel spends none and leaves none to spend.
    let job = job("snoozer.ask", b"{}", 0);
    let claimed = insert_running(&store, &job).await;
    let outcome = Outcome::CancelledByPlugin {
        reason: "the issue was deleted upstream".into(),
    };
    store
        .finish(job.id, claimed.attempt, outcome, report())
        .await
        .unwrap();
    let stored = store.get_job(job.id).await.unwrap();
    assert_eq!(stored.status, JobStatus::Cancelled);
    assert_eq!(stored.error_kind, Some(ErrorKind::CancelledByPlugin));
    assert_eq!(
        stored.error.as_deref(),
        Some("the issue was deleted upstream")
    );
    assert!(stored.completed_at.is_some());
    assert_eq!((stored.retry_count, stored.snooze_count), (0, 0));
    let attempts = store.attempts(job.id).await.unwrap();
    assert_eq!(attempts[0].outcome.as_deref(), Some("cancelled"));
    assert_eq!(attempts[0].error_kind, Some(ErrorKind::CancelledByPlugin));
    // Final: nothing claims it or cancels it again.
    assert!(store.claim(job.id, 1, Utc::now()).await.unwrap().is_none());
    assert!(matches!(
        store.cancel_pending(job.id, Utc::now()).await,
        Err(StoreError::StaleTransition {
            actual: JobStatus::Cancelled,
            ..
        })
    ));
}

fn hold(plugin: &str, credential: &str, until: chrono::DateTime<Utc>) -> RateLimitHold {
    RateLimitHold {
        plugin: plugin.into(),
        host: "https://api.github.com".into(),
        credential: credential.into(),
        until,
        learned_at: until - TimeDelta::seconds(60),
        node: Some("a".into()),
    }
}

async fn rate_limit_holds_are_shared_keep_the_later_end_and_expire(fx: Fixture) {
    let (one, two) = (fx.open().await, fx.open().await);
    let now = Utc::now().trunc_subsecs(3);
    let later = now + TimeDelta::seconds(300);
    one.hold_rate_limit(hold("github", "GITHUB_TOKEN", later))
        .await
        .unwrap();
    // An earlier end for the same key does not shorten the hold.
    two.hold_rate_limit(hold("github", "GITHUB_TOKEN", now + TimeDelta::seconds(60)))
        .await
        .unwrap();
    two.hold_rate_limit(hold("github", "", now + TimeDelta::seconds(30)))
        .await
        .unwrap();
    let live = two.rate_limit_holds(now).await.unwrap();
    let ends: Vec<(&str, _)> = live
        .iter()
        .map(|hold| (hold.credential.as_str(), hold.until))
        .collect();
    assert_eq!(
        ends,
        [("", now + TimeDelta::seconds(30)), ("GITHUB_TOKEN", later)],
        "by key, the later end kept, seen from the other handle"
    );
    assert_eq!(live[1], hold("github", "GITHUB_TOKEN", later));
    // A hold is live until its end only.
    let after_the_short_one = one
        .rate_limit_holds(now + TimeDelta::seconds(31))
        .await
        .unwrap();
    assert_eq!(after_the_short_one.len(), 1);
    assert!(
        one.rate_limit_holds(later).await.unwrap().is_empty(),
        "ended at its reset"
    );
    // A later end replaces the stored one.
    let latest = later + TimeDelta::seconds(10);
    one.hold_rate_limit(hold("github", "GITHUB_TOKEN", latest))
        .await
        .unwrap();
    let live = two.rate_limit_holds(now).await.unwrap();
    assert_eq!(live.last().map(|hold| hold.until), Some(latest));
}

async fn a_rate_limited_attempt_waits_for_the_reset_without_spending_a_retry(fx: Fixture) {
    let store = fx.open().await;
    let job = job("github.commits", b"{}", 0);
    store.insert_job(job.clone()).await.unwrap();
    let claimed = store.claim(job.id, 1, Utc::now()).await.unwrap().unwrap();
    let reset = Utc::now().trunc_subsecs(3) + TimeDelta::seconds(90);
    let outcome = Outcome::RateLimited {
        reason: "held by a rate limit".into(),
        run_at: reset,
    };
    store
        .finish(job.id, claimed.attempt, outcome, report())
        .await
        .unwrap();
    let stored = store.get_job(job.id).await.unwrap();
    assert_eq!(stored.status, JobStatus::Pending);
    assert_eq!(stored.retry_count, 0, "no retry spent");
    assert_eq!(stored.snooze_count, 0, "no snooze spent");
    assert_eq!(stored.run_at, reset);
    assert_eq!(stored.error_kind, Some(ErrorKind::RateLimited));
    let attempts = store.attempts(job.id).await.unwrap();
    assert_eq!(attempts[0].outcome.as_deref(), Some("rate_limited"));
}

async fn a_jobs_trace_context_is_kept_from_its_submit_to_its_claims(fx: Fixture) {
    // The attempt span of a job continues the trace of its submit, however long later
    // and on whichever node: the traceparent travels in the row.
    let store = fx.open().await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let traced = Job {
        trace_parent: Some(parent.to_owned()),
        ..job("echo.echo", b"{}", 0)
    };
    let untraced = job("echo.echo", b"{}", 0);
    store.insert_job(traced.clone()).await.unwrap();
    store.insert_job(untraced.clone()).await.unwrap();
    let batch: Vec<Job> = (0..3)
        .map(|n| Job {
            trace_parent: (n % 2 == 0).then(|| parent.to_owned()),
            ..job("echo.echo", b"{}", 0)
        })
        .collect();
    store.insert_jobs(batch.clone()).await.unwrap();
    for expected in batch.iter().chain([&traced, &untraced]) {
        let claimed = store
            .claim(expected.id, 1, Utc::now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            claimed.job.trace_parent, expected.trace_parent,
            "{}",
            expected.id
        );
        assert_eq!(
            store.get_job(expected.id).await.unwrap().trace_parent,
            expected.trace_parent
        );
    }
}

async fn a_jobs_concurrency_key_is_kept_and_running_jobs_are_counted_by_scope(fx: Fixture) {
    // The key goes with the job through every write that carries it (single and bulk
    // inserts, claims, retries, recovery), and `running_in` counts what runs per
    // plugin, command and key: what `explain` and the shared claims rely on.
    let store = fx.open().await;
    let keyed = |command: &str, key: &str| Job {
        concurrency_key: Some(key.to_owned()),
        ..job(command, b"{}", 0)
    };
    let first = keyed("github.commits", "rust-lang/rust");
    store.insert_job(first.clone()).await.unwrap();
    let batch = vec![
        keyed("github.commits", "rust-lang/rust"),
        keyed("github.issues", "tokio-rs/tokio"),
        job("github.issues", b"{}", 0),
        job("echo.echo", b"{}", 0),
    ];
    store.insert_jobs(batch.clone()).await.unwrap();
    for expected in batch.iter().chain([&first]) {
        assert_eq!(store.get_job(expected.id).await.unwrap(), *expected);
    }
    let keys: HashSet<Option<String>> = store
        .pending_jobs()
        .await
        .unwrap()
        .iter()
        .map(|queued| queued.concurrency_key.as_deref().map(str::to_owned))
        .collect();
    assert!(keys.contains(&Some("rust-lang/rust".to_owned())) && keys.contains(&None));
    for expected in [&first, &batch[1], &batch[2], &batch[3]] {
        let claimed = store
            .claim(expected.id, 1, Utc::now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.job.concurrency_key, expected.concurrency_key);
    }
    let plugin = |name: &str| Scope::Plugin(name.to_owned());
    let key = |key: &str| Scope::Key {
        plugin: "github".to_owned(),
        key: key.to_owned(),
    };
    assert_eq!(store.running_in(plugin("github")).await.unwrap(), 3);
    assert_eq!(store.running_in(plugin("echo")).await.unwrap(), 1);
    assert_eq!(
        store.running_in(plugin("git")).await.unwrap(),
        0,
        "not a prefix match"
    );
    let issues = Scope::Command("github.issues".to_owned());
    assert_eq!(store.running_in(issues).await.unwrap(), 2);
    assert_eq!(store.running_in(key("rust-lang/rust")).await.unwrap(), 1);
    assert_eq!(store.running_in(key("tokio-rs/tokio")).await.unwrap(), 1);
    let retried = Outcome::Retry {
        kind: ErrorKind::PluginError,
        error: "again".into(),
        run_at: Utc::now(),
    };
    store.finish(first.id, 1, retried, report()).await.unwrap();
    assert_eq!(store.running_in(key("rust-lang/rust")).await.unwrap(), 0);
    let again = store.claim(first.id, 2, Utc::now()).await.unwrap().unwrap();
    assert_eq!(again.job.concurrency_key, first.concurrency_key);
}

fn log_lines(attempt: u32, seqs: std::ops::RangeInclusive<u64>, text: &str) -> Vec<LogLine> {
    let at = Utc::now().trunc_subsecs(3);
    seqs.map(|seq| {
        LogLine::new(
            attempt,
            seq,
            at,
            LogLevel::Info,
            "",
            &format!("{text} {seq}"),
        )
    })
    .collect()
}

async fn attempt_output_keeps_its_tail_reads_in_order_and_goes_with_its_job(fx: Fixture) {
    let store = fx.open().await;
    let job = job("echo.echo", b"{}", 0);
    let claimed = insert_running(&store, &job).await;
    let attempt = claimed.attempt;
    let everything = LogQuery {
        limit: MAX_LOG_LINES * 2,
        ..LogQuery::default()
    };

    // Flushes in batches, past the line cap: only the last lines stay, in order.
    let total = MAX_LOG_LINES as u64 + 700;
    for start in (1..=total).step_by(500) {
        let end = (start + 499).min(total);
        let progress = JobProgress::new(attempt, end, Some(total), Some("paging"), Utc::now());
        store
            .append_output(
                job.id,
                AttemptOutput {
                    lines: log_lines(attempt, start..=end, "line"),
                    progress: Some(progress),
                },
            )
            .await
            .unwrap();
    }
    let output = store.job_output(job.id, everything).await.unwrap();
    assert_eq!(output.lines.len(), MAX_LOG_LINES, "the line cap holds");
    assert_eq!(output.lines.first().unwrap().seq, 701, "the tail is kept");
    assert_eq!(output.lines.last().unwrap().line, format!("line {total}"));
    assert!(
        output
            .lines
            .windows(2)
            .all(|pair| pair[0].seq < pair[1].seq)
    );
    let progress = output.progress.expect("progress is stored");
    assert_eq!(
        (progress.attempt, progress.done, progress.total),
        (attempt, total, Some(total))
    );
    assert_eq!(progress.message.as_deref(), Some("paging"));

    // Following: only the lines after the last one read; a repeated line is not doubled.
    let after = LogQuery {
        after: Some((attempt, total - 2)),
        ..LogQuery::default()
    };
    let tail = store.job_output(job.id, after).await.unwrap();
    let seqs: Vec<u64> = tail.lines.iter().map(|line| line.seq).collect();
    assert_eq!(seqs, vec![total - 1, total]);
    store
        .append_output(
            job.id,
            AttemptOutput {
                lines: log_lines(attempt, total..=total + 1, "again"),
                progress: None,
            },
        )
        .await
        .unwrap();
    let tail = store.job_output(job.id, after).await.unwrap();
    let texts: Vec<&str> = tail.lines.iter().map(|line| line.line.as_str()).collect();
    assert_eq!(
        texts,
        vec![
            format!("line {}", total - 1),
            format!("line {total}"),
            format!("again {}", total + 1)
        ]
    );

    // The byte cap: long lines keep at most MAX_LOG_BYTES of text.
    let retry = Outcome::Retry {
        kind: ErrorKind::PluginError,
        error: "again".into(),
        run_at: Utc::now() - TimeDelta::seconds(1),
    };
    store
        .finish(job.id, attempt, retry, report())
        .await
        .unwrap();
    let second = store.claim(job.id, 1, Utc::now()).await.unwrap().unwrap();
    let long = "x".repeat(MAX_LOG_LINE_BYTES * 2);
    store
        .append_output(
            job.id,
            AttemptOutput {
                lines: log_lines(second.attempt, 1..=300, &long),
                progress: None,
            },
        )
        .await
        .unwrap();
    let only_second = LogQuery {
        attempt: Some(second.attempt),
        ..LogQuery::default()
    };
    let output = store.job_output(job.id, only_second).await.unwrap();
    let bytes: usize = output.lines.iter().map(|line| line.line.len()).sum();
    assert!(bytes <= MAX_LOG_BYTES, "{bytes} bytes kept");
    assert_eq!(output.lines.len(), MAX_LOG_BYTES / MAX_LOG_LINE_BYTES);
    assert_eq!(output.lines.last().unwrap().seq, 300);
    assert!(
        output
            .lines
            .iter()
            .all(|line| line.attempt == second.attempt)
    );
    assert_eq!(output.progress, None, "the second attempt reported none");
    let first_too = store.job_output(job.id, everything).await.unwrap();
    assert_eq!(
        first_too.lines.first().unwrap().attempt,
        attempt,
        "each attempt keeps its own"
    );
    assert_eq!(
        first_too.progress.unwrap().attempt,
        attempt,
        "the latest progress reported"
    );

    // Retention: the output goes with its job, and output of a gone job is dropped.
    store
        .finish(job.id, second.attempt, Outcome::Completed(vec![]), report())
        .await
        .unwrap();
    let pruned = store
        .prune_finished(JobStatus::Completed, Utc::now() + TimeDelta::days(1), 10)
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    assert!(matches!(
        store.job_output(job.id, LogQuery::default()).await,
        Err(StoreError::NotFound(_))
    ));
    store
        .append_output(
            job.id,
            AttemptOutput {
                lines: log_lines(1, 1..=1, "late"),
                progress: None,
            },
        )
        .await
        .expect("output of a pruned job is dropped, not an error");
    let other = Job::new("echo.echo", b"{}".to_vec(), 0, 3);
    store.insert_job(other.clone()).await.unwrap();
    assert!(
        store
            .job_output(other.id, LogQuery::default())
            .await
            .unwrap()
            .lines
            .is_empty(),
        "nothing of the pruned job's log is left to anyone"
    );
}
