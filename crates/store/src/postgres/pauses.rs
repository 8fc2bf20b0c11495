//! Pause SQL for PostgreSQL: the `pauses` table, which every node's claims consult, so
//! a pause made on one daemon holds on all of them from its commit on. Deleting a row
//! notifies `honeydew_work` (a trigger does it), so the held jobs are claimed at once.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use honeydew_core::job::JobId;
use honeydew_core::pause::Pause;

use super::Result;

/// Pauses `target` from `at`; false when it already was paused.
pub(super) async fn pause(
    client: &impl GenericClient,
    target: &str,
    at: DateTime<Utc>,
) -> Result<bool> {
    let statement = client
        .prepare_cached(
            "INSERT INTO pauses (target, paused_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .await?;
    Ok(client.execute(&statement, &[&target, &at]).await? == 1)
}

/// Ends the pause of `target`; false when there was none.
pub(super) async fn resume(client: &impl GenericClient, target: &str) -> Result<bool> {
    let statement = client
        .prepare_cached("DELETE FROM pauses WHERE target = $1")
        .await?;
    Ok(client.execute(&statement, &[&target]).await? == 1)
}

/// How many pending jobs a claim at `now` takes before job `id` (see
/// [`JobStore::count_ahead`](honeydew_core::store::JobStore::count_ahead)).
pub(super) async fn count_ahead(
    client: &impl GenericClient,
    id: JobId,
    now: DateTime<Utc>,
) -> Result<u64> {
    let statement = client
        .prepare_cached(
            "SELECT count(*) FROM jobs AS me, jobs AS other \
             WHERE me.id = $1 AND other.status = 'pending' AND other.run_at <= $2 \
             AND (other.priority > me.priority OR (other.priority = me.priority \
                 AND (other.created_at, other.id) < (me.created_at, me.id))) \
             AND NOT EXISTS (SELECT 1 FROM pauses \
                 WHERE pauses.target IN (other.command, split_part(other.command, '.', 1)))",
        )
        .await?;
    let count: i64 = client
        .query_one(&statement, &[&id.as_uuid(), &now])
        .await?
        .get(0);
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Every pause, by target.
pub(super) async fn pauses(client: &impl GenericClient) -> Result<Vec<Pause>> {
    let statement = client
        .prepare_cached("SELECT target, paused_at FROM pauses ORDER BY target")
        .await?;
    Ok(client
        .query(&statement, &[])
        .await?
        .iter()
        .map(|row| Pause {
            target: row.get(0),
            paused_at: row.get(1),
        })
        .collect())
}
