//! Several daemons on one database: the node registry and its heartbeats, claims across
//! nodes with `FOR UPDATE SKIP LOCKED`, the rescue of a dead node's jobs, and the
//! `LISTEN honeydew_work` wake-ups.
//!
//! Leases are judged by the database's clock (`now()`), never by a node's own, so nodes
//! whose clocks disagree still agree on who is dead.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use futures_util::{FutureExt, StreamExt};
use honeydew_core::store::{ClaimNext, Claimed, Rescued};
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, NoTls};

use super::Result;
use super::jobs::{JOB_COLUMNS_OF_JOBS, read_job};

/// The channel every statement that leaves a job pending notifies (a trigger does it).
pub(super) const WORK_CHANNEL: &str = "honeydew_work";

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

/// The machine's name, for people reading `nodes`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

/// Claims the best eligible pending job among `commands` for `worker_id` on `node`,
/// skipping rows another node holds; says when the next one is due otherwise.
pub(super) async fn claim_next(
    client: &impl GenericClient,
    commands: Option<&[String]>,
    worker_id: usize,
    now: DateTime<Utc>,
    node: &str,
) -> Result<ClaimNext> {
    let statement = client
        .prepare_cached(&format!(
            "WITH next AS (\
                 SELECT id FROM jobs WHERE status = 'pending' AND run_at <= $1 \
                 AND ($2::text[] IS NULL OR command = ANY($2)) \
                 ORDER BY priority DESC, created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED), \
             claimed AS (\
                 UPDATE jobs SET status = 'running', started_at = $1, updated_at = $1, \
                 attempt = jobs.attempt + 1, node_id = $4 \
                 FROM next WHERE jobs.id = next.id RETURNING {JOB_COLUMNS_OF_JOBS}), \
             opened AS (\
                 INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, node_id) \
                 SELECT id, attempt, $3, $1, $4 FROM claimed) \
             SELECT * FROM claimed"
        ))
        .await?;
    let worker = i32::try_from(worker_id).unwrap_or(i32::MAX);
    if let Some(row) = client
        .query_opt(&statement, &[&now, &commands, &worker, &node])
        .await?
    {
        let (job, attempt) = read_job(&row)?;
        return Ok(ClaimNext::Claimed(Box::new(Claimed { job, attempt })));
    }
    let statement = client
        .prepare_cached(
            "SELECT min(run_at) FROM jobs WHERE status = 'pending' \
             AND ($1::text[] IS NULL OR command = ANY($1))",
        )
        .await?;
    let next: Option<DateTime<Utc>> = client.query_one(&statement, &[&commands]).await?.get(0);
    Ok(ClaimNext::NothingUntil(next))
}

/// Puts back the running jobs of every node but `me` whose heartbeat is older than
/// `lease_ms`: back to pending with the lost attempt counted, or failed when no retry
/// is left. One statement; rows another node is rescuing at the same moment are skipped.
pub(super) async fn rescue_expired(
    client: &impl GenericClient,
    me: &str,
    lease_ms: u64,
) -> Result<Rescued> {
    let statement = client
        .prepare_cached(
            "WITH lost AS (\
                 SELECT id, attempt, node_id FROM jobs WHERE status = 'running' \
                 AND node_id IS DISTINCT FROM $1 \
                 AND NOT EXISTS (SELECT 1 FROM nodes WHERE nodes.id = jobs.node_id \
                     AND nodes.heartbeat_at >= now() - make_interval(secs => $2::float8 / 1000)) \
                 FOR UPDATE SKIP LOCKED), \
             closed AS (\
                 UPDATE job_attempts SET outcome = 'interrupted', error_kind = 'interrupted', \
                 error = 'its daemon (node ' || COALESCE(lost.node_id, 'unknown') || ') stopped heartbeating', \
                 finished_at = now() FROM lost \
                 WHERE job_attempts.job_id = lost.id AND job_attempts.attempt = lost.attempt \
                 AND job_attempts.finished_at IS NULL), \
             reset AS (\
                 UPDATE jobs SET \
                 status = CASE WHEN retry_count < max_retries THEN 'pending' ELSE 'failed' END, \
                 retry_count = retry_count + CASE WHEN retry_count < max_retries THEN 1 ELSE 0 END, \
                 completed_at = CASE WHEN retry_count < max_retries THEN NULL ELSE now() END, \
                 error = 'its daemon (node ' || COALESCE(lost.node_id, 'unknown') || ') stopped heartbeating; rescued by node ' || $1, \
                 error_kind = 'interrupted', node_id = NULL, updated_at = now() \
                 FROM lost WHERE jobs.id = lost.id RETURNING jobs.status) \
             SELECT count(*) FILTER (WHERE status = 'pending'), \
                    count(*) FILTER (WHERE status = 'failed') FROM reset",
        )
        .await?;
    let lease_ms = i64::try_from(lease_ms).unwrap_or(i64::MAX) as f64;
    let row = client.query_one(&statement, &[&me, &lease_ms]).await?;
    let count = |i: usize| usize::try_from(row.get::<_, i64>(i)).unwrap_or(0);
    Ok(Rescued {
        reset: count(0),
        failed: count(1),
    })
}

/// Listens on [`WORK_CHANNEL`] for as long as `wake` has receivers, bumping it at every
/// notification, and once more after every reconnection (notifications sent while the
/// connection was down are lost; the bump makes every waiter look again).
pub(super) async fn listen(url: String, wake: watch::Sender<u64>) {
    let bump = |wake: &watch::Sender<u64>| wake.send_modify(|n| *n = n.wrapping_add(1));
    let mut backoff = Duration::from_millis(100);
    while !wake.is_closed() {
        let listened = async {
            let config = tokio_postgres::Config::from_str(&url)?;
            let (client, mut connection) = config.connect(NoTls).await?;
            let mut messages =
                futures_util::stream::poll_fn(move |cx| connection.poll_message(cx)).boxed();
            let listen_sql = format!("LISTEN {WORK_CHANNEL}");
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
            bump(&wake);
            backoff = Duration::from_millis(100);
            loop {
                tokio::select! {
                    () = wake.closed() => return Ok(()),
                    message = messages.next() => match message {
                        Some(Ok(AsyncMessage::Notification(_))) => bump(&wake),
                        Some(Ok(_)) => {}
                        Some(Err(err)) => return Err(err),
                        None => return Ok(()),
                    },
                }
            }
        }
        .await;
        if let Err(err) = listened {
            tracing::warn!(error = %super::describe_error(&err), "lost the wake-up connection to PostgreSQL; reconnecting");
        }
        if wake.is_closed() {
            break;
        }
        bump(&wake);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
