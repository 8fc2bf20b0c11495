//! Rate-limit SQL: the `rate_limit_holds` table, one row per spent quota (plugin,
//! host, credential) until it resets. One daemon opens a SQLite file, so the holds
//! that dispatch consults live in its memory; this table is what survives a restart.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use honeydew_core::rate_limit::RateLimitHold;

use super::Error;
use super::jobs::{Time, parse_time};

/// Records `hold`, keeping the later end of a hold of the same key, and drops the
/// holds that ended by its `learned_at`.
pub(super) fn hold(conn: &Connection, hold: &RateLimitHold) -> Result<(), Error> {
    conn.prepare_cached("DELETE FROM rate_limit_holds WHERE until <= ?1")?
        .execute(params![Time(hold.learned_at)])?;
    conn.prepare_cached(
        "INSERT INTO rate_limit_holds (plugin, host, credential, until, learned_at, node) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (plugin, host, credential) DO UPDATE SET \
         until = excluded.until, learned_at = excluded.learned_at, node = excluded.node \
         WHERE excluded.until > rate_limit_holds.until",
    )?
    .execute(params![
        hold.plugin,
        hold.host,
        hold.credential,
        Time(hold.until),
        Time(hold.learned_at),
        hold.node,
    ])?;
    Ok(())
}

/// Every hold live at `now`.
pub(super) fn holds(conn: &Connection, now: DateTime<Utc>) -> Result<Vec<RateLimitHold>, Error> {
    let mut statement = conn.prepare_cached(
        "SELECT plugin, host, credential, until, learned_at, node FROM rate_limit_holds \
         WHERE until > ?1 ORDER BY plugin, host, credential",
    )?;
    let rows = statement
        .query_map(params![Time(now)], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, Option<String>>(5)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(plugin, host, credential, until, learned_at, node)| {
            Ok(RateLimitHold {
                until: parse_time(&plugin, &until)?,
                learned_at: parse_time(&plugin, &learned_at)?,
                plugin,
                host,
                credential,
                node,
            })
        })
        .collect()
}
