//! The SQLite backend: the embedded default, one database file in the data directory.
//!
//! [`SqliteStore`] is a cheap, cloneable handle. All writes go through one writer thread
//! that owns the single read-write connection and practises **group commit**: it opens
//! a transaction for the first waiting write and keeps applying whatever else arrives
//! meanwhile (up to `max_batch`; each inside its own savepoint when it has several
//! statements), commits once, and only then answers each caller. A submit is therefore
//! acknowledged only after its row is durable, and 64 concurrent submitters share one
//! fsync instead of paying for 64. A claim is the one write that skips its fsync (a
//! claim lost with the power only means the job runs again); it is made durable by the
//! next commit that has one. Reads run on a small pool of read-only connections in
//! blocking tasks, so they never wait behind the writer (WAL).
//!
//! Every state change is one guarded `UPDATE ... WHERE id = ? AND status = ?`; a
//! transition whose guard does not hold changes nothing and comes back as
//! [`StoreError::StaleTransition`]. `jobs.rs`, `dependencies.rs`, `schedules.rs`,
//! `output.rs`, `pauses.rs` and `rate_limits.rs` hold the statements, as functions of a connection; this file says which
//! kind of write each one is.

mod concurrency;
mod dependencies;
mod jobs;
mod output;
mod pauses;
mod rate_limits;
mod schedules;
mod schema;
#[cfg(test)]
mod tests;

pub use schema::SCHEMA_VERSION;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use chrono::{DateTime, Utc};
use honeydew_core::concurrency::Scope;
use honeydew_core::job::{Job, JobId, JobStatus, QueuedJob};
use honeydew_core::output::{AttemptOutput, JobOutput, LogQuery};
use honeydew_core::pause::Pause;
use honeydew_core::rate_limit::RateLimitHold;
use honeydew_core::schedule::Schedule;
use honeydew_core::store::{
    AfterInsert, AttemptReport, AttemptRow, BulkFilter, Claimed, CommitStats, FinishedMinute,
    JobCount, JobFilter, JobPage, JobStore, Outcome, RecoveredJobs, Settled, StoreError,
    UniqueInsert, Uniqueness,
};
use uuid::Uuid;

#[cfg(test)]
impl SqliteStore {
    /// Occupies the writer until `release` is sent: writes made meanwhile queue up
    /// and are then applied in one batch (tests of group commit).
    pub(crate) async fn hold_writer(
        &self,
        entered: std::sync::mpsc::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    ) -> Result<(), StoreError> {
        self.write_statement(move |_conn| {
            let _ = entered.send(());
            let _ = release.recv();
            Ok(())
        })
        .await
    }

    /// Like [`SqliteStore::hold_writer`], as a relaxed write (one that skips its fsync).
    pub(crate) async fn hold_writer_relaxed(
        &self,
        entered: std::sync::mpsc::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    ) -> Result<(), StoreError> {
        self.write_relaxed(move |_conn| {
            let _ = entered.send(());
            let _ = release.recv();
            Ok(())
        })
        .await
    }
}

/// How hard SQLite works to make a commit survive power loss.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// fsync the WAL on every commit: an acknowledged job survives power loss.
    #[default]
    Full,
    /// fsync only at checkpoints: survives a daemon crash, not power loss.
    Normal,
    /// Never fsync: for throwaway data only.
    Off,
}

impl SyncMode {
    fn pragma(self) -> &'static str {
        match self {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
            SyncMode::Off => "OFF",
        }
    }
}

/// How to open the store.
#[derive(Clone, Debug)]
pub struct SqliteConfig {
    /// The database file; created with its schema when missing.
    pub path: PathBuf,
    /// Commit durability.
    pub sync: SyncMode,
    /// How long a statement waits on a lock held by another process.
    pub busy_timeout: Duration,
    /// The most writes one commit may carry; 1 turns group commit off.
    pub max_batch: usize,
    /// The largest the database may grow, in MiB; `None` for no limit but the disk's.
    pub max_size_mib: Option<u64>,
}

impl SqliteConfig {
    /// Defaults for a database at `path`: FULL sync, 5 s busy timeout, batches of 1024.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            sync: SyncMode::Full,
            busy_timeout: Duration::from_secs(5),
            max_batch: 1024,
            max_size_mib: None,
        }
    }
}

/// A failure inside this backend: SQLite's own, or one the contract names. It becomes a
/// [`StoreError`] at the boundary, where a full disk is told apart from other errors.
#[derive(Debug)]
pub(crate) enum Error {
    Sqlite(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        Error::Sqlite(err)
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
            Error::Sqlite(err) => match err.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full(err.to_string()),
                _ => StoreError::Database(err.to_string()),
            },
        }
    }
}

type Reply = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;
/// Runs a write's statements; says how they went and what to answer.
type Apply = Box<dyn FnOnce(&Connection) -> (Applied, Reply) + Send>;

/// How a write's statements went.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Applied {
    Succeeded,
    Failed,
    /// Failed because the disk or the size limit is full.
    Full,
}
/// A write: applies itself and says whether it succeeded, returning the reply to send
/// once the commit's fate is known.
struct WriteOp {
    apply: Apply,
    /// Whether the write runs several statements and so needs a savepoint to stay
    /// atomic; a single statement is atomic by itself and skips that cost.
    compound: bool,
    /// Whether its caller needs it on disk before the answer. A claim does not: a
    /// claim lost with the machine's power only means the job runs again, which
    /// recovery does anyway. Such writes commit without an fsync of their own (WAL
    /// with `synchronous=NORMAL`: safe across a daemon crash, made durable by the
    /// next durable commit, since the WAL is written in order).
    durable: bool,
}

/// The SQLite backend. Clones share the writer thread and the reader pool.
#[derive(Clone)]
pub struct SqliteStore {
    writer: mpsc::Sender<WriteOp>,
    readers: Arc<ReaderPool>,
    stats: Arc<WriterCounters>,
}

#[derive(Default)]
struct WriterCounters {
    commits: std::sync::atomic::AtomicU64,
    writes: std::sync::atomic::AtomicU64,
    relaxed_commits: std::sync::atomic::AtomicU64,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database, then starts the writer.
    pub fn open(config: SqliteConfig) -> Result<Self, StoreError> {
        let opened = |source: rusqlite::Error| StoreError::Open {
            target: config.path.display().to_string(),
            reason: source.to_string(),
        };
        let mut conn = Connection::open(&config.path).map_err(opened)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(opened)?;
        conn.pragma_update(None, "synchronous", config.sync.pragma())
            .map_err(opened)?;
        conn.busy_timeout(config.busy_timeout).map_err(opened)?;
        conn.set_prepared_statement_cache_capacity(64);
        schema::migrate(&mut conn).map_err(StoreError::from)?;
        set_size_limit(&conn, config.max_size_mib).map_err(opened)?;

        let (writer, ops) = mpsc::channel();
        let max_batch = config.max_batch.max(1);
        let stats = Arc::new(WriterCounters::default());
        let counters = Arc::clone(&stats);
        // Only FULL fsyncs at each commit; under NORMAL and OFF every write is relaxed.
        let relaxable = config.sync == SyncMode::Full;
        thread::Builder::new()
            .name("honeydew-store-writer".into())
            .spawn(move || run_writer(conn, ops, max_batch, relaxable, &counters))
            .map_err(|err| StoreError::Commit(format!("cannot start writer thread: {err}")))?;
        Ok(Self {
            writer,
            readers: Arc::new(ReaderPool {
                path: config.path,
                busy_timeout: config.busy_timeout,
                idle: Mutex::new(Vec::new()),
            }),
            stats,
        })
    }

    /// Runs `apply` (one SQL statement) on the writer connection inside the next group
    /// commit and returns its value once that commit is durable.
    async fn write_statement<T, F>(&self, apply: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        self.submit_write(apply, false, true).await
    }

    /// Like [`SqliteStore::write_statement`] for a write of several statements, which then
    /// commits or rolls back as one.
    async fn write<T, F>(&self, apply: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        self.submit_write(apply, true, true).await
    }

    /// Like [`SqliteStore::write`] for a write that need not survive power loss (a claim):
    /// it is answered once committed, without waiting for an fsync.
    async fn write_relaxed<T, F>(&self, apply: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        self.submit_write(apply, true, false).await
    }

    async fn submit_write<T, F>(
        &self,
        apply: F,
        compound: bool,
        durable: bool,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let apply = Box::new(move |conn: &Connection| {
            let outcome = apply(conn).map_err(StoreError::from);
            let applied = match &outcome {
                Ok(_) => Applied::Succeeded,
                Err(StoreError::Full(_)) => Applied::Full,
                Err(_) => Applied::Failed,
            };
            let reply: Reply = Box::new(move |commit: Result<(), &StoreError>| {
                let result = match commit {
                    Ok(()) => outcome,
                    Err(StoreError::Full(reason)) => Err(StoreError::Full(reason.clone())),
                    Err(err) => Err(StoreError::Commit(err.to_string())),
                };
                let _ = tx.send(result);
            });
            (applied, reply)
        });
        self.writer
            .send(WriteOp {
                apply,
                compound,
                durable,
            })
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `query` on a pooled read-only connection in a blocking task.
    async fn read<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let conn = readers.take().map_err(StoreError::from)?;
            let result = query(&conn);
            readers.give_back(conn);
            result.map_err(StoreError::from)
        })
        .await
        .map_err(|err| StoreError::Commit(format!("reader task failed: {err}")))?
    }

    /// Changes the database's size limit (MiB; `None`: the disk's only). Writes that
    /// would grow it past the limit fail with [`StoreError::Full`].
    pub async fn limit_size(&self, max_size_mib: Option<u64>) -> Result<(), StoreError> {
        self.write_statement(move |conn| Ok(set_size_limit(conn, max_size_mib)?))
            .await
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.readers.path
    }
}

#[async_trait::async_trait]
impl JobStore for SqliteStore {
    async fn insert_job(&self, job: Job) -> Result<(), StoreError> {
        self.write_statement(move |conn| jobs::insert_job(conn, &job))
            .await
    }

    async fn insert_jobs(&self, batch: Vec<Job>) -> Result<(), StoreError> {
        // One write of many statements: its savepoint makes it all or nothing.
        self.write(move |conn| {
            for job in &batch {
                jobs::insert_job(conn, job)?;
            }
            Ok(())
        })
        .await
    }

    async fn insert_unique(
        &self,
        job: Job,
        unique: Uniqueness,
    ) -> Result<UniqueInsert, StoreError> {
        self.write(move |conn| jobs::insert_unique(conn, &job, &unique))
            .await
    }

    async fn retry_job(&self, id: JobId, now: DateTime<Utc>) -> Result<QueuedJob, StoreError> {
        self.write_statement(move |conn| jobs::retry_job(conn, id, now))
            .await
    }

    async fn retry_matching(
        &self,
        filter: BulkFilter,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<QueuedJob>, StoreError> {
        self.write_statement(move |conn| jobs::retry_matching(conn, &filter, now, limit))
            .await
    }

    async fn cancel_matching(
        &self,
        filter: BulkFilter,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError> {
        self.write_statement(move |conn| jobs::cancel_matching(conn, &filter, now, limit))
            .await
    }

    async fn claim(
        &self,
        id: JobId,
        worker_id: usize,
        now: DateTime<Utc>,
    ) -> Result<Option<Claimed>, StoreError> {
        // Relaxed: a claim lost with the power only means the job runs again.
        self.write_relaxed(move |conn| jobs::claim(conn, id, worker_id, now))
            .await
    }

    async fn finish(
        &self,
        id: JobId,
        attempt: u32,
        outcome: Outcome,
        report: AttemptReport,
    ) -> Result<Settled, StoreError> {
        self.write(move |conn| jobs::finish(conn, id, attempt, &outcome, &report))
            .await
    }

    async fn insert_after(&self, job: Job, after: Vec<JobId>) -> Result<AfterInsert, StoreError> {
        self.write(move |conn| dependencies::insert_after(conn, &job, &after))
            .await
    }

    async fn settle_dependents(&self, now: DateTime<Utc>) -> Result<Settled, StoreError> {
        self.write(move |conn| dependencies::settle_all(conn, now))
            .await
    }

    async fn dependencies(&self, id: JobId) -> Result<Vec<(JobId, JobStatus)>, StoreError> {
        self.read(move |conn| dependencies::dependencies(conn, id))
            .await
    }

    async fn cancel_pending(&self, id: JobId, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.write_statement(move |conn| jobs::cancel_pending(conn, id, now))
            .await
    }

    async fn recover(&self, now: DateTime<Utc>) -> Result<RecoveredJobs, StoreError> {
        self.write(move |conn| jobs::recover(conn, now)).await
    }

    async fn pending_jobs(&self) -> Result<Vec<QueuedJob>, StoreError> {
        self.read(jobs::pending_jobs).await
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
        self.write_statement(move |conn| jobs::prune_finished(conn, status, before, limit))
            .await
    }

    async fn get_job(&self, id: JobId) -> Result<Job, StoreError> {
        self.read(move |conn| jobs::get_job(conn, id)).await
    }

    async fn get_job_with_attempt(&self, id: JobId) -> Result<(Job, u32), StoreError> {
        self.read(move |conn| jobs::get_job_with_attempt(conn, id))
            .await
    }

    async fn list_jobs(&self, filter: JobFilter) -> Result<JobPage, StoreError> {
        self.read(move |conn| jobs::list_jobs(conn, &filter)).await
    }

    async fn attempts(&self, id: JobId) -> Result<Vec<AttemptRow>, StoreError> {
        self.read(move |conn| jobs::attempts(conn, id)).await
    }

    async fn count_jobs(&self) -> Result<Vec<JobCount>, StoreError> {
        self.read(jobs::count_jobs).await
    }

    async fn finished_per_minute(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<FinishedMinute>, StoreError> {
        self.read(move |conn| jobs::finished_per_minute(conn, since))
            .await
    }

    async fn append_output(&self, id: JobId, output: AttemptOutput) -> Result<(), StoreError> {
        if output.is_empty() {
            return Ok(());
        }
        // A log line lost to a power cut costs no job: no fsync of its own.
        self.write_relaxed(move |conn| output::append_output(conn, id, &output))
            .await
    }

    async fn job_output(&self, id: JobId, query: LogQuery) -> Result<JobOutput, StoreError> {
        self.read(move |conn| output::job_output(conn, id, query))
            .await
    }

    async fn insert_schedule(&self, schedule: Schedule) -> Result<(), StoreError> {
        self.write_statement(move |conn| schedules::insert_schedule(conn, &schedule))
            .await
    }

    async fn delete_schedule(&self, key: String) -> Result<Schedule, StoreError> {
        self.write_statement(move |conn| schedules::delete_schedule(conn, key))
            .await
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        self.read(schedules::list_schedules).await
    }

    async fn get_schedule(&self, id: Uuid) -> Result<Schedule, StoreError> {
        self.read(move |conn| schedules::get_schedule(conn, id))
            .await
    }

    async fn trigger_schedule(
        &self,
        id: Uuid,
        scheduled_for: DateTime<Utc>,
        next_run_at: Option<DateTime<Utc>>,
        job: Job,
    ) -> Result<bool, StoreError> {
        self.write(move |conn| {
            schedules::trigger_schedule(conn, id, scheduled_for, next_run_at, job)
        })
        .await
    }

    async fn record_schedule_error(
        &self,
        id: Uuid,
        error: String,
        at: DateTime<Utc>,
        next_run_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.write_statement(move |conn| {
            schedules::record_schedule_error(conn, id, error, at, next_run_at)
        })
        .await
    }

    async fn set_schedule_next_run(
        &self,
        id: Uuid,
        next_run_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.write_statement(move |conn| schedules::set_schedule_next_run(conn, id, next_run_at))
            .await
    }

    async fn set_schedule_enabled(
        &self,
        key: String,
        enabled: bool,
    ) -> Result<Schedule, StoreError> {
        self.write_statement(move |conn| schedules::set_schedule_enabled(conn, key, enabled))
            .await
    }

    async fn pause(&self, target: String, at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.write_statement(move |conn| pauses::pause(conn, &target, at))
            .await
    }

    async fn resume(&self, target: String) -> Result<bool, StoreError> {
        self.write_statement(move |conn| pauses::resume(conn, &target))
            .await
    }

    async fn pauses(&self) -> Result<Vec<Pause>, StoreError> {
        self.read(pauses::pauses).await
    }

    async fn count_ahead(&self, id: JobId, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.read(move |conn| pauses::count_ahead(conn, id, now))
            .await
    }

    async fn running_in(&self, scope: Scope) -> Result<u64, StoreError> {
        self.read(move |conn| concurrency::running_in(conn, &scope))
            .await
    }

    async fn hold_rate_limit(&self, hold: RateLimitHold) -> Result<(), StoreError> {
        self.write(move |conn| rate_limits::hold(conn, &hold)).await
    }

    async fn rate_limit_holds(&self, now: DateTime<Utc>) -> Result<Vec<RateLimitHold>, StoreError> {
        self.read(move |conn| rate_limits::holds(conn, now)).await
    }

    fn commit_stats(&self) -> CommitStats {
        use std::sync::atomic::Ordering::Relaxed;
        CommitStats {
            commits: self.stats.commits.load(Relaxed),
            writes: self.stats.writes.load(Relaxed),
            relaxed_commits: self.stats.relaxed_commits.load(Relaxed),
        }
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.readers.path.display())
    }
}

/// Sets `PRAGMA max_page_count` from a limit in MiB (the largest SQLite allows when
/// `None`).
fn set_size_limit(conn: &Connection, max_size_mib: Option<u64>) -> rusqlite::Result<()> {
    let pages = match max_size_mib {
        Some(mib) => {
            let page_size: u64 = conn.pragma_query_value(None, "page_size", |row| row.get(0))?;
            (mib.saturating_mul(1024 * 1024) / page_size.max(512)).clamp(1, 4_294_967_294)
        }
        None => 4_294_967_294,
    };
    conn.pragma_update(None, "max_page_count", pages)
}

/// The writer loop: block for one write, then keep taking whatever else arrives while
/// the transaction is open (up to `max_batch`), commit once, answer everyone. Writes
/// that arrive while earlier ones are being applied join the same commit, so batches
/// grow with the load instead of being cut at the moment the first write arrived.
///
/// With `relaxable` (the store runs `synchronous=FULL`), a batch that begins with a
/// relaxed write (a claim) commits under `synchronous=NORMAL`, without an fsync: it
/// takes further relaxed writes and ends at the first durable one, which begins the
/// next batch, under FULL. A durable batch takes relaxed writes too (they are then
/// fsynced with it). The pragma may change only between transactions, hence the split.
fn run_writer(
    mut conn: Connection,
    ops: mpsc::Receiver<WriteOp>,
    max_batch: usize,
    relaxable: bool,
    counters: &WriterCounters,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut replies: Vec<Reply> = Vec::with_capacity(max_batch);
    let mut carried: Option<WriteOp> = None;
    let mut fsyncing = true;
    loop {
        let first = match carried.take() {
            Some(op) => op,
            None => match ops.recv() {
                Ok(op) => op,
                Err(_) => break,
            },
        };
        let durable = first.durable || !relaxable;
        if relaxable && durable != fsyncing {
            let level = if durable { "FULL" } else { "NORMAL" };
            match conn.pragma_update(None, "synchronous", level) {
                Ok(()) => fsyncing = durable,
                // Left as it was: FULL stays FULL, which is only slower.
                Err(err) => tracing::warn!(error = %err, level, "cannot change synchronous"),
            }
        }
        let batch = Batch {
            ops: &ops,
            max_batch,
            relaxed_only: !fsyncing,
        };
        let commit = apply_batch(&mut conn, first, &batch, &mut carried, &mut replies);
        if commit.is_ok() {
            counters.commits.fetch_add(1, Relaxed);
            counters.writes.fetch_add(replies.len() as u64, Relaxed);
            if !fsyncing {
                counters.relaxed_commits.fetch_add(1, Relaxed);
            }
        }
        for reply in replies.drain(..) {
            reply(commit.as_ref().copied());
        }
    }
}

/// Where a batch takes its writes from, and which it may take.
struct Batch<'a> {
    ops: &'a mpsc::Receiver<WriteOp>,
    max_batch: usize,
    /// The batch commits without an fsync: a durable write must wait for the next.
    relaxed_only: bool,
}

/// Applies `first` and the writes that follow it in one transaction. A durable write
/// that arrives during a relaxed batch is left in `carried` for the next one. A write
/// whose savepoint cannot even begin is dropped, which its caller sees as
/// [`StoreError::Closed`]; that happens only when the connection itself is broken.
fn apply_batch(
    conn: &mut Connection,
    first: WriteOp,
    batch: &Batch<'_>,
    carried: &mut Option<WriteOp>,
    replies: &mut Vec<Reply>,
) -> Result<(), StoreError> {
    let mut tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(err) => {
            tracing::error!(error = %err, "cannot begin a store transaction; write dropped");
            return Err(Error::from(err).into());
        }
    };
    let mut next = Some(first);
    let mut taken = 0;
    while let Some(op) = next.take() {
        taken += 1;
        apply_one(&mut tx, op, replies)?;
        if taken < batch.max_batch {
            next = batch.ops.try_recv().ok();
            if batch.relaxed_only && next.as_ref().is_some_and(|op| op.durable) {
                *carried = next.take();
            }
        }
    }
    tx.commit().map_err(|err| Error::from(err).into())
}

/// Applies one write: a single statement directly, several inside a savepoint. Each
/// write commits or rolls back alone, so one failing write never spoils the others in
/// its batch; its own error travels in its reply.
///
/// The exception is an error after which SQLite itself rolls the whole transaction
/// back (a full disk or size limit, an I/O error): then the batch is over, and every
/// write in it, this one included, is answered with that error. Writes not yet taken
/// stay queued for the next batch, so nothing is lost and nothing is answered twice.
fn apply_one(
    tx: &mut rusqlite::Transaction<'_>,
    op: WriteOp,
    replies: &mut Vec<Reply>,
) -> Result<(), StoreError> {
    if !op.compound {
        let (applied, reply) = (op.apply)(tx);
        replies.push(reply);
        return rolled_back(tx, applied);
    }
    let mut savepoint = match tx.savepoint() {
        Ok(savepoint) => savepoint,
        Err(err) => {
            tracing::error!(error = %err, "cannot begin a savepoint; write dropped");
            return Ok(());
        }
    };
    let (applied, reply) = (op.apply)(&savepoint);
    replies.push(reply);
    if savepoint.is_autocommit() {
        // SQLite rolled everything back: the savepoint is gone with the transaction.
        drop(savepoint);
        return rolled_back(tx, applied);
    }
    if applied == Applied::Succeeded {
        savepoint.commit().map_err(Error::from)?;
    } else {
        savepoint.rollback().map_err(Error::from)?;
        savepoint.commit().map_err(Error::from)?;
    }
    Ok(())
}

/// `Err` when SQLite has rolled the batch's transaction back on its own.
fn rolled_back(tx: &rusqlite::Transaction<'_>, applied: Applied) -> Result<(), StoreError> {
    if !tx.is_autocommit() {
        return Ok(());
    }
    Err(match applied {
        Applied::Full => StoreError::Full("database or disk is full".into()),
        _ => StoreError::Commit("SQLite rolled the transaction back after an error".into()),
    })
}

/// Read-only connections, opened on demand and kept for reuse.
struct ReaderPool {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn take(&self) -> Result<Connection, Error> {
        if let Some(conn) = self.idle.lock().expect("reader pool poisoned").pop() {
            return Ok(conn);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().expect("reader pool poisoned");
        if idle.len() < 8 {
            idle.push(conn);
        }
    }
}
