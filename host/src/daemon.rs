//! The daemon's life: start in order, serve, and drain on SIGINT/SIGTERM.
//!
//! [`Daemon::start`] takes the data directory's lock (a second daemon on the same
//! directory is refused before it touches anything), opens the store, loads the
//! plugins, recovers interrupted jobs into the queue, starts the workers, starts the
//! cron scheduler (which settles instants missed while the daemon was down) and finally
//! serves the API, so the socket appears only once the daemon can do its work.
//! Recovery needs the manager, and the manager needs the plugin catalog, hence plugins
//! load before recovery; no worker runs before recovery is done, nor before the
//! workspaces (`<data-dir>/workspaces/`) of jobs that no longer keep one are removed.
//!
//! [`Daemon::stop`] is the drain: stop the scheduler and stop accepting requests (no new
//! jobs from either), let running jobs finish until the shutdown deadline (jobs still
//! running then go back to pending and run again at the next start), end open watches,
//! remove the socket. The deadline interrupts a running job, and so does a second
//! SIGINT/SIGTERM during the drain: then the daemon stops at once, its running jobs go
//! back to pending (nothing is lost), and open connections get no grace.
//!
//! At start the daemon also makes sure of its bearer token (`<data-dir>/token`, which
//! TCP clients must send) and warns when the data directory is open to group or others.
//! With `--listen-http` it counts into [`Metrics`] (handed to the manager and the
//! plugin runtime before either starts) and serves them over HTTP, bound just before
//! the API; the HTTP listener stops after the workers have drained.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiConfig, RequireToken, RunningServer, Token};
use crate::config::{DaemonArgs, DaemonConfig};
use crate::dashboard::Dashboard;
use crate::http::{self, HttpState, RunningHttp};
use crate::metrics::Metrics;
use crate::queue::{Manager, ManagerConfig};
use crate::rate_limits::RateLimits;
use crate::recovery;
use crate::retention::{self, Sweep};
use crate::runtime::{Limits, PluginEvent, Runtime, RuntimeConfig};
use crate::scheduler::Scheduler;
use crate::store::{PostgresConfig, PostgresStore, SqliteConfig, SqliteStore, Store};
use crate::telemetry;
use crate::traces::Traces;
use crate::worker::{PoolConfig, ShutdownReport, WorkerPool};
use crate::workspace::Workspaces;

/// The lock file's name in the data directory.
pub const LOCK_FILE_NAME: &str = "honeydew.lock";

/// How long open gRPC connections get to close once the jobs have drained.
const CONNECTION_GRACE: Duration = Duration::from_secs(5);

/// A running daemon.
pub struct Daemon {
    socket: PathBuf,
    server: RunningServer,
    /// The metrics listener, when configured.
    http: Option<RunningHttp>,
    scheduler: Arc<Scheduler>,
    pool: WorkerPool,
    shutdown_deadline: Duration,
    pruner_stop: tokio_util::sync::CancellationToken,
    /// Ends this node's heartbeats (shared stores), once the daemon has drained.
    cluster_stop: CancellationToken,
    /// The trace exporter, when configured; flushed last.
    traces: Option<Traces>,
    /// Held for the daemon's life; the OS releases it even on `kill -9`.
    _lock: File,
}

impl Daemon {
    /// Takes the data directory's lock, then starts everything in order; the API is
    /// served last.
    pub async fn start(config: DaemonConfig) -> anyhow::Result<Daemon> {
        create_private_dir(&config.data_dir)?;
        let lock = lock_data_dir(&config.data_dir)?;
        Self::start_locked(config, lock).await
    }

    /// [`Daemon::start`] with the data directory's lock already held.
    async fn start_locked(mut config: DaemonConfig, lock: File) -> anyhow::Result<Daemon> {
        let started = Instant::now();
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        warn_if_data_dir_is_open(&config.data_dir);
        let token = api::load_or_create_token(&config.data_dir)
            .context("cannot set up the bearer token for tcp clients")?;

        // Before anything that may submit or run a job, so that every span is exported.
        let traces = config
            .otlp_endpoint
            .as_deref()
            .map(Traces::start)
            .transpose()?;
        let store = open_store(&config).await?;
        let metrics = config.listen_http.map(|_| Metrics::new(config.workers));
        tracing::info!(
            database = %store.describe(),
            node_id = store.shared().map(|shared| shared.node_id()),
            "job database open"
        );
        let rate_limits = Arc::new(RateLimits::new(
            store.clone(),
            store.shared().map(|shared| shared.node_id().to_owned()),
            config.backoff.max_after,
        ));
        let cluster_stop = CancellationToken::new();
        tokio::spawn(crate::cluster::run(
            store.clone(),
            config.lease,
            Some(Arc::clone(&rate_limits)),
            cluster_stop.clone(),
        ));

        let mut limits = Limits::default();
        let overrides = config.limits;
        limits.fuel = overrides.fuel.unwrap_or(limits.fuel);
        limits.memory_mib = overrides.memory_mib.unwrap_or(limits.memory_mib);
        limits.timeout = overrides
            .timeout_ms
            .map_or(limits.timeout, Duration::from_millis);
        limits.max_retries = overrides.max_retries.unwrap_or(limits.max_retries);
        let default_max_retries = limits.max_retries;
        let workspace_dir = config.data_dir.join("workspaces");
        let workspaces = Workspaces::open(&workspace_dir).with_context(|| {
            format!(
                "cannot create the workspace directory {}",
                workspace_dir.display()
            )
        })?;
        let mut runtime_config = RuntimeConfig::new(&config.plugin_dir, &config.cache_dir);
        runtime_config.workspaces = Some(workspaces.clone());
        runtime_config.defaults = limits;
        runtime_config.secrets = std::mem::take(&mut config.secrets).into_inner();
        runtime_config.undeclared_env = std::mem::take(&mut config.undeclared_env);
        runtime_config.max_retry_after = config.backoff.max_after;
        runtime_config.metrics = metrics.clone();
        runtime_config.rate_limits = Some(Arc::clone(&rate_limits));
        runtime_config.concurrency = config.concurrency.clone();
        if let Some(max_result_bytes) = config.max_result_bytes {
            runtime_config.max_result_bytes = max_result_bytes;
        }
        let mut api_config =
            ApiConfig::for_sizes(config.max_payload_bytes, runtime_config.max_result_bytes);
        api_config.retention = config.retention;
        api_config.workspaces = Some(workspaces.clone());
        fs::create_dir_all(&config.plugin_dir).with_context(|| {
            format!(
                "cannot create plugin directory {}",
                config.plugin_dir.display()
            )
        })?;
        let runtime = Runtime::start(runtime_config)
            .await
            .context("cannot start the plugin runtime")?;

        let manager_config = ManagerConfig {
            default_max_retries,
            max_payload_bytes: config.max_payload_bytes,
        };
        let mut manager = Manager::new(store.clone(), runtime.clone(), manager_config);
        if let Some(metrics) = &metrics {
            manager = manager.with_metrics(Arc::clone(metrics));
        }
        let manager = Arc::new(manager);
        // On SQLite the in-memory queue holds a rate-limited plugin's jobs back; on a
        // shared store every claim consults the stored holds itself.
        let holding = Arc::downgrade(&manager);
        rate_limits.on_hold(move |plugin, until| {
            if let Some(manager) = holding.upgrade() {
                manager.queue().hold_until(plugin, until);
            }
        });
        for hold in store
            .rate_limit_holds(chrono::Utc::now())
            .await
            .context("cannot read the rate-limit holds from the database")?
        {
            rate_limits.restore(&hold);
        }
        tokio::spawn(crate::cluster::follow(
            Arc::clone(&manager),
            config.lease,
            cluster_stop.clone(),
        ));
        let pruner_stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(requeue_when_plugins_load(
            runtime.subscribe(),
            Arc::clone(&runtime),
            Arc::clone(&manager),
        ));
        recovery::recover(&manager)
            .await
            .context("cannot recover jobs from the database")?;
        // No attempt runs yet: what a crashed daemon left in the workspaces goes now.
        // Not fatal: a new attempt starts in an empty directory anyway, and the pruner
        // sweeps again.
        match retention::sweep_workspaces(&store, &workspaces, Sweep::Start).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(
                removed,
                "removed workspaces that no job keeps (left by an interrupted attempt or a pruned job)"
            ),
            Err(err) => tracing::warn!(
                error = %err,
                "cannot check the workspaces against the database; the pruner will try again"
            ),
        }
        tokio::spawn(retention::run_pruner(
            store,
            Some(workspaces),
            config.retention,
            pruner_stop.clone(),
        ));

        let pool_config = PoolConfig {
            workers: config.workers,
            backoff: config.backoff,
            max_snoozes: config.max_snoozes,
        };
        let pool = WorkerPool::start(Arc::clone(&manager), runtime.clone(), pool_config);

        let scheduler = Scheduler::new(Arc::clone(&manager))
            .await
            .context("cannot create the cron scheduler")?;
        // Logs its report ("scheduler started": loaded, skipped, caught_up, broken).
        let schedules = scheduler
            .start()
            .await
            .context("cannot start the cron scheduler")?;

        let socket = config.socket_path();
        let unix = api::bind_unix_socket(&socket)
            .with_context(|| format!("cannot listen on {}", socket.display()))?;
        let tcp = match config.listen_tcp {
            Some(address) => {
                let listener = TcpListener::bind(address)
                    .await
                    .with_context(|| format!("cannot listen on tcp {address}"))?;
                let token_file = Token::path_in(&config.data_dir);
                Some((listener, RequireToken::new(token.clone(), &token_file)))
            }
            None => None,
        };
        let http = match (config.listen_http, metrics) {
            (Some(address), Some(metrics)) => {
                let listener = TcpListener::bind(address)
                    .await
                    .with_context(|| format!("cannot listen on http {address}"))?;
                let state = Arc::new(HttpState {
                    manager: Arc::clone(&manager),
                    metrics,
                });
                let token_file = Token::path_in(&config.data_dir);
                let dashboard = Dashboard::new(
                    Arc::clone(&manager),
                    Arc::clone(&scheduler),
                    runtime.clone(),
                    token.clone(),
                    config.workers,
                );
                let router = http::router(
                    state,
                    Some(Arc::clone(&dashboard)),
                    token.clone(),
                    &token_file,
                    config.listen_http_public,
                );
                let running = http::serve(listener, router)
                    .with_context(|| format!("cannot serve http on {address}"))?
                    .with_dashboard(dashboard);
                tracing::info!(
                    address = %running.address(),
                    token_required = config.listen_http_public,
                    "http listener started: metrics at /metrics, the dashboard at /dashboard/"
                );
                Some(running)
            }
            _ => None,
        };
        let server = api::serve(
            manager,
            Arc::clone(&scheduler),
            runtime.clone(),
            api_config,
            unix,
            tcp,
        )
        .await?;
        let plugins: Vec<String> = runtime
            .plugins()
            .into_iter()
            .map(|plugin| plugin.name)
            .collect();
        tracing::info!(
            socket = %socket.display(),
            tcp = ?config.listen_tcp,
            http = ?http.as_ref().map(RunningHttp::address),
            data_dir = %config.data_dir.display(),
            config_file = ?config.config_file,
            plugin_dir = %config.plugin_dir.display(),
            plugins = plugins.len(),
            plugin_names = %plugins.join(","),
            workers = config.workers,
            schedules = schedules.loaded,
            startup_ms = started.elapsed().as_millis() as u64,
            "daemon started"
        );
        Ok(Daemon {
            socket,
            server,
            http,
            scheduler,
            pool,
            shutdown_deadline: config.shutdown_deadline,
            pruner_stop,
            cluster_stop,
            traces,
            _lock: lock,
        })
    }

    /// Drains and stops: see the module documentation.
    pub async fn stop(self) -> anyhow::Result<ShutdownReport> {
        self.stop_or_cut_short(CancellationToken::new()).await
    }

    /// [`Daemon::stop`], cut short when `cut_short` fires: running jobs are interrupted
    /// at once (back to pending) and open connections are dropped without grace.
    pub async fn stop_or_cut_short(
        self,
        cut_short: CancellationToken,
    ) -> anyhow::Result<ShutdownReport> {
        tracing::info!(
            deadline_ms = self.shutdown_deadline.as_millis() as u64,
            "shutting down: no new schedule triggers or requests; running jobs may finish until the deadline"
        );
        self.scheduler.stop().await;
        self.pruner_stop.cancel();
        self.server.stop_accepting();
        let interrupter = self.pool.interrupter();
        let draining = self.pool.stop(self.shutdown_deadline);
        tokio::pin!(draining);
        let report = tokio::select! {
            report = &mut draining => report,
            () = cut_short.cancelled() => {
                interrupter.cancel();
                draining.await
            }
        };
        if let Some(http) = self.http {
            let grace = if cut_short.is_cancelled() {
                Duration::ZERO
            } else {
                CONNECTION_GRACE
            };
            http.stop(grace).await;
        }
        // Dropping `finish` drops the connections at once.
        let served = tokio::select! {
            biased;
            () = cut_short.cancelled() => Ok(()),
            served = self.server.finish(CONNECTION_GRACE) => served,
        };
        // Heartbeats go on until here: a draining daemon is not dead.
        self.cluster_stop.cancel();
        if let Err(err) = fs::remove_file(&self.socket) {
            tracing::warn!(socket = %self.socket.display(), error = %err, "cannot remove the socket");
        }
        // Last, so the spans of the drained attempts go out too.
        if let Some(traces) = self.traces {
            traces.shutdown().await;
        }
        tracing::info!(
            drained = report.drained,
            interrupted = report.interrupted,
            "daemon stopped"
        );
        served?;
        Ok(report)
    }
}

/// Hands every plugin (re)load to the manager, so that jobs waiting for that plugin run
/// again. Ends with the runtime's event feed.
async fn requeue_when_plugins_load(
    mut events: tokio::sync::broadcast::Receiver<PluginEvent>,
    runtime: Arc<Runtime>,
    manager: Arc<Manager>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = events.recv().await;
        if !matches!(event, Err(RecvError::Closed)) {
            manager.plugins_changed();
        }
        match event {
            Ok(PluginEvent::Loaded(plugin)) => manager.plugin_loaded(&plugin.name),
            Ok(_) => {}
            // Events were missed: whatever is loaded now may have waiting jobs.
            Err(RecvError::Lagged(_)) => {
                for plugin in runtime.plugins() {
                    manager.plugin_loaded(&plugin.name);
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Starts the daemon on the locked data directory, serves until SIGINT or SIGTERM,
/// then drains; a second signal during the drain stops at once.
async fn run(config: DaemonConfig, lock: File) -> anyhow::Result<()> {
    // Listen for signals before starting, so that one sent during start-up still drains.
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let daemon = Daemon::start_locked(config, lock).await?;
    let received = next_signal(&mut terminate, &mut interrupt).await;
    tracing::info!(signal = received, "signal received");
    let cut_short = CancellationToken::new();
    let stopping = daemon.stop_or_cut_short(cut_short.clone());
    tokio::pin!(stopping);
    tokio::select! {
        stopped = &mut stopping => {
            stopped?;
            return Ok(());
        }
        received = next_signal(&mut terminate, &mut interrupt) => {
            tracing::warn!(
                signal = received,
                "second signal: stopping now; running jobs go back to pending"
            );
            cut_short.cancel();
        }
    }
    stopping.await?;
    Ok(())
}

/// The name of the next SIGTERM or SIGINT.
async fn next_signal(terminate: &mut Signal, interrupt: &mut Signal) -> &'static str {
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    }
}

/// The whole `honeydewd` program (also `honeydew daemon`): configuration, logging, run.
pub fn main(data_dir: PathBuf, args: DaemonArgs) -> ExitCode {
    let config = match DaemonConfig::load(data_dir, args, std::env::vars()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("honeydewd: {err}");
            return ExitCode::from(2);
        }
    };
    // Lock before logging, so a refused second daemon writes nothing into the log of
    // the one that is running.
    let lock =
        match create_private_dir(&config.data_dir).and_then(|()| lock_data_dir(&config.data_dir)) {
            Ok(lock) => lock,
            Err(err) => {
                eprintln!("honeydewd: {err:#}");
                return ExitCode::FAILURE;
            }
        };
    let _log = match telemetry::init(&config.data_dir) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!(
                "honeydewd: cannot open the log in {}: {err}",
                config.data_dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, lock)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "daemon failed");
            ExitCode::FAILURE
        }
    }
}

/// Creates `dir` (mode 0700) if it is missing.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))
}

/// Warns when group or others may enter or read the data directory: the database, the
/// log and the token are the operator's alone.
fn warn_if_data_dir_is_open(data_dir: &Path) {
    let Ok(metadata) = fs::metadata(data_dir) else {
        return;
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            data_dir = %data_dir.display(),
            mode = %format!("{mode:o}"),
            "the data directory is open to group or others, who may read the job database, the log and the token: run `chmod 700 {}`",
            data_dir.display()
        );
    }
}

/// Opens the job store the configuration names: PostgreSQL at `database_url`, else
/// SQLite in the data directory.
async fn open_store(config: &DaemonConfig) -> anyhow::Result<Store> {
    let Some(url) = &config.database_url else {
        let sqlite = SqliteConfig {
            sync: config.sync,
            max_size_mib: config.max_database_mib,
            ..SqliteConfig::new(config.data_dir.join("honeydew.db"))
        };
        return SqliteStore::open(sqlite)
            .map(Store::new)
            .context("cannot open the job database");
    };
    let node_id = node_id(&config.data_dir)?;
    let postgres = PostgresConfig {
        pool_size: config.database_pool_size,
        ..PostgresConfig::new(url.expose(), node_id)
    };
    PostgresStore::open(postgres)
        .await
        .map(Store::new)
        .context("cannot open the PostgreSQL job database")
}

/// This daemon's node id on a shared database: made once, kept in `<data_dir>/node-id`,
/// so that after a restart it recognises the jobs it was running.
fn node_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-id");
    match fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
    let id = uuid::Uuid::now_v7().to_string();
    fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// Takes the data directory's exclusive lock and writes our pid into it.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    let path = data_dir.join(LOCK_FILE_NAME);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            };
            bail!(
                "another honeydewd{holder} is already running on data directory {}: \
                 stop it first, or start this one with another --data-dir",
                data_dir.display()
            );
        }
        Err(TryLockError::Error(err)) => {
            return Err(err).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_data_dir_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_data_dir(dir.path()).unwrap();
        let err = lock_data_dir(dir.path()).unwrap_err().to_string();
        let pid = std::process::id();
        assert!(
            err.contains(&format!("another honeydewd (pid {pid}) is already running")),
            "{err}"
        );
        assert!(err.contains("another --data-dir"), "{err}");
    }

    #[test]
    fn the_lock_is_released_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        drop(lock_data_dir(dir.path()).unwrap());
        assert!(lock_data_dir(dir.path()).is_ok());
    }
}
