//! Dependency SQL for PostgreSQL: jobs that wait for others (`job_dependencies`,
//! `jobs.waiting_on`), as on SQLite.
//!
//! `waiting_on` is only ever recounted, never decremented, so every settling is
//! idempotent and several nodes settling at once agree. A new dependent marks its
//! dependencies (`has_dependents`) by updating their rows, so an outcome committing
//! at the same moment either precedes the insert (which then reads it finished) or
//! waits for it and settles it.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use honeydew_core::job::{Job, JobId, JobStatus, QueuedJob};
use honeydew_core::store::{AfterInsert, Settled, StoreError};
use tokio_postgres::Row;
use uuid::Uuid;

use super::Result;
use super::jobs::{insert_jobs, queued_of};

/// The dependencies of the `jobs` row at hand not yet completed: what its
/// `waiting_on` should be.
const UNFINISHED: &str = "(SELECT count(*) FROM job_dependencies AS d \
     JOIN jobs AS dependency ON dependency.id = d.depends_on \
     WHERE d.job_id = jobs.id AND dependency.status <> 'completed')";

/// Inserts `job` waiting for `after`, inside the caller's transaction.
pub(super) async fn insert_after(
    client: &impl GenericClient,
    job: &Job,
    after: &[JobId],
) -> Result<AfterInsert> {
    let ids: Vec<Uuid> = after.iter().map(JobId::as_uuid).collect();
    let statement = client
        .prepare_cached(
            "UPDATE jobs SET has_dependents = true WHERE id = ANY($1) RETURNING id, status",
        )
        .await?;
    let rows = client.query(&statement, &[&ids]).await?;
    let mut failed = None;
    let mut waiting = 0;
    for &dependency in after {
        let row = rows
            .iter()
            .find(|row| row.get::<_, Uuid>(0) == dependency.as_uuid())
            .ok_or(StoreError::NotFound(dependency))?;
        match status_of(row, 1)? {
            JobStatus::Completed => {}
            JobStatus::Failed | JobStatus::Cancelled => failed = failed.or(Some(dependency)),
            JobStatus::Pending | JobStatus::Running => waiting += 1,
        }
    }
    insert_jobs(client, &[job]).await?;
    let statement = client
        .prepare_cached(
            "INSERT INTO job_dependencies (job_id, depends_on) SELECT $1, unnest($2::uuid[]) \
             ON CONFLICT DO NOTHING",
        )
        .await?;
    client
        .execute(&statement, &[&job.id.as_uuid(), &ids])
        .await?;
    if let Some(dependency) = failed {
        let statement = client
            .prepare_cached(
                "UPDATE jobs SET status = 'cancelled', error_kind = 'dependency_failed', \
                 error = 'job ' || $2 || ', which it depends on, failed or was cancelled', \
                 completed_at = created_at, updated_at = created_at WHERE id = $1",
            )
            .await?;
        client
            .execute(&statement, &[&job.id.as_uuid(), &dependency.to_string()])
            .await?;
        return Ok(AfterInsert::Cancelled(dependency));
    }
    let statement = client
        .prepare_cached("UPDATE jobs SET waiting_on = $2 WHERE id = $1")
        .await?;
    client
        .execute(&statement, &[&job.id.as_uuid(), &(waiting as i32)])
        .await?;
    Ok(AfterInsert::Waiting(waiting))
}

fn status_of(row: &Row, index: usize) -> Result<JobStatus> {
    let status: &str = row.get(index);
    Ok(status.parse().map_err(|err| StoreError::Corrupt {
        id: row.get::<_, Uuid>(0).to_string(),
        reason: format!("{err}"),
    })?)
}

/// After job `id` reached `status`: recounts its waiting dependents (completed), or
/// cancels them and their own dependents (failed or cancelled).
pub(super) async fn settle_after(
    client: &impl GenericClient,
    id: JobId,
    status: JobStatus,
    now: DateTime<Utc>,
) -> Result<Settled> {
    match status {
        JobStatus::Completed => {
            let statement = client
                .prepare_cached(&format!(
                    "UPDATE jobs SET waiting_on = {UNFINISHED} WHERE status = 'pending' \
                     AND id IN (SELECT job_id FROM job_dependencies WHERE depends_on = $1) \
                     RETURNING id, priority, created_at, run_at, command, concurrency_key, waiting_on"
                ))
                .await?;
            let rows = client.query(&statement, &[&id.as_uuid()]).await?;
            Ok(Settled {
                released: released(&rows),
                cancelled: Vec::new(),
            })
        }
        JobStatus::Failed | JobStatus::Cancelled => Ok(Settled {
            released: Vec::new(),
            cancelled: cancel_dependents(client, Some(id), now).await?,
        }),
        JobStatus::Pending | JobStatus::Running => Ok(Settled::default()),
    }
}

/// Every waiting job's settling. Only rows whose count changed are written, so the
/// sweep each node runs at every beat writes nothing, and wakes no one, when nothing
/// moved.
pub(super) async fn settle_all(client: &impl GenericClient, now: DateTime<Utc>) -> Result<Settled> {
    let cancelled = cancel_dependents(client, None, now).await?;
    let statement = client
        .prepare_cached(&format!(
            "UPDATE jobs SET waiting_on = {UNFINISHED} WHERE waiting_on > 0 AND status = 'pending' \
             AND waiting_on <> {UNFINISHED} \
             RETURNING id, priority, created_at, run_at, command, concurrency_key, waiting_on"
        ))
        .await?;
    let rows = client.query(&statement, &[]).await?;
    Ok(Settled {
        released: released(&rows),
        cancelled,
    })
}

/// The rows of a recount whose job waits for nothing any more.
fn released(rows: &[Row]) -> Vec<QueuedJob> {
    rows.iter()
        .filter(|row| row.get::<_, i32>(6) == 0)
        .map(queued_of)
        .collect()
}

/// Cancels the pending jobs that wait on a failed or cancelled job (`failed`, or any
/// when `None`), and every pending job waiting on those in turn; their ids.
async fn cancel_dependents(
    client: &impl GenericClient,
    failed: Option<JobId>,
    now: DateTime<Utc>,
) -> Result<Vec<JobId>> {
    let statement = client
        .prepare_cached(
            "WITH RECURSIVE doomed (id, cause) AS (\
                 SELECT d.job_id, d.depends_on FROM job_dependencies AS d \
                 JOIN jobs AS dependency ON dependency.id = d.depends_on \
                 WHERE dependency.status IN ('failed', 'cancelled') \
                 AND ($1::uuid IS NULL OR d.depends_on = $1) \
                 AND d.job_id IN (SELECT id FROM jobs WHERE waiting_on > 0 AND status = 'pending') \
                 UNION \
                 SELECT d.job_id, d.depends_on FROM job_dependencies AS d \
                 JOIN doomed ON d.depends_on = doomed.id), \
             causes AS (SELECT DISTINCT ON (id) id, cause FROM doomed ORDER BY id, cause) \
             UPDATE jobs SET status = 'cancelled', error_kind = 'dependency_failed', \
             error = 'job ' || causes.cause || ', which it depends on, failed or was cancelled', \
             completed_at = $2, updated_at = $2 \
             FROM causes WHERE jobs.id = causes.id AND jobs.status = 'pending' RETURNING jobs.id",
        )
        .await?;
    let rows = client
        .query(&statement, &[&failed.map(|id| id.as_uuid()), &now])
        .await?;
    Ok(rows
        .iter()
        .map(|row| JobId::from(row.get::<_, Uuid>(0)))
        .collect())
}

/// The jobs `id` depends on, with their statuses.
pub(super) async fn dependencies(
    client: &impl GenericClient,
    id: JobId,
) -> Result<Vec<(JobId, JobStatus)>> {
    let statement = client
        .prepare_cached(
            "SELECT dependency.id, dependency.status FROM job_dependencies AS d \
             JOIN jobs AS dependency ON dependency.id = d.depends_on WHERE d.job_id = $1 \
             ORDER BY dependency.id",
        )
        .await?;
    client
        .query(&statement, &[&id.as_uuid()])
        .await?
        .iter()
        .map(|row| Ok((JobId::from(row.get::<_, Uuid>(0)), status_of(row, 1)?)))
        .collect()
}
