//! Rate-limit SQL for PostgreSQL: the `rate_limit_holds` table, one row per spent
//! quota (plugin, host, credential) until it resets. Every node's claims consult it
//! (`nodes.rs`), so a hold one daemon learns holds the jobs of all of them from its
//! commit on.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use honeydew_core::rate_limit::RateLimitHold;

use super::Result;

/// Records `hold`, keeping the later end of a hold of the same key, and drops the
/// other holds that ended by its `learned_at`; one statement (which must not touch the
/// upserted row twice, so its own key is left to the upsert).
pub(super) async fn hold(client: &impl GenericClient, hold: &RateLimitHold) -> Result<()> {
    let statement = client
        .prepare_cached(
            "WITH expired AS (DELETE FROM rate_limit_holds WHERE until <= $5 \
                 AND (plugin, host, credential) <> ($1, $2, $3)) \
             INSERT INTO rate_limit_holds (plugin, host, credential, until, learned_at, node) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (plugin, host, credential) DO UPDATE SET \
             until = EXCLUDED.until, learned_at = EXCLUDED.learned_at, node = EXCLUDED.node \
             WHERE EXCLUDED.until > rate_limit_holds.until",
        )
        .await?;
    client
        .execute(
            &statement,
            &[
                &hold.plugin,
                &hold.host,
                &hold.credential,
                &hold.until,
                &hold.learned_at,
                &hold.node,
            ],
        )
        .await?;
    Ok(())
}

/// Every hold live at `now`.
pub(super) async fn holds(
    client: &impl GenericClient,
    now: DateTime<Utc>,
) -> Result<Vec<RateLimitHold>> {
    let statement = client
        .prepare_cached(
            "SELECT plugin, host, credential, until, learned_at, node FROM rate_limit_holds \
             WHERE until > $1 ORDER BY plugin, host, credential",
        )
        .await?;
    Ok(client
        .query(&statement, &[&now])
        .await?
        .iter()
        .map(|row| RateLimitHold {
            plugin: row.get(0),
            host: row.get(1),
            credential: row.get(2),
            until: row.get(3),
            learned_at: row.get(4),
            node: row.get(5),
        })
        .collect())
}
