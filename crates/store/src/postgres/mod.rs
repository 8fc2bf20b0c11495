//! The PostgreSQL backend: for daemons that outgrow one machine's SQLite file.
//!
//! [`PostgresStore`] holds two pools of connections (tokio-postgres under deadpool): the
//! durable one, whose commits wait for the WAL flush, and a small relaxed one whose
//! sessions run `synchronous_commit = off`, used for claims only (a claim lost with the
//! server's power only means the job runs again, as on SQLite). Submits practise
//! **group commit** as on SQLite: one task takes every submit waiting and inserts them
//! with one statement in one transaction, so 64 concurrent submitters share one WAL
//! flush; each is answered once that commit is durable.
//!
//! Every state change is one guarded statement (`WHERE id = $1 AND status = ...`, and for
//! an outcome `AND attempt = $2`), so an outcome of an attempt that is no longer the
//! job's latest changes nothing and comes back as [`StoreError::StaleTransition`].

mod concurrency;
mod dependencies;
mod jobs;
mod nodes;
mod output;
mod pauses;
mod rate_limits;
mod schedules;
mod schema;
mod tls;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use honeydew_core::concurrency::{ConcurrencyLimits, Scope};
use honeydew_core::job::{Job, JobId, JobStatus, QueuedJob};
use honeydew_core::output::{AttemptOutput, JobOutput, LogQuery};
use honeydew_core::pause::Pause;
use honeydew_core::rate_limit::RateLimitHold;
use honeydew_core::schedule::Schedule;
use honeydew_core::store::{
    AfterInsert, AttemptReport, AttemptRow, BulkFilter, ClaimNext, Claimed, ClusterSignal,
    CommitStats, FinishedMinute, JobChange, JobCount, JobFilter, JobPage, JobStore, Outcome,
    RecoveredJobs, Rescued, Settled, SharedQueue, StoreError, UniqueInsert, Uniqueness,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

pub use schema::SCHEMA_VERSION;

/// How to reach the database.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// A libpq-style URL or key=value string, such as `postgres://user@host/db`.
    pub url: String,
    /// The most connections the durable pool opens.
    pub pool_size: usize,
    /// The most submits one commit carries.
    pub max_batch: usize,
    /// This daemon's id: the jobs it runs carry it, and its start-up recovery touches
    /// only those.
    pub node_id: String,
}

impl PostgresConfig {
    /// Defaults for the database at `url`: 16 connections, batches of 1024.
    pub fn new(url: impl Into<String>, node_id: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 16,
            max_batch: 1024,
            node_id: node_id.into(),
        }
    }
}

/// A failure inside this backend; it becomes a [`StoreError`] at the boundary.
#[derive(Debug)]
pub(crate) enum Error {
    Postgres(tokio_postgres::Error),
    Pool(deadpool_postgres::PoolError),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Error {
    fn from(err: tokio_postgres::Error) -> Self {
        Error::Postgres(err)
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        Error::Pool(err)
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        Error::Store(err)
    }
}

impl From<Error> for StoreError {
    fn from(err: Error) -> Self {
        match err {
            Error::Store(err) => err,
            Error::Postgres(err) if err.is_closed() => StoreError::Closed,
            Error::Postgres(err) => match err.code() {
                Some(code) if *code == SqlState::DISK_FULL => {
                    StoreError::Full(describe_error(&err))
                }
                _ => StoreError::Database(describe_error(&err)),
            },
            Error::Pool(err) => StoreError::Database(format!(
                "no connection to the database: {}",
                describe_pool_error(&err)
            )),
        }
    }
}

/// The server's message with its detail, when it sent one (`Display` alone says only
/// "db error"); else the error with its causes ("error performing TLS handshake:
/// invalid peer certificate: UnknownIssuer").
pub(crate) fn describe_error(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {detail}", db.message()),
            None => db.message().to_owned(),
        },
        None => {
            let mut text = err.to_string();
            let mut cause = std::error::Error::source(err);
            while let Some(inner) = cause {
                text.push_str(": ");
                text.push_str(&inner.to_string());
                cause = inner.source();
            }
            text
        }
    }
}

/// Why the pool gave no connection, with the server's or the TLS layer's reason.
fn describe_pool_error(err: &deadpool_postgres::PoolError) -> String {
    match err {
        deadpool_postgres::PoolError::Backend(err) => describe_error(err),
        err => err.to_string(),
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// The most jobs one `INSERT ... SELECT FROM unnest(...)` carries in a bulk submit.
const MAX_ROWS_PER_INSERT: usize = 1024;

/// The PostgreSQL backend. Clones share the pools and the submit task.
#[derive(Clone)]
pub struct PostgresStore {
    durable: Pool,
    relaxed: Pool,
    submits: mpsc::Sender<Submit>,
    stats: Arc<Counters>,
    node_id: Arc<str>,
    target: Arc<str>,
    /// The notification channels of this store's schema.
    channels: Arc<nodes::Channels>,
    /// Bumped by the `LISTEN` task whenever work may have arrived.
    wake: watch::Receiver<u64>,
    /// Job changes the `LISTEN` task hears.
    job_changes: broadcast::Sender<JobChange>,
    /// Cancels, schedule changes and resyncs the `LISTEN` task hears.
    signals: broadcast::Sender<ClusterSignal>,
    /// How many watches of each job this node holds; `job_watches` has a row for each
    /// key. Locked across the statement, so a watch and an unwatch of one job keep
    /// their order in the table.
    watches: Arc<tokio::sync::Mutex<HashMap<JobId, usize>>>,
}

/// One submit waiting for the next group commit.
struct Submit {
    job: Job,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
    relaxed_commits: AtomicU64,
}

impl PostgresStore {
    /// Connects, migrates the schema and starts the submit task.
    pub async fn open(config: PostgresConfig) -> Result<Self, StoreError> {
        let connection = tls::connection(&config.url).map_err(|reason| StoreError::Open {
            target: "the PostgreSQL URL".into(),
            reason,
        })?;
        let pg = connection.config.clone();
        let target = describe_target(&pg);
        let opened = |reason: String| StoreError::Open {
            target: target.clone(),
            reason,
        };
        let pool = |pg: tokio_postgres::Config, size: usize| {
            let manager = Manager::from_config(
                pg,
                connection.tls.clone(),
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(size.max(1))
                .build()
                .map_err(|err| opened(err.to_string()))
        };
        let durable = pool(pg.clone(), config.pool_size)?;
        // The claim sessions. Besides skipping the flush, they never sort and never
        // bitmap-scan: a claim must walk `jobs_pending_by_priority` in order and stop
        // at the first free row. A planner without statistics yet (a fresh table just
        // filled) otherwise sorts every pending row at each claim, which measured 1 ms
        // a claim at 2500 pending and grows with the backlog. No JIT: the penalty
        // `enable_sort=off` puts on the few rows a claim does sort (its candidates)
        // pushes its estimated cost past `jit_above_cost`, and compiling the statement
        // took 2.4 s a claim.
        let mut relaxed_config = pg.clone();
        let claim_settings =
            "-c synchronous_commit=off -c enable_sort=off -c enable_bitmapscan=off -c jit=off";
        let options = match pg.get_options() {
            Some(options) => format!("{options} {claim_settings}"),
            None => claim_settings.to_owned(),
        };
        relaxed_config.options(&options);
        let relaxed = pool(relaxed_config, config.pool_size.div_ceil(2))?;

        let mut client = durable
            .get()
            .await
            .map_err(|err| opened(describe_pool_error(&err)))?;
        schema::migrate(&mut client)
            .await
            .map_err(StoreError::from)?;
        // Registered before anything else, so that no other node takes this one for
        // dead while it recovers.
        nodes::heartbeat(&client, &config.node_id)
            .await
            .map_err(StoreError::from)?;
        // An earlier run under this node id may have died watching.
        nodes::unwatch(&client, &config.node_id, None)
            .await
            .map_err(StoreError::from)?;
        let channels = nodes::Channels::of_current_schema(&client)
            .await
            .map_err(StoreError::from)?;
        drop(client);
        let (wake_up, wake) = watch::channel(0);
        // Sized for bursts: a submit of 1024 jobs announces 1024 changes at once.
        let job_changes = broadcast::channel(16 * 1024).0;
        let signals = broadcast::channel(1024).0;
        tracing::debug!(target = %target, sslmode = connection.mode, "connected to PostgreSQL");
        tokio::spawn(nodes::listen(
            connection.clone(),
            nodes::Listeners {
                node: config.node_id.clone(),
                channels: channels.clone(),
                wake: wake_up,
                job_changes: job_changes.clone(),
                signals: signals.clone(),
            },
        ));

        let stats = Arc::new(Counters::default());
        let (submits, queue) = mpsc::channel(config.max_batch.max(1) * 4);
        tokio::spawn(run_submits(
            durable.clone(),
            queue,
            config.max_batch.max(1),
            Arc::clone(&stats),
        ));
        Ok(Self {
            durable,
            relaxed,
            submits,
            stats,
            node_id: config.node_id.into(),
            target: target.into(),
            channels: Arc::new(channels),
            wake,
            job_changes,
            signals,
            watches: Arc::default(),
        })
    }

    /// A connection from the durable pool.
    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.durable.get().await?)
    }

    /// Counts one commit of one write.
    fn committed(&self) {
        self.stats.commits.fetch_add(1, Relaxed);
        self.stats.writes.fetch_add(1, Relaxed);
    }
}

/// `host:port/dbname` (or the socket directory), never the password.
fn describe_target(pg: &tokio_postgres::Config) -> String {
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let db = pg.get_dbname().or(pg.get_user()).unwrap_or("postgres");
    format!("postgres://{host}:{port}/{db}")
}

/// The submit task: waits for one submit, takes every other one already waiting (up to
/// `max_batch`), inserts them all in one statement and one commit, then answers each.
/// A batch that fails as a whole is retried one job at a time, so one bad row never
/// fails the others with it.
async fn run_submits(
    pool: Pool,
    mut queue: mpsc::Receiver<Submit>,
    max_batch: usize,
    stats: Arc<Counters>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut batch, max_batch).await > 0 {
        let jobs: Vec<&Job> = batch.iter().map(|submit| &submit.job).collect();
        let outcome = async {
            let client = pool.get().await?;
            jobs::insert_jobs(&client, &jobs).await
        }
        .await;
        match outcome {
            Ok(()) => {
                stats.commits.fetch_add(1, Relaxed);
                stats.writes.fetch_add(batch.len() as u64, Relaxed);
                for submit in batch.drain(..) {
                    let _ = submit.reply.send(Ok(()));
                }
            }
            Err(err) if batch.len() == 1 => {
                let submit = batch.pop().expect("one submit");
                let _ = submit.reply.send(Err(err.into()));
            }
            Err(_) => {
                for submit in batch.drain(..) {
                    let outcome = async {
                        let client = pool.get().await?;
                        jobs::insert_jobs(&client, &[&submit.job]).await
                    }
                    .await;
                    if outcome.is_ok() {
                        stats.commits.fetch_add(1, Relaxed);
                        stats.writes.fetch_add(1, Relaxed);
                    }
                    let _ = submit.reply.send(outcome.map_err(StoreError::from));
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl JobStore for PostgresStore {
    async fn insert_job(&self, job: Job) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submits
            .send(Submit { job, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn insert_jobs(&self, batch: Vec<Job>) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(Error::from)?;
        let rows: Vec<&Job> = batch.iter().collect();
        for chunk in rows.chunks(MAX_ROWS_PER_INSERT) {
            jobs::insert_jobs(&tx, chunk).await?;
        }
        tx.commit().await.map_err(Error::from)?;
        self.committed();
        Ok(())
    }

    async fn insert_unique(
        &self,
        job: Job,
        unique: Uniqueness,
    ) -> Result<UniqueInsert, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(Error::from)?;
        let inserted = jobs::insert_unique(&tx, &job, &unique).await?;
        tx.commit().await.map_err(Error::from)?;
        if !matches!(inserted, UniqueInsert::Held(_)) {
            self.committed();
        }
        Ok(inserted)
    }

    async fn retry_job(&self, id: JobId, now: DateTime<Utc>) -> Result<QueuedJob, StoreError> {
        let client = self.client().await?;
        let queued = jobs::retry_job(&client, id, now).await?;
        self.committed();
        Ok(queued)
    }

    async fn retry_matching(
        &self,
        filter: BulkFilter,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<QueuedJob>, StoreError> {
        let client = self.client().await?;
        let queued = jobs::retry_matching(&client, &filter, now, limit).await?;
        self.committed();
        Ok(queued)
    }

    async fn cancel_matching(
        &self,
        filter: BulkFilter,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError> {
        let client = self.client().await?;
        let ids = jobs::cancel_matching(&client, &filter, now, limit).await?;
        self.committed();
        Ok(ids)
    }

    async fn claim(
        &self,
        id: JobId,
        worker_id: usize,
        now: DateTime<Utc>,
    ) -> Result<Option<Claimed>, StoreError> {
        let client = self.relaxed.get().await.map_err(Error::from)?;
        let claimed = jobs::claim(&client, id, worker_id, now, &self.node_id).await?;
        if claimed.is_some() {
            self.stats.commits.fetch_add(1, Relaxed);
            self.stats.writes.fetch_add(1, Relaxed);
            self.stats.relaxed_commits.fetch_add(1, Relaxed);
        }
        Ok(claimed)
    }

    async fn finish(
        &self,
        id: JobId,
        attempt: u32,
        outcome: Outcome,
        report: AttemptReport,
    ) -> Result<Settled, StoreError> {
        let client = self.client().await?;
        let settled = jobs::finish(&client, id, attempt, &outcome, &report).await?;
        self.committed();
        Ok(settled)
    }

    async fn insert_after(&self, job: Job, after: Vec<JobId>) -> Result<AfterInsert, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(Error::from)?;
        let inserted = dependencies::insert_after(&tx, &job, &after).await?;
        tx.commit().await.map_err(Error::from)?;
        self.committed();
        Ok(inserted)
    }

    async fn settle_dependents(&self, now: DateTime<Utc>) -> Result<Settled, StoreError> {
        let client = self.client().await?;
        Ok(dependencies::settle_all(&client, now).await?)
    }

    async fn dependencies(&self, id: JobId) -> Result<Vec<(JobId, JobStatus)>, StoreError> {
        let client = self.client().await?;
        Ok(dependencies::dependencies(&client, id).await?)
    }

    async fn cancel_pending(&self, id: JobId, now: DateTime<Utc>) -> Result<(), StoreError> {
        let client = self.client().await?;
        jobs::cancel_pending(&client, id, now).await?;
        self.committed();
        Ok(())
    }

    async fn recover(&self, now: DateTime<Utc>) -> Result<RecoveredJobs, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(Error::from)?;
        let recovered = jobs::recover(&tx, now, &self.node_id).await?;
        tx.commit().await.map_err(Error::from)?;
        self.committed();
        Ok(recovered)
    }

    async fn pending_jobs(&self) -> Result<Vec<QueuedJob>, StoreError> {
        let client = self.client().await?;
        Ok(jobs::pending_jobs(&client).await?)
    }

    async fn prune_finished(
        &self,
        status: JobStatus,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, StoreError> {
        if !status.is_terminal() {
            return Ok(0);
        }
        let client = self.client().await?;
        let pruned = jobs::prune_finished(&client, status, before, limit).await?;
        concurrency::prune_turns(&client, before).await?;
        self.committed();
        Ok(pruned)
    }

    async fn get_job(&self, id: JobId) -> Result<Job, StoreError> {
        let client = self.client().await?;
        Ok(jobs::get_job(&client, id).await?)
    }

    async fn get_job_with_attempt(&self, id: JobId) -> Result<(Job, u32), StoreError> {
        let client = self.client().await?;
        Ok(jobs::get_job_with_attempt(&client, id).await?)
    }

    async fn list_jobs(&self, filter: JobFilter) -> Result<JobPage, StoreError> {
        let client = self.client().await?;
        Ok(jobs::list_jobs(&client, &filter).await?)
    }

    async fn attempts(&self, id: JobId) -> Result<Vec<AttemptRow>, StoreError> {
        let client = self.client().await?;
        Ok(jobs::attempts(&client, id).await?)
    }

    async fn count_jobs(&self) -> Result<Vec<JobCount>, StoreError> {
        let client = self.client().await?;
        Ok(jobs::count_jobs(&client).await?)
    }

    async fn finished_per_minute(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<FinishedMinute>, StoreError> {
        let client = self.client().await?;
        Ok(jobs::finished_per_minute(&client, since).await?)
    }

    async fn append_output(&self, id: JobId, output: AttemptOutput) -> Result<(), StoreError> {
        if output.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        output::append_output(&mut client, &self.channels, id, &output).await?;
        self.stats.relaxed_commits.fetch_add(1, Relaxed);
        Ok(())
    }

    async fn job_output(&self, id: JobId, query: LogQuery) -> Result<JobOutput, StoreError> {
        let client = self.client().await?;
        Ok(output::job_output(&client, id, query).await?)
    }

    async fn insert_schedule(&self, schedule: Schedule) -> Result<(), StoreError> {
        let client = self.client().await?;
        schedules::insert_schedule(&client, &schedule).await?;
        self.committed();
        Ok(())
    }

    async fn delete_schedule(&self, key: String) -> Result<Schedule, StoreError> {
        let client = self.client().await?;
        let schedule = schedules::delete_schedule(&client, key).await?;
        self.committed();
        Ok(schedule)
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        let client = self.client().await?;
        Ok(schedules::list_schedules(&client).await?)
    }

    async fn get_schedule(&self, id: Uuid) -> Result<Schedule, StoreError> {
        let client = self.client().await?;
        Ok(schedules::get_schedule(&client, id).await?)
    }

    async fn trigger_schedule(
        &self,
        id: Uuid,
        scheduled_for: DateTime<Utc>,
        next_run_at: Option<DateTime<Utc>>,
        job: Job,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(Error::from)?;
        let triggered =
            schedules::trigger_schedule(&tx, id, scheduled_for, next_run_at, &job).await?;
        tx.commit().await.map_err(Error::from)?;
        self.committed();
        Ok(triggered)
    }

    async fn record_schedule_error(
        &self,
        id: Uuid,
        error: String,
        at: DateTime<Utc>,
        next_run_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        schedules::record_schedule_error(&client, id, &error, at, next_run_at).await?;
        self.committed();
        Ok(())
    }

    async fn set_schedule_next_run(
        &self,
        id: Uuid,
        next_run_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        schedules::set_schedule_next_run(&client, id, next_run_at).await?;
        self.committed();
        Ok(())
    }

    async fn set_schedule_enabled(
        &self,
        key: String,
        enabled: bool,
    ) -> Result<Schedule, StoreError> {
        let client = self.client().await?;
        let schedule = schedules::set_schedule_enabled(&client, key, enabled).await?;
        self.committed();
        Ok(schedule)
    }

    async fn pause(&self, target: String, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let paused = pauses::pause(&client, &target, at).await?;
        self.committed();
        Ok(paused)
    }

    async fn resume(&self, target: String) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let resumed = pauses::resume(&client, &target).await?;
        self.committed();
        Ok(resumed)
    }

    async fn pauses(&self) -> Result<Vec<Pause>, StoreError> {
        let client = self.client().await?;
        Ok(pauses::pauses(&client).await?)
    }

    async fn count_ahead(&self, id: JobId, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(pauses::count_ahead(&client, id, now).await?)
    }

    async fn running_in(&self, scope: Scope) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(concurrency::running_in(&client, &scope).await?)
    }

    async fn hold_rate_limit(&self, hold: RateLimitHold) -> Result<(), StoreError> {
        let client = self.client().await?;
        rate_limits::hold(&client, &hold).await?;
        self.committed();
        Ok(())
    }

    async fn rate_limit_holds(&self, now: DateTime<Utc>) -> Result<Vec<RateLimitHold>, StoreError> {
        let client = self.client().await?;
        Ok(rate_limits::holds(&client, now).await?)
    }

    fn commit_stats(&self) -> CommitStats {
        CommitStats {
            commits: self.stats.commits.load(Relaxed),
            writes: self.stats.writes.load(Relaxed),
            relaxed_commits: self.stats.relaxed_commits.load(Relaxed),
        }
    }

    fn describe(&self) -> String {
        self.target.to_string()
    }

    fn shared(&self) -> Option<&dyn SharedQueue> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl SharedQueue for PostgresStore {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    async fn heartbeat(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        nodes::heartbeat(&client, &self.node_id).await?;
        Ok(())
    }

    async fn live_nodes(&self, lease_ms: u64) -> Result<u32, StoreError> {
        let client = self.client().await?;
        Ok(nodes::live_nodes(&client, lease_ms).await?)
    }

    async fn claim_next(
        &self,
        commands: Option<Vec<String>>,
        limits: &ConcurrencyLimits,
        worker_id: usize,
    ) -> Result<ClaimNext, StoreError> {
        let mut client = self.relaxed.get().await.map_err(Error::from)?;
        let next = nodes::claim_next(
            &mut client,
            commands.as_deref(),
            worker_id,
            Utc::now(),
            &self.node_id,
            limits,
        )
        .await?;
        if matches!(next, ClaimNext::Claimed(_)) {
            self.stats.commits.fetch_add(1, Relaxed);
            self.stats.writes.fetch_add(1, Relaxed);
            self.stats.relaxed_commits.fetch_add(1, Relaxed);
        }
        Ok(next)
    }

    async fn wake_all(&self) -> Result<(), StoreError> {
        let client = self.relaxed.get().await.map_err(Error::from)?;
        client
            .execute("SELECT pg_notify($1, '')", &[&self.channels.work])
            .await
            .map_err(Error::from)?;
        Ok(())
    }

    async fn rescue_expired(&self, lease_ms: u64) -> Result<Rescued, StoreError> {
        let client = self.client().await?;
        let rescued = nodes::rescue_expired(&client, &self.node_id, lease_ms).await?;
        if rescued != Rescued::default() {
            self.committed();
        }
        Ok(rescued)
    }

    fn wake_ups(&self) -> watch::Receiver<u64> {
        self.wake.clone()
    }

    fn job_changes(&self) -> broadcast::Receiver<JobChange> {
        self.job_changes.subscribe()
    }

    fn signals(&self) -> broadcast::Receiver<ClusterSignal> {
        self.signals.subscribe()
    }

    async fn watch(&self, ids: &[JobId]) -> Result<(), StoreError> {
        let mut watches = self.watches.lock().await;
        let new: Vec<Uuid> = ids
            .iter()
            .filter(|id| !watches.contains_key(id))
            .map(|id| id.as_uuid())
            .collect();
        if !new.is_empty() {
            let client = self.client().await?;
            nodes::watch(&client, &self.node_id, &new).await?;
        }
        for id in ids {
            *watches.entry(*id).or_default() += 1;
        }
        Ok(())
    }

    async fn unwatch(&self, ids: &[JobId]) -> Result<(), StoreError> {
        let mut watches = self.watches.lock().await;
        let mut ended = Vec::new();
        for id in ids {
            if let Some(count) = watches.get_mut(id) {
                *count -= 1;
                if *count == 0 {
                    watches.remove(id);
                    ended.push(id.as_uuid());
                }
            }
        }
        if !ended.is_empty() {
            let client = self.client().await?;
            nodes::unwatch(&client, &self.node_id, Some(&ended)).await?;
        }
        Ok(())
    }

    async fn request_cancel(&self, id: JobId) -> Result<Option<(String, u32)>, StoreError> {
        let client = self.client().await?;
        let asked = nodes::request_cancel(&client, &self.channels, id).await?;
        if asked.is_some() {
            self.committed();
        }
        Ok(asked)
    }

    async fn cancels_requested(&self) -> Result<Vec<(JobId, u32)>, StoreError> {
        let client = self.client().await?;
        Ok(nodes::cancels_requested(&client, &self.node_id).await?)
    }
}
