//! Attempt output SQL: `attempt_logs`, one row per kept log line, and `job_progress`,
//! one row per attempt that reported progress, both going with their job (`ON DELETE
//! CASCADE`). An append is one transaction without a WAL flush of its own
//! (`synchronous_commit = off`: a log line lost with the server's power costs no job)
//! that trims the attempts it wrote to their tail and, when some node watches the job,
//! notifies the schema's `output` channel so that watchers on every node read the new output.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use honeydew_core::job::JobId;
use honeydew_core::output::{
    AttemptOutput, JobOutput, JobProgress, LogLevel, LogLine, LogQuery, MAX_LOG_BYTES,
    MAX_LOG_LINES,
};
use honeydew_core::store::StoreError;

use super::Result;
use super::jobs::unsigned;
use super::nodes::Channels;

fn to_sql_u64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_sql_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Appends `output` of job `id` (see
/// [`JobStore::append_output`](honeydew_core::store::JobStore::append_output)).
pub(super) async fn append_output(
    client: &mut deadpool_postgres::Object,
    channels: &Channels,
    id: JobId,
    output: &AttemptOutput,
) -> Result<()> {
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    let uuid = id.as_uuid();
    let exists = tx
        .query_opt("SELECT 1 FROM jobs WHERE id = $1 FOR KEY SHARE", &[&uuid])
        .await?
        .is_some();
    if !exists {
        return Ok(());
    }
    if !output.lines.is_empty() {
        let attempts: Vec<i32> = output
            .lines
            .iter()
            .map(|line| i32::try_from(line.attempt).unwrap_or(i32::MAX))
            .collect();
        let seqs: Vec<i64> = output
            .lines
            .iter()
            .map(|line| to_sql_u64(line.seq))
            .collect();
        let ats: Vec<DateTime<Utc>> = output.lines.iter().map(|line| line.at).collect();
        let levels: Vec<&str> = output
            .lines
            .iter()
            .map(|line| line.level.as_str())
            .collect();
        let texts: Vec<&str> = output.lines.iter().map(|line| line.line.as_str()).collect();
        let insert = tx
            .prepare_cached(
                "INSERT INTO attempt_logs (job_id, attempt, seq, at, level, line) \
                 SELECT $1::uuid, attempt, seq, at, level, line \
                 FROM unnest($2::integer[], $3::bigint[], $4::timestamptz[], $5::text[], $6::text[]) \
                     AS lines (attempt, seq, at, level, line) \
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        tx.execute(&insert, &[&uuid, &attempts, &seqs, &ats, &levels, &texts])
            .await?;
        let trim = tx
            .prepare_cached(
                "DELETE FROM attempt_logs WHERE job_id = $1 AND attempt = $2 AND seq < ( \
                     SELECT COALESCE(MIN(seq), 0) FROM ( \
                         SELECT seq, ROW_NUMBER() OVER tail AS lines, \
                                SUM(octet_length(line)) OVER tail AS bytes \
                         FROM attempt_logs WHERE job_id = $1 AND attempt = $2 \
                         WINDOW tail AS (ORDER BY seq DESC ROWS UNBOUNDED PRECEDING)) AS kept \
                     WHERE lines <= $3 AND bytes <= $4)",
            )
            .await?;
        let touched: BTreeSet<i32> = attempts.iter().copied().collect();
        for attempt in touched {
            tx.execute(
                &trim,
                &[
                    &uuid,
                    &attempt,
                    &(MAX_LOG_LINES as i64),
                    &(MAX_LOG_BYTES as i64),
                ],
            )
            .await?;
        }
    }
    if let Some(progress) = &output.progress {
        let upsert = tx
            .prepare_cached(
                "INSERT INTO job_progress (job_id, attempt, done, total, message, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (job_id, attempt) DO UPDATE SET done = excluded.done, \
                 total = excluded.total, message = excluded.message, \
                 updated_at = excluded.updated_at",
            )
            .await?;
        let attempt = i32::try_from(progress.attempt).unwrap_or(i32::MAX);
        tx.execute(
            &upsert,
            &[
                &uuid,
                &attempt,
                &to_sql_u64(progress.done),
                &progress.total.map(to_sql_u64),
                &progress.message,
                &progress.updated_at,
            ],
        )
        .await?;
    }
    let notify = tx
        .prepare_cached(
            "SELECT pg_notify($2, $1::uuid::text) \
             WHERE EXISTS (SELECT 1 FROM job_watches WHERE job_id = $1)",
        )
        .await?;
    tx.query(&notify, &[&uuid, &channels.output]).await?;
    tx.commit().await?;
    Ok(())
}

/// The lines and progress of job `id` that `query` asks for.
pub(super) async fn job_output(
    client: &impl GenericClient,
    id: JobId,
    query: LogQuery,
) -> Result<JobOutput> {
    let uuid = id.as_uuid();
    let exists = client
        .query_opt("SELECT 1 FROM jobs WHERE id = $1", &[&uuid])
        .await?
        .is_some();
    if !exists {
        return Err(StoreError::NotFound(id).into());
    }
    let attempt = query
        .attempt
        .map(|attempt| i32::try_from(attempt).unwrap_or(i32::MAX));
    let (after_attempt, after_seq) = query.after.unwrap_or((0, 0));
    let after_attempt = i32::try_from(after_attempt).unwrap_or(i32::MAX);
    let limit = i64::try_from(query.page_size()).unwrap_or(i64::MAX);
    let lines = client
        .prepare_cached(
            "SELECT attempt, seq, at, level, line FROM attempt_logs \
             WHERE job_id = $1 AND ($2::integer IS NULL OR attempt = $2) \
             AND (attempt, seq) > ($3, $4) ORDER BY attempt, seq LIMIT $5",
        )
        .await?;
    let lines = client
        .query(
            &lines,
            &[
                &uuid,
                &attempt,
                &after_attempt,
                &to_sql_u64(after_seq),
                &limit,
            ],
        )
        .await?
        .iter()
        .map(|row| LogLine {
            attempt: unsigned(row.get(0)),
            seq: from_sql_u64(row.get(1)),
            at: row.get(2),
            level: LogLevel::parse(row.get(3)),
            line: row.get(4),
        })
        .collect();
    let progress = client
        .prepare_cached(
            "SELECT attempt, done, total, message, updated_at FROM job_progress \
             WHERE job_id = $1 AND ($2::integer IS NULL OR attempt = $2) \
             ORDER BY attempt DESC LIMIT 1",
        )
        .await?;
    let progress = client
        .query_opt(&progress, &[&uuid, &attempt])
        .await?
        .map(|row| JobProgress {
            attempt: unsigned(row.get(0)),
            done: from_sql_u64(row.get(1)),
            total: row.get::<_, Option<i64>>(2).map(from_sql_u64),
            message: row.get(3),
            updated_at: row.get(4),
        });
    Ok(JobOutput { lines, progress })
}
