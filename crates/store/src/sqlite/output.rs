//! Attempt output SQL: `attempt_logs`, one row per kept log line, and `job_progress`,
//! one row per attempt that reported progress. Both go with their job (`ON DELETE
//! CASCADE`), so retention takes them. Appends are relaxed writes (a log line lost to a
//! power cut is no lost job), and each trims the attempts it touched to their tail.

use std::collections::BTreeSet;

use rusqlite::{Connection, OptionalExtension, params};

use honeydew_core::job::JobId;
use honeydew_core::output::{
    AttemptOutput, JobOutput, JobProgress, LogLevel, LogLine, LogQuery, MAX_LOG_BYTES,
    MAX_LOG_LINES,
};
use honeydew_core::store::StoreError;

use super::Error;
use super::jobs::{Text, Time, parse_time};

/// A stored u64 (SQLite integers are signed).
fn to_sql_u64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Appends `output` of job `id` and trims the attempts it wrote to (see
/// [`JobStore::append_output`](honeydew_core::store::JobStore::append_output)).
pub(super) fn append_output(
    conn: &Connection,
    id: JobId,
    output: &AttemptOutput,
) -> Result<(), Error> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")?
        .query_row(params![Text(id)], |_| Ok(()))
        .optional()?
        .is_some();
    if !exists {
        return Ok(());
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO attempt_logs (job_id, attempt, seq, at, level, line) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
    )?;
    let mut attempts = BTreeSet::new();
    for line in &output.lines {
        insert.execute(params![
            Text(id),
            line.attempt,
            to_sql_u64(line.seq),
            Time(line.at),
            line.level.as_str(),
            line.line
        ])?;
        attempts.insert(line.attempt);
    }
    let mut trim = conn.prepare_cached(
        "DELETE FROM attempt_logs WHERE job_id = ?1 AND attempt = ?2 AND seq < ( \
             SELECT COALESCE(MIN(seq), 0) FROM ( \
                 SELECT seq, ROW_NUMBER() OVER tail AS lines, \
                        SUM(length(CAST(line AS BLOB))) OVER tail AS bytes \
                 FROM attempt_logs WHERE job_id = ?1 AND attempt = ?2 \
                 WINDOW tail AS (ORDER BY seq DESC ROWS UNBOUNDED PRECEDING)) \
             WHERE lines <= ?3 AND bytes <= ?4)",
    )?;
    for attempt in attempts {
        trim.execute(params![
            Text(id),
            attempt,
            MAX_LOG_LINES as i64,
            MAX_LOG_BYTES as i64
        ])?;
    }
    if let Some(progress) = &output.progress {
        conn.prepare_cached(
            "INSERT INTO job_progress (job_id, attempt, done, total, message, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (job_id, attempt) DO UPDATE SET done = excluded.done, \
             total = excluded.total, message = excluded.message, updated_at = excluded.updated_at",
        )?
        .execute(params![
            Text(id),
            progress.attempt,
            to_sql_u64(progress.done),
            progress.total.map(to_sql_u64),
            progress.message,
            Time(progress.updated_at)
        ])?;
    }
    Ok(())
}

/// The lines and progress of job `id` that `query` asks for.
pub(super) fn job_output(
    conn: &Connection,
    id: JobId,
    query: LogQuery,
) -> Result<JobOutput, Error> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")?
        .query_row(params![Text(id)], |_| Ok(()))
        .optional()?
        .is_some();
    if !exists {
        return Err(StoreError::NotFound(id).into());
    }
    let (after_attempt, after_seq) = query.after.unwrap_or((0, 0));
    let mut statement = conn.prepare_cached(
        "SELECT attempt, seq, at, level, line FROM attempt_logs \
         WHERE job_id = ?1 AND (?2 IS NULL OR attempt = ?2) AND (attempt, seq) > (?3, ?4) \
         ORDER BY attempt, seq LIMIT ?5",
    )?;
    let rows = statement
        .query_map(
            params![
                Text(id),
                query.attempt,
                after_attempt,
                to_sql_u64(after_seq),
                query.page_size() as i64
            ],
            |row| {
                Ok((
                    row.get::<_, u32>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                ))
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let key = id.to_string();
    let lines = rows
        .into_iter()
        .map(|(attempt, seq, at, level, line)| {
            Ok(LogLine {
                attempt,
                seq: u64::try_from(seq).unwrap_or(0),
                at: parse_time(&key, &at)?,
                level: LogLevel::parse(&level),
                line,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let progress = conn
        .prepare_cached(
            "SELECT attempt, done, total, message, updated_at FROM job_progress \
             WHERE job_id = ?1 AND (?2 IS NULL OR attempt = ?2) ORDER BY attempt DESC LIMIT 1",
        )?
        .query_row(params![Text(id), query.attempt], |row| {
            Ok((
                row.get::<_, u32>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Option<i64>>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, String>(4)?,
            ))
        })
        .optional()?;
    let progress = match progress {
        Some((attempt, done, total, message, updated_at)) => Some(JobProgress {
            attempt,
            done: u64::try_from(done).unwrap_or(0),
            total: total.map(|total| u64::try_from(total).unwrap_or(0)),
            message,
            updated_at: parse_time(&key, &updated_at)?,
        }),
        None => None,
    };
    Ok(JobOutput { lines, progress })
}
