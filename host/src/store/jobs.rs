//! Job and attempt SQL: insert, guarded transitions, reads, listing and recovery.
//!
//! Rows map to [`Job`] here and nowhere else. Timestamps are written as RFC 3339 UTC
//! text with milliseconds, which sorts as time does; payloads and results are written
//! as TEXT when they are valid UTF-8 (so `json_extract` works in `sqlite3`) and as BLOB
//! otherwise.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params};

use super::{Store, StoreError};
use crate::job::{ErrorKind, Job, JobId, JobStatus, PluginRef};
use crate::queue::QueuedJob;

/// A job a worker has just moved to `running`, with the number of this attempt.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// The job as it now stands (status `running`).
    pub job: Job,
    /// 1 for the first attempt; counts every start, including ones a shutdown cut.
    pub attempt: u32,
}

/// What a finished attempt reports, besides its outcome.
#[derive(Clone, Debug, Default)]
pub struct AttemptReport {
    /// When the attempt ended.
    pub finished_at: DateTime<Utc>,
    /// How long it ran.
    pub duration_ms: u64,
    /// Fuel the sandbox burned, when the executor measures it.
    pub fuel_used: Option<u64>,
    /// The component that ran it, when a plugin was involved.
    pub plugin: Option<PluginRef>,
}

/// How an attempt ended, and so which state the job moves to from `running`.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// `completed` with this result.
    Completed(Vec<u8>),
    /// `failed` for good.
    Failed {
        /// What kind of failure.
        kind: ErrorKind,
        /// The message.
        error: String,
    },
    /// Back to `pending` with `retry_count + 1`, eligible at `run_at`.
    Retry {
        /// What kind of failure.
        kind: ErrorKind,
        /// The message.
        error: String,
        /// When the next attempt may start.
        run_at: DateTime<Utc>,
    },
    /// `cancelled` on request while running.
    Cancelled,
    /// Back to `pending` unchanged: the daemon stopped before the attempt finished.
    Interrupted,
    /// Back to `pending`, no retry spent: no loaded plugin serves the command just now
    /// (it is being replaced, say); the job waits for the plugin, `reason` says so.
    Parked {
        /// What the job waits for, shown as its error while it waits.
        reason: String,
    },
}

impl Outcome {
    fn status(&self) -> JobStatus {
        match self {
            Outcome::Completed(_) => JobStatus::Completed,
            Outcome::Failed { .. } => JobStatus::Failed,
            Outcome::Cancelled => JobStatus::Cancelled,
            Outcome::Retry { .. } | Outcome::Interrupted | Outcome::Parked { .. } => {
                JobStatus::Pending
            }
        }
    }

    fn attempt_outcome(&self) -> &'static str {
        match self {
            Outcome::Completed(_) => "completed",
            Outcome::Failed { .. } => "failed",
            Outcome::Retry { .. } => "retrying",
            Outcome::Cancelled => "cancelled",
            Outcome::Interrupted => "interrupted",
            Outcome::Parked { .. } => "parked",
        }
    }

    fn error(&self) -> Option<(ErrorKind, &str)> {
        match self {
            Outcome::Failed { kind, error } | Outcome::Retry { kind, error, .. } => {
                Some((*kind, error))
            }
            Outcome::Cancelled => Some((ErrorKind::Cancelled, "cancelled on request")),
            Outcome::Interrupted => Some((ErrorKind::Shutdown, "interrupted by daemon shutdown")),
            Outcome::Parked { reason } => Some((ErrorKind::PluginUnavailable, reason)),
            Outcome::Completed(_) => None,
        }
    }
}

/// Which jobs to list. Results come newest first.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub status: Option<JobStatus>,
    /// Only jobs of this command.
    pub command: Option<String>,
    /// At most this many (capped at 1000; 0 means 50).
    pub limit: usize,
    /// Continue after this job (the previous page's `next_cursor`).
    pub cursor: Option<JobId>,
    /// Read payloads and results too; without it they come back empty, unread.
    pub with_bodies: bool,
}

/// One page of [`Store::list_jobs`].
#[derive(Clone, Debug)]
pub struct JobPage {
    /// The jobs, newest first.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<JobId>,
}

/// What recovery found at start-up.
#[derive(Clone, Debug, Default)]
pub struct RecoveredJobs {
    /// Jobs that were `running` when the daemon died, now `pending` again (the lost
    /// attempt counted as a retry).
    pub reset_running: usize,
    /// Jobs that were `running` when the daemon died with no retry left: `failed`
    /// (kind `interrupted`). A job that kills the daemon every time ends here.
    pub failed_interrupted: usize,
    /// Every pending job, in dispatch order.
    pub pending: Vec<QueuedJob>,
}

const LIST_LIMIT_DEFAULT: usize = 50;
const LIST_LIMIT_MAX: usize = 1000;

const JOB_COLUMNS: &str = "id, command, payload, priority, status, created_at, run_at, \
     started_at, completed_at, result, error, error_kind, retry_count, max_retries, \
     plugin_name, plugin_version, plugin_sha256";

/// [`JOB_COLUMNS`] without the payload and result, which a summary listing never reads
/// (they can be megabytes each): the same positions, filled with NULL.
const SUMMARY_COLUMNS: &str = "id, command, NULL, priority, status, created_at, run_at, \
     started_at, completed_at, NULL, error, error_kind, retry_count, max_retries, \
     plugin_name, plugin_version, plugin_sha256";

impl Store {
    /// Inserts a new pending job; returns once the row is durable.
    pub async fn insert_job(&self, job: Job) -> Result<(), StoreError> {
        self.write_statement(move |conn| insert_job(conn, &job))
            .await
    }

    /// Moves a pending job to `running` and opens its attempt row. `Ok(None)` when the
    /// job is no longer pending (cancelled meanwhile) or not yet eligible.
    pub async fn claim(
        &self,
        id: JobId,
        worker_id: usize,
        now: DateTime<Utc>,
    ) -> Result<Option<Claimed>, StoreError> {
        // Relaxed: a claim lost with the power only means the job runs again.
        self.write_relaxed(move |conn| claim(conn, id, worker_id, now))
            .await
    }

    /// Ends attempt `attempt` of a running job with `outcome`. A job that is not
    /// running any more is left alone: [`StoreError::StaleTransition`].
    pub async fn finish(
        &self,
        id: JobId,
        attempt: u32,
        outcome: Outcome,
        report: AttemptReport,
    ) -> Result<(), StoreError> {
        self.write(move |conn| finish(conn, id, attempt, &outcome, &report))
            .await
    }

    /// Cancels a pending job. [`StoreError::StaleTransition`] when it is not pending.
    pub async fn cancel_pending(&self, id: JobId, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.write_statement(move |conn| {
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
                Err(stale(conn, id, JobStatus::Pending))
            }
        })
        .await
    }

    /// Start-up recovery: every `running` job (the daemon died under it) has its open
    /// attempt marked `interrupted` and counted against `max_retries`: back to
    /// `pending` while retries are left, `failed` (kind `interrupted`) once they are
    /// spent, so a job that crashes the daemon cannot run at every start for ever.
    /// Then every pending job, delayed retries included, is returned in dispatch order.
    pub async fn recover(&self, now: DateTime<Utc>) -> Result<RecoveredJobs, StoreError> {
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE job_attempts SET outcome = 'interrupted', error_kind = 'interrupted', \
                 error = 'the daemon died during the attempt', finished_at = ?1 \
                 WHERE finished_at IS NULL AND job_id IN (SELECT id FROM jobs WHERE status = 'running')",
            )?
            .execute(params![Time(now)])?;
            let reset_running = conn
                .prepare_cached(
                    "UPDATE jobs SET status = 'pending', retry_count = retry_count + 1, \
                     error = 'the daemon died during the attempt', error_kind = 'interrupted', \
                     updated_at = ?1 WHERE status = 'running' AND retry_count < max_retries",
                )?
                .execute(params![Time(now)])?;
            let failed_interrupted = conn
                .prepare_cached(
                    "UPDATE jobs SET status = 'failed', \
                     error = 'the daemon died during the attempt (gave up after ' || retry_count || ' retries)', \
                     error_kind = 'interrupted', completed_at = ?1, updated_at = ?1 \
                     WHERE status = 'running'",
                )?
                .execute(params![Time(now)])?;
            let mut statement = conn.prepare_cached(
                "SELECT id, priority, created_at, run_at FROM jobs WHERE status = 'pending' \
                 ORDER BY priority DESC, created_at, id",
            )?;
            let pending = statement
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                })?
                .map(|row| {
                    let (id, priority, created_at, run_at) = row?;
                    Ok(QueuedJob {
                        id: parse_id(&id)?,
                        priority,
                        created_at: parse_time(&id, &created_at)?,
                        run_at: parse_time(&id, &run_at)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok(RecoveredJobs {
                reset_running,
                failed_interrupted,
                pending,
            })
        })
        .await
    }

    /// Deletes up to `limit` jobs in `status` (a finished one) that finished before
    /// `before`, with their attempts; returns how many. One short write: call it again
    /// while it returns `limit`.
    ///
    /// The walk is bounded by id as well: a job that finished before `before` was
    /// created before it, and ids (UUID v7) sort by creation, so only jobs created
    /// before the cutoff are looked at, oldest first, through `jobs_by_status_id`.
    pub async fn prune_finished(
        &self,
        status: JobStatus,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, StoreError> {
        if !status.is_terminal() {
            return Ok(0);
        }
        let id_bound = first_id_at(before);
        let sql = format!(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs \
             WHERE status = '{}' AND status <> 'pending' AND id < ?1 AND completed_at < ?2 \
             ORDER BY id LIMIT ?3)",
            status.as_str()
        );
        self.write_statement(move |conn| {
            let before = before.max(DateTime::<Utc>::UNIX_EPOCH);
            Ok(conn
                .prepare_cached(&sql)?
                .execute(params![id_bound, Time(before), limit as i64])?)
        })
        .await
    }

    /// One job by id.
    pub async fn get_job(&self, id: JobId) -> Result<Job, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
                .query_row(params![Text(id)], read_job)
                .optional()?
                .ok_or(StoreError::NotFound(id))?
        })
        .await
    }

    /// One job by id with the number of its latest attempt (0 before the first), read
    /// in one statement so the two always belong to the same moment.
    pub async fn get_job_with_attempt(&self, id: JobId) -> Result<(Job, u32), StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS}, (SELECT COALESCE(MAX(attempt), 0) FROM job_attempts \
                 WHERE job_id = ?1) FROM jobs WHERE id = ?1"
            ))?
            .query_row(params![Text(id)], |row| {
                let attempt: u32 = row.get(17)?;
                Ok(read_job(row)?.map(|job| (job, attempt)))
            })
            .optional()?
            .ok_or(StoreError::NotFound(id))?
        })
        .await
    }

    /// Jobs matching `filter`, newest first, one page at a time.
    pub async fn list_jobs(&self, filter: JobFilter) -> Result<JobPage, StoreError> {
        self.read(move |conn| {
            let limit = match filter.limit {
                0 => LIST_LIMIT_DEFAULT,
                n => n.min(LIST_LIMIT_MAX),
            };
            let mut statement = conn.prepare_cached(&list_sql(&filter))?;
            let jobs = statement
                .query_map(
                    params![filter.command, filter.cursor.map(Text), limit as i64 + 1,],
                    read_job,
                )?
                .collect::<Result<Result<Vec<Job>, StoreError>, _>>()??;
            let mut jobs = jobs;
            let next_cursor = if jobs.len() > limit {
                jobs.truncate(limit);
                jobs.last().map(|job| job.id)
            } else {
                None
            };
            Ok(JobPage { jobs, next_cursor })
        })
        .await
    }

    /// Every attempt of a job, oldest first.
    pub async fn attempts(&self, id: JobId) -> Result<Vec<AttemptRow>, StoreError> {
        self.read(move |conn| {
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
        })
        .await
    }
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

/// One row of `job_attempts`, as [`Store::attempts`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRow {
    /// 1-based attempt number.
    pub attempt: u32,
    /// The worker that ran it.
    pub worker_id: Option<u32>,
    /// `completed`, `failed`, `retrying`, `cancelled`, `interrupted`; `None` while open.
    pub outcome: Option<String>,
    /// The error's kind, if it failed.
    pub error_kind: Option<ErrorKind>,
    /// The error's message, if it failed.
    pub error: Option<String>,
    /// How long it ran.
    pub duration_ms: Option<u64>,
    /// Fuel burned, when measured.
    pub fuel_used: Option<u64>,
}

/// The submit path's one statement.
pub(super) const INSERT_JOB: &str = "INSERT INTO jobs (id, command, payload, priority, status, \
     created_at, run_at, retry_count, max_retries, updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?6)";

pub(super) fn insert_job(conn: &Connection, job: &Job) -> Result<(), StoreError> {
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
    ])?;
    Ok(())
}

fn claim(
    conn: &Connection,
    id: JobId,
    worker_id: usize,
    now: DateTime<Utc>,
) -> Result<Option<Claimed>, StoreError> {
    let job = conn
        .prepare_cached(&format!(
            "UPDATE jobs SET status = 'running', started_at = ?2, updated_at = ?2 \
             WHERE id = ?1 AND status = 'pending' AND run_at <= ?2 RETURNING {JOB_COLUMNS}"
        ))?
        .query_row(params![Text(id), Time(now)], read_job)
        .optional()?
        .transpose()?;
    let Some(job) = job else {
        return Ok(None);
    };
    let attempt: u32 = conn
        .prepare_cached(
            "INSERT INTO job_attempts (job_id, attempt, worker_id, started_at) \
             SELECT ?1, COALESCE(MAX(attempt), 0) + 1, ?2, ?3 FROM job_attempts WHERE job_id = ?1 \
             RETURNING attempt",
        )?
        .query_row(params![Text(id), worker_id as i64, Time(now)], |row| {
            row.get(0)
        })?;
    Ok(Some(Claimed { job, attempt }))
}

fn finish(
    conn: &Connection,
    id: JobId,
    attempt: u32,
    outcome: &Outcome,
    report: &AttemptReport,
) -> Result<(), StoreError> {
    let (error_kind, error) = outcome.error().unzip();
    let result = match outcome {
        Outcome::Completed(result) => Some(Bytes(result)),
        _ => None,
    };
    let (retry_increment, run_at) = match outcome {
        Outcome::Retry { run_at, .. } => (1, Some(Time(*run_at))),
        _ => (0, None),
    };
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
             plugin_sha256 = COALESCE(?11, plugin_sha256), updated_at = ?12 \
             WHERE id = ?1 AND status = 'running'",
        )?
        .execute(params![
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
        ])?;
    if changed != 1 {
        return Err(stale(conn, id, JobStatus::Running));
    }
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
    Ok(())
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
        Err(err) => err.into(),
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
    Ok((|| {
        Ok(Job {
            id: parse_id(&id)?,
            command,
            payload,
            priority,
            status: status.parse().map_err(|err: crate::job::UnknownStatus| {
                StoreError::Corrupt {
                    id: id.clone(),
                    reason: err.to_string(),
                }
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
