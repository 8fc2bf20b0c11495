//! Job and attempt SQL: insert, guarded transitions, reads, listing and recovery.
//!
//! Rows map to [`Job`] here and nowhere else. Timestamps are written as RFC 3339 UTC
//! text with milliseconds, which sorts as time does; payloads and results are written
//! as TEXT when they are valid UTF-8 (so `json_extract` works in `sqlite3`) and as BLOB
//! otherwise.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params};

use honeydew_core::job::{ErrorKind, Job, JobId, JobStatus, PluginRef, QueuedJob, UnknownStatus};
use honeydew_core::store::{
    AttemptReport, AttemptRow, BulkFilter, Claimed, DIED_DURING_ATTEMPT, FinishedMinute, JobCount,
    JobFilter, JobPage, Outcome, RecoveredJobs, Settled, StoreError, UniqueInsert, Uniqueness,
};

use super::Error;

const JOB_COLUMNS: &str = "id, command, payload, priority, status, created_at, run_at, \
     started_at, completed_at, result, error, error_kind, retry_count, max_retries, \
     plugin_name, plugin_version, plugin_sha256, attempt, snooze_count, trace_parent, \
     concurrency_key";

/// [`JOB_COLUMNS`] without the payload and result, which a summary listing never reads
/// (they can be megabytes each): the same positions, filled with NULL.
const SUMMARY_COLUMNS: &str = "id, command, NULL, priority, status, created_at, run_at, \
     started_at, completed_at, NULL, error, error_kind, retry_count, max_retries, \
     plugin_name, plugin_version, plugin_sha256, attempt, snooze_count, trace_parent, \
     concurrency_key";

/// Cancels a pending job. [`StoreError::StaleTransition`] when it is not pending.
pub(super) fn cancel_pending(
    conn: &Connection,
    id: JobId,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let changed = conn
        .prepare_cached(
            "UPDATE jobs SET status = 'cancelled', error = 'cancelled on request', \
             error_kind = 'cancelled', completed_at = ?2, updated_at = ?2 \
             WHERE id = ?1 AND status = 'pending'",
        )?
        .execute(params![Text(id), Time(now)])?;
    if changed == 1 {
        Ok(())
    } else {
        Err(stale(conn, id, JobStatus::Pending).into())
    }
}

/// The reset of a retried job: pending, due now, a fresh retry (and snooze) budget; it
/// no longer waits for dependencies.
const RETRY_SET: &str = "status = 'pending', retry_count = 0, snooze_count = 0, error = NULL, \
     error_kind = NULL, result = NULL, completed_at = NULL, started_at = NULL, run_at = ?1, \
     updated_at = ?1, waiting_on = 0";

/// Retries one failed or cancelled job.
pub(super) fn retry_job(
    conn: &Connection,
    id: JobId,
    now: DateTime<Utc>,
) -> Result<QueuedJob, Error> {
    let queued = conn
        .prepare_cached(&format!(
            "UPDATE jobs SET {RETRY_SET} WHERE id = ?2 AND status IN ('failed', 'cancelled') \
             RETURNING id, priority, created_at, run_at, command, concurrency_key"
        ))?
        .query_row(params![Time(now), Text(id)], queued_of)
        .optional()?;
    match queued {
        Some(queued) => Ok(queued?),
        None => Err(stale(conn, id, JobStatus::Failed).into()),
    }
}

/// The `WHERE` of a bulk action: `?2` status, `?3` command, `?4` since, `?5` after,
/// `?6` limit, in id order.
const BULK_MATCH: &str = "id IN (SELECT id FROM jobs WHERE status = ?2 \
     AND (?3 IS NULL OR command = ?3) AND (?4 IS NULL OR created_at >= ?4) \
     AND (?5 IS NULL OR id > ?5) ORDER BY id LIMIT ?6)";

/// Retries up to `limit` failed or cancelled jobs matching `filter`.
pub(super) fn retry_matching(
    conn: &Connection,
    filter: &BulkFilter,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<QueuedJob>, Error> {
    let sql = format!(
        "UPDATE jobs SET {RETRY_SET} WHERE {BULK_MATCH} RETURNING id, priority, created_at, run_at, command, concurrency_key"
    );
    let mut queued = bulk_update(conn, &sql, filter, now, limit, queued_of)?;
    queued.sort_by_key(|job: &QueuedJob| job.id);
    Ok(queued)
}

/// Cancels up to `limit` pending jobs matching `filter`.
pub(super) fn cancel_matching(
    conn: &Connection,
    filter: &BulkFilter,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<JobId>, Error> {
    let sql = format!(
        "UPDATE jobs SET status = 'cancelled', error = 'cancelled on request', \
         error_kind = 'cancelled', completed_at = ?1, updated_at = ?1 WHERE {BULK_MATCH} \
         RETURNING id"
    );
    let mut ids = bulk_update(conn, &sql, filter, now, limit, |row| {
        Ok(parse_id(&row.get::<_, String>(0)?))
    })?;
    ids.sort();
    Ok(ids)
}

/// Runs a bulk `UPDATE ... WHERE {BULK_MATCH} RETURNING ...`, reading each row.
fn bulk_update<T>(
    conn: &Connection,
    sql: &str,
    filter: &BulkFilter,
    now: DateTime<Utc>,
    limit: usize,
    read: impl FnMut(&Row<'_>) -> rusqlite::Result<Result<T, StoreError>>,
) -> Result<Vec<T>, Error> {
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement.query_map(
        params![
            Time(now),
            filter.status.as_str(),
            filter.command,
            filter.since.map(Time),
            filter.after.map(Text),
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        read,
    )?;
    let mut read = Vec::new();
    for row in rows {
        read.push(row??);
    }
    Ok(read)
}

/// A `RETURNING id, priority, created_at, run_at, command, concurrency_key` row as a
/// queue entry.
pub(super) fn queued_of(row: &Row<'_>) -> rusqlite::Result<Result<QueuedJob, StoreError>> {
    let id: String = row.get(0)?;
    let priority: i64 = row.get(1)?;
    let created_at: String = row.get(2)?;
    let run_at: String = row.get(3)?;
    let command: String = row.get(4)?;
    let concurrency_key: Option<String> = row.get(5)?;
    Ok((|| {
        Ok(QueuedJob {
            id: parse_id(&id)?,
            command: command.into(),
            priority,
            created_at: parse_time(&id, &created_at)?,
            run_at: parse_time(&id, &run_at)?,
            concurrency_key: concurrency_key.map(Into::into),
        })
    })())
}

/// Start-up recovery (see [`JobStore::recover`](honeydew_core::store::JobStore::recover)).
pub(super) fn recover(conn: &Connection, now: DateTime<Utc>) -> Result<RecoveredJobs, Error> {
    conn.prepare_cached(
        "UPDATE job_attempts SET outcome = 'interrupted', error_kind = 'interrupted', \
         error = ?2, finished_at = ?1 \
         WHERE finished_at IS NULL AND job_id IN (SELECT id FROM jobs WHERE status = 'running')",
    )?
    .execute(params![Time(now), DIED_DURING_ATTEMPT])?;
    let reset_running = conn
        .prepare_cached(
            "UPDATE jobs SET status = 'pending', retry_count = retry_count + 1, \
             error = ?2, error_kind = 'interrupted', \
             updated_at = ?1 WHERE status = 'running' AND retry_count < max_retries",
        )?
        .execute(params![Time(now), DIED_DURING_ATTEMPT])?;
    let failed_interrupted = conn
        .prepare_cached(
            "UPDATE jobs SET status = 'failed', \
             error = ?2 || ' (gave up after ' || retry_count || ' retries)', \
             error_kind = 'interrupted', completed_at = ?1, updated_at = ?1 \
             WHERE status = 'running'",
        )?
        .execute(params![Time(now), DIED_DURING_ATTEMPT])?;
    Ok(RecoveredJobs {
        reset_running,
        failed_interrupted,
    })
}

/// The pending jobs to queue (see
/// [`JobStore::pending_jobs`](honeydew_core::store::JobStore::pending_jobs)).
pub(super) fn pending_jobs(conn: &Connection) -> Result<Vec<QueuedJob>, Error> {
    let mut statement = conn.prepare_cached(
        "SELECT id, priority, created_at, run_at, command, concurrency_key FROM jobs \
         WHERE status = 'pending' AND waiting_on = 0 ORDER BY priority DESC, created_at, id",
    )?;
    // One string per command, however many jobs it has pending.
    let mut commands = std::collections::HashSet::<std::sync::Arc<str>>::new();
    statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, Option<String>>(5)?,
            ))
        })?
        .map(|row| {
            let (id, priority, created_at, run_at, command, concurrency_key) = row?;
            let command = match commands.get(command.as_str()) {
                Some(shared) => shared.clone(),
                None => {
                    let shared: std::sync::Arc<str> = command.into();
                    commands.insert(shared.clone());
                    shared
                }
            };
            Ok(QueuedJob {
                id: parse_id(&id)?,
                command,
                priority,
                created_at: parse_time(&id, &created_at)?,
                run_at: parse_time(&id, &run_at)?,
                concurrency_key: concurrency_key.map(Into::into),
            })
        })
        .collect()
}

/// Deletes up to `limit` finished jobs in `status` that finished before `before`.
///
/// The walk is bounded by id as well: a job that finished before `before` was created
/// before it, and ids (UUID v7) sort by creation, so only jobs created before the
/// cutoff are looked at, oldest first, through `jobs_by_status_id`.
pub(super) fn prune_finished(
    conn: &Connection,
    status: JobStatus,
    before: DateTime<Utc>,
    limit: usize,
) -> Result<usize, Error> {
    let sql = format!(
        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs \
         WHERE status = '{}' AND status <> 'pending' AND id < ?1 AND completed_at < ?2 \
         ORDER BY id LIMIT ?3)",
        status.as_str()
    );
    let before = before.max(DateTime::<Utc>::UNIX_EPOCH);
    Ok(conn.prepare_cached(&sql)?.execute(params![
        first_id_at(before),
        Time(before),
        limit as i64
    ])?)
}

/// One job by id.
pub(super) fn get_job(conn: &Connection, id: JobId) -> Result<Job, Error> {
    Ok(conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row(params![Text(id)], read_job)
        .optional()?
        .ok_or(StoreError::NotFound(id))??)
}

/// One job by id with the number of its latest attempt (0 before the first), read in
/// one statement so the two always belong to the same moment.
pub(super) fn get_job_with_attempt(conn: &Connection, id: JobId) -> Result<(Job, u32), Error> {
    Ok(conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row(params![Text(id)], |row| {
            let attempt: u32 = row.get(17)?;
            Ok(read_job(row)?.map(|job| (job, attempt)))
        })
        .optional()?
        .ok_or(StoreError::NotFound(id))??)
}

/// Jobs matching `filter`, newest first, one page at a time.
pub(super) fn list_jobs(conn: &Connection, filter: &JobFilter) -> Result<JobPage, Error> {
    let limit = filter.page_size();
    let mut statement = conn.prepare_cached(&list_sql(filter))?;
    let jobs = statement
        .query_map(
            params![filter.command, filter.cursor.map(Text), limit as i64 + 1],
            read_job,
        )?
        .collect::<Result<Result<Vec<Job>, StoreError>, _>>()??;
    Ok(JobPage::from_overfetch(jobs, limit))
}

/// Every attempt of a job, oldest first.
pub(super) fn attempts(conn: &Connection, id: JobId) -> Result<Vec<AttemptRow>, Error> {
    let mut statement = conn.prepare_cached(
        "SELECT attempt, worker_id, outcome, error_kind, error, duration_ms, fuel_used \
         FROM job_attempts WHERE job_id = ?1 ORDER BY attempt",
    )?;
    let rows = statement
        .query_map(params![Text(id)], |row| {
            Ok(AttemptRow {
                attempt: row.get(0)?,
                worker_id: row.get(1)?,
                outcome: row.get(2)?,
                error_kind: row
                    .get::<_, Option<String>>(3)?
                    .map(|k| ErrorKind::parse(&k)),
                error: row.get(4)?,
                duration_ms: row.get(5)?,
                fuel_used: row.get(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Jobs that reached a final state at or after `since`, by minute: one scan of `jobs`
/// grouped on the minute prefix of `completed_at` (RFC 3339 text, so the first 16
/// characters are the minute, and text order is time order).
pub(super) fn finished_per_minute(
    conn: &Connection,
    since: DateTime<Utc>,
) -> Result<Vec<FinishedMinute>, Error> {
    let mut statement = conn.prepare_cached(
        "SELECT substr(completed_at, 1, 16) AS minute, SUM(status = 'completed'), \
         SUM(status = 'failed'), SUM(status = 'cancelled') FROM jobs \
         WHERE completed_at >= ?1 AND status IN ('completed', 'failed', 'cancelled') \
         GROUP BY minute ORDER BY minute",
    )?;
    let rows = statement
        .query_map([Time(since)], |row| {
            let minute: String = row.get(0)?;
            let counts: [i64; 3] = [row.get(1)?, row.get(2)?, row.get(3)?];
            Ok((minute, counts))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(minute, [completed, failed, cancelled])| {
            let minute = DateTime::parse_from_rfc3339(&format!("{minute}:00Z"))
                .map_err(|err| StoreError::Corrupt {
                    id: format!("(a job finished at {minute})"),
                    reason: err.to_string(),
                })?
                .with_timezone(&Utc);
            Ok(FinishedMinute {
                minute,
                completed: u64::try_from(completed).unwrap_or(0),
                failed: u64::try_from(failed).unwrap_or(0),
                cancelled: u64::try_from(cancelled).unwrap_or(0),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()
        .map_err(Error::from)
}

/// How many jobs each command has in each state: one grouped scan of `jobs`, sorted
/// by command, then state in [`JobStatus::ALL`] order.
pub(super) fn count_jobs(conn: &Connection) -> Result<Vec<JobCount>, Error> {
    let mut statement =
        conn.prepare_cached("SELECT command, status, COUNT(*) FROM jobs GROUP BY command, status")?;
    let rows = statement
        .query_map([], |row| {
            let command: String = row.get(0)?;
            let status: String = row.get(1)?;
            let count: i64 = row.get(2)?;
            Ok((command, status, count))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut counts = rows
        .into_iter()
        .map(|(command, status, count)| {
            let status = status
                .parse()
                .map_err(|err: UnknownStatus| StoreError::Corrupt {
                    id: format!("(a job of {command})"),
                    reason: err.to_string(),
                })?;
            Ok(JobCount {
                command,
                status,
                count: u64::try_from(count).unwrap_or(0),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    counts.sort_by_key(|count| (count.command.clone(), status_rank(count.status)));
    Ok(counts)
}

/// The place of `status` in [`JobStatus::ALL`], for sorting.
fn status_rank(status: JobStatus) -> usize {
    JobStatus::ALL
        .iter()
        .position(|other| *other == status)
        .unwrap_or(JobStatus::ALL.len())
}

/// The listing query for `filter`, naming only the filters it has, so that SQLite can
/// walk the matching index instead of every job: `jobs_by_status_id` for a finished or
/// running state, `jobs_by_command_id` for a command. Pending jobs are in no status
/// index (a submit would pay for it): they are read from `jobs_pending_by_priority`,
/// which holds nothing else, and sorted newest first; the cost follows the number of
/// pending jobs, never the length of the history.
///
/// The status is written into the text as a literal (it comes from a closed enum, never
/// from user text) because SQLite uses a partial index only when the query's own terms
/// imply the index's WHERE clause. Parameters: ?1 command, ?2 cursor, ?3 limit; all
/// three are bound whatever the shape (SQLite counts parameters up to the highest
/// number used).
pub(super) fn list_sql(filter: &JobFilter) -> String {
    let conditions: Vec<String> = [
        filter.status.map(|status| match status {
            JobStatus::Pending => "status = 'pending'".into(),
            // The second term repeats the index's own WHERE clause: SQLite proves a
            // partial index usable only from terms it finds in the query verbatim.
            status => format!("status = '{}' AND status <> 'pending'", status.as_str()),
        }),
        filter.command.as_ref().map(|_| "command = ?1".into()),
        filter.cursor.map(|_| "id < ?2".into()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let filter_clause = match conditions.is_empty() {
        true => String::new(),
        false => format!("WHERE {}", conditions.join(" AND ")),
    };
    let columns = match filter.with_bodies {
        true => JOB_COLUMNS,
        false => SUMMARY_COLUMNS,
    };
    let index = match (filter.status, &filter.command) {
        (Some(JobStatus::Pending), None) => "INDEXED BY jobs_pending_by_priority",
        _ => "",
    };
    format!("SELECT {columns} FROM jobs {index} {filter_clause} ORDER BY id DESC LIMIT ?3")
}

/// The submit path's one statement.
pub(super) const INSERT_JOB: &str = "INSERT INTO jobs (id, command, payload, priority, status, \
     created_at, run_at, retry_count, max_retries, updated_at, trace_parent, concurrency_key) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?6, ?10, ?11)";

pub(super) fn insert_job(conn: &Connection, job: &Job) -> Result<(), Error> {
    conn.prepare_cached(INSERT_JOB)?.execute(params![
        Text(job.id),
        job.command,
        Bytes(&job.payload),
        job.priority,
        job.status.as_str(),
        Time(job.created_at),
        Time(job.run_at),
        job.retry_count,
        job.max_retries,
        job.trace_parent,
        job.concurrency_key,
    ])?;
    Ok(())
}

/// Inserts `job` unless the holder of `unique.key` blocks it; see
/// [`JobStore::insert_unique`](honeydew_core::store::JobStore::insert_unique). Run by the
/// one writer, inside one savepoint: no other submit runs between the look and the
/// insert.
pub(super) fn insert_unique(
    conn: &Connection,
    job: &Job,
    unique: &Uniqueness,
) -> Result<UniqueInsert, Error> {
    let holder = conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = (SELECT job_id FROM unique_keys WHERE key = ?1)"
        ))?
        .query_row(params![unique.key], read_job)
        .optional()?
        .transpose()?;
    if let Some(holder) = holder
        && unique.blocks(holder.status, holder.created_at, job.created_at)
    {
        if unique.replace && holder.status == JobStatus::Pending {
            let replaced = conn
                .prepare_cached(
                    "UPDATE jobs SET payload = ?2, updated_at = ?3                      WHERE id = ?1 AND status = 'pending'",
                )?
                .execute(params![Text(holder.id), Bytes(&job.payload), Time(job.created_at)])?;
            if replaced == 1 {
                return Ok(UniqueInsert::Replaced(holder.id));
            }
        }
        return Ok(UniqueInsert::Held(holder.id));
    }
    insert_job(conn, job)?;
    conn.prepare_cached(
        "INSERT INTO unique_keys (key, job_id) VALUES (?1, ?2)          ON CONFLICT (key) DO UPDATE SET job_id = excluded.job_id",
    )?
    .execute(params![unique.key, Text(job.id)])?;
    Ok(UniqueInsert::Inserted)
}

pub(super) fn claim(
    conn: &Connection,
    id: JobId,
    worker_id: usize,
    now: DateTime<Utc>,
) -> Result<Option<Claimed>, Error> {
    let claimed = conn
        .prepare_cached(&format!(
            "UPDATE jobs SET status = 'running', started_at = ?2, updated_at = ?2, \
             attempt = attempt + 1 \
             WHERE id = ?1 AND status = 'pending' AND run_at <= ?2 AND waiting_on = 0 \
             RETURNING {JOB_COLUMNS}"
        ))?
        .query_row(params![Text(id), Time(now)], |row| {
            let attempt: u32 = row.get(17)?;
            Ok(read_job(row)?.map(|job| (job, attempt)))
        })
        .optional()?
        .transpose()?;
    let Some((job, attempt)) = claimed else {
        return Ok(None);
    };
    conn.prepare_cached(
        "INSERT INTO job_attempts (job_id, attempt, worker_id, started_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![Text(id), attempt, worker_id as i64, Time(now)])?;
    Ok(Some(Claimed { job, attempt }))
}

pub(super) fn finish(
    conn: &Connection,
    id: JobId,
    attempt: u32,
    outcome: &Outcome,
    report: &AttemptReport,
) -> Result<Settled, Error> {
    let (error_kind, error) = outcome.error().unzip();
    let result = match outcome {
        Outcome::Completed(result) => Some(Bytes(result)),
        _ => None,
    };
    let (retry_increment, run_at) = outcome.retry();
    let run_at = run_at.map(Time);
    let completed_at = outcome
        .status()
        .is_terminal()
        .then_some(Time(report.finished_at));
    let plugin = report.plugin.as_ref();
    let changed = conn
        .prepare_cached(
            "UPDATE jobs SET status = ?2, result = ?3, error = ?4, error_kind = ?5, \
             retry_count = retry_count + ?6, run_at = COALESCE(?7, run_at), completed_at = ?8, \
             plugin_name = COALESCE(?9, plugin_name), plugin_version = COALESCE(?10, plugin_version), \
             plugin_sha256 = COALESCE(?11, plugin_sha256), updated_at = ?12, \
             snooze_count = snooze_count + ?14 \
             WHERE id = ?1 AND status = 'running' AND attempt = ?13 RETURNING has_dependents",
        )?
        .query_row(params![
            Text(id),
            outcome.status().as_str(),
            result,
            error,
            error_kind.map(ErrorKind::as_str),
            retry_increment,
            run_at,
            completed_at,
            plugin.map(|p| &p.name),
            plugin.map(|p| &p.version),
            plugin.map(|p| &p.sha256),
            Time(report.finished_at),
            attempt,
            outcome.snoozes(),
        ], |row| row.get::<_, bool>(0))
        .optional()?;
    let Some(has_dependents) = changed else {
        return Err(stale(conn, id, JobStatus::Running).into());
    };
    conn.prepare_cached(
        "UPDATE job_attempts SET finished_at = ?3, outcome = ?4, error_kind = ?5, error = ?6, \
         duration_ms = ?7, fuel_used = ?8 WHERE job_id = ?1 AND attempt = ?2",
    )?
    .execute(params![
        Text(id),
        attempt,
        Time(report.finished_at),
        outcome.attempt_outcome(),
        error_kind.map(ErrorKind::as_str),
        error,
        report.duration_ms as i64,
        report.fuel_used.map(|fuel| fuel as i64),
    ])?;
    if !has_dependents {
        return Ok(Settled::default());
    }
    super::dependencies::settle_after(conn, id, outcome.status(), report.finished_at)
}

/// The error for a guarded update that matched nothing: the job is elsewhere, or gone.
fn stale(conn: &Connection, id: JobId, expected: JobStatus) -> StoreError {
    let actual = conn
        .prepare_cached("SELECT status FROM jobs WHERE id = ?1")
        .and_then(|mut statement| {
            statement
                .query_row(params![Text(id)], |row| row.get::<_, String>(0))
                .optional()
        });
    match actual {
        Ok(Some(status)) => match status.parse() {
            Ok(actual) => StoreError::StaleTransition {
                id,
                expected,
                actual,
            },
            Err(err) => StoreError::Corrupt {
                id: id.to_string(),
                reason: format!("{err}"),
            },
        },
        Ok(None) => StoreError::NotFound(id),
        Err(err) => Error::from(err).into(),
    }
}

/// Reads a row selected with [`JOB_COLUMNS`]. The outer error is SQLite's; the inner one
/// is a value that does not parse.
fn read_job(row: &Row<'_>) -> rusqlite::Result<Result<Job, StoreError>> {
    let id: String = row.get(0)?;
    let status: String = row.get(4)?;
    let created_at: String = row.get(5)?;
    let run_at: String = row.get(6)?;
    let started_at: Option<String> = row.get(7)?;
    let completed_at: Option<String> = row.get(8)?;
    let error_kind: Option<String> = row.get(11)?;
    let plugin_name: Option<String> = row.get(14)?;
    let payload = bytes(row.get_ref(2)?);
    let result = match row.get_ref(9)? {
        ValueRef::Null => None,
        value => Some(bytes(value)),
    };
    let (command, priority, error, retry_count, max_retries) = (
        row.get(1)?,
        row.get(3)?,
        row.get(10)?,
        row.get(12)?,
        row.get(13)?,
    );
    let plugin_version: Option<String> = row.get(15)?;
    let plugin_sha256: Option<String> = row.get(16)?;
    let snooze_count: u32 = row.get(18)?;
    let trace_parent: Option<String> = row.get(19)?;
    let concurrency_key: Option<String> = row.get(20)?;
    Ok((|| {
        Ok(Job {
            id: parse_id(&id)?,
            command,
            payload,
            priority,
            status: status
                .parse()
                .map_err(|err: UnknownStatus| StoreError::Corrupt {
                    id: id.clone(),
                    reason: err.to_string(),
                })?,
            created_at: parse_time(&id, &created_at)?,
            run_at: parse_time(&id, &run_at)?,
            started_at: started_at.map(|t| parse_time(&id, &t)).transpose()?,
            completed_at: completed_at.map(|t| parse_time(&id, &t)).transpose()?,
            result,
            error,
            error_kind: error_kind.map(|kind| ErrorKind::parse(&kind)),
            retry_count,
            max_retries,
            snooze_count,
            trace_parent,
            concurrency_key,
            plugin: plugin_name.map(|name| PluginRef {
                name,
                version: plugin_version.unwrap_or_default(),
                sha256: plugin_sha256.unwrap_or_default(),
            }),
        })
    })())
}

pub(super) fn bytes(value: ValueRef<'_>) -> Vec<u8> {
    match value {
        ValueRef::Text(text) | ValueRef::Blob(text) => text.to_vec(),
        ValueRef::Integer(n) => n.to_string().into_bytes(),
        ValueRef::Real(x) => x.to_string().into_bytes(),
        ValueRef::Null => Vec::new(),
    }
}

pub(super) fn parse_id(id: &str) -> Result<JobId, StoreError> {
    id.parse().map_err(|err| StoreError::Corrupt {
        id: id.to_owned(),
        reason: format!("bad id: {err}"),
    })
}

pub(super) fn parse_time(id: &str, text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|err| StoreError::Corrupt {
            id: id.to_owned(),
            reason: format!("bad timestamp {text:?}: {err}"),
        })
}

/// The smallest UUID v7 (as stored text) created at `at`: every job created before `at`
/// has a smaller id.
pub(super) fn first_id_at(at: DateTime<Utc>) -> String {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0) & 0xFFFF_FFFF_FFFF;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6] = 0x70;
    bytes[8] = 0x80;
    uuid::Uuid::from_bytes(bytes).hyphenated().to_string()
}

/// A job id bound as TEXT.
pub(super) struct Text(pub(super) JobId);

impl ToSql for Text {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Owned(Value::Text(self.0.to_string())))
    }
}

/// A timestamp bound as RFC 3339 UTC text with milliseconds. Only instants with a
/// four-digit year are written: RFC 3339 has no room for others, so a row holding one
/// could never be read back (and would break every listing that met it).
pub(super) struct Time(pub(super) DateTime<Utc>);

/// An instant outside years 0000-9999 that the store refused to write.
#[derive(Debug, thiserror::Error)]
#[error("timestamp {0} is outside the years 0000-9999 that the store can record")]
pub(super) struct UnstorableTime(DateTime<Utc>);

impl ToSql for Time {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        if !(0..=9999).contains(&self.0.year()) {
            return Err(rusqlite::Error::ToSqlConversionFailure(Box::new(
                UnstorableTime(self.0),
            )));
        }
        Ok(ToSqlOutput::Owned(Value::Text(
            self.0.to_rfc3339_opts(SecondsFormat::Millis, true),
        )))
    }
}

/// Bytes bound as TEXT when they are UTF-8, BLOB otherwise.
pub(super) struct Bytes<'a>(pub(super) &'a [u8]);

impl ToSql for Bytes<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match std::str::from_utf8(self.0) {
            Ok(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Err(_) => ToSqlOutput::Borrowed(ValueRef::Blob(self.0)),
        })
    }
}
