//! Dependency SQL: jobs that wait for others (`job_dependencies`, `jobs.waiting_on`).
//!
//! A job's `waiting_on` is the number of its dependencies not yet completed; it is
//! only ever recounted, never decremented, so every settling is idempotent. A
//! dependency's completion recounts its dependents in the same transaction; a failure
//! or a cancel cancels them, and whoever waits on them, in turn.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use honeydew_core::job::{Job, JobId, JobStatus};
use honeydew_core::store::{AfterInsert, Settled, StoreError};

use super::Error;
use super::jobs::{Text, Time, insert_job, parse_id, queued_of};

/// The dependencies of the `jobs` row at hand not yet completed: what its
/// `waiting_on` should be.
const UNFINISHED: &str = "(SELECT count(*) FROM job_dependencies AS d \
     JOIN jobs AS dependency ON dependency.id = d.depends_on \
     WHERE d.job_id = jobs.id AND dependency.status <> 'completed')";

/// Inserts `job` waiting for `after` (see
/// [`JobStore::insert_after`](honeydew_core::store::JobStore::insert_after)).
pub(super) fn insert_after(
    conn: &Connection,
    job: &Job,
    after: &[JobId],
) -> Result<AfterInsert, Error> {
    let mut failed = None;
    let mut waiting = 0;
    for &dependency in after {
        let status: Option<String> = conn
            .prepare_cached("UPDATE jobs SET has_dependents = 1 WHERE id = ?1 RETURNING status")?
            .query_row(params![Text(dependency)], |row| row.get(0))
            .optional()?;
        let status: JobStatus = status
            .ok_or(StoreError::NotFound(dependency))?
            .parse()
            .map_err(|err| StoreError::Corrupt {
                id: dependency.to_string(),
                reason: format!("{err}"),
            })?;
        match status {
            JobStatus::Completed => {}
            JobStatus::Failed | JobStatus::Cancelled => failed = failed.or(Some(dependency)),
            JobStatus::Pending | JobStatus::Running => waiting += 1,
        }
    }
    insert_job(conn, job)?;
    for &dependency in after {
        conn.prepare_cached(
            "INSERT INTO job_dependencies (job_id, depends_on) VALUES (?1, ?2) \
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![Text(job.id), Text(dependency)])?;
    }
    if let Some(dependency) = failed {
        conn.prepare_cached(
            "UPDATE jobs SET status = 'cancelled', error_kind = 'dependency_failed', \
             error = ?2, completed_at = ?3, updated_at = ?3 WHERE id = ?1",
        )?
        .execute(params![
            Text(job.id),
            dependency_failed(dependency),
            Time(job.created_at)
        ])?;
        return Ok(AfterInsert::Cancelled(dependency));
    }
    conn.prepare_cached("UPDATE jobs SET waiting_on = ?2 WHERE id = ?1")?
        .execute(params![Text(job.id), waiting as i64])?;
    Ok(AfterInsert::Waiting(waiting))
}

/// Why a job was cancelled for `dependency`.
fn dependency_failed(dependency: JobId) -> String {
    format!("job {dependency}, which it depends on, failed or was cancelled")
}

/// After job `id` reached `status`: recounts its waiting dependents (completed), or
/// cancels them and their own dependents (failed or cancelled).
pub(super) fn settle_after(
    conn: &Connection,
    id: JobId,
    status: JobStatus,
    now: DateTime<Utc>,
) -> Result<Settled, Error> {
    match status {
        JobStatus::Completed => {
            let mut statement = conn.prepare_cached(&format!(
                "UPDATE jobs SET waiting_on = {UNFINISHED} WHERE status = 'pending' \
                 AND id IN (SELECT job_id FROM job_dependencies WHERE depends_on = ?1) \
                 RETURNING id, priority, created_at, run_at, command, concurrency_key, waiting_on"
            ))?;
            let released = released(statement.query(params![Text(id)])?)?;
            Ok(Settled {
                released,
                cancelled: Vec::new(),
            })
        }
        JobStatus::Failed | JobStatus::Cancelled => Ok(Settled {
            released: Vec::new(),
            cancelled: cancel_dependents(conn, Some(id), now)?,
        }),
        JobStatus::Pending | JobStatus::Running => Ok(Settled::default()),
    }
}

/// Every waiting job's settling (see
/// [`JobStore::settle_dependents`](honeydew_core::store::JobStore::settle_dependents)).
/// Only rows whose count changed are written.
pub(super) fn settle_all(conn: &Connection, now: DateTime<Utc>) -> Result<Settled, Error> {
    let cancelled = cancel_dependents(conn, None, now)?;
    let mut statement = conn.prepare_cached(&format!(
        "UPDATE jobs SET waiting_on = {UNFINISHED} WHERE waiting_on > 0 AND status = 'pending' \
             AND waiting_on <> {UNFINISHED} \
         RETURNING id, priority, created_at, run_at, command, concurrency_key, waiting_on"
    ))?;
    let released = released(statement.query([])?)?;
    Ok(Settled {
        released,
        cancelled,
    })
}

/// The rows of a recount whose job waits for nothing any more, as queue entries.
fn released(mut rows: rusqlite::Rows<'_>) -> Result<Vec<honeydew_core::job::QueuedJob>, Error> {
    let mut released = Vec::new();
    while let Some(row) = rows.next()? {
        let waiting: i64 = row.get(6)?;
        if waiting == 0 {
            released.push(queued_of(row)??);
        }
    }
    Ok(released)
}

/// Cancels the pending jobs that wait on a failed or cancelled job (`failed`, or any
/// when `None`), and every pending job waiting on those in turn; their ids.
fn cancel_dependents(
    conn: &Connection,
    failed: Option<JobId>,
    now: DateTime<Utc>,
) -> Result<Vec<JobId>, Error> {
    let mut statement = conn.prepare_cached(
        "WITH RECURSIVE doomed (id, cause) AS (\
             SELECT d.job_id, d.depends_on FROM job_dependencies AS d \
             JOIN jobs AS dependency ON dependency.id = d.depends_on \
             WHERE dependency.status IN ('failed', 'cancelled') \
             AND (?1 IS NULL OR d.depends_on = ?1) \
             AND d.job_id IN (SELECT id FROM jobs WHERE waiting_on > 0 AND status = 'pending') \
             UNION \
             SELECT d.job_id, d.depends_on FROM job_dependencies AS d \
             JOIN doomed ON d.depends_on = doomed.id) \
         UPDATE jobs SET status = 'cancelled', error_kind = 'dependency_failed', \
         error = 'job ' || (SELECT cause FROM doomed WHERE doomed.id = jobs.id LIMIT 1) \
             || ', which it depends on, failed or was cancelled', \
         completed_at = ?2, updated_at = ?2 \
         WHERE status = 'pending' AND id IN (SELECT id FROM doomed) RETURNING id",
    )?;
    let ids = statement
        .query_map(params![failed.map(Text), Time(now)], |row| {
            row.get::<_, String>(0)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ids
        .iter()
        .map(|id| parse_id(id))
        .collect::<Result<_, StoreError>>()?)
}

/// The jobs `id` depends on, with their statuses.
pub(super) fn dependencies(conn: &Connection, id: JobId) -> Result<Vec<(JobId, JobStatus)>, Error> {
    let mut statement = conn.prepare_cached(
        "SELECT dependency.id, dependency.status FROM job_dependencies AS d \
         JOIN jobs AS dependency ON dependency.id = d.depends_on WHERE d.job_id = ?1 \
         ORDER BY dependency.id",
    )?;
    let rows = statement
        .query_map(params![Text(id)], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(id, status)| {
            let status = status.parse().map_err(|err| StoreError::Corrupt {
                id: id.clone(),
                reason: format!("{err}"),
            })?;
            Ok((parse_id(&id)?, status))
        })
        .collect()
}
