//! The PostgreSQL schema and its migrations, recorded in `honeydew_schema`.
//!
//! The tables and columns are SQLite's, in PostgreSQL's native types: ids are `uuid`,
//! instants `timestamptz`, payloads and results `bytea` (the exact bytes a plugin was
//! given or returned, JSON or not). `honeydew_json(bytea)` reads one as `jsonb` (NULL
//! when it is not JSON), so `SELECT honeydew_json(result)->>'sha' FROM jobs` works in
//! `psql` as `json_extract` does in `sqlite3`. Every daemon that starts migrates under
//! one advisory lock, so several starting at once apply each migration exactly once.
//! The tables live in the connection's `search_path` (the `public` schema unless the
//! URL's `options` say otherwise).

use deadpool_postgres::Object;

use honeydew_core::store::StoreError;

use super::Error;

/// Migration `n` (0-based) takes the schema from version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE jobs (
    id             uuid PRIMARY KEY,
    command        text NOT NULL,
    payload        bytea NOT NULL,
    priority       bigint NOT NULL DEFAULT 0,
    status         text NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    created_at     timestamptz NOT NULL,
    run_at         timestamptz NOT NULL,           -- not eligible before this instant
    started_at     timestamptz,
    completed_at   timestamptz,
    result         bytea,
    error          text,
    error_kind     text,
    retry_count    integer NOT NULL DEFAULT 0,
    max_retries    integer NOT NULL DEFAULT 0,
    plugin_name    text,
    plugin_version text,
    plugin_sha256  text,
    updated_at     timestamptz NOT NULL,
    attempt        integer NOT NULL DEFAULT 0,     -- the latest attempt: fences every outcome
    node_id        text                            -- the daemon running it, while running
);
CREATE INDEX jobs_pending_by_priority ON jobs (priority DESC, created_at, id) WHERE status = 'pending';
CREATE INDEX jobs_by_status_id ON jobs (status, id) WHERE status <> 'pending';
CREATE INDEX jobs_by_command_id ON jobs (command, id);
CREATE INDEX jobs_failed_by_completed ON jobs (completed_at DESC) WHERE status = 'failed';
CREATE INDEX jobs_running_by_node ON jobs (node_id) WHERE status = 'running';

CREATE TABLE job_attempts (
    job_id       uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,                 -- 1 for the first run
    worker_id    integer,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    outcome      text,                             -- completed, failed, retrying, cancelled, interrupted, parked
    error_kind   text,
    error        text,
    duration_ms  bigint,
    fuel_used    bigint,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE schedules (
    id                 uuid PRIMARY KEY,
    name               text NOT NULL UNIQUE,
    cron_expr          text NOT NULL,
    timezone           text NOT NULL DEFAULT 'UTC',
    command            text NOT NULL,
    payload            bytea NOT NULL,
    priority           bigint NOT NULL DEFAULT 0,
    max_retries        integer,
    misfire            text NOT NULL DEFAULT 'skip' CHECK (misfire IN ('skip', 'run_once')),
    enabled            boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL,
    last_run_at        timestamptz,
    next_run_at        timestamptz,
    last_job_id        uuid,
    last_scheduled_for timestamptz,                -- the instant of the last trigger (dedup)
    last_error         text,
    last_error_at      timestamptz
);

-- A payload or result as jsonb, NULL when its bytes are not UTF-8 JSON.
CREATE FUNCTION honeydew_json(data bytea) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    RETURN convert_from(data, 'UTF8')::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;
"#,
    // v2: several daemons on one database. Each registers as a node and heartbeats;
    // every statement that leaves a job pending (a submit, a retry, a rescue) notifies
    // `honeydew_work` so that idle nodes claim at once instead of polling.
    r#"
CREATE TABLE nodes (
    id           text PRIMARY KEY,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()   -- by the database's clock
);
-- Which daemon ran each attempt.
ALTER TABLE job_attempts ADD COLUMN node_id text;
-- When nothing is eligible: how long until something is.
CREATE INDEX jobs_pending_by_run_at ON jobs (run_at) WHERE status = 'pending';

CREATE FUNCTION honeydew_notify_work() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM changed_jobs WHERE status = 'pending') THEN
        PERFORM pg_notify('honeydew_work', '');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_notify_work_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS changed_jobs FOR EACH STATEMENT EXECUTE FUNCTION honeydew_notify_work();
CREATE TRIGGER jobs_notify_work_update AFTER UPDATE ON jobs
    REFERENCING NEW TABLE AS changed_jobs FOR EACH STATEMENT EXECUTE FUNCTION honeydew_notify_work();
"#,
    // v3: what nodes tell each other. A cancel asked of a running job is recorded on
    // its row (`cancel_requested`, cleared by the next claim) and announced on
    // `honeydew_cancel` to the node running it. Every statement that changes jobs
    // announces them on `honeydew_jobs`, one line `id status attempt retry_count` per
    // job, 100 to a notification (under the 8000-byte payload limit), so that a watcher
    // on any node sees each transition. Schedule changes go out on `honeydew_schedules`.
    r#"
ALTER TABLE jobs ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;
CREATE INDEX jobs_cancel_requested ON jobs (node_id) WHERE cancel_requested AND status = 'running';

CREATE FUNCTION honeydew_notify_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    batch text;
BEGIN
    IF EXISTS (SELECT 1 FROM changed_jobs WHERE status = 'pending') THEN
        PERFORM pg_notify('honeydew_work', '');
    END IF;
    FOR batch IN
        SELECT string_agg(concat_ws(' ', id, status, attempt, retry_count), E'\n')
        FROM (SELECT id, status, attempt, retry_count,
                     (row_number() OVER () - 1) / 100 AS chunk
              FROM changed_jobs) AS numbered
        GROUP BY chunk
    LOOP
        PERFORM pg_notify('honeydew_jobs', batch);
    END LOOP;
    RETURN NULL;
END
$$;
DROP TRIGGER jobs_notify_work_insert ON jobs;
DROP TRIGGER jobs_notify_work_update ON jobs;
DROP FUNCTION honeydew_notify_work();
CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS changed_jobs FOR EACH STATEMENT EXECUTE FUNCTION honeydew_notify_jobs();
CREATE TRIGGER jobs_notify_update AFTER UPDATE ON jobs
    REFERENCING NEW TABLE AS changed_jobs FOR EACH STATEMENT EXECUTE FUNCTION honeydew_notify_jobs();

CREATE FUNCTION honeydew_notify_schedules() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('honeydew_schedules', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER schedules_notify AFTER INSERT OR DELETE OR UPDATE OF cron_expr, timezone, enabled
    ON schedules FOR EACH STATEMENT EXECUTE FUNCTION honeydew_notify_schedules();
"#,
    // v4: unique jobs. A key names the job that holds it; whether that job still
    // blocks a new one with the key (its state, its age) is the new submit's question.
    // The key goes with its job; it is written before its job in the same
    // transaction, hence the deferred check.
    r#"
CREATE TABLE unique_keys (
    key    text PRIMARY KEY,
    job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX unique_keys_by_job ON unique_keys (job_id);
"#,
    // v5: job changes are announced only for the jobs some node watches. Announcing
    // every change made each claim and each finish queue a notification, and PostgreSQL
    // takes one global lock to queue them at commit: it cost a third of the dispatch
    // throughput with nobody listening. A node registers the jobs its `WatchJob`
    // callers follow (without a foreign key: a watch may begin before its job's insert
    // commits), and drops them when the last one ends; a dead node's watches go with
    // its rescue. The statement trigger now reads `job_watches` first, which is empty
    // or nearly so.
    r#"
CREATE TABLE job_watches (
    job_id  uuid NOT NULL,
    node_id text NOT NULL,
    PRIMARY KEY (job_id, node_id)
);
CREATE INDEX job_watches_by_node ON job_watches (node_id);

CREATE OR REPLACE FUNCTION honeydew_notify_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    batch text;
BEGIN
    IF EXISTS (SELECT 1 FROM changed_jobs WHERE status = 'pending') THEN
        PERFORM pg_notify('honeydew_work', '');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM job_watches) THEN
        RETURN NULL;
    END IF;
    FOR batch IN
        SELECT string_agg(concat_ws(' ', id, status, attempt, retry_count), E'\n')
        FROM (SELECT id, status, attempt, retry_count,
                     (row_number() OVER () - 1) / 100 AS chunk
              FROM changed_jobs
              WHERE EXISTS (SELECT 1 FROM job_watches WHERE job_watches.job_id = changed_jobs.id))
             AS numbered
        GROUP BY chunk
    LOOP
        PERFORM pg_notify('honeydew_jobs', batch);
    END LOOP;
    RETURN NULL;
END
$$;
"#,
    // v6: pauses. A row holds back the pending jobs of a plugin (`target` without a
    // dot) or of one command, on every node, until it is deleted; claims skip the jobs
    // it covers. Ending one wakes every node's idle workers.
    r#"
CREATE TABLE pauses (
    target    text PRIMARY KEY,
    paused_at timestamptz NOT NULL
);
CREATE FUNCTION honeydew_notify_resumed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('honeydew_work', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER pauses_notify_resumed AFTER DELETE ON pauses
    FOR EACH STATEMENT EXECUTE FUNCTION honeydew_notify_resumed();
"#,
    // v7: dependencies. A job may wait for others: `job_dependencies` names them,
    // `waiting_on` counts those not yet completed (claims take only 0), and a job
    // that others wait for says so (`has_dependents`). Marking it is an update of its
    // row, so an outcome racing with a new dependent waits for that insert's commit
    // and then sees the mark; the outcome's own transaction then settles the
    // dependents in a statement of its own, which sees the dependent's rows.
    r#"
ALTER TABLE jobs ADD COLUMN waiting_on integer NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN has_dependents boolean NOT NULL DEFAULT false;
CREATE TABLE job_dependencies (
    job_id     uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    depends_on uuid NOT NULL,
    PRIMARY KEY (job_id, depends_on)
);
CREATE INDEX job_dependencies_by_dependency ON job_dependencies (depends_on);
CREATE INDEX jobs_waiting ON jobs (id) WHERE waiting_on > 0;
"#,
    // v8: a plugin may snooze its job (run again later without spending a retry); the
    // job counts its snoozes, which the daemon caps.
    r#"
ALTER TABLE jobs ADD COLUMN snooze_count integer NOT NULL DEFAULT 0;
"#,
    // v9: a job keeps the W3C `traceparent` its attempts continue (NULL when it was
    // submitted untraced).
    r#"
ALTER TABLE jobs ADD COLUMN trace_parent text;
"#,
    // v10: rate-limit holds. A row says that a plugin's quota on one host with one
    // credential is spent until `until`: no node claims a job of that plugin before
    // then. Rows that ended are dropped as new ones come.
    r#"
CREATE TABLE rate_limit_holds (
    plugin     text NOT NULL,
    host       text NOT NULL,
    credential text NOT NULL,
    until      timestamptz NOT NULL,
    learned_at timestamptz NOT NULL,
    node       text,
    PRIMARY KEY (plugin, host, credential)
);
"#,
    // v11: what a plugin says while it runs. Each attempt keeps the tail of its log
    // (the store trims it as it appends) and its latest progress; both go with the job.
    // An append of a watched job is announced on `honeydew_output` (its id), for
    // the watchers of other nodes.
    r#"
CREATE TABLE attempt_logs (
    job_id   uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt  integer NOT NULL,
    seq      bigint NOT NULL,
    at       timestamptz NOT NULL,
    level    text NOT NULL,
    line     text NOT NULL,
    PRIMARY KEY (job_id, attempt, seq)
);
CREATE TABLE job_progress (
    job_id     uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt    integer NOT NULL,
    done       bigint NOT NULL,
    total      bigint,
    message    text,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
"#,
    // v12: concurrency keys. A job may carry a key (one repository, one tenant): at
    // most a few jobs of its plugin with that key run at once, and keys take turns.
    // `jobs_pending_by_key` lists each key's pending jobs in dispatch order (its first
    // is the key's head, and a skip scan over it finds the keys); `concurrency_keys`
    // says when each key's latest job started, which is where its next one stands in
    // line. `jobs_pending_by_priority` keeps only the unkeyed pending jobs, so that a
    // claim's walk in dispatch order never steps over a key's line.
    r#"
ALTER TABLE jobs ADD COLUMN concurrency_key text;
DROP INDEX jobs_pending_by_priority;
CREATE INDEX jobs_pending_by_priority ON jobs (priority DESC, created_at, id)
    WHERE status = 'pending' AND concurrency_key IS NULL;
CREATE INDEX jobs_pending_by_key ON jobs (split_part(command, '.', 1), concurrency_key,
    priority DESC, created_at, id) WHERE status = 'pending' AND concurrency_key IS NOT NULL;
CREATE TABLE concurrency_keys (
    plugin          text NOT NULL,
    key             text NOT NULL,
    last_started_at timestamptz NOT NULL,
    PRIMARY KEY (plugin, key)
);
"#,
    // v13: notifications per schema. Channels were database-wide, so the daemons of
    // one schema were woken by every other schema's submits, and a cancel reached a
    // node of the same id in another schema. A channel is now `KIND.SCHEMA` (the
    // schema's md5 when that would pass PostgreSQL's 63-byte limit). The trigger
    // functions also keep the search path they were created with: a session whose
    // own path lacks the schema (`psql` updating `myschema.jobs`) still finds
    // `job_watches` and `honeydew_channel`.
    r#"
CREATE FUNCTION honeydew_channel(kind text, schema text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN octet_length(kind || '.' || schema) <= 63 THEN kind || '.' || schema
                ELSE kind || '.' || md5(schema) END
$$;

CREATE OR REPLACE FUNCTION honeydew_notify_jobs() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
DECLARE
    batch text;
BEGIN
    IF EXISTS (SELECT 1 FROM changed_jobs WHERE status = 'pending') THEN
        PERFORM pg_notify(honeydew_channel('honeydew_work', TG_TABLE_SCHEMA), '');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM job_watches) THEN
        RETURN NULL;
    END IF;
    FOR batch IN
        SELECT string_agg(concat_ws(' ', id, status, attempt, retry_count), E'\n')
        FROM (SELECT id, status, attempt, retry_count,
                     (row_number() OVER () - 1) / 100 AS chunk
              FROM changed_jobs
              WHERE EXISTS (SELECT 1 FROM job_watches WHERE job_watches.job_id = changed_jobs.id))
             AS numbered
        GROUP BY chunk
    LOOP
        PERFORM pg_notify(honeydew_channel('honeydew_jobs', TG_TABLE_SCHEMA), batch);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION honeydew_notify_schedules() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_notify(honeydew_channel('honeydew_schedules', TG_TABLE_SCHEMA), '');
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION honeydew_notify_resumed() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_notify(honeydew_channel('honeydew_work', TG_TABLE_SCHEMA), '');
    RETURN NULL;
END
$$;
"#,
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// An arbitrary constant: the advisory lock every daemon takes while it migrates.
const MIGRATION_LOCK: i64 = 0x686f_6e65_7964_6577; // "honeydew"

/// Brings the database up to [`SCHEMA_VERSION`] in one transaction, under an advisory
/// lock: every missing migration applies, or none does.
pub(super) async fn migrate(client: &mut Object) -> Result<(), Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS honeydew_schema (\
             version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let current: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM honeydew_schema", &[])
        .await?
        .get(0);
    let current = u32::try_from(current).unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        }
        .into());
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = version as i32 + 1;
        tx.batch_execute(sql)
            .await
            .map_err(|err| StoreError::Migration {
                version: version as u32,
                reason: super::describe_error(&err),
            })?;
        tx.execute(
            "INSERT INTO honeydew_schema (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tracing::info!(version, "applied job database migration");
    }
    tx.commit().await?;
    Ok(())
}
