//! Pause SQL: the `pauses` table, one row per paused plugin or command. The queue that
//! holds the jobs back is in memory (one daemon opens a SQLite file), loaded from here
//! at start. Beside it, the count of the jobs ahead of one in line, which a pause
//! changes.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use honeydew_core::job::JobId;
use honeydew_core::pause::Pause;

use super::Error;
use super::jobs::{Text, Time, parse_time};

/// Pauses `target` from `at`; false when it already was paused.
pub(super) fn pause(conn: &Connection, target: &str, at: DateTime<Utc>) -> Result<bool, Error> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO pauses (target, paused_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )?
        .execute(params![target, Time(at)])?;
    Ok(inserted == 1)
}

/// Ends the pause of `target`; false when there was none.
pub(super) fn resume(conn: &Connection, target: &str) -> Result<bool, Error> {
    let deleted = conn
        .prepare_cached("DELETE FROM pauses WHERE target = ?1")?
        .execute(params![target])?;
    Ok(deleted == 1)
}

/// How many pending jobs a claim at `now` takes before job `id` (see
/// [`JobStore::count_ahead`](honeydew_core::store::JobStore::count_ahead)).
pub(super) fn count_ahead(conn: &Connection, id: JobId, now: DateTime<Utc>) -> Result<u64, Error> {
    let count: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM jobs AS me, jobs AS other \
             WHERE me.id = ?1 AND other.status = 'pending' AND other.run_at <= ?2 \
             AND (other.priority > me.priority OR (other.priority = me.priority \
                 AND (other.created_at < me.created_at \
                     OR (other.created_at = me.created_at AND other.id < me.id)))) \
             AND NOT EXISTS (SELECT 1 FROM pauses WHERE pauses.target = other.command \
                 OR pauses.target = substr(other.command, 1, instr(other.command, '.') - 1))",
        )?
        .query_row(params![Text(id), Time(now)], |row| row.get(0))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Every pause, by target.
pub(super) fn pauses(conn: &Connection) -> Result<Vec<Pause>, Error> {
    let mut statement =
        conn.prepare_cached("SELECT target, paused_at FROM pauses ORDER BY target")?;
    let rows = statement
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(target, paused_at)| {
            let paused_at = parse_time(&target, &paused_at)?;
            Ok(Pause { target, paused_at })
        })
        .collect()
}
