//! The database schema and its migrations, versioned by `PRAGMA user_version`.
//!
//! Each entry of [`MIGRATIONS`] moves the schema one version up and runs in its own
//! transaction; a database newer than this binary is refused rather than guessed at.
//! The tables are meant to be read by people with `sqlite3`: plain columns, RFC 3339
//! UTC timestamps as text, `result` and `payload` as TEXT when they are UTF-8.

use rusqlite::{Connection, OptionalExtension};

use honeydew_core::store::StoreError;

use super::Error;

/// Migration `n` (0-based) takes the schema from version `n` to `n + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE jobs (
    id             TEXT PRIMARY KEY NOT NULL,
    command        TEXT NOT NULL,
    payload        BLOB NOT NULL,              -- TEXT when the bytes are UTF-8
    priority       INTEGER NOT NULL DEFAULT 0,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    created_at     TEXT NOT NULL,              -- RFC 3339 UTC, milliseconds
    run_at         TEXT NOT NULL,              -- not eligible before this instant
    started_at     TEXT,
    completed_at   TEXT,
    result         BLOB,                       -- TEXT when the bytes are UTF-8
    error          TEXT,
    error_kind     TEXT,
    retry_count    INTEGER NOT NULL DEFAULT 0,
    max_retries    INTEGER NOT NULL DEFAULT 0,
    plugin_name    TEXT,
    plugin_version TEXT,
    plugin_sha256  TEXT,
    updated_at     TEXT NOT NULL
);
-- Recovery and dispatch: pending jobs by priority, then age (finished jobs leave it).
CREATE INDEX jobs_pending_by_priority ON jobs (priority DESC, created_at, id) WHERE status = 'pending';
-- Listing newest first, optionally by status or command (ids are UUID v7: time order).
CREATE INDEX jobs_by_status_id ON jobs (status, id DESC);
CREATE INDEX jobs_by_command_id ON jobs (command, id DESC);
-- The spec's "recent failures" query; submits never touch it.
CREATE INDEX jobs_failed_by_completed ON jobs (completed_at DESC) WHERE status = 'failed';

CREATE TABLE job_attempts (
    job_id       TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,             -- 1 for the first run
    worker_id    INTEGER,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    outcome      TEXT,                         -- completed, failed, retrying, cancelled, interrupted
    error_kind   TEXT,
    error        TEXT,
    duration_ms  INTEGER,
    fuel_used    INTEGER,
    PRIMARY KEY (job_id, attempt)
);
"#,
    r#"
CREATE TABLE schedules (
    id                 TEXT PRIMARY KEY NOT NULL,
    name               TEXT NOT NULL UNIQUE,
    cron_expr          TEXT NOT NULL,             -- as given: 5 fields, or 6 with seconds
    timezone           TEXT NOT NULL DEFAULT 'UTC', -- IANA name
    command            TEXT NOT NULL,
    payload            BLOB NOT NULL,             -- TEXT when the bytes are UTF-8
    priority           INTEGER NOT NULL DEFAULT 0,
    max_retries        INTEGER,                   -- NULL: the plugin's or daemon's default
    misfire            TEXT NOT NULL DEFAULT 'skip' CHECK (misfire IN ('skip', 'run_once')),
    enabled            INTEGER NOT NULL DEFAULT 1,
    created_at         TEXT NOT NULL,
    last_run_at        TEXT,
    next_run_at        TEXT,
    last_job_id        TEXT,
    last_scheduled_for TEXT                       -- the instant of the last trigger (dedup)
);
"#,
    // v3: `jobs` rebuilt for the submit path, where every index a new row enters costs
    // about five WAL pages per commit:
    // - The status CHECK becomes a chain of comparisons. Written as `status IN (five
    //   values)`, SQLite built a throwaway B-tree for the list on every INSERT, a tenth
    //   of the writer's time under load. SQLite cannot alter a CHECK in place, hence the
    //   rebuild (its documented procedure, run with foreign keys off).
    // - `jobs_by_status_id` leaves pending jobs out: those are already in
    //   `jobs_pending_by_priority`, and listing them walks ids newest first, where
    //   pending jobs are. A submit enters three indexes instead of four.
    r#"
CREATE TABLE jobs_v3 (
    id             TEXT PRIMARY KEY NOT NULL,
    command        TEXT NOT NULL,
    payload        BLOB NOT NULL,              -- TEXT when the bytes are UTF-8
    priority       INTEGER NOT NULL DEFAULT 0,
    status         TEXT NOT NULL CHECK (status = 'pending' OR status = 'running'
                       OR status = 'completed' OR status = 'failed' OR status = 'cancelled'),
    created_at     TEXT NOT NULL,              -- RFC 3339 UTC, milliseconds
    run_at         TEXT NOT NULL,              -- not eligible before this instant
    started_at     TEXT,
    completed_at   TEXT,
    result         BLOB,                       -- TEXT when the bytes are UTF-8
    error          TEXT,
    error_kind     TEXT,
    retry_count    INTEGER NOT NULL DEFAULT 0,
    max_retries    INTEGER NOT NULL DEFAULT 0,
    plugin_name    TEXT,
    plugin_version TEXT,
    plugin_sha256  TEXT,
    updated_at     TEXT NOT NULL
);
INSERT INTO jobs_v3 (id, command, payload, priority, status, created_at, run_at, started_at,
                     completed_at, result, error, error_kind, retry_count, max_retries,
                     plugin_name, plugin_version, plugin_sha256, updated_at)
SELECT id, command, payload, priority, status, created_at, run_at, started_at,
       completed_at, result, error, error_kind, retry_count, max_retries,
       plugin_name, plugin_version, plugin_sha256, updated_at
FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v3 RENAME TO jobs;
CREATE INDEX jobs_pending_by_priority ON jobs (priority DESC, created_at, id) WHERE status = 'pending';
CREATE INDEX jobs_by_status_id ON jobs (status, id) WHERE status <> 'pending';
CREATE INDEX jobs_by_command_id ON jobs (command, id);
CREATE INDEX jobs_failed_by_completed ON jobs (completed_at DESC) WHERE status = 'failed';
"#,
    // v4: a schedule records why its latest instant submitted no job.
    r#"
ALTER TABLE schedules ADD COLUMN last_error TEXT;
ALTER TABLE schedules ADD COLUMN last_error_at TEXT;
"#,
    // v5: a job records its latest attempt, so that every outcome is fenced by
    // (job id, attempt): the outcome of an attempt that is no longer the latest changes
    // nothing. No index: the submit path does not grow.
    r#"
ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET attempt = (SELECT MAX(attempt) FROM job_attempts WHERE job_id = jobs.id)
WHERE id IN (SELECT job_id FROM job_attempts);
"#,
    // v6: unique jobs. A key names the job that holds it; whether that job still
    // blocks a new one with the key (its state, its age) is the new submit's question.
    // The key goes with its job.
    r#"
CREATE TABLE unique_keys (
    key    TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX unique_keys_by_job ON unique_keys (job_id);
"#,
    // v7: pauses. A row holds back the pending jobs of a plugin (`target` without a
    // dot) or of one command until it is deleted.
    r#"
CREATE TABLE pauses (
    target    TEXT PRIMARY KEY,
    paused_at TEXT NOT NULL
) WITHOUT ROWID;
"#,
    // v8: dependencies. A job may wait for others: `job_dependencies` names them,
    // `waiting_on` counts those not yet completed (claims take only 0), and a job
    // that others wait for says so (`has_dependents`), so that its outcome settles
    // them in its own transaction and every other outcome skips the look.
    r#"
ALTER TABLE jobs ADD COLUMN waiting_on INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN has_dependents INTEGER NOT NULL DEFAULT 0;
CREATE TABLE job_dependencies (
    job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    depends_on TEXT NOT NULL,
    PRIMARY KEY (job_id, depends_on)
) WITHOUT ROWID;
CREATE INDEX job_dependencies_by_dependency ON job_dependencies (depends_on);
CREATE INDEX jobs_waiting ON jobs (id) WHERE waiting_on > 0;
"#,
    // v9: a plugin may snooze its job (run again later without spending a retry); the
    // job counts its snoozes, which the daemon caps. No index: the submit path does
    // not grow.
    r#"
ALTER TABLE jobs ADD COLUMN snooze_count INTEGER NOT NULL DEFAULT 0;
"#,
    // v10: a job keeps the W3C `traceparent` its attempts continue (NULL when it was
    // submitted untraced). No index: the submit path does not grow.
    r#"
ALTER TABLE jobs ADD COLUMN trace_parent TEXT;
"#,
    // v11: rate-limit holds. A row says that a plugin's quota on one host with one
    // credential is spent until `until`: its jobs wait, pending, until then. Kept so
    // that a hold survives a restart; rows that ended are dropped as new ones come.
    r#"
CREATE TABLE rate_limit_holds (
    plugin     TEXT NOT NULL,
    host       TEXT NOT NULL,
    credential TEXT NOT NULL,
    until      TEXT NOT NULL,
    learned_at TEXT NOT NULL,
    node       TEXT,
    PRIMARY KEY (plugin, host, credential)
) WITHOUT ROWID;
"#,
    // v12: what a plugin says while it runs. Each attempt keeps the tail of its log
    // (the store trims it as it appends) and its latest progress; both go with the job.
    r#"
CREATE TABLE attempt_logs (
    job_id   TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt  INTEGER NOT NULL,
    seq      INTEGER NOT NULL,                 -- the line's place in the attempt's log
    at       TEXT NOT NULL,
    level    TEXT NOT NULL,                    -- trace, debug, info, warn, error, critical
    line     TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt, seq)
) WITHOUT ROWID;
CREATE TABLE job_progress (
    job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt    INTEGER NOT NULL,
    done       INTEGER NOT NULL,
    total      INTEGER,
    message    TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;
"#,
    // v13: concurrency keys. A job may carry a key (one repository, one tenant) that
    // limits how many jobs of its plugin with that key run at once. The in-memory queue
    // enforces it; the row only keeps the key across restarts. No index: the submit
    // path does not grow.
    r#"
ALTER TABLE jobs ADD COLUMN concurrency_key TEXT;
"#,
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the database at `conn` up to [`SCHEMA_VERSION`], then turns foreign keys on.
///
/// Migrations run with foreign keys off, as SQLite's table-rebuild procedure requires
/// (dropping the old `jobs` must not cascade into `job_attempts`); each checks the keys
/// before it commits, so a migration that broke a reference is rolled back.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let current: u32 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        }
        .into());
    }
    let upgrading = current > 0 && current < SCHEMA_VERSION;
    let started = std::time::Instant::now();
    if upgrading {
        // A rebuild rewrites every job, so on a large database this is worth announcing.
        tracing::info!(
            from = current,
            to = SCHEMA_VERSION,
            "upgrading the job database schema"
        );
    }
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        let broken: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |row| row.get(0))
            .optional()?;
        if let Some(table) = broken {
            return Err(StoreError::Migration {
                version: version as u32 + 1,
                reason: format!("it would leave a dangling reference in table {table}"),
            }
            .into());
        }
        tx.pragma_update(None, "user_version", version as u32 + 1)?;
        tx.commit()?;
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if upgrading {
        tracing::info!(
            version = SCHEMA_VERSION,
            duration_ms = started.elapsed().as_millis() as u64,
            "job database schema upgraded"
        );
    }
    Ok(())
}
