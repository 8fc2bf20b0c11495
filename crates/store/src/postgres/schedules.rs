//! Schedule SQL for PostgreSQL: the `schedules` table, and the trigger that records an
//! instant and inserts its job in one transaction.
//!
//! The trigger's guard (`last_scheduled_for < $3`) makes each scheduled instant submit at
//! most one job: several daemons firing the same instant race on that one row, the
//! first update wins, and the others match nothing and insert nothing.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use honeydew_core::job::Job;
use honeydew_core::schedule::Schedule;
use honeydew_core::store::StoreError;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::jobs::{insert_jobs, int, unsigned};
use super::{Error, Result};

const SCHEDULE_COLUMNS: &str = "id, name, cron_expr, timezone, command, payload, priority, \
     max_retries, misfire, enabled, created_at, last_run_at, next_run_at, last_job_id, \
     last_scheduled_for, last_error, last_error_at";

/// Adds a schedule; [`StoreError::DuplicateSchedule`] when its name is taken.
pub(super) async fn insert_schedule(
    client: &impl GenericClient,
    schedule: &Schedule,
) -> Result<()> {
    let statement = client
        .prepare_cached(&format!(
            "INSERT INTO schedules ({SCHEDULE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        ))
        .await?;
    let inserted = client
        .execute(
            &statement,
            &[
                &schedule.id,
                &schedule.name,
                &schedule.cron_expr,
                &schedule.timezone,
                &schedule.command,
                &schedule.payload,
                &schedule.priority,
                &schedule.max_retries.map(int),
                &schedule.misfire.as_str(),
                &schedule.enabled,
                &schedule.created_at,
                &schedule.last_run_at,
                &schedule.next_run_at,
                &schedule.last_job_id.map(|id| id.as_uuid()),
                &schedule.last_scheduled_for,
                &schedule.last_error,
                &schedule.last_error_at,
            ],
        )
        .await;
    match inserted {
        Err(err) if err.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            Err(StoreError::DuplicateSchedule(schedule.name.clone()).into())
        }
        other => other.map(|_| ()).map_err(Error::from),
    }
}

/// Removes the schedule named `key` (or with id `key`) and returns it.
pub(super) async fn delete_schedule(client: &impl GenericClient, key: String) -> Result<Schedule> {
    let statement = client
        .prepare_cached(&format!(
            "DELETE FROM schedules WHERE name = $1 OR id::text = $1 RETURNING {SCHEDULE_COLUMNS}"
        ))
        .await?;
    match client.query_opt(&statement, &[&key]).await? {
        Some(row) => read_schedule(&row),
        None => Err(StoreError::ScheduleNotFound(key).into()),
    }
}

/// Pauses (`enabled` false) or resumes schedule `key`, by name or id.
pub(super) async fn set_schedule_enabled(
    client: &impl GenericClient,
    key: String,
    enabled: bool,
) -> Result<Schedule> {
    let statement = client
        .prepare_cached(&format!(
            "UPDATE schedules SET enabled = $2 WHERE name = $1 OR id::text = $1 \
             RETURNING {SCHEDULE_COLUMNS}"
        ))
        .await?;
    match client.query_opt(&statement, &[&key, &enabled]).await? {
        Some(row) => read_schedule(&row),
        None => Err(StoreError::ScheduleNotFound(key).into()),
    }
}

/// Every schedule, by name.
pub(super) async fn list_schedules(client: &impl GenericClient) -> Result<Vec<Schedule>> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY name"
        ))
        .await?;
    client
        .query(&statement, &[])
        .await?
        .iter()
        .map(read_schedule)
        .collect()
}

/// One schedule by id.
pub(super) async fn get_schedule(client: &impl GenericClient, id: Uuid) -> Result<Schedule> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1"
        ))
        .await?;
    match client.query_opt(&statement, &[&id]).await? {
        Some(row) => read_schedule(&row),
        None => Err(StoreError::ScheduleNotFound(id.to_string()).into()),
    }
}

/// Records that schedule `id` fired for `scheduled_for` and inserts its job; `false` (and
/// no job) when that instant was already triggered or the schedule is gone. Run inside
/// a transaction.
pub(super) async fn trigger_schedule(
    client: &impl GenericClient,
    id: Uuid,
    scheduled_for: DateTime<Utc>,
    next_run_at: Option<DateTime<Utc>>,
    job: &Job,
) -> Result<bool> {
    let statement = client
        .prepare_cached(
            "UPDATE schedules SET last_run_at = $2, last_scheduled_for = $3, next_run_at = $4, \
             last_job_id = $5, last_error = NULL, last_error_at = NULL \
             WHERE id = $1 AND enabled AND (last_scheduled_for IS NULL OR last_scheduled_for < $3)",
        )
        .await?;
    let changed = client
        .execute(
            &statement,
            &[
                &id,
                &job.created_at,
                &scheduled_for,
                &next_run_at,
                &job.id.as_uuid(),
            ],
        )
        .await?;
    if changed == 0 {
        return Ok(false);
    }
    insert_jobs(client, &[job]).await?;
    Ok(true)
}

/// Records why an instant of schedule `id` submitted no job, and moves its `next_run_at`.
pub(super) async fn record_schedule_error(
    client: &impl GenericClient,
    id: Uuid,
    error: &str,
    at: DateTime<Utc>,
    next_run_at: Option<DateTime<Utc>>,
) -> Result<()> {
    let statement = client
        .prepare_cached(
            "UPDATE schedules SET last_error = $2, last_error_at = $3, next_run_at = $4 \
             WHERE id = $1",
        )
        .await?;
    client
        .execute(&statement, &[&id, &error, &at, &next_run_at])
        .await?;
    Ok(())
}

/// Moves a schedule's `next_run_at`.
pub(super) async fn set_schedule_next_run(
    client: &impl GenericClient,
    id: Uuid,
    next_run_at: Option<DateTime<Utc>>,
) -> Result<()> {
    let statement = client
        .prepare_cached("UPDATE schedules SET next_run_at = $2 WHERE id = $1")
        .await?;
    client.execute(&statement, &[&id, &next_run_at]).await?;
    Ok(())
}

fn read_schedule(row: &Row) -> Result<Schedule> {
    let id: Uuid = row.try_get(0)?;
    let misfire: String = row.try_get(8)?;
    Ok(Schedule {
        id,
        name: row.try_get(1)?,
        cron_expr: row.try_get(2)?,
        timezone: row.try_get(3)?,
        command: row.try_get(4)?,
        payload: row.try_get(5)?,
        priority: row.try_get(6)?,
        max_retries: row.try_get::<_, Option<i32>>(7)?.map(unsigned),
        misfire: misfire.parse().map_err(|err| StoreError::Corrupt {
            id: id.to_string(),
            reason: format!("{err}"),
        })?,
        enabled: row.try_get(9)?,
        created_at: row.try_get(10)?,
        last_run_at: row.try_get(11)?,
        next_run_at: row.try_get(12)?,
        last_job_id: row.try_get::<_, Option<Uuid>>(13)?.map(Into::into),
        last_scheduled_for: row.try_get(14)?,
        last_error: row.try_get(15)?,
        last_error_at: row.try_get(16)?,
    })
}
