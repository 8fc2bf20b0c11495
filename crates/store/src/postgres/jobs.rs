//! Job and attempt SQL for PostgreSQL: insert (many at once), guarded transitions, reads,
//! listing and recovery. Rows map to [`Job`] here and nowhere else in this backend.
//!
//! A claim and an outcome are each one statement (data-modifying CTEs), so each is one
//! round trip and atomic without an explicit transaction.

use chrono::{DateTime, Datelike, Utc};
use deadpool_postgres::GenericClient;
use honeydew_core::job::{ErrorKind, Job, JobId, JobStatus, PluginRef, QueuedJob};
use honeydew_core::store::{
    AttemptReport, AttemptRow, BulkFilter, Claimed, DIED_DURING_ATTEMPT, FinishedMinute, JobCount,
    JobFilter, JobPage, Outcome, RecoveredJobs, Settled, StoreError, UniqueInsert, Uniqueness,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{Error, Result};

const JOB_COLUMNS: &str = "id, command, payload, priority, status, created_at, run_at, \
     started_at, completed_at, result, error, error_kind, retry_count, max_retries, \
     plugin_name, plugin_version, plugin_sha256, attempt, snooze_count, trace_parent, \
     concurrency_key";

/// [`JOB_COLUMNS`] qualified by the table, for statements that join another.
pub(super) const JOB_COLUMNS_OF_JOBS: &str = "jobs.id, jobs.command, jobs.payload, jobs.priority, \
     jobs.status, jobs.created_at, jobs.run_at, jobs.started_at, jobs.completed_at, jobs.result, \
     jobs.error, jobs.error_kind, jobs.retry_count, jobs.max_retries, jobs.plugin_name, \
     jobs.plugin_version, jobs.plugin_sha256, jobs.attempt, jobs.snooze_count, \
     jobs.trace_parent, jobs.concurrency_key";

/// [`JOB_COLUMNS`] without the payload and result, which a summary listing never reads.
const SUMMARY_COLUMNS: &str = "id, command, NULL::bytea, priority, status, created_at, run_at, \
     started_at, completed_at, NULL::bytea, error, error_kind, retry_count, max_retries, \
     plugin_name, plugin_version, plugin_sha256, attempt, snooze_count, trace_parent, \
     concurrency_key";

/// Inserts pending jobs, all in one statement (one commit).
pub(super) async fn insert_jobs(client: &impl GenericClient, jobs: &[&Job]) -> Result<()> {
    let ids: Vec<Uuid> = jobs.iter().map(|job| job.id.as_uuid()).collect();
    let commands: Vec<&str> = jobs.iter().map(|job| job.command.as_str()).collect();
    let payloads: Vec<&[u8]> = jobs.iter().map(|job| job.payload.as_slice()).collect();
    let priorities: Vec<i64> = jobs.iter().map(|job| job.priority).collect();
    let statuses: Vec<&str> = jobs.iter().map(|job| job.status.as_str()).collect();
    let created: Vec<DateTime<Utc>> = jobs.iter().map(|job| job.created_at).collect();
    let run_at: Vec<DateTime<Utc>> = jobs.iter().map(|job| job.run_at).collect();
    let retries: Vec<i32> = jobs.iter().map(|job| int(job.retry_count)).collect();
    let max_retries: Vec<i32> = jobs.iter().map(|job| int(job.max_retries)).collect();
    let trace_parents: Vec<Option<&str>> =
        jobs.iter().map(|job| job.trace_parent.as_deref()).collect();
    let keys: Vec<Option<&str>> = jobs
        .iter()
        .map(|job| job.concurrency_key.as_deref())
        .collect();
    let statement = client
        .prepare_cached(
            "INSERT INTO jobs (id, command, payload, priority, status, created_at, run_at, \
             retry_count, max_retries, updated_at, trace_parent, concurrency_key) \
             SELECT id, command, payload, priority, status, created_at, run_at, retry_count, \
             max_retries, created_at, trace_parent, concurrency_key FROM unnest($1::uuid[], \
             $2::text[], $3::bytea[], $4::int8[], $5::text[], $6::timestamptz[], \
             $7::timestamptz[], $8::int4[], $9::int4[], $10::text[], $11::text[]) AS t (id, \
             command, payload, priority, status, created_at, run_at, retry_count, max_retries, \
             trace_parent, concurrency_key)",
        )
        .await?;
    client
        .execute(
            &statement,
            &[
                &ids,
                &commands,
                &payloads,
                &priorities,
                &statuses,
                &created,
                &run_at,
                &retries,
                &max_retries,
                &trace_parents,
                &keys,
            ],
        )
        .await?;
    Ok(())
}

/// Inserts `job` unless the holder of `unique.key` blocks it, in the transaction `tx`
/// (committed by the caller). Race-free across sessions: the key's row is taken first
/// (inserted, or locked by a no-op update), so a concurrent submit of the same key
/// waits for this one's commit and then sees its job as the holder.
pub(super) async fn insert_unique(
    tx: &impl GenericClient,
    job: &Job,
    unique: &Uniqueness,
) -> Result<UniqueInsert> {
    let statement = tx
        .prepare_cached(
            "INSERT INTO unique_keys (key, job_id) VALUES ($1, $2)              ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key              RETURNING job_id, xmax = 0",
        )
        .await?;
    let row = tx
        .query_one(&statement, &[&unique.key, &job.id.as_uuid()])
        .await?;
    let (holder, inserted): (Uuid, bool) = (row.get(0), row.get(1));
    if !inserted {
        let statement = tx
            .prepare_cached("SELECT status, created_at FROM jobs WHERE id = $1 FOR UPDATE")
            .await?;
        let found = tx.query_opt(&statement, &[&holder]).await?;
        let holder = JobId::from(holder);
        if let Some(found) = found {
            let status: &str = found.get(0);
            let status: JobStatus = status.parse().map_err(|err| StoreError::Corrupt {
                id: holder.to_string(),
                reason: format!("{err}"),
            })?;
            if unique.blocks(status, found.get(1), job.created_at) {
                if unique.replace && status == JobStatus::Pending {
                    let statement = tx
                        .prepare_cached(
                            "UPDATE jobs SET payload = $2, updated_at = $3                              WHERE id = $1 AND status = 'pending'",
                        )
                        .await?;
                    tx.execute(
                        &statement,
                        &[&holder.as_uuid(), &job.payload, &job.created_at],
                    )
                    .await?;
                    return Ok(UniqueInsert::Replaced(holder));
                }
                return Ok(UniqueInsert::Held(holder));
            }
        }
        let statement = tx
            .prepare_cached("UPDATE unique_keys SET job_id = $2 WHERE key = $1")
            .await?;
        tx.execute(&statement, &[&unique.key, &job.id.as_uuid()])
            .await?;
    }
    insert_jobs(tx, &[job]).await?;
    Ok(UniqueInsert::Inserted)
}

/// Moves a pending, eligible job to `running` on `node`, opening its attempt.
pub(super) async fn claim(
    client: &impl GenericClient,
    id: JobId,
    worker_id: usize,
    now: DateTime<Utc>,
    node: &str,
) -> Result<Option<Claimed>> {
    let statement = client
        .prepare_cached(&format!(
            "WITH claimed AS (\
                 UPDATE jobs SET status = 'running', started_at = $2, updated_at = $2, \
                 attempt = attempt + 1, node_id = $4, cancel_requested = false \
                 WHERE id = $1 AND status = 'pending' AND run_at <= $2 AND waiting_on = 0 \
                 RETURNING {JOB_COLUMNS}), \
             opened AS (\
                 INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, node_id) \
                 SELECT id, attempt, $3, $2, $4 FROM claimed) \
             SELECT * FROM claimed"
        ))
        .await?;
    let worker = i32::try_from(worker_id).unwrap_or(i32::MAX);
    let row = client
        .query_opt(&statement, &[&id.as_uuid(), &now, &worker, &node])
        .await?;
    row.map(|row| {
        let (job, attempt) = read_job(&row)?;
        Ok(Claimed { job, attempt })
    })
    .transpose()
}

/// Ends attempt `attempt` of a running job; stale when the job has moved on.
pub(super) async fn finish(
    client: &impl GenericClient,
    id: JobId,
    attempt: u32,
    outcome: &Outcome,
    report: &AttemptReport,
) -> Result<Settled> {
    let (error_kind, error) = outcome.error().unzip();
    let result = match outcome {
        Outcome::Completed(result) => Some(result.as_slice()),
        _ => None,
    };
    let (retry_increment, run_at) = outcome.retry();
    let run_at = run_at.map(storable).transpose()?;
    storable(report.finished_at)?;
    let status = outcome.status();
    let completed_at = status.is_terminal().then_some(report.finished_at);
    let plugin = report.plugin.as_ref();
    let statement = client
        .prepare_cached(
            "WITH finished AS (\
                 UPDATE jobs SET status = CASE WHEN cancel_requested AND $3 = 'pending' \
                     THEN 'cancelled' ELSE $3 END, result = $4, \
                 error = CASE WHEN cancel_requested AND $3 = 'pending' \
                     THEN 'cancelled on request' ELSE $5 END, \
                 error_kind = CASE WHEN cancel_requested AND $3 = 'pending' \
                     THEN 'cancelled' ELSE $6 END, \
                 retry_count = retry_count + CASE WHEN cancel_requested AND $3 = 'pending' \
                     THEN 0 ELSE $7 END, \
                 snooze_count = snooze_count + CASE WHEN cancel_requested AND $3 = 'pending' \
                     THEN 0 ELSE $17 END, run_at = COALESCE($8, run_at), \
                 completed_at = CASE WHEN cancel_requested AND $3 = 'pending' \
                     THEN $13::timestamptz ELSE $9::timestamptz END, plugin_name = COALESCE($10, plugin_name), \
                 plugin_version = COALESCE($11, plugin_version), \
                 plugin_sha256 = COALESCE($12, plugin_sha256), updated_at = $13, \
                 node_id = NULL \
                 WHERE id = $1 AND status = 'running' AND attempt = $2 \
                 RETURNING id, status, has_dependents), \
             closed AS (\
                 UPDATE job_attempts SET finished_at = $13, outcome = $14, error_kind = $6, \
                 error = $5, duration_ms = $15, fuel_used = $16 \
                 WHERE job_id IN (SELECT id FROM finished) AND attempt = $2) \
             SELECT status, has_dependents FROM finished",
        )
        .await?;
    let finished = client
        .query_opt(
            &statement,
            &[
                &id.as_uuid(),
                &int(attempt),
                &status.as_str(),
                &result,
                &error,
                &error_kind.map(ErrorKind::as_str),
                &int(retry_increment),
                &run_at,
                &completed_at,
                &plugin.map(|p| p.name.as_str()),
                &plugin.map(|p| p.version.as_str()),
                &plugin.map(|p| p.sha256.as_str()),
                &report.finished_at,
                &outcome.attempt_outcome(),
                &big(report.duration_ms),
                &report.fuel_used.map(big),
                &int(outcome.snoozes()),
            ],
        )
        .await?;
    let Some(finished) = finished else {
        return Err(stale(client, id, JobStatus::Running).await);
    };
    if !finished.get::<_, bool>(1) {
        return Ok(Settled::default());
    }
    // A statement of its own, so that it sees a dependent whose insert committed while
    // the outcome waited for its row. Should the daemon die before it, the periodic
    // settling finds what it left.
    let status: JobStatus =
        finished
            .get::<_, &str>(0)
            .parse()
            .map_err(|err| StoreError::Corrupt {
                id: id.to_string(),
                reason: format!("{err}"),
            })?;
    super::dependencies::settle_after(client, id, status, report.finished_at).await
}

/// Cancels a pending job; stale when it is not pending.
pub(super) async fn cancel_pending(
    client: &impl GenericClient,
    id: JobId,
    now: DateTime<Utc>,
) -> Result<()> {
    let statement = client
        .prepare_cached(
            "UPDATE jobs SET status = 'cancelled', error = 'cancelled on request', \
             error_kind = 'cancelled', completed_at = $2, updated_at = $2 \
             WHERE id = $1 AND status = 'pending'",
        )
        .await?;
    match client.execute(&statement, &[&id.as_uuid(), &now]).await? {
        1 => Ok(()),
        _ => Err(stale(client, id, JobStatus::Pending).await),
    }
}

/// The reset of a retried job: pending, due now, a fresh retry (and snooze) budget; it
/// no longer waits for dependencies.
const RETRY_SET: &str = "status = 'pending', retry_count = 0, snooze_count = 0, error = NULL, \
     error_kind = NULL, result = NULL, completed_at = NULL, started_at = NULL, run_at = $1, \
     updated_at = $1, node_id = NULL, cancel_requested = false, waiting_on = 0";

/// The `WHERE` of a bulk action: `$2` status, `$3` command, `$4` since, `$5` after,
/// `$6` limit, in id order, skipping rows another session holds.
const BULK_MATCH: &str = "id IN (SELECT id FROM jobs WHERE status = $2 \
     AND ($3::text IS NULL OR command = $3) AND ($4::timestamptz IS NULL OR created_at >= $4) \
     AND ($5::uuid IS NULL OR id > $5) ORDER BY id LIMIT $6 FOR UPDATE SKIP LOCKED)";

/// A `RETURNING id, priority, created_at, run_at, command` row as a queue entry.
pub(super) fn queued_of(row: &Row) -> QueuedJob {
    QueuedJob {
        id: row.get::<_, Uuid>(0).into(),
        command: row.get::<_, &str>(4).into(),
        priority: row.get(1),
        created_at: row.get(2),
        run_at: row.get(3),
        concurrency_key: row.get::<_, Option<&str>>(5).map(Into::into),
    }
}

/// Retries one failed or cancelled job.
pub(super) async fn retry_job(
    client: &impl GenericClient,
    id: JobId,
    now: DateTime<Utc>,
) -> Result<QueuedJob> {
    let statement = client
        .prepare_cached(&format!(
            "UPDATE jobs SET {RETRY_SET} WHERE id = $2 AND status IN ('failed', 'cancelled') \
             RETURNING id, priority, created_at, run_at, command, concurrency_key"
        ))
        .await?;
    match client.query_opt(&statement, &[&now, &id.as_uuid()]).await? {
        Some(row) => Ok(queued_of(&row)),
        None => Err(stale(client, id, JobStatus::Failed).await),
    }
}

/// Retries up to `limit` failed or cancelled jobs matching `filter`.
pub(super) async fn retry_matching(
    client: &impl GenericClient,
    filter: &BulkFilter,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<QueuedJob>> {
    let statement = client
        .prepare_cached(&format!(
            "UPDATE jobs SET {RETRY_SET} WHERE {BULK_MATCH} \
             RETURNING id, priority, created_at, run_at, command, concurrency_key"
        ))
        .await?;
    let rows = client
        .query(&statement, &bulk_params(filter, &now, limit).as_refs())
        .await?;
    let mut queued: Vec<QueuedJob> = rows.iter().map(queued_of).collect();
    queued.sort_by_key(|job| job.id);
    Ok(queued)
}

/// Cancels up to `limit` pending jobs matching `filter`.
pub(super) async fn cancel_matching(
    client: &impl GenericClient,
    filter: &BulkFilter,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<JobId>> {
    let statement = client
        .prepare_cached(&format!(
            "UPDATE jobs SET status = 'cancelled', error = 'cancelled on request', \
             error_kind = 'cancelled', completed_at = $1, updated_at = $1 WHERE {BULK_MATCH} \
             RETURNING id"
        ))
        .await?;
    let rows = client
        .query(&statement, &bulk_params(filter, &now, limit).as_refs())
        .await?;
    let mut ids: Vec<JobId> = rows
        .iter()
        .map(|row| JobId::from(row.get::<_, Uuid>(0)))
        .collect();
    ids.sort();
    Ok(ids)
}

/// The parameters of [`BULK_MATCH`], after `$1` (now).
struct BulkParams<'a> {
    now: &'a DateTime<Utc>,
    status: &'static str,
    command: Option<&'a str>,
    since: Option<DateTime<Utc>>,
    after: Option<Uuid>,
    limit: i64,
}

impl BulkParams<'_> {
    fn as_refs(&self) -> [&(dyn ToSql + Sync); 6] {
        [
            self.now,
            &self.status,
            &self.command,
            &self.since,
            &self.after,
            &self.limit,
        ]
    }
}

fn bulk_params<'a>(filter: &'a BulkFilter, now: &'a DateTime<Utc>, limit: usize) -> BulkParams<'a> {
    BulkParams {
        now,
        status: filter.status.as_str(),
        command: filter.command.as_deref(),
        since: filter.since,
        after: filter.after.map(|id| id.as_uuid()),
        limit: i64::try_from(limit).unwrap_or(i64::MAX),
    }
}

/// Start-up recovery of the jobs `node` was running when it stopped; then every pending
/// job in dispatch order.
pub(super) async fn recover(
    client: &impl GenericClient,
    now: DateTime<Utc>,
    node: &str,
) -> Result<RecoveredJobs> {
    client
        .execute(
            "UPDATE job_attempts SET outcome = 'interrupted', error_kind = 'interrupted', \
             error = $2, finished_at = $1 FROM jobs \
             WHERE job_attempts.job_id = jobs.id AND job_attempts.attempt = jobs.attempt \
             AND job_attempts.finished_at IS NULL AND jobs.status = 'running' AND jobs.node_id = $3",
            &[&now, &DIED_DURING_ATTEMPT, &node],
        )
        .await?;
    // A cancel asked while the attempt ran is honoured now rather than retried.
    client
        .execute(
            "UPDATE jobs SET status = 'cancelled', error = 'cancelled on request', \
             error_kind = 'cancelled', completed_at = $1, updated_at = $1, node_id = NULL, \
             cancel_requested = false \
             WHERE status = 'running' AND node_id = $2 AND cancel_requested",
            &[&now, &node],
        )
        .await?;
    let reset_running = client
        .execute(
            "UPDATE jobs SET status = 'pending', retry_count = retry_count + 1, error = $2, \
             error_kind = 'interrupted', updated_at = $1, node_id = NULL \
             WHERE status = 'running' AND node_id = $3 AND retry_count < max_retries",
            &[&now, &DIED_DURING_ATTEMPT, &node],
        )
        .await?;
    let failed_interrupted = client
        .execute(
            "UPDATE jobs SET status = 'failed', \
             error = $2 || ' (gave up after ' || retry_count || ' retries)', \
             error_kind = 'interrupted', completed_at = $1, updated_at = $1, node_id = NULL \
             WHERE status = 'running' AND node_id = $3",
            &[&now, &DIED_DURING_ATTEMPT, &node],
        )
        .await?;
    Ok(RecoveredJobs {
        reset_running: reset_running as usize,
        failed_interrupted: failed_interrupted as usize,
    })
}

/// The pending jobs to queue (see
/// [`JobStore::pending_jobs`](honeydew_core::store::JobStore::pending_jobs)).
pub(super) async fn pending_jobs(client: &impl GenericClient) -> Result<Vec<QueuedJob>> {
    Ok(client
        .query(
            "SELECT id, priority, created_at, run_at, command, concurrency_key FROM jobs \
             WHERE status = 'pending' AND waiting_on = 0 ORDER BY priority DESC, created_at, id",
            &[],
        )
        .await?
        .iter()
        .map(queued_of)
        .collect())
}

/// Deletes up to `limit` jobs in the finished `status` that finished before `before`,
/// oldest first (their attempts go with them).
pub(super) async fn prune_finished(
    client: &impl GenericClient,
    status: JobStatus,
    before: DateTime<Utc>,
    limit: usize,
) -> Result<usize> {
    let statement = client
        .prepare_cached(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs \
             WHERE status = $1 AND status <> 'pending' AND completed_at < $2 \
             ORDER BY id LIMIT $3)",
        )
        .await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let pruned = client
        .execute(&statement, &[&status.as_str(), &before, &limit])
        .await?;
    Ok(usize::try_from(pruned).unwrap_or(usize::MAX))
}

/// One job by id.
pub(super) async fn get_job(client: &impl GenericClient, id: JobId) -> Result<Job> {
    Ok(get_job_with_attempt(client, id).await?.0)
}

/// One job by id with the number of its latest attempt (0 before the first).
pub(super) async fn get_job_with_attempt(
    client: &impl GenericClient,
    id: JobId,
) -> Result<(Job, u32)> {
    let statement = client
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
        .await?;
    match client.query_opt(&statement, &[&id.as_uuid()]).await? {
        Some(row) => read_job(&row),
        None => Err(StoreError::NotFound(id).into()),
    }
}

/// Jobs matching `filter`, newest first, one page at a time. The statement names only
/// the filters it has, so the planner walks the matching index (`jobs_by_status_id`,
/// `jobs_by_command_id`, or the pending one) rather than every job.
pub(super) async fn list_jobs(client: &impl GenericClient, filter: &JobFilter) -> Result<JobPage> {
    let limit = filter.page_size();
    let status = filter.status.map(JobStatus::as_str);
    let cursor = filter.cursor.map(|id| id.as_uuid());
    let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(4);
    let mut conditions = Vec::with_capacity(3);
    if let Some(status) = &status {
        params.push(status);
        conditions.push(format!("status = ${}", params.len()));
    }
    if let Some(command) = &filter.command {
        params.push(command);
        conditions.push(format!("command = ${}", params.len()));
    }
    if let Some(cursor) = &cursor {
        params.push(cursor);
        conditions.push(format!("id < ${}", params.len()));
    }
    params.push(&fetch);
    let filter_clause = match conditions.is_empty() {
        true => String::new(),
        false => format!("WHERE {}", conditions.join(" AND ")),
    };
    let columns = match filter.with_bodies {
        true => JOB_COLUMNS,
        false => SUMMARY_COLUMNS,
    };
    let statement = client
        .prepare_cached(&format!(
            "SELECT {columns} FROM jobs {filter_clause} ORDER BY id DESC LIMIT ${}",
            params.len()
        ))
        .await?;
    let jobs = client
        .query(&statement, &params)
        .await?
        .iter()
        .map(|row| read_job(row).map(|(job, _)| job))
        .collect::<Result<Vec<_>>>()?;
    Ok(JobPage::from_overfetch(jobs, limit))
}

/// Every attempt of a job, oldest first.
pub(super) async fn attempts(client: &impl GenericClient, id: JobId) -> Result<Vec<AttemptRow>> {
    let statement = client
        .prepare_cached(
            "SELECT attempt, worker_id, outcome, error_kind, error, duration_ms, fuel_used \
             FROM job_attempts WHERE job_id = $1 ORDER BY attempt",
        )
        .await?;
    Ok(client
        .query(&statement, &[&id.as_uuid()])
        .await?
        .iter()
        .map(|row| AttemptRow {
            attempt: unsigned(row.get::<_, i32>(0)),
            worker_id: row.get::<_, Option<i32>>(1).map(unsigned),
            outcome: row.get(2),
            error_kind: row
                .get::<_, Option<String>>(3)
                .map(|kind| ErrorKind::parse(&kind)),
            error: row.get(4),
            duration_ms: row.get::<_, Option<i64>>(5).map(unsigned_big),
            fuel_used: row.get::<_, Option<i64>>(6).map(unsigned_big),
        })
        .collect())
}

/// Jobs that reached a final state at or after `since`, by minute (`date_trunc` in UTC,
/// whatever the session's time zone).
pub(super) async fn finished_per_minute(
    client: &impl GenericClient,
    since: DateTime<Utc>,
) -> Result<Vec<FinishedMinute>> {
    let statement = client
        .prepare_cached(
            "SELECT date_trunc('minute', completed_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
             AS minute, count(*) FILTER (WHERE status = 'completed'), \
             count(*) FILTER (WHERE status = 'failed'), \
             count(*) FILTER (WHERE status = 'cancelled') FROM jobs \
             WHERE completed_at >= $1 AND status IN ('completed', 'failed', 'cancelled') \
             GROUP BY minute ORDER BY minute",
        )
        .await?;
    client
        .query(&statement, &[&since])
        .await?
        .iter()
        .map(|row| -> Result<FinishedMinute> {
            Ok(FinishedMinute {
                minute: row.try_get(0)?,
                completed: unsigned_big(row.try_get(1)?),
                failed: unsigned_big(row.try_get(2)?),
                cancelled: unsigned_big(row.try_get(3)?),
            })
        })
        .collect()
}

/// How many jobs each command has in each state: one grouped scan of `jobs`, sorted
/// by command, then state in [`JobStatus::ALL`] order.
pub(super) async fn count_jobs(client: &impl GenericClient) -> Result<Vec<JobCount>> {
    let statement = client
        .prepare_cached("SELECT command, status, COUNT(*) FROM jobs GROUP BY command, status")
        .await?;
    let mut counts = client
        .query(&statement, &[])
        .await?
        .iter()
        .map(|row| -> Result<JobCount> {
            let command: String = row.try_get(0)?;
            let status: String = row.try_get(1)?;
            let status = status
                .parse::<JobStatus>()
                .map_err(|err| StoreError::Corrupt {
                    id: format!("(a job of {command})"),
                    reason: format!("{err}"),
                })?;
            Ok(JobCount {
                command,
                status,
                count: unsigned_big(row.try_get(2)?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    counts.sort_by_key(|count| {
        let rank = JobStatus::ALL
            .iter()
            .position(|other| *other == count.status);
        (count.command.clone(), rank)
    });
    Ok(counts)
}

/// The error for a guarded update that matched nothing: the job is elsewhere, or gone.
async fn stale(client: &impl GenericClient, id: JobId, expected: JobStatus) -> Error {
    let actual = client
        .query_opt("SELECT status FROM jobs WHERE id = $1", &[&id.as_uuid()])
        .await;
    match actual {
        Ok(Some(row)) => match row.get::<_, String>(0).parse() {
            Ok(actual) => StoreError::StaleTransition {
                id,
                expected,
                actual,
            }
            .into(),
            Err(err) => StoreError::Corrupt {
                id: id.to_string(),
                reason: format!("{err}"),
            }
            .into(),
        },
        Ok(None) => StoreError::NotFound(id).into(),
        Err(err) => err.into(),
    }
}

/// Reads a row selected with [`JOB_COLUMNS`] into the job and its latest attempt.
pub(super) fn read_job(row: &Row) -> Result<(Job, u32)> {
    let id: Uuid = row.try_get(0)?;
    let status: String = row.try_get(4)?;
    let plugin_name: Option<String> = row.try_get(14)?;
    let job = Job {
        id: id.into(),
        command: row.try_get(1)?,
        payload: row.try_get::<_, Option<Vec<u8>>>(2)?.unwrap_or_default(),
        priority: row.try_get(3)?,
        status: status.parse().map_err(|err| StoreError::Corrupt {
            id: id.to_string(),
            reason: format!("{err}"),
        })?,
        created_at: row.try_get(5)?,
        run_at: row.try_get(6)?,
        started_at: row.try_get(7)?,
        completed_at: row.try_get(8)?,
        result: row.try_get(9)?,
        error: row.try_get(10)?,
        error_kind: row
            .try_get::<_, Option<String>>(11)?
            .map(|kind| ErrorKind::parse(&kind)),
        retry_count: unsigned(row.try_get(12)?),
        max_retries: unsigned(row.try_get(13)?),
        snooze_count: unsigned(row.try_get(18)?),
        trace_parent: row.try_get(19)?,
        concurrency_key: row.try_get(20)?,
        plugin: plugin_name
            .map(|name| -> Result<PluginRef> {
                Ok(PluginRef {
                    name,
                    version: row.try_get::<_, Option<String>>(15)?.unwrap_or_default(),
                    sha256: row.try_get::<_, Option<String>>(16)?.unwrap_or_default(),
                })
            })
            .transpose()?,
    };
    Ok((job, unsigned(row.try_get(17)?)))
}

/// `at`, when it is an instant the store may record: years 0000 to 9999, as on SQLite
/// (RFC 3339 has no room for others, and every reader of a job formats it so).
fn storable(at: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if (0..=9999).contains(&at.year()) {
        Ok(at)
    } else {
        Err(StoreError::Database(format!(
            "timestamp {at} is outside the years 0000-9999 that the store can record"
        ))
        .into())
    }
}

/// A count for an `integer` column (they never approach its bound; clamped if one did).
pub(super) fn int(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// A count for a `bigint` column.
fn big(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// An `integer` read back as a count (a hand-edited negative reads as 0).
pub(super) fn unsigned(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

fn unsigned_big(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
