//! Several daemons on one database: the node registry and its heartbeats, claims across
//! nodes with `FOR UPDATE SKIP LOCKED`, the rescue of a dead node's jobs, cancel
//! requests for another node's jobs, and the one `LISTEN` connection that hears wake-ups,
//! job changes, cancels and schedule changes.
//!
//! Leases are judged by the database's clock (`now()`), never by a node's own, so nodes
//! whose clocks disagree still agree on who is dead.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use futures_util::{FutureExt, StreamExt};
use honeydew_core::concurrency::{ConcurrencyLimits, Scope, plugin_of};
use honeydew_core::job::JobId;
use honeydew_core::store::{ClaimNext, Claimed, ClusterSignal, JobChange, Rescued};
use tokio::sync::{broadcast, watch};
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

use super::Result;
use super::jobs::{JOB_COLUMNS_OF_JOBS, read_job};

/// The notification channels of this store's schema. Each is `KIND.SCHEMA` (see
/// migration 13's `honeydew_channel`), so the daemons of one schema never hear another
/// schema's wake-ups, cancels or changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Channels {
    /// Notified by every statement that leaves a job pending (a trigger does it).
    pub work: String,
    /// Notified by every statement that changes watched jobs (a trigger does it), one
    /// line `id status attempt retry_count` per job some node watches.
    pub jobs: String,
    /// Cancel requests, `id attempt node`, for the node running the job.
    pub cancel: String,
    /// Notified by every change of the schedules (a trigger does it).
    pub schedules: String,
    /// The id of a watched job whose log or progress grew.
    pub output: String,
}

impl Channels {
    /// The channels of the connection's current schema, named by the database.
    pub(super) async fn of_current_schema(client: &impl GenericClient) -> Result<Self> {
        let row = client
            .query_one(
                "SELECT honeydew_channel('honeydew_work', s), honeydew_channel('honeydew_jobs', s), \
                 honeydew_channel('honeydew_cancel', s), \
                 honeydew_channel('honeydew_schedules', s), \
                 honeydew_channel('honeydew_output', s) FROM current_schema() AS s",
                &[],
            )
            .await?;
        Ok(Self {
            work: row.get(0),
            jobs: row.get(1),
            cancel: row.get(2),
            schedules: row.get(3),
            output: row.get(4),
        })
    }

    /// `LISTEN` on every channel, each name quoted as an identifier.
    fn listen_sql(&self) -> String {
        [
            &self.work,
            &self.jobs,
            &self.cancel,
            &self.schedules,
            &self.output,
        ]
        .map(|channel| format!("LISTEN \"{}\";", channel.replace('"', "\"\"")))
        .concat()
    }
}

/// Records that `node` is alive: registers it the first time, renews its lease after.
pub(super) async fn heartbeat(client: &impl GenericClient, node: &str) -> Result<()> {
    let statement = client
        .prepare_cached(
            "INSERT INTO nodes (id, hostname, pid) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), pid = EXCLUDED.pid, \
             hostname = EXCLUDED.hostname",
        )
        .await?;
    let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    client
        .execute(&statement, &[&node, &hostname(), &pid])
        .await?;
    Ok(())
}

/// How many nodes heartbeat within `lease_ms` (by the database's clock).
pub(super) async fn live_nodes(client: &impl GenericClient, lease_ms: u64) -> Result<u32> {
    let statement = client
        .prepare_cached(
            "SELECT count(*) FROM nodes \
             WHERE heartbeat_at >= now() - make_interval(secs => $1::float8 / 1000)",
        )
        .await?;
    let lease_ms = i64::try_from(lease_ms).unwrap_or(i64::MAX) as f64;
    let count: i64 = client.query_one(&statement, &[&lease_ms]).await?.get(0);
    Ok(u32::try_from(count).unwrap_or(u32::MAX))
}

/// The machine's name, for people reading `nodes`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

/// The condition on `jobs` that no pause holds the row's command or its plugin.
const NOT_PAUSED: &str = "NOT EXISTS (SELECT 1 FROM pauses \
     WHERE pauses.target IN (jobs.command, split_part(jobs.command, '.', 1)))";

/// The condition on `jobs` that no live rate-limit hold (`$1` is now) holds the row's
/// plugin.
const NOT_RATE_LIMITED: &str = "NOT EXISTS (SELECT 1 FROM rate_limit_holds \
     WHERE rate_limit_holds.plugin = split_part(jobs.command, '.', 1) \
     AND rate_limit_holds.until > $1)";

/// The latest hold of each plugin, joined to `jobs` by the row's plugin: a join, not a
/// subquery per row (on 100k pending jobs the subquery took 50 to 230 ms, the join the
/// 30 ms of `min(run_at)` alone).
const HOLD_ENDS: &str = "LEFT JOIN (SELECT plugin, max(until) AS until FROM rate_limit_holds \
     GROUP BY plugin) AS holds ON holds.plugin = split_part(jobs.command, '.', 1)";

/// What a claim must respect besides the commands it serves: the concurrency limits of
/// this node's plugins (see [`honeydew_core::concurrency`]).
pub(super) struct ClaimLimits<'a> {
    /// Plugins and commands with a limit, and their limits.
    pub(super) targets: Vec<&'a str>,
    pub(super) limits: Vec<i32>,
    /// Plugins with a per-key limit other than the default, and those limits.
    pub(super) key_plugins: Vec<&'a str>,
    pub(super) key_limits: Vec<i32>,
    source: &'a ConcurrencyLimits,
}

impl<'a> ClaimLimits<'a> {
    pub(super) fn of(limits: &'a ConcurrencyLimits) -> Self {
        let clamp = |limit: &u32| i32::try_from(*limit).unwrap_or(i32::MAX);
        Self {
            targets: limits.running.keys().map(String::as_str).collect(),
            limits: limits.running.values().map(clamp).collect(),
            key_plugins: limits.per_key.keys().map(String::as_str).collect(),
            key_limits: limits.per_key.values().map(clamp).collect(),
            source: limits,
        }
    }
}

/// The candidates of a claim, best first: the best unkeyed job no other claim holds (in
/// dispatch order along `jobs_pending_by_priority`, locked as the walk finds it, so
/// that concurrent claims each find another) and the head of each key's line (found by a skip
/// scan over `jobs_pending_by_key`, standing where the key rejoined the line), leaving
/// out every job whose plugin, command or key runs as many jobs as its limit allows.
/// `$1` now, `$2` the commands served (NULL: all), `$5`/`$6` the limited targets and
/// their limits, `$7`/`$8` the per-key limits.
fn candidates() -> String {
    format!(
        "\
    running AS MATERIALIZED (SELECT command, split_part(command, '.', 1) AS plugin, \
        concurrency_key AS key FROM jobs WHERE status = 'running'), \
    full_targets AS (SELECT l.target FROM unnest($5::text[], $6::int4[]) AS l (target, lim) \
        WHERE (SELECT count(*) FROM running r WHERE r.command = l.target OR r.plugin = l.target) \
        >= l.lim), \
    full_keys AS (SELECT r.plugin, r.key FROM running r \
        LEFT JOIN unnest($7::text[], $8::int4[]) AS k (plugin, lim) ON k.plugin = r.plugin \
        WHERE r.key IS NOT NULL GROUP BY r.plugin, r.key, k.lim \
        HAVING count(*) >= COALESCE(k.lim, 1)), \
    unkeyed AS (SELECT id, priority, created_at AS ord, command, NULL::text AS key FROM jobs \
        WHERE status = 'pending' AND concurrency_key IS NULL AND run_at <= $1 \
        AND waiting_on = 0 AND ($2::text[] IS NULL OR command = ANY($2)) \
        AND {NOT_PAUSED} AND {NOT_RATE_LIMITED} \
        AND command NOT IN (SELECT target FROM full_targets) \
        AND split_part(command, '.', 1) NOT IN (SELECT target FROM full_targets) \
        ORDER BY priority DESC, created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED), \
    keys AS (\
        (SELECT split_part(command, '.', 1) AS plugin, concurrency_key AS key FROM jobs \
         WHERE status = 'pending' AND concurrency_key IS NOT NULL \
         ORDER BY split_part(command, '.', 1), concurrency_key LIMIT 1) \
        UNION ALL \
        SELECT next.plugin, next.key FROM keys CROSS JOIN LATERAL (\
            SELECT split_part(command, '.', 1) AS plugin, concurrency_key AS key FROM jobs \
            WHERE status = 'pending' AND concurrency_key IS NOT NULL \
            AND (split_part(command, '.', 1), concurrency_key) > (keys.plugin, keys.key) \
            ORDER BY split_part(command, '.', 1), concurrency_key LIMIT 1) AS next), \
    heads AS (SELECT head.id, head.priority, \
            GREATEST(head.created_at, COALESCE(turns.last_started_at, head.created_at)) AS ord, \
            head.command, keys.key \
        FROM keys CROSS JOIN LATERAL (\
            SELECT id, priority, created_at, command FROM jobs \
            WHERE status = 'pending' AND concurrency_key = keys.key \
            AND split_part(command, '.', 1) = keys.plugin AND run_at <= $1 AND waiting_on = 0 \
            AND ($2::text[] IS NULL OR command = ANY($2)) \
            AND {NOT_PAUSED} AND {NOT_RATE_LIMITED} \
            ORDER BY priority DESC, created_at, id LIMIT 1) AS head \
        LEFT JOIN concurrency_keys AS turns ON turns.plugin = keys.plugin AND turns.key = keys.key \
        WHERE (keys.plugin, keys.key) NOT IN (SELECT plugin, key FROM full_keys) \
        AND head.command NOT IN (SELECT target FROM full_targets) \
        AND keys.plugin NOT IN (SELECT target FROM full_targets)), \
    candidates AS (SELECT * FROM (SELECT * FROM unkeyed UNION ALL SELECT * FROM heads) AS c \
        ORDER BY priority DESC, ord, id LIMIT 16)"
    )
}

/// The columns set when a claim moves a job to `running` (`$1` now, `$4` the node).
const CLAIM_SET: &str = "status = 'running', started_at = $1, updated_at = $1, \
     attempt = jobs.attempt + 1, node_id = $4, cancel_requested = false";

/// Claims the best eligible pending job among `commands` for `worker_id` on `node`,
/// skipping rows another node holds, jobs a pause holds back, jobs of a plugin a rate
/// limit holds, and jobs a concurrency limit holds; says when the next one is due
/// otherwise.
///
/// One statement finds the best candidates and claims the first when nothing limits
/// it. A limited one is claimed in a transaction of its own that first takes an
/// advisory lock (of its plugin when the plugin or the command is limited, else of its
/// key), then counts what runs again: so every node counts the claims of the others,
/// and a limit holds across the cluster.
pub(super) async fn claim_next(
    client: &mut deadpool_postgres::Object,
    commands: Option<&[String]>,
    worker_id: usize,
    now: DateTime<Utc>,
    node: &str,
    limits: &ConcurrencyLimits,
) -> Result<ClaimNext> {
    static STATEMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let candidates = candidates();
        format!(
            "WITH RECURSIVE {candidates}, \
             first AS (SELECT id FROM candidates ORDER BY priority DESC, ord, id LIMIT 1), \
             next AS (SELECT jobs.id FROM jobs JOIN first ON first.id = jobs.id \
                 WHERE jobs.status = 'pending' AND jobs.concurrency_key IS NULL \
                 AND jobs.command <> ALL($5) AND split_part(jobs.command, '.', 1) <> ALL($5) \
                 FOR UPDATE OF jobs SKIP LOCKED), \
             claimed AS (UPDATE jobs SET {CLAIM_SET} FROM next WHERE jobs.id = next.id \
                 RETURNING {JOB_COLUMNS_OF_JOBS}), \
             opened AS (\
                 INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, node_id) \
                 SELECT id, attempt, $3, $1, $4 FROM claimed) \
             SELECT claimed.*, \
                 (SELECT array_agg(id ORDER BY priority DESC, ord, id) FROM candidates), \
                 (SELECT array_agg(command ORDER BY priority DESC, ord, id) FROM candidates), \
                 (SELECT array_agg(key ORDER BY priority DESC, ord, id) FROM candidates) \
             FROM (SELECT 1) AS one LEFT JOIN claimed ON true"
        )
    });
    let claim = ClaimLimits::of(limits);
    let statement = client.prepare_cached(&STATEMENT).await?;
    let worker = i32::try_from(worker_id).unwrap_or(i32::MAX);
    let row = client
        .query_one(
            &statement,
            &[
                &now,
                &commands,
                &worker,
                &node,
                &claim.targets,
                &claim.limits,
                &claim.key_plugins,
                &claim.key_limits,
            ],
        )
        .await?;
    if row.try_get::<_, Option<Uuid>>(0)?.is_some() {
        let (job, attempt) = read_job(&row)?;
        return Ok(ClaimNext::Claimed(Box::new(Claimed { job, attempt })));
    }
    let columns = row.len();
    let ids: Vec<Uuid> = row
        .try_get::<_, Option<_>>(columns - 3)?
        .unwrap_or_default();
    let candidate_commands: Vec<String> = row
        .try_get::<_, Option<_>>(columns - 2)?
        .unwrap_or_default();
    let keys: Vec<Option<String>> = row
        .try_get::<_, Option<_>>(columns - 1)?
        .unwrap_or_default();
    let candidates: Vec<((Uuid, String), Option<String>)> =
        ids.into_iter().zip(candidate_commands).zip(keys).collect();
    if !candidates.is_empty() {
        // Claims of jobs limited only by their key take different keys' locks: workers
        // start at different candidates so that they do not all queue for the first.
        // A plugin's or a command's limit is one lock for all: the order is kept.
        let first = &candidates[0];
        let plugin_locked = !claim.source.limited(&first.0.1, None).is_empty();
        let start = if first.1.is_some() && !plugin_locked {
            worker_id % candidates.len()
        } else {
            0
        };
        for index in (0..candidates.len()).map(|n| (n + start) % candidates.len()) {
            let ((id, command), key) = &candidates[index];
            let claimed = claim_one(
                client,
                *id,
                command,
                key.as_deref(),
                worker,
                now,
                node,
                claim.source,
            )
            .await?;
            if let Some(claimed) = claimed {
                return Ok(ClaimNext::Claimed(Box::new(claimed)));
            }
        }
        // Every candidate went to another node or filled up meanwhile: look again soon.
        return Ok(ClaimNext::NothingUntil(Some(now + RECLAIM_AFTER)));
    }
    let statement = client
        .prepare_cached(&format!(
            "SELECT min(GREATEST(run_at, COALESCE(holds.until, run_at))) FROM jobs {HOLD_ENDS} \
             WHERE status = 'pending' AND waiting_on = 0 \
             AND ($1::text[] IS NULL OR command = ANY($1)) AND {NOT_PAUSED} \
             AND GREATEST(run_at, COALESCE(holds.until, run_at)) > $2"
        ))
        .await?;
    let next: Option<DateTime<Utc>> = client
        .query_one(&statement, &[&commands, &now])
        .await?
        .get(0);
    Ok(ClaimNext::NothingUntil(next))
}

/// How soon a claim that found only taken or full candidates looks again.
const RECLAIM_AFTER: chrono::TimeDelta = chrono::TimeDelta::milliseconds(5);

/// Claims candidate `id` (of `command`, with `key`) if it is still pending and, when a
/// concurrency limit covers it, if a slot is free once this node holds the lock that
/// every claim of that limit takes.
#[allow(clippy::too_many_arguments)]
async fn claim_one(
    client: &mut deadpool_postgres::Object,
    id: Uuid,
    command: &str,
    key: Option<&str>,
    worker: i32,
    now: DateTime<Utc>,
    node: &str,
    limits: &ConcurrencyLimits,
) -> Result<Option<Claimed>> {
    let plugin = plugin_of(command);
    let limit_of = |scope: Scope| {
        limits
            .limit(&scope)
            .map(|limit| i32::try_from(limit).unwrap_or(i32::MAX))
    };
    let plugin_limit = limit_of(Scope::Plugin(plugin.to_owned()));
    let command_limit = limit_of(Scope::Command(command.to_owned()));
    let key_limit = key.and_then(|key| {
        limit_of(Scope::Key {
            plugin: plugin.to_owned(),
            key: key.to_owned(),
        })
    });
    let lock = if plugin_limit.is_some() || command_limit.is_some() {
        Some(format!("honeydew:{plugin}"))
    } else {
        key.map(|key| format!("honeydew:{plugin}[{key}]"))
    };
    let tx = client.transaction().await?;
    if let Some(lock) = &lock {
        let statement = tx
            .prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .await?;
        tx.execute(&statement, &[lock]).await?;
    }
    // After the lock, in a statement of its own: its snapshot has every claim of this
    // limit that committed before.
    let statement = tx
        .prepare_cached(&format!(
            "WITH next AS (SELECT id FROM jobs WHERE id = $2 AND status = 'pending' \
                 AND run_at <= $1 AND waiting_on = 0 FOR UPDATE SKIP LOCKED), \
             free AS (SELECT 1 AS ok WHERE \
                 ($6::int4 IS NULL OR (SELECT count(*) FROM jobs WHERE status = 'running' \
                     AND split_part(command, '.', 1) = $5) < $6) \
                 AND ($8::int4 IS NULL OR (SELECT count(*) FROM jobs WHERE status = 'running' \
                     AND command = $7) < $8) \
                 AND ($9::text IS NULL OR (SELECT count(*) FROM jobs WHERE status = 'running' \
                     AND split_part(command, '.', 1) = $5 AND concurrency_key = $9) < $10::int4)), \
             claimed AS (UPDATE jobs SET {CLAIM_SET} FROM next, free WHERE jobs.id = next.id \
                 RETURNING {JOB_COLUMNS_OF_JOBS}), \
             opened AS (\
                 INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, node_id) \
                 SELECT id, attempt, $3, $1, $4 FROM claimed), \
             turn AS (\
                 INSERT INTO concurrency_keys (plugin, key, last_started_at) \
                 SELECT $5, $9, $1 FROM claimed WHERE $9::text IS NOT NULL \
                 ON CONFLICT (plugin, key) DO UPDATE SET last_started_at = \
                     GREATEST(concurrency_keys.last_started_at, EXCLUDED.last_started_at)) \
             SELECT * FROM claimed"
        ))
        .await?;
    let row = tx
        .query_opt(
            &statement,
            &[
                &now,
                &id,
                &worker,
                &node,
                &plugin,
                &plugin_limit,
                &command,
                &command_limit,
                &key,
                &key_limit,
            ],
        )
        .await?;
    tx.commit().await?;
    row.map(|row| read_job(&row).map(|(job, attempt)| Claimed { job, attempt }))
        .transpose()
}

/// Puts back the running jobs of every node but `me` whose heartbeat is older than
/// `lease_ms`: back to pending with the lost attempt counted, or failed when no retry
/// is left, and drops those nodes' watches. One statement; rows another node is
/// rescuing at the same moment are skipped.
pub(super) async fn rescue_expired(
    client: &impl GenericClient,
    me: &str,
    lease_ms: u64,
) -> Result<Rescued> {
    let statement = client
        .prepare_cached(
            "WITH lost AS (\
                 SELECT id, attempt, node_id, CASE WHEN cancel_requested THEN 'cancelled' \
                     WHEN retry_count < max_retries THEN 'pending' ELSE 'failed' END AS fate \
                 FROM jobs WHERE status = 'running' \
                 AND node_id IS DISTINCT FROM $1 \
                 AND NOT EXISTS (SELECT 1 FROM nodes WHERE nodes.id = jobs.node_id \
                     AND nodes.heartbeat_at >= now() - make_interval(secs => $2::float8 / 1000)) \
                 FOR UPDATE SKIP LOCKED), \
             unwatched AS (\
                 DELETE FROM job_watches WHERE node_id IS DISTINCT FROM $1 \
                 AND NOT EXISTS (SELECT 1 FROM nodes WHERE nodes.id = job_watches.node_id \
                     AND nodes.heartbeat_at >= now() - make_interval(secs => $2::float8 / 1000))), \
             closed AS (\
                 UPDATE job_attempts SET outcome = 'interrupted', error_kind = 'interrupted', \
                 error = 'its daemon (node ' || COALESCE(lost.node_id, 'unknown') || ') stopped heartbeating', \
                 finished_at = now() FROM lost \
                 WHERE job_attempts.job_id = lost.id AND job_attempts.attempt = lost.attempt \
                 AND job_attempts.finished_at IS NULL), \
             reset AS (\
                 UPDATE jobs SET status = lost.fate, \
                 retry_count = retry_count + CASE WHEN lost.fate = 'pending' THEN 1 ELSE 0 END, \
                 completed_at = CASE WHEN lost.fate = 'pending' THEN NULL ELSE now() END, \
                 error = CASE WHEN lost.fate = 'cancelled' THEN 'cancelled on request' ELSE \
                     'its daemon (node ' || COALESCE(lost.node_id, 'unknown') || ') stopped heartbeating; rescued by node ' || $1 END, \
                 error_kind = CASE WHEN lost.fate = 'cancelled' THEN 'cancelled' ELSE 'interrupted' END, \
                 node_id = NULL, cancel_requested = false, updated_at = now() \
                 FROM lost WHERE jobs.id = lost.id RETURNING jobs.status) \
             SELECT count(*) FILTER (WHERE status = 'pending'), \
                    count(*) FILTER (WHERE status = 'failed'), \
                    count(*) FILTER (WHERE status = 'cancelled') FROM reset",
        )
        .await?;
    let lease_ms = i64::try_from(lease_ms).unwrap_or(i64::MAX) as f64;
    let row = client.query_one(&statement, &[&me, &lease_ms]).await?;
    let count = |i: usize| usize::try_from(row.get::<_, i64>(i)).unwrap_or(0);
    Ok(Rescued {
        reset: count(0),
        failed: count(1),
        cancelled: count(2),
    })
}

/// Registers that `node` watches the jobs `ids`: from the commit on, their changes are
/// announced on the `jobs` channel.
pub(super) async fn watch(client: &impl GenericClient, node: &str, ids: &[Uuid]) -> Result<()> {
    let statement = client
        .prepare_cached(
            "INSERT INTO job_watches (job_id, node_id) SELECT unnest($1::uuid[]), $2 \
             ON CONFLICT DO NOTHING",
        )
        .await?;
    client.execute(&statement, &[&ids, &node]).await?;
    Ok(())
}

/// Drops `node`'s watches of `ids`, or all of them when `ids` is `None`.
pub(super) async fn unwatch(
    client: &impl GenericClient,
    node: &str,
    ids: Option<&[Uuid]>,
) -> Result<()> {
    let statement = client
        .prepare_cached(
            "DELETE FROM job_watches WHERE node_id = $1 \
             AND ($2::uuid[] IS NULL OR job_id = ANY($2))",
        )
        .await?;
    client.execute(&statement, &[&node, &ids]).await?;
    Ok(())
}

/// Asks the node running job `id` to cancel it: marks the running attempt and notifies
/// the `cancel` channel with `id attempt node`, in one statement.
pub(super) async fn request_cancel(
    client: &impl GenericClient,
    channels: &Channels,
    id: JobId,
) -> Result<Option<(String, u32)>> {
    let statement = client
        .prepare_cached(
            "WITH asked AS (\
                 UPDATE jobs SET cancel_requested = true \
                 WHERE id = $1 AND status = 'running' AND node_id IS NOT NULL \
                 RETURNING id, attempt, node_id) \
             SELECT node_id, attempt, \
                 pg_notify($2, concat_ws(' ', id, attempt, node_id)) FROM asked",
        )
        .await?;
    let row = client
        .query_opt(&statement, &[&id.as_uuid(), &channels.cancel])
        .await?;
    Ok(row.map(|row| {
        let attempt: i32 = row.get(1);
        (row.get(0), u32::try_from(attempt).unwrap_or(0))
    }))
}

/// The running jobs of `node` whose cancel was requested, with their attempts.
pub(super) async fn cancels_requested(
    client: &impl GenericClient,
    node: &str,
) -> Result<Vec<(JobId, u32)>> {
    let statement = client
        .prepare_cached(
            "SELECT id, attempt FROM jobs \
             WHERE node_id = $1 AND cancel_requested AND status = 'running'",
        )
        .await?;
    let rows = client.query(&statement, &[&node]).await?;
    Ok(rows
        .iter()
        .map(|row| {
            let attempt: i32 = row.get(1);
            (
                JobId::from(row.get::<_, Uuid>(0)),
                u32::try_from(attempt).unwrap_or(0),
            )
        })
        .collect())
}

/// Where the listening task delivers what it hears.
pub(super) struct Listeners {
    /// This node: cancels for other nodes are not delivered.
    pub node: String,
    /// What to listen on.
    pub channels: Channels,
    /// Bumped at every `work` notification.
    pub wake: watch::Sender<u64>,
    /// Each job change heard on the `jobs` channel.
    pub job_changes: broadcast::Sender<JobChange>,
    /// Cancels for this node, schedule changes, reconnections.
    pub signals: broadcast::Sender<ClusterSignal>,
}

impl Listeners {
    fn bump(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// After a (re)connection: every waiter looks again, every follower resyncs.
    fn resync(&self) {
        self.bump();
        let _ = self.signals.send(ClusterSignal::Resynced);
    }

    fn deliver(&self, channel: &str, payload: &str) {
        let channels = &self.channels;
        if channel == channels.work {
            self.bump();
        } else if channel == channels.jobs {
            for change in payload.lines().filter_map(parse_job_change) {
                let _ = self.job_changes.send(change);
            }
        } else if channel == channels.cancel {
            if let Some((id, attempt, node)) = parse_cancel(payload)
                && node == self.node
            {
                let _ = self
                    .signals
                    .send(ClusterSignal::CancelRequested { id, attempt });
            }
        } else if channel == channels.schedules {
            let _ = self.signals.send(ClusterSignal::SchedulesChanged);
        } else if channel == channels.output
            && let Ok(id) = payload.parse()
        {
            let _ = self.signals.send(ClusterSignal::OutputWritten { id });
        }
    }
}

/// One line of a `jobs` channel payload: `id status attempt retry_count`.
fn parse_job_change(line: &str) -> Option<JobChange> {
    let mut fields = line.split(' ');
    let id = fields.next()?.parse().ok()?;
    let status = fields.next()?.parse().ok()?;
    let attempt = fields.next()?.parse().ok()?;
    let retry_count = fields.next()?.parse().ok()?;
    Some(JobChange {
        id,
        status,
        attempt,
        retry_count,
    })
}

/// A `cancel` channel payload: `id attempt node`.
fn parse_cancel(payload: &str) -> Option<(JobId, u32, &str)> {
    let mut fields = payload.splitn(3, ' ');
    let id = fields.next()?.parse().ok()?;
    let attempt = fields.next()?.parse().ok()?;
    Some((id, attempt, fields.next()?))
}

/// Listens on every channel for as long as the store is open (the wake-up sender has
/// receivers), delivering each notification, and resyncing after every (re)connection:
/// notifications sent while the connection was down are lost, so every waiter looks
/// again and every follower reads again.
pub(super) async fn listen(to_server: super::tls::Connection, to: Listeners) {
    let mut backoff = Duration::from_millis(100);
    while !to.wake.is_closed() {
        let listened = async {
            let (client, mut connection) = to_server.config.connect(to_server.tls.clone()).await?;
            let mut messages =
                futures_util::stream::poll_fn(move |cx| connection.poll_message(cx)).boxed();
            let listen_sql = to.channels.listen_sql();
            let listen = client.batch_execute(&listen_sql);
            // The connection must be driven while LISTEN is answered.
            let mut listen = std::pin::pin!(listen.fuse());
            loop {
                tokio::select! {
                    done = &mut listen => {
                        done?;
                        break;
                    }
                    message = messages.next() => match message {
                        Some(Ok(_)) => {}
                        Some(Err(err)) => return Err(err),
                        None => return Ok(()),
                    },
                }
            }
            to.resync();
            backoff = Duration::from_millis(100);
            loop {
                tokio::select! {
                    () = to.wake.closed() => return Ok(()),
                    message = messages.next() => match message {
                        Some(Ok(AsyncMessage::Notification(note))) => {
                            to.deliver(note.channel(), note.payload());
                        }
                        Some(Ok(_)) => {}
                        Some(Err(err)) => return Err(err),
                        None => return Ok(()),
                    },
                }
            }
        }
        .await;
        if let Err(err) = listened {
            tracing::warn!(error = %super::describe_error(&err), "lost the notification connection to PostgreSQL; reconnecting");
        }
        if to.wake.is_closed() {
            break;
        }
        to.resync();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use honeydew_core::job::JobStatus;

    #[test]
    fn job_change_lines_parse_and_garbage_is_skipped() {
        let id = JobId::new();
        let line = format!("{id} running 3 2");
        assert_eq!(
            parse_job_change(&line),
            Some(JobChange {
                id,
                status: JobStatus::Running,
                attempt: 3,
                retry_count: 2
            })
        );
        assert_eq!(parse_job_change("not-a-uuid running 1 0"), None);
        assert_eq!(parse_job_change(&format!("{id} sleeping 1 0")), None);
        assert_eq!(parse_job_change(&format!("{id} running")), None);
    }

    #[test]
    fn cancel_payloads_name_job_attempt_and_node() {
        let id = JobId::new();
        let payload = format!("{id} 4 node one");
        assert_eq!(parse_cancel(&payload), Some((id, 4, "node one")));
        assert_eq!(parse_cancel("junk"), None);
    }
}
