//! Concurrency-limit reads and upkeep: how many jobs of a plugin, a command or a key
//! run now (for `explain`; claims count in their own statements, see `nodes.rs`), and
//! the pruning of the keys' turns (`concurrency_keys`) nobody needs any more.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use honeydew_core::concurrency::{Scope, plugin_of};

use super::Result;

/// How many jobs of `scope` are `running`, on every node.
pub(super) async fn running_in(client: &impl GenericClient, scope: &Scope) -> Result<u64> {
    let (plugin, command, key) = match scope {
        Scope::Plugin(plugin) => (plugin.as_str(), None, None),
        Scope::Command(command) => (plugin_of(command), Some(command.as_str()), None),
        Scope::Key { plugin, key } => (plugin.as_str(), None, Some(key.as_str())),
    };
    let statement = client
        .prepare_cached(
            "SELECT count(*) FROM jobs WHERE status = 'running' \
             AND split_part(command, '.', 1) = $1 \
             AND ($2::text IS NULL OR command = $2) AND ($3::text IS NULL OR concurrency_key = $3)",
        )
        .await?;
    let count: i64 = client
        .query_one(&statement, &[&plugin, &command, &key])
        .await?
        .get(0);
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Forgets when keys last started a job, for keys whose latest start was before
/// `before`: a job of such a key submitted since stands in line by its own age anyway.
pub(super) async fn prune_turns(client: &impl GenericClient, before: DateTime<Utc>) -> Result<u64> {
    let statement = client
        .prepare_cached("DELETE FROM concurrency_keys WHERE last_started_at < $1")
        .await?;
    Ok(client.execute(&statement, &[&before]).await?)
}
