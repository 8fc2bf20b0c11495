//! The store's test suite: every behaviour callers rely on, against a real database
//! file. A future backend runs the same checks.

use std::collections::HashSet;

use chrono::{TimeDelta, Utc};
use rusqlite::Connection;
use tempfile::TempDir;

use super::*;
use honeydew_core::job::{ErrorKind, Job, JobStatus, PluginRef};

fn open(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(SqliteConfig::new(dir.path().join("honeydew.db"))).unwrap()
}

fn raw(dir: &TempDir) -> Connection {
    Connection::open(dir.path().join("honeydew.db")).unwrap()
}

fn job(command: &str, payload: &[u8], priority: i64) -> Job {
    Job::new(command, payload.to_vec(), priority, 3)
}

async fn insert_running(store: &SqliteStore, job: &Job) -> Claimed {
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

#[tokio::test]
async fn schema_is_versioned_and_journal_is_wal() {
    let dir = TempDir::new().unwrap();
    let _store = open(&dir);
    let conn = raw(&dir);
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, schema::SCHEMA_VERSION);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_version_2_database_keeps_its_jobs_and_attempts_through_the_table_rebuild() {
    let dir = TempDir::new().unwrap();
    {
        let conn = raw(&dir);
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        for sql in &schema::MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute_batch(
            "INSERT INTO jobs (id, command, payload, priority, status, created_at, run_at, \
             started_at, completed_at, result, retry_count, max_retries, plugin_name, \
             plugin_version, plugin_sha256, updated_at) VALUES \
             ('0193a1b2-0000-7000-8000-000000000001', 'echo.echo', '{\"x\":1}', 5, \
              'completed', '2026-11-01T10:00:00.000Z', '2026-11-01T10:00:00.000Z', \
              '2026-11-01T10:00:01.000Z', '2026-11-01T10:00:02.000Z', '{\"ok\":true}', \
              1, 3, 'echo', '0.1.0', 'ab', '2026-11-01T10:00:02.000Z'); \
             INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, finished_at, \
             outcome, duration_ms) VALUES ('0193a1b2-0000-7000-8000-000000000001', 1, 2, \
             '2026-11-01T10:00:01.000Z', '2026-11-01T10:00:02.000Z', 'completed', 1000);",
        )
        .unwrap();
    }

    let store = open(&dir);
    let id: honeydew_core::job::JobId = "0193a1b2-0000-7000-8000-000000000001".parse().unwrap();
    let job = store.get_job(id).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.priority, 5);
    assert_eq!(job.result.as_deref(), Some(&br#"{"ok":true}"#[..]));
    assert_eq!(job.plugin.unwrap().name, "echo");
    let attempts = store.attempts(id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].duration_ms, Some(1000));

    let conn = raw(&dir);
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, schema::SCHEMA_VERSION);
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let indexes: HashSet<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for index in [
        "jobs_pending_by_priority",
        "jobs_by_status_id",
        "jobs_by_command_id",
        "jobs_failed_by_completed",
    ] {
        assert!(
            indexes.contains(index),
            "{index} missing after the rebuild: {indexes:?}"
        );
    }
    let bad_status = conn.execute("UPDATE jobs SET status = 'lost'", []);
    assert!(
        bad_status.is_err(),
        "the status CHECK must survive the rebuild"
    );
}

#[tokio::test]
async fn inserting_a_job_builds_no_temporary_btree() {
    // An `IN (...)` list in the status CHECK made SQLite build a temporary B-tree for
    // every INSERT; the plan of the submit statement must not open one.
    let dir = TempDir::new().unwrap();
    drop(open(&dir));
    let conn = raw(&dir);
    let opcodes: Vec<String> = conn
        .prepare(&format!("EXPLAIN {}", jobs::INSERT_JOB))
        .unwrap()
        .query_map(
            rusqlite::params![
                "id",
                "command",
                "{}",
                0,
                "pending",
                "t",
                "t",
                0,
                3,
                None::<String>,
                None::<String>
            ],
            |row| row.get(1),
        )
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(opcodes.contains(&"Insert".to_string()), "{opcodes:?}");
    assert!(
        !opcodes.contains(&"OpenEphemeral".to_string()),
        "the INSERT builds a temporary B-tree: {opcodes:?}"
    );
}

#[tokio::test]
async fn database_from_a_newer_daemon_is_refused() {
    let dir = TempDir::new().unwrap();
    drop(open(&dir));
    raw(&dir)
        .pragma_update(None, "user_version", schema::SCHEMA_VERSION + 1)
        .unwrap();
    let err = SqliteStore::open(SqliteConfig::new(dir.path().join("honeydew.db")))
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("newer than this daemon supports"),
        "{err}"
    );
}

#[tokio::test]
async fn utf8_results_are_text_that_json_extract_reads_and_binary_is_blob() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let text_job = job("echo.echo", br#"{"q":"x"}"#, 0);
    let binary_job = job("echo.echo", &[0xff, 0x00, 0xfe], 0);
    for (job, result) in [
        (&text_job, br#"{"count":42}"#.to_vec()),
        (&binary_job, vec![0xff, 0xfe, 0x00]),
    ] {
        let claimed = insert_running(&store, job).await;
        store
            .finish(
                job.id,
                claimed.attempt,
                Outcome::Completed(result),
                report(),
            )
            .await
            .unwrap();
    }
    let conn = raw(&dir);
    let (kind, count): (String, i64) = conn
        .query_row(
            "SELECT typeof(result), json_extract(result, '$.count') FROM jobs WHERE id = ?1",
            [text_job.id.to_string()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((kind.as_str(), count), ("text", 42));
    let (kind, payload_kind): (String, String) = conn
        .query_row(
            "SELECT typeof(result), typeof(payload) FROM jobs WHERE id = ?1",
            [binary_job.id.to_string()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((kind.as_str(), payload_kind.as_str()), ("blob", "blob"));
    assert_eq!(
        store.get_job(binary_job.id).await.unwrap().result.unwrap(),
        vec![0xff, 0xfe, 0x00]
    );
}

#[tokio::test]
async fn the_spec_failed_jobs_query_works_verbatim() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let mut failed = Vec::new();
    for n in 0..3 {
        let job = job("github.commits", b"{}", 0);
        let claimed = insert_running(&store, &job).await;
        let outcome = Outcome::Failed {
            kind: ErrorKind::PluginError,
            error: format!("404 number {n}"),
        };
        let mut report = report();
        report.finished_at = Utc::now() + TimeDelta::seconds(n);
        store
            .finish(job.id, claimed.attempt, outcome, report)
            .await
            .unwrap();
        failed.push(job.id.to_string());
    }
    store.insert_job(job("echo.echo", b"{}", 0)).await.unwrap();
    let conn = raw(&dir);
    let mut statement = conn
        .prepare(
            "SELECT id, command, error, created_at, completed_at
             FROM jobs
             WHERE status = 'failed'
             ORDER BY completed_at DESC
             LIMIT 20;",
        )
        .unwrap();
    let rows: Vec<(String, String, String, String, String)> = statement
        .query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let ids: Vec<&str> = rows.iter().map(|row| row.0.as_str()).collect();
    failed.reverse();
    assert_eq!(ids, failed.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(rows[0].2, "404 number 2");
    // Timestamps are RFC 3339 UTC with milliseconds.
    assert_eq!(rows[0].4.len(), "2026-11-29T15:42:04.123Z".len());
    assert!(rows[0].4.ends_with('Z'));
}

/// Holds the writer busy; returns the held write (await it after releasing) and the
/// sender that releases it. Writes made meanwhile queue up for one batch.
async fn hold_writer(
    store: &SqliteStore,
) -> (
    tokio::task::JoinHandle<Result<(), StoreError>>,
    std::sync::mpsc::Sender<()>,
) {
    let (entered, inside) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel();
    let held = {
        let store = store.clone();
        tokio::spawn(async move { store.hold_writer(entered, released).await })
    };
    tokio::task::spawn_blocking(move || inside.recv().unwrap())
        .await
        .unwrap();
    (held, release)
}

/// Polls `future` once, so that its write is sent to the writer, and hands it back.
async fn started<F: std::future::Future + Unpin>(mut future: F) -> F {
    std::future::poll_fn(|context| {
        assert!(std::pin::Pin::new(&mut future).poll(context).is_pending());
        std::task::Poll::Ready(())
    })
    .await;
    future
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submits_share_commits_and_are_all_durable_after_reopening() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    // 64 submits queued while the writer is busy go out in one commit, not 64.
    let (held, release) = hold_writer(&store).await;
    let before = store.commit_stats();
    let mut queued = Vec::new();
    let mut queued_ids = Vec::new();
    for n in 0..64 {
        let job = Job::new("echo.echo", format!("queued-{n}").into_bytes(), 0, 3);
        queued_ids.push(job.id);
        queued.push(started(Box::pin(store.insert_job(job))).await);
    }
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    for insert in queued {
        insert.await.unwrap();
    }
    let after = store.commit_stats();
    assert_eq!(
        after.writes - before.writes,
        65,
        "the held write and the 64 submits"
    );
    assert_eq!(after.commits - before.commits, 1, "{before:?} -> {after:?}");
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
    let mut acknowledged: HashSet<_> = queued_ids.into_iter().collect();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    drop(store);
    let reopened = open(&dir);
    reopened.recover(Utc::now()).await.unwrap();
    let pending = reopened.pending_jobs().await.unwrap();
    let stored: HashSet<_> = pending.iter().map(|job| job.id).collect();
    assert_eq!(acknowledged.len(), 64 + 64 * 20);
    assert_eq!(stored, acknowledged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_skip_their_fsync_and_a_submit_never_rides_a_commit_without_one() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let (first, second) = (job("echo.echo", b"{}", 0), job("echo.echo", b"{}", 0));
    store.insert_job(first.clone()).await.unwrap();
    store.insert_job(second.clone()).await.unwrap();
    // A relaxed batch is open: the claim behind it joins it, the submit behind that
    // must not (its acknowledgement promises an fsync), and the claim after the
    // submit rides the submit's durable commit.
    let (entered, inside) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel();
    let held = {
        let store = store.clone();
        tokio::spawn(async move { store.hold_writer_relaxed(entered, released).await })
    };
    tokio::task::spawn_blocking(move || inside.recv().unwrap())
        .await
        .unwrap();
    let before = store.commit_stats();
    let now = Utc::now();
    let claim_first = started(Box::pin(store.claim(first.id, 1, now))).await;
    let submitted = job("echo.echo", b"{}", 0);
    let submit = started(Box::pin(store.insert_job(submitted.clone()))).await;
    let claim_second = started(Box::pin(store.claim(second.id, 2, now))).await;
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    assert!(claim_first.await.unwrap().is_some());
    submit.await.unwrap();
    assert!(claim_second.await.unwrap().is_some());
    let after = store.commit_stats();
    assert_eq!(after.writes - before.writes, 4, "{before:?} -> {after:?}");
    assert_eq!(after.commits - before.commits, 2, "{before:?} -> {after:?}");
    assert_eq!(
        after.relaxed_commits - before.relaxed_commits,
        1,
        "only the held write and the first claim skipped the fsync: {before:?} -> {after:?}"
    );
    // Plain inserts and outcomes keep theirs.
    store.insert_job(job("echo.echo", b"{}", 0)).await.unwrap();
    assert_eq!(store.commit_stats().relaxed_commits, after.relaxed_commits);
    // A relaxed commit survives the process (it is in the WAL, only unsynced).
    drop(store);
    let reopened = open(&dir);
    assert_eq!(
        reopened.get_job(first.id).await.unwrap().status,
        JobStatus::Running
    );
    assert_eq!(
        reopened.get_job(submitted.id).await.unwrap().status,
        JobStatus::Pending
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_does_not_spoil_its_batch() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let job = job("echo.echo", b"{}", 0);
    let duplicate = job.clone();
    let other = self::job("echo.echo", b"{}", 0);
    // The gate: all three writes are queued before the writer takes any, so they
    // share one transaction (the commit count proves it).
    let (held, release) = hold_writer(&store).await;
    let before = store.commit_stats();
    let first = started(Box::pin(store.insert_job(job.clone()))).await;
    let second = started(Box::pin(store.insert_job(duplicate))).await;
    let third = started(Box::pin(store.insert_job(other.clone()))).await;
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    first.await.unwrap();
    assert!(matches!(second.await, Err(StoreError::Database(_))));
    third.await.unwrap();
    let after = store.commit_stats();
    assert_eq!(
        after.commits - before.commits,
        1,
        "one batch: {before:?} -> {after:?}"
    );
    assert!(store.get_job(job.id).await.is_ok());
    assert!(store.get_job(other.id).await.is_ok());
}

#[tokio::test]
async fn filtered_listing_walks_the_matching_index_not_every_job() {
    let dir = TempDir::new().unwrap();
    let _store = open(&dir);
    let conn = raw(&dir);
    let plan = |filter: &JobFilter| -> String {
        let sql = format!("EXPLAIN QUERY PLAN {}", jobs::list_sql(filter));
        let mut statement = conn.prepare(&sql).unwrap();
        let details: Vec<String> = statement
            .query_map(
                rusqlite::params![None::<String>, None::<String>, 50],
                |row| row.get(3),
            )
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        details.join("; ")
    };
    let by_status = JobFilter {
        status: Some(JobStatus::Failed),
        cursor: Some(honeydew_core::job::JobId::new()),
        ..JobFilter::default()
    };
    assert!(
        plan(&by_status).contains("jobs_by_status_id"),
        "{}",
        plan(&by_status)
    );
    let by_command = JobFilter {
        command: Some("github.commits".into()),
        ..JobFilter::default()
    };
    assert!(
        plan(&by_command).contains("jobs_by_command_id"),
        "{}",
        plan(&by_command)
    );
    let pending = JobFilter {
        status: Some(JobStatus::Pending),
        cursor: Some(honeydew_core::job::JobId::new()),
        ..JobFilter::default()
    };
    // Pending jobs are read from the pending index alone: a walk of every job id
    // (`sqlite_autoindex_jobs_1`) would cost the whole history when few are pending.
    let pending_plan = plan(&pending);
    assert!(
        pending_plan.contains("USING INDEX jobs_pending_by_priority")
            && !pending_plan.contains("sqlite_autoindex_jobs_1"),
        "{pending_plan}"
    );
    let pending_of_command = JobFilter {
        status: Some(JobStatus::Pending),
        command: Some("github.commits".into()),
        ..JobFilter::default()
    };
    assert!(
        plan(&pending_of_command).contains("jobs_by_command_id"),
        "{}",
        plan(&pending_of_command)
    );
    // Every listing is served by an index, never a scan of the table.
    for filter in [
        JobFilter::default(),
        by_status,
        by_command,
        pending,
        pending_of_command,
    ] {
        let plan = plan(&filter);
        assert!(
            !plan.starts_with("SCAN jobs;") && plan != "SCAN jobs" && plan.contains("INDEX"),
            "{filter:?}: {plan}"
        );
    }
}

/// Regression (issue 9, defect 10): a summary listing read payload and result of every
/// row it returned, then threw them away.
#[tokio::test]
async fn summary_listings_do_not_read_payloads_or_results() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let big = job("echo.echo", &vec![b'x'; 1024 * 1024], 0);
    let claimed = insert_running(&store, &big).await;
    store
        .finish(
            big.id,
            claimed.attempt,
            Outcome::Completed(vec![b'y'; 1024 * 1024]),
            report(),
        )
        .await
        .unwrap();
    assert!(jobs::list_sql(&JobFilter::default()).contains("NULL"));
    let summary = store.list_jobs(JobFilter::default()).await.unwrap();
    assert!(summary.jobs[0].payload.is_empty());
    assert_eq!(summary.jobs[0].result, None);
    let full = store
        .list_jobs(JobFilter {
            with_bodies: true,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(full.jobs[0].payload.len(), 1024 * 1024);
    assert_eq!(
        full.jobs[0].result.as_ref().map(Vec::len),
        Some(1024 * 1024)
    );
}

/// Retention deletes finished jobs past their age with their attempts, batch by batch,
/// and leaves pending, running and recent ones alone.
#[tokio::test]
async fn pruning_deletes_old_finished_jobs_with_their_attempts_only() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let mut old = Vec::new();
    for _ in 0..7 {
        let job = job("echo.echo", b"{}", 0);
        let claimed = insert_running(&store, &job).await;
        store
            .finish(
                job.id,
                claimed.attempt,
                Outcome::Completed(vec![]),
                report(),
            )
            .await
            .unwrap();
        old.push(job.id);
    }
    let pending = job("echo.echo", b"{}", 0);
    store.insert_job(pending.clone()).await.unwrap();
    let running = job("echo.echo", b"{}", 0);
    insert_running(&store, &running).await;
    let cutoff = Utc::now() + TimeDelta::milliseconds(5);
    // Finished after the cutoff: kept.
    let recent = Job::new_at(
        "echo.echo",
        b"{}".to_vec(),
        0,
        3,
        cutoff + TimeDelta::seconds(1),
    );
    store.insert_job(recent.clone()).await.unwrap();
    let claimed = store
        .claim(recent.id, 1, cutoff + TimeDelta::seconds(1))
        .await
        .unwrap()
        .unwrap();
    let late = AttemptReport {
        finished_at: cutoff + TimeDelta::seconds(2),
        ..report()
    };
    store
        .finish(recent.id, claimed.attempt, Outcome::Completed(vec![]), late)
        .await
        .unwrap();

    let mut batches = Vec::new();
    for status in [
        JobStatus::Completed,
        JobStatus::Completed,
        JobStatus::Completed,
        JobStatus::Pending,
    ] {
        batches.push(store.prune_finished(status, cutoff, 5).await.unwrap());
    }
    assert_eq!(
        batches,
        [5, 2, 0, 0],
        "batches of at most 5, and never a pending job"
    );
    for id in &old {
        assert!(matches!(
            store.get_job(*id).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(store.attempts(*id).await.unwrap().is_empty());
    }
    for kept in [pending.id, running.id, recent.id] {
        assert!(store.get_job(kept).await.is_ok());
    }
    let conn = raw(&dir);
    let orphans: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM job_attempts WHERE job_id NOT IN (SELECT id FROM jobs)",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
}

#[test]
fn the_first_id_of_an_instant_sorts_between_the_ids_around_it() {
    let before = honeydew_core::job::JobId::new().to_string();
    std::thread::sleep(std::time::Duration::from_millis(3));
    let bound = jobs::first_id_at(Utc::now());
    std::thread::sleep(std::time::Duration::from_millis(3));
    let after = honeydew_core::job::JobId::new().to_string();
    assert!(before < bound && bound < after, "{before} {bound} {after}");
}
