//! Schedule SQL: the `schedules` table, and the trigger write that records an instant
//! and inserts its job in one transaction.
//!
//! The trigger's guard (`last_scheduled_for < ?`) is what makes each scheduled instant
//! submit at most one job, even when a restart makes the cron library fire the same
//! instant twice.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, params};
use uuid::Uuid;

use honeydew_core::job::Job;
use honeydew_core::schedule::Schedule;
use honeydew_core::store::StoreError;

use super::Error;
use super::jobs::{Bytes, Text, Time, bytes, insert_job, parse_id, parse_time};

const SCHEDULE_COLUMNS: &str = "id, name, cron_expr, timezone, command, payload, priority, \
     max_retries, misfire, enabled, created_at, last_run_at, next_run_at, last_job_id, \
     last_scheduled_for, last_error, last_error_at";

/// Adds a schedule; [`StoreError::DuplicateSchedule`] when its name is taken.
pub(super) fn insert_schedule(conn: &Connection, schedule: &Schedule) -> Result<(), Error> {
    let inserted = conn
                .prepare_cached(&format!(
                    "INSERT INTO schedules ({SCHEDULE_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
                ))?
                .execute(params![
                    schedule.id.to_string(),
                    schedule.name,
                    schedule.cron_expr,
                    schedule.timezone,
                    schedule.command,
                    Bytes(&schedule.payload),
                    schedule.priority,
                    schedule.max_retries,
                    schedule.misfire.as_str(),
                    schedule.enabled,
                    Time(schedule.created_at),
                    schedule.last_run_at.map(Time),
                    schedule.next_run_at.map(Time),
                    schedule.last_job_id.map(Text),
                    schedule.last_scheduled_for.map(Time),
                    schedule.last_error,
                    schedule.last_error_at.map(Time),
                ]);
    match inserted {
        Err(rusqlite::Error::SqliteFailure(err, _))
            if err.code == ErrorCode::ConstraintViolation =>
        {
            Err(StoreError::DuplicateSchedule(schedule.name.clone()).into())
        }
        other => other.map(|_| ()).map_err(Error::from),
    }
}

/// Removes the schedule named `key` (or with id `key`) and returns it.
pub(super) fn delete_schedule(conn: &Connection, key: String) -> Result<Schedule, Error> {
    Ok(conn
        .prepare_cached(&format!(
            "DELETE FROM schedules WHERE name = ?1 OR id = ?1 RETURNING {SCHEDULE_COLUMNS}"
        ))?
        .query_row(params![key], read_schedule)
        .optional()?
        .ok_or(StoreError::ScheduleNotFound(key))??)
}

/// Pauses (`enabled` false) or resumes schedule `key`, by name or id.
pub(super) fn set_schedule_enabled(
    conn: &Connection,
    key: String,
    enabled: bool,
) -> Result<Schedule, Error> {
    Ok(conn
        .prepare_cached(&format!(
            "UPDATE schedules SET enabled = ?2 WHERE name = ?1 OR id = ?1 \
             RETURNING {SCHEDULE_COLUMNS}"
        ))?
        .query_row(params![key, enabled], read_schedule)
        .optional()?
        .ok_or(StoreError::ScheduleNotFound(key))??)
}

/// Every schedule, by name.
pub(super) fn list_schedules(conn: &Connection) -> Result<Vec<Schedule>, Error> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY name"
    ))?;
    let rows = statement
        .query_map([], read_schedule)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows.into_iter().collect::<Result<_, StoreError>>()?)
}

/// One schedule by id.
pub(super) fn get_schedule(conn: &Connection, id: Uuid) -> Result<Schedule, Error> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = ?1"
        ))?
        .query_row(params![id.to_string()], read_schedule)
        .optional()?
        .ok_or(StoreError::ScheduleNotFound(id.to_string()))??)
}

/// Records that schedule `id` fired for `scheduled_for` and inserts its `job`, in one
/// transaction. `Ok(false)` (and no job) when that instant was already triggered or
/// the schedule is gone.
pub(super) fn trigger_schedule(
    conn: &Connection,
    id: Uuid,
    scheduled_for: DateTime<Utc>,
    next_run_at: Option<DateTime<Utc>>,
    job: Job,
) -> Result<bool, Error> {
    let changed = conn
        .prepare_cached(
            "UPDATE schedules SET last_run_at = ?2, last_scheduled_for = ?3, \
                     next_run_at = ?4, last_job_id = ?5, last_error = NULL, last_error_at = NULL \
                     WHERE id = ?1 AND enabled AND (last_scheduled_for IS NULL OR last_scheduled_for < ?3)",
        )?
        .execute(params![
            id.to_string(),
            Time(job.created_at),
            Time(scheduled_for),
            next_run_at.map(Time),
            Text(job.id),
        ])?;
    if changed == 0 {
        return Ok(false);
    }
    insert_job(conn, &job)?;
    Ok(true)
}

/// Records why an instant of schedule `id` submitted no job, and moves its
/// `next_run_at` on.
pub(super) fn record_schedule_error(
    conn: &Connection,
    id: Uuid,
    error: String,
    at: DateTime<Utc>,
    next_run_at: Option<DateTime<Utc>>,
) -> Result<(), Error> {
    conn.prepare_cached(
        "UPDATE schedules SET last_error = ?2, last_error_at = ?3, next_run_at = ?4 \
                 WHERE id = ?1",
    )?
    .execute(params![
        id.to_string(),
        error,
        Time(at),
        next_run_at.map(Time)
    ])?;
    Ok(())
}

/// Moves a schedule's `next_run_at` (after skipping missed instants, say).
pub(super) fn set_schedule_next_run(
    conn: &Connection,
    id: Uuid,
    next_run_at: Option<DateTime<Utc>>,
) -> Result<(), Error> {
    conn.prepare_cached("UPDATE schedules SET next_run_at = ?2 WHERE id = ?1")?
        .execute(params![id.to_string(), next_run_at.map(Time)])?;
    Ok(())
}

fn read_schedule(row: &Row<'_>) -> rusqlite::Result<Result<Schedule, StoreError>> {
    let id: String = row.get(0)?;
    let misfire: String = row.get(8)?;
    let created_at: String = row.get(10)?;
    let last_run_at: Option<String> = row.get(11)?;
    let next_run_at: Option<String> = row.get(12)?;
    let last_job_id: Option<String> = row.get(13)?;
    let last_scheduled_for: Option<String> = row.get(14)?;
    let last_error: Option<String> = row.get(15)?;
    let last_error_at: Option<String> = row.get(16)?;
    let payload = bytes(row.get_ref(5)?);
    let (name, cron_expr, timezone, command, priority, max_retries, enabled) = (
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(6)?,
        row.get(7)?,
        row.get(9)?,
    );
    let time = |text: Option<String>| text.map(|t| parse_time(&id, &t)).transpose();
    Ok((|| {
        Ok(Schedule {
            id: id
                .parse()
                .map_err(|err| corrupt(&id, format!("bad id: {err}")))?,
            name,
            cron_expr,
            timezone,
            command,
            payload,
            priority,
            max_retries,
            misfire: misfire
                .parse()
                .map_err(|err| corrupt(&id, format!("{err}")))?,
            enabled,
            created_at: parse_time(&id, &created_at)?,
            last_run_at: time(last_run_at)?,
            next_run_at: time(next_run_at)?,
            last_job_id: last_job_id.map(|job| parse_id(&job)).transpose()?,
            last_scheduled_for: time(last_scheduled_for)?,
            last_error,
            last_error_at: time(last_error_at)?,
        })
    })())
}

fn corrupt(id: &str, reason: String) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        reason,
    }
}
