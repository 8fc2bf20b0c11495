//! Concurrency-limit reads: how many jobs of a plugin, a command or a key run now. The
//! in-memory queue enforces the limits on SQLite; this only answers `explain`.

use honeydew_core::concurrency::Scope;
use rusqlite::{Connection, params};

use super::Error;

/// How many jobs of `scope` are `running`.
pub(super) fn running_in(conn: &Connection, scope: &Scope) -> Result<u64, Error> {
    let (plugin, command, key) = match scope {
        Scope::Plugin(plugin) => (plugin.as_str(), None, None),
        Scope::Command(command) => (
            honeydew_core::concurrency::plugin_of(command),
            Some(command.as_str()),
            None,
        ),
        Scope::Key { plugin, key } => (plugin.as_str(), None, Some(key.as_str())),
    };
    let count: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM jobs WHERE status = 'running' \
             AND substr(command, 1, length(?1) + 1) = ?1 || '.' \
             AND (?2 IS NULL OR command = ?2) AND (?3 IS NULL OR concurrency_key = ?3)",
        )?
        .query_row(params![plugin, command, key], |row| row.get(0))?;
    Ok(u64::try_from(count).unwrap_or(0))
}
