//! The daemon's configuration: built-in defaults, then the TOML file, then environment
//! variables and flags (clap gives a flag precedence over its variable).
//!
//! The file is `<data_dir>/honeydew.toml` when present, or the one named by `--config`
//! / `HONEYDEW_CONFIG` (which must exist). Unknown keys are errors, so a typo is not
//! silently ignored. Relative paths in the file are relative to the data directory,
//! which the daemon and its clients find alike (`honeydew_proto::DataDirArg`, with the
//! socket's name).
//!
//! ```toml
//! plugin_dir = "plugins"          # default <data_dir>/plugins
//! workers = 16
//! sync = "full"                   # full | normal | off (SQLite only)
//! database_url = "postgres://honeydew@db.example/honeydew"  # PostgreSQL instead of SQLite
//! lease_ms = 30000                # shared database: a silent daemon's jobs are rescued after it
//! database_pool_size = 16         # PostgreSQL connections for writes (+ half for claims, + 1)
//! listen_tcp = "127.0.0.1:7070"   # off unless set
//! listen_http = "127.0.0.1:9464"  # Prometheus /metrics; off unless set, loopback only
//! listen_http_public = false      # true: any address, every request needs the token
//! otlp_endpoint = "http://127.0.0.1:4317"  # export traces over OTLP/gRPC; off unless set
//! shutdown_deadline_ms = 30000
//! max_payload_bytes = 4194304
//! max_database_mib = 10240        # submits are refused (RESOURCE_EXHAUSTED) past it
//! max_snoozes = 100               # times one job may snooze; the next snooze fails it
//!
//! [limits]                        # defaults for plugins whose manifest says nothing
//! fuel = 2000000000
//! memory_mib = 64
//! timeout_ms = 30000
//! max_retries = 3
//!
//! [concurrency]                   # jobs running at once, over the manifests' limits
//! github = 4                      # a plugin (every daemon on a shared database)
//! "github.clone" = 1              # a command
//!
//! [concurrency_per_key]           # jobs of one concurrency key running at once
//! github = 2                      # (1 when neither this nor the manifest says)
//!
//! [retry]                         # backoff between retries
//! base_ms = 1000
//! multiplier = 2.0
//! max_ms = 300000
//! jitter = 0.1
//! max_after_ms = 3600000          # the longest retry-after a plugin may ask for
//!
//! [retention]                     # how long finished jobs are kept
//! completed = "7d"
//! failed = "30d"
//! cancelled = "7d"
//! interval = "10m"                # how often the daemon prunes
//!
//! secret_env = ["GITHUB_TOKEN"]   # environment variables that are secrets
//!
//! [secrets]                       # values for `${NAME}` in manifests' auth rules
//! GITHUB_TOKEN = "..."
//! ```
//!
//! **Secrets.** A manifest's auth rule names a secret (`Bearer ${GITHUB_TOKEN}`); the
//! runtime resolves it from [`DaemonConfig::secrets`], which holds only what the
//! operator declared: the file's `[secrets]` table, the environment variables named by
//! `secret_env` (or `--secret-env`), and every `HONEYDEW_SECRET_<NAME>` variable (as
//! `<NAME>`); a declared variable wins over the file. The rest of the daemon's
//! environment is never a secret: whoever can write the plugin directory cannot name
//! `${AWS_SECRET_ACCESS_KEY}` and have it sent to a host of their choosing (the manifest
//! is refused, naming the variable). Values are never logged: [`Secrets`] prints names
//! only, and a config file holding secrets that others can read draws a warning.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use honeydew_proto::SOCKET_FILE_NAME;
use serde::Deserialize;

use crate::retry::BackoffPolicy;
use crate::store::SyncMode;
use honeydew_core::concurrency::ConcurrencyLimits;

/// The file looked for in the data directory.
pub const CONFIG_FILE_NAME: &str = "honeydew.toml";

/// The daemon's flags (each also read from its `HONEYDEW_*` variable).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct DaemonArgs {
    /// TOML config file [default: <data-dir>/honeydew.toml when present]
    #[arg(long, env = "HONEYDEW_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Plugin directory, watched for NAME.wasm + NAME.toml [default: <data-dir>/plugins]
    #[arg(long, env = "HONEYDEW_PLUGIN_DIR", value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// Jobs run at once (1 to 1024) [default: 16]
    #[arg(long, env = "HONEYDEW_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// Commit durability: full (survives power loss), normal, off [default: full]
    #[arg(long, env = "HONEYDEW_SYNC", value_name = "MODE", value_parser = parse_sync)]
    pub sync: Option<SyncMode>,
    /// Keep jobs in this PostgreSQL database (postgres://USER@HOST/DB) instead of SQLite
    /// in the data directory; several daemons may share one
    #[arg(
        long,
        env = "HONEYDEW_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<DatabaseUrl>,
    /// On a shared database: how long a daemon may go without a heartbeat before the
    /// others rescue its running jobs (1000 to 3600000) [default: 30000]
    #[arg(long, env = "HONEYDEW_LEASE_MS", value_name = "MS")]
    pub lease_ms: Option<u64>,
    /// On PostgreSQL: connections for submits and outcomes (2 to 256); claims get half
    /// as many more, and one listens for notifications [default: 16]
    #[arg(long, env = "HONEYDEW_DATABASE_POOL_SIZE", value_name = "N")]
    pub database_pool_size: Option<usize>,
    /// Also serve gRPC on this TCP address; clients must send the bearer token in <data-dir>/token
    #[arg(long, env = "HONEYDEW_LISTEN_TCP", value_name = "ADDR")]
    pub listen_tcp: Option<SocketAddr>,
    /// Serve Prometheus metrics at http://ADDR/metrics (a loopback address unless
    /// --listen-http-public is given)
    #[arg(long, env = "HONEYDEW_LISTEN_HTTP", value_name = "ADDR")]
    pub listen_http: Option<SocketAddr>,
    /// Let --listen-http take a non-loopback address; every HTTP request must then
    /// carry the bearer token in <data-dir>/token
    #[arg(long, env = "HONEYDEW_LISTEN_HTTP_PUBLIC")]
    pub listen_http_public: bool,
    /// Export OpenTelemetry traces (submits, attempts, plugins' HTTP requests) to
    /// the OTLP/gRPC collector at this plain http:// URL, such as http://127.0.0.1:4317
    #[arg(long, env = "HONEYDEW_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// How long SIGINT/SIGTERM lets running jobs finish before putting them back
    /// to pending [default: 30000]
    #[arg(long, env = "HONEYDEW_SHUTDOWN_DEADLINE_MS", value_name = "MS")]
    pub shutdown_deadline_ms: Option<u64>,
    /// Default fuel budget of a job
    #[arg(long, value_name = "UNITS")]
    pub fuel: Option<u64>,
    /// Default memory limit of a job's sandbox
    #[arg(long, value_name = "MIB")]
    pub memory_mib: Option<u64>,
    /// Default wall-clock deadline of one attempt
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Default retries of a job after retriable failures
    #[arg(long, value_name = "N")]
    pub max_retries: Option<u32>,
    /// Times one job may snooze (its plugin asks to run it again later, spending no
    /// retry); the snooze after that fails it (0 to 100000) [default: 100]
    #[arg(long, env = "HONEYDEW_MAX_SNOOZES", value_name = "N")]
    pub max_snoozes: Option<u32>,
    /// An environment variable that is a secret manifests may name (repeatable; also
    /// every HONEYDEW_SECRET_<NAME> variable, as <NAME>)
    #[arg(
        long = "secret-env",
        env = "HONEYDEW_SECRET_ENV",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub secret_env: Vec<String>,
}

/// The prefix that marks an environment variable as a secret: `HONEYDEW_SECRET_X` is
/// the secret `X`.
pub const SECRET_ENV_PREFIX: &str = "HONEYDEW_SECRET_";

fn parse_sync(text: &str) -> Result<SyncMode, String> {
    match text {
        "full" => Ok(SyncMode::Full),
        "normal" => Ok(SyncMode::Normal),
        "off" => Ok(SyncMode::Off),
        other => Err(format!(
            "unknown sync mode {other:?}: use full, normal or off"
        )),
    }
}

/// Overrides of the runtime's default sandbox limits; `None` keeps its default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Fuel budget.
    pub fuel: Option<u64>,
    /// Memory limit in MiB.
    pub memory_mib: Option<u64>,
    /// Wall-clock deadline in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Retries after retriable failures.
    pub max_retries: Option<u32>,
}

/// The longest deadline (a job's timeout, the shutdown drain) that may be configured:
/// a day. Bounded so that no configured number can overflow the clock arithmetic.
pub const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// The most memory a job's sandbox may be given: a 32-bit linear memory's size.
pub const MAX_MEMORY_MIB: u64 = 4096;

/// The most retries that may be configured for a job.
pub const MAX_RETRIES_LIMIT: u32 = 100;

/// The PostgreSQL pool of durable connections when the configuration names none.
pub const DEFAULT_DATABASE_POOL_SIZE: usize = 16;

impl LimitOverrides {
    /// Checks the overrides are in range; the error names the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |text: String| Err(ConfigError::Invalid(text));
        if self.fuel == Some(0) {
            return invalid("limits.fuel must be at least 1".into());
        }
        if let Some(memory_mib) = self.memory_mib
            && !(1..=MAX_MEMORY_MIB).contains(&memory_mib)
        {
            return invalid(format!(
                "limits.memory_mib must be between 1 and {MAX_MEMORY_MIB}, not {memory_mib}"
            ));
        }
        if let Some(timeout_ms) = self.timeout_ms
            && !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms)
        {
            return invalid(format!(
                "limits.timeout_ms must be between 1 and {MAX_TIMEOUT_MS} (a day), not {timeout_ms}"
            ));
        }
        if let Some(max_retries) = self.max_retries
            && max_retries > MAX_RETRIES_LIMIT
        {
            return invalid(format!(
                "limits.max_retries must be at most {MAX_RETRIES_LIMIT}, not {max_retries}"
            ));
        }
        Ok(())
    }
}

/// Secret values by name; `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(HashMap<String, String>);

impl Secrets {
    /// The map, for the runtime.
    pub fn into_inner(self) -> HashMap<String, String> {
        self.0
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} values, redacted)", self.0.len())
    }
}

/// A PostgreSQL connection URL. It may hold a password, so it is never printed: its
/// `Debug` shows only where it points.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL itself, for the driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let url = url.trim();
        match url.split_once("://") {
            Some(("postgres" | "postgresql", _)) => Ok(Self(url.to_owned())),
            // libpq's other form: `host=... dbname=...` pairs.
            None if url.contains('=') => Ok(Self(url.to_owned())),
            other => Err(format!(
                "unsupported database URL (scheme {:?}): use postgres://USER@HOST/DB, \
                 or leave it unset for SQLite in the data directory",
                other.map_or("", |(scheme, _)| scheme)
            )),
        }
    }
}

impl TryFrom<String> for DatabaseUrl {
    type Error = String;

    fn try_from(url: String) -> Result<Self, Self::Error> {
        url.parse()
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Credentials come before '@' in a URL, or as `password=` in pairs: only the
        // host is shown.
        let host = match self.0.split_once("://") {
            Some((_, rest)) => {
                let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                host.split(['/', '?']).next().unwrap_or("")
            }
            None => self
                .0
                .split_whitespace()
                .find_map(|pair| pair.strip_prefix("host="))
                .unwrap_or(""),
        };
        write!(f, "DatabaseUrl(postgres, host {host:?})")
    }
}

/// The resolved configuration of one daemon.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Database, socket, log, lock.
    pub data_dir: PathBuf,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// Where plugins are loaded from.
    pub plugin_dir: PathBuf,
    /// Where compiled components are cached.
    pub cache_dir: PathBuf,
    /// Jobs run at once.
    pub workers: usize,
    /// Commit durability (SQLite).
    pub sync: SyncMode,
    /// The PostgreSQL database, when jobs are not kept in SQLite.
    pub database_url: Option<DatabaseUrl>,
    /// On a shared database, how long without a heartbeat before a daemon's running
    /// jobs are rescued by the others.
    pub lease: Duration,
    /// On PostgreSQL, the size of the pool of durable connections.
    pub database_pool_size: usize,
    /// Optional TCP listener.
    pub listen_tcp: Option<SocketAddr>,
    /// Optional HTTP listener (metrics).
    pub listen_http: Option<SocketAddr>,
    /// Whether the HTTP listener may be on a non-loopback address; it then requires
    /// the bearer token on every request.
    pub listen_http_public: bool,
    /// Where traces are exported (OTLP/gRPC over plain HTTP/2); none: not exported.
    pub otlp_endpoint: Option<String>,
    /// How long a shutdown waits for running jobs.
    pub shutdown_deadline: Duration,
    /// The largest payload accepted.
    pub max_payload_bytes: usize,
    /// The largest the job database may grow, in MiB; the disk's size when `None`.
    pub max_database_mib: Option<u64>,
    /// The largest result kept; the runtime's default when `None`.
    pub max_result_bytes: Option<usize>,
    /// Default sandbox limits.
    pub limits: LimitOverrides,
    /// Retry timing.
    pub backoff: BackoffPolicy,
    /// Times one job may snooze.
    pub max_snoozes: u32,
    /// Concurrency limits over the manifests' own.
    pub concurrency: ConcurrencyLimits,
    /// How long finished jobs are kept.
    pub retention: crate::retention::RetentionPolicy,
    /// Values for manifests' auth rules: only what the operator declared.
    pub secrets: Secrets,
    /// Names (never values) of environment variables that are set but not declared as
    /// secrets, so that a manifest naming one is refused with a reason that says so.
    pub undeclared_env: Vec<String>,
    /// Things worth telling the operator once logging is up.
    pub warnings: Vec<String>,
}

impl DaemonConfig {
    /// The socket clients connect to.
    pub fn socket_path(&self) -> PathBuf {
        self.data_dir.join(SOCKET_FILE_NAME)
    }

    /// Defaults, then the file, then `args`, with `environment` as the process's
    /// variables (a parameter so tests need not touch the real environment).
    pub fn load(
        data_dir: PathBuf,
        args: DaemonArgs,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (file, config_file) = read_file(&data_dir, args.config.as_deref())?;
        let mut warnings = Vec::new();
        if let Some(path) = &config_file
            && !file.secrets.is_empty()
            && let Ok(metadata) = std::fs::metadata(path)
            && metadata.permissions().mode() & 0o077 != 0
        {
            warnings.push(format!(
                "config file {} holds secrets and others can read it: chmod 600 it",
                path.display()
            ));
        }
        let relative = |path: PathBuf| {
            if path.is_absolute() {
                path
            } else {
                data_dir.join(path)
            }
        };
        let workers = args
            .workers
            .or(file.workers)
            .unwrap_or(crate::worker::DEFAULT_WORKERS);
        if workers == 0 {
            return Err(ConfigError::Invalid(
                "workers is 0: at least one worker is needed to run jobs".into(),
            ));
        }
        if workers > crate::worker::MAX_WORKERS {
            return Err(ConfigError::Invalid(format!(
                "workers is {workers}: at most {} may run at once",
                crate::worker::MAX_WORKERS
            )));
        }
        let declared: std::collections::BTreeSet<String> =
            file.secret_env.into_iter().chain(args.secret_env).collect();
        for name in &declared {
            if !is_secret_name(name) {
                return Err(ConfigError::Invalid(format!(
                    "secret_env names {name:?}, which is not a variable name (letters, digits and _)"
                )));
            }
        }
        let mut secrets: HashMap<String, String> = file.secrets.into_iter().collect();
        let mut undeclared_env = Vec::new();
        let (mut backtraces, mut library_backtraces) = (None, None);
        for (name, value) in environment {
            match name.as_str() {
                "RUST_BACKTRACE" => backtraces = Some(value.clone()),
                "RUST_LIB_BACKTRACE" => library_backtraces = Some(value.clone()),
                _ => {}
            }
            if let Some(secret) = name.strip_prefix(SECRET_ENV_PREFIX)
                && is_secret_name(secret)
            {
                secrets.insert(secret.to_owned(), value);
            } else if declared.contains(&name) {
                secrets.insert(name, value);
            } else if is_secret_name(&name) {
                undeclared_env.push(name);
            }
        }
        undeclared_env.sort();
        if let Some(warning) =
            backtrace_warning(backtraces.as_deref(), library_backtraces.as_deref())
        {
            warnings.push(warning);
        }
        let file_limits = file.limits.unwrap_or_default();
        let backoff = file.retry.unwrap_or_default();
        backoff.validate().map_err(ConfigError::Invalid)?;
        let retention = file.retention.unwrap_or_default();
        retention.validate().map_err(ConfigError::Invalid)?;
        let limits = LimitOverrides {
            fuel: args.fuel.or(file_limits.fuel),
            memory_mib: args.memory_mib.or(file_limits.memory_mib),
            timeout_ms: args.timeout_ms.or(file_limits.timeout_ms),
            max_retries: args.max_retries.or(file_limits.max_retries),
        };
        limits.validate()?;
        let shutdown_deadline_ms = args
            .shutdown_deadline_ms
            .or(file.shutdown_deadline_ms)
            .unwrap_or(30_000);
        if shutdown_deadline_ms > MAX_TIMEOUT_MS {
            return Err(ConfigError::Invalid(format!(
                "shutdown_deadline_ms is {shutdown_deadline_ms}, over the maximum of {MAX_TIMEOUT_MS} (a day)"
            )));
        }
        let default_lease =
            u64::try_from(crate::cluster::DEFAULT_LEASE.as_millis()).unwrap_or(30_000);
        let lease_ms = args.lease_ms.or(file.lease_ms).unwrap_or(default_lease);
        if !(1_000..=3_600_000).contains(&lease_ms) {
            return Err(ConfigError::Invalid(format!(
                "lease_ms is {lease_ms}: use 1000 (a second) to 3600000 (an hour)"
            )));
        }
        let database_pool_size = args
            .database_pool_size
            .or(file.database_pool_size)
            .unwrap_or(DEFAULT_DATABASE_POOL_SIZE);
        if !(2..=256).contains(&database_pool_size) {
            return Err(ConfigError::Invalid(format!(
                "database_pool_size is {database_pool_size}: use 2 to 256 connections"
            )));
        }
        let listen_http = args.listen_http.or(file.listen_http);
        let listen_http_public =
            args.listen_http_public || file.listen_http_public.unwrap_or(false);
        if let Some(address) = listen_http
            && !address.ip().to_canonical().is_loopback()
            && !listen_http_public
        {
            return Err(ConfigError::Invalid(format!(
                "listen_http is {address}, which is not a loopback address: metrics and the \
                 dashboard would be open to the network; use 127.0.0.1, or add \
                 --listen-http-public (listen_http_public = true) to serve it there with the \
                 bearer token required on every request"
            )));
        }
        let otlp_endpoint = args.otlp_endpoint.or(file.otlp_endpoint);
        if let Some(endpoint) = &otlp_endpoint {
            check_otlp_endpoint(endpoint)?;
        }
        let max_snoozes = args
            .max_snoozes
            .or(file.max_snoozes)
            .unwrap_or(crate::job_request::DEFAULT_MAX_SNOOZES);
        if max_snoozes > crate::job_request::MAX_CONFIGURABLE_SNOOZES {
            return Err(ConfigError::Invalid(format!(
                "max_snoozes is {max_snoozes}: use 0 to {}",
                crate::job_request::MAX_CONFIGURABLE_SNOOZES
            )));
        }
        let concurrency = concurrency_limits(&file.concurrency, &file.concurrency_per_key)?;
        Ok(Self {
            concurrency,
            plugin_dir: args
                .plugin_dir
                .or(file.plugin_dir.map(relative))
                .unwrap_or_else(|| data_dir.join("plugins")),
            cache_dir: file
                .cache_dir
                .map(relative)
                .unwrap_or_else(|| data_dir.join("cache")),
            workers,
            sync: args.sync.or(file.sync).unwrap_or_default(),
            database_url: args.database_url.or(file.database_url),
            lease: Duration::from_millis(lease_ms),
            database_pool_size,
            listen_tcp: args.listen_tcp.or(file.listen_tcp),
            listen_http,
            listen_http_public,
            otlp_endpoint,
            shutdown_deadline: Duration::from_millis(shutdown_deadline_ms),
            max_payload_bytes: file.max_payload_bytes.unwrap_or(4 * 1024 * 1024),
            max_database_mib: file.max_database_mib,
            max_result_bytes: file.max_result_bytes,
            limits,
            backoff,
            max_snoozes,
            retention,
            secrets: Secrets(secrets),
            undeclared_env,
            warnings,
            config_file,
            data_dir,
        })
    }
}

/// What to tell the operator when `RUST_BACKTRACE` turns on library backtraces too:
/// wasmtime tears down every finished sandbox's fibers with an error value, which then
/// captures a backtrace, once a job (measured: 302 us of CPU a job without, 423 us
/// with, in the drain bench). `RUST_LIB_BACKTRACE=0` keeps them for panics only.
fn backtrace_warning(backtraces: Option<&str>, library_backtraces: Option<&str>) -> Option<String> {
    match (backtraces, library_backtraces) {
        (Some(value), None) if value != "0" => Some(format!(
            "RUST_BACKTRACE={value} makes every job capture a backtrace in wasmtime's sandbox \
             teardown (about 40% more CPU a job); set RUST_LIB_BACKTRACE=0 as well to keep \
             backtraces for panics only"
        )),
        _ => None,
    }
}

/// The file's `[concurrency]` and `[concurrency_per_key]` tables, checked: each names a
/// plugin or a command (a plugin for a per-key limit) and a limit of 1 to
/// [`MAX_LIMIT`](honeydew_core::concurrency::MAX_LIMIT).
fn concurrency_limits(
    running: &BTreeMap<String, u32>,
    per_key: &BTreeMap<String, u32>,
) -> Result<ConcurrencyLimits, ConfigError> {
    use honeydew_core::concurrency::MAX_LIMIT;
    let check = |table: &str, target: &str, limit: u32, plugin_only: bool| {
        if crate::pause::validate_target(target).is_err() || (plugin_only && target.contains('.')) {
            let what = if plugin_only {
                "a plugin"
            } else {
                "a plugin or a PLUGIN.COMMAND"
            };
            return Err(ConfigError::Invalid(format!(
                "{table}: {target:?} is not {what}"
            )));
        }
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ConfigError::Invalid(format!(
                "{table}.{target} must be between 1 and {MAX_LIMIT}, not {limit}"
            )));
        }
        Ok(())
    };
    for (target, limit) in running {
        check("concurrency", target, *limit, false)?;
    }
    for (target, limit) in per_key {
        check("concurrency_per_key", target, *limit, true)?;
    }
    Ok(ConcurrencyLimits {
        running: running.clone(),
        per_key: per_key.clone(),
    })
}

/// Checks that `endpoint` is a URL the trace exporter can reach: `http://HOST:PORT`
/// (the exporter speaks plain HTTP/2; a TLS collector is reached through a local one).
fn check_otlp_endpoint(endpoint: &str) -> Result<(), ConfigError> {
    let invalid = |why: &str| {
        ConfigError::Invalid(format!(
            "otlp_endpoint is {endpoint:?}: {why}; use a plain http:// URL such as \
             http://127.0.0.1:4317"
        ))
    };
    let uri: http::Uri = endpoint.parse().map_err(|_| invalid("not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(invalid("https is not supported")),
        _ => return Err(invalid("it has no http:// scheme")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("it names no host"));
    }
    Ok(())
}

/// The config file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    plugin_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    workers: Option<usize>,
    sync: Option<SyncMode>,
    database_url: Option<DatabaseUrl>,
    lease_ms: Option<u64>,
    database_pool_size: Option<usize>,
    listen_tcp: Option<SocketAddr>,
    listen_http: Option<SocketAddr>,
    listen_http_public: Option<bool>,
    otlp_endpoint: Option<String>,
    shutdown_deadline_ms: Option<u64>,
    max_payload_bytes: Option<usize>,
    max_database_mib: Option<u64>,
    max_result_bytes: Option<usize>,
    max_snoozes: Option<u32>,
    limits: Option<LimitOverrides>,
    #[serde(default)]
    concurrency: BTreeMap<String, u32>,
    #[serde(default)]
    concurrency_per_key: BTreeMap<String, u32>,
    retry: Option<BackoffPolicy>,
    retention: Option<crate::retention::RetentionPolicy>,
    #[serde(default)]
    secret_env: Vec<String>,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
}

/// What `${NAME}` may name: letters, digits and `_`, not starting with a digit.
fn is_secret_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn read_file(
    data_dir: &Path,
    explicit: Option<&Path>,
) -> Result<(FileConfig, Option<PathBuf>), ConfigError> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let default = data_dir.join(CONFIG_FILE_NAME);
            if !default.exists() {
                return Ok((FileConfig::default(), None));
            }
            default
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let file = toml::from_str(&text).map_err(|err| ConfigError::Parse {
        path: path.clone(),
        message: err.to_string(),
    })?;
    Ok((file, Some(path)))
}

/// Why the configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml said, with the line.
        message: String,
    },
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(
        file: Option<&str>,
        args: DaemonArgs,
        env: &[(&str, &str)],
    ) -> Result<DaemonConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        if let Some(text) = file {
            std::fs::write(dir.path().join(CONFIG_FILE_NAME), text).unwrap();
        }
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        DaemonConfig::load(dir.path().to_path_buf(), args, env.collect::<Vec<_>>())
    }

    #[test]
    fn defaults_without_a_file() {
        let config = load(None, DaemonArgs::default(), &[]).unwrap();
        assert_eq!(config.plugin_dir, config.data_dir.join("plugins"));
        assert_eq!(config.cache_dir, config.data_dir.join("cache"));
        assert_eq!(config.socket_path(), config.data_dir.join("honeydew.sock"));
        assert_eq!(config.workers, crate::worker::DEFAULT_WORKERS);
        assert_eq!(config.sync, SyncMode::Full);
        assert_eq!(config.listen_tcp, None);
        assert_eq!(
            config.listen_http, None,
            "no http listener unless asked for"
        );
        assert!(!config.listen_http_public);
        assert_eq!(config.shutdown_deadline, Duration::from_secs(30));
        assert_eq!(config.config_file, None);
    }

    #[test]
    fn file_then_flags_with_flags_winning() {
        let file = r#"
            plugin_dir = "my-plugins"
            workers = 8
            sync = "normal"
            shutdown_deadline_ms = 500
            [limits]
            timeout_ms = 1000
            max_retries = 7
            [retry]
            base_ms = 20
            jitter = 0.0
        "#;
        let args = DaemonArgs {
            workers: Some(2),
            max_retries: Some(1),
            ..DaemonArgs::default()
        };
        let config = load(Some(file), args, &[]).unwrap();
        assert_eq!(config.plugin_dir, config.data_dir.join("my-plugins"));
        assert_eq!(config.workers, 2);
        assert_eq!(config.sync, SyncMode::Normal);
        assert_eq!(config.shutdown_deadline, Duration::from_millis(500));
        assert_eq!(config.limits.timeout_ms, Some(1000));
        assert_eq!(config.limits.max_retries, Some(1));
        assert_eq!(config.backoff.base, Duration::from_millis(20));
        assert_eq!(config.backoff.jitter, 0.0);
    }

    #[test]
    fn rust_backtrace_without_rust_lib_backtrace_draws_a_warning() {
        let warned = |env: &[(&str, &str)]| {
            let config = load(None, DaemonArgs::default(), env).unwrap();
            config
                .warnings
                .iter()
                .any(|w| w.contains("RUST_LIB_BACKTRACE=0"))
        };
        assert!(warned(&[("RUST_BACKTRACE", "1")]));
        assert!(warned(&[("RUST_BACKTRACE", "full")]));
        assert!(!warned(&[
            ("RUST_BACKTRACE", "1"),
            ("RUST_LIB_BACKTRACE", "0")
        ]));
        assert!(!warned(&[("RUST_BACKTRACE", "0")]));
        assert!(!warned(&[]));
    }

    #[test]
    fn concurrency_limits_come_from_the_file_and_are_checked() {
        let file = "[concurrency]\ngithub = 4\n\"github.clone\" = 1\n\
                    [concurrency_per_key]\ngithub = 2\n";
        let config = load(Some(file), DaemonArgs::default(), &[]).unwrap();
        assert_eq!(config.concurrency.running["github"], 4);
        assert_eq!(config.concurrency.running["github.clone"], 1);
        assert_eq!(config.concurrency.per_key["github"], 2);
        for (file, wanted) in [
            (
                "[concurrency]\ngithub = 0",
                "concurrency.github must be between 1 and 100000",
            ),
            (
                "[concurrency]\n\"a b\" = 1",
                "is not a plugin or a PLUGIN.COMMAND",
            ),
            (
                "[concurrency_per_key]\n\"github.clone\" = 1",
                "is not a plugin",
            ),
        ] {
            let error = load(Some(file), DaemonArgs::default(), &[]).unwrap_err();
            assert!(error.to_string().contains(wanted), "{file}: {error}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file_and_the_problem() {
        let err = load(Some("wrokers = 3"), DaemonArgs::default(), &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("invalid config file"), "{text}");
        assert!(text.contains("wrokers"), "{text}");
        let err = load(Some("sync = \"sometimes\""), DaemonArgs::default(), &[]).unwrap_err();
        assert!(err.to_string().contains("sometimes"), "{err}");
        let err = load(Some("workers = 0"), DaemonArgs::default(), &[]).unwrap_err();
        assert!(err.to_string().contains("workers is 0"), "{err}");
        let err = load(Some("workers = 100000"), DaemonArgs::default(), &[]).unwrap_err();
        assert!(err.to_string().contains("at most 1024"), "{err}");
    }

    #[test]
    fn the_http_listener_is_loopback_unless_public_is_asked_for() {
        let config = load(
            Some("listen_http = \"127.0.0.1:9464\""),
            DaemonArgs::default(),
            &[],
        )
        .unwrap();
        assert_eq!(config.listen_http, Some("127.0.0.1:9464".parse().unwrap()));
        assert!(!config.listen_http_public);
        for address in ["0.0.0.0:9464", "192.0.2.7:9464", "[::]:9464"] {
            let args = DaemonArgs {
                listen_http: Some(address.parse().unwrap()),
                ..DaemonArgs::default()
            };
            let err = load(None, args, &[]).unwrap_err().to_string();
            assert!(
                err.contains("not a loopback address") && err.contains("--listen-http-public"),
                "{address}: {err}"
            );
        }
        let args = DaemonArgs {
            listen_http: Some("[::1]:9464".parse().unwrap()),
            ..DaemonArgs::default()
        };
        assert!(load(None, args, &[]).is_ok(), "::1 is loopback");
        let public = DaemonArgs {
            listen_http: Some("0.0.0.0:9464".parse().unwrap()),
            listen_http_public: true,
            ..DaemonArgs::default()
        };
        assert!(load(None, public, &[]).unwrap().listen_http_public);
        let file = "listen_http = \"0.0.0.0:9464\"\nlisten_http_public = true";
        let config = load(Some(file), DaemonArgs::default(), &[]).unwrap();
        assert_eq!(config.listen_http, Some("0.0.0.0:9464".parse().unwrap()));
        assert!(config.listen_http_public);
    }

    #[test]
    fn an_otlp_endpoint_must_be_a_plain_http_url() {
        assert_eq!(
            load(None, DaemonArgs::default(), &[])
                .unwrap()
                .otlp_endpoint,
            None
        );
        let file = "otlp_endpoint = \"http://127.0.0.1:4317\"";
        let config = load(Some(file), DaemonArgs::default(), &[]).unwrap();
        assert_eq!(
            config.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4317")
        );
        for bad in [
            "https://collector:4317",
            "127.0.0.1:4317",
            "http://",
            "not a url",
        ] {
            let args = DaemonArgs {
                otlp_endpoint: Some(bad.to_owned()),
                ..DaemonArgs::default()
            };
            let err = load(None, args, &[]).unwrap_err().to_string();
            assert!(
                err.contains("otlp_endpoint") && err.contains("http://"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_database_pool_size_is_bounded_and_defaults_to_sixteen() {
        let config = load(None, DaemonArgs::default(), &[]).unwrap();
        assert_eq!(config.database_pool_size, DEFAULT_DATABASE_POOL_SIZE);
        let config = load(Some("database_pool_size = 4"), DaemonArgs::default(), &[]).unwrap();
        assert_eq!(config.database_pool_size, 4);
        for absurd in ["1", "100000"] {
            let file = format!("database_pool_size = {absurd}");
            let err = load(Some(&file), DaemonArgs::default(), &[]).unwrap_err();
            assert!(err.to_string().contains("use 2 to 256"), "{err}");
        }
    }

    #[test]
    fn an_explicit_config_file_must_exist() {
        let args = DaemonArgs {
            config: Some(PathBuf::from("/nonexistent/honeydew.toml")),
            ..DaemonArgs::default()
        };
        let err = load(None, args, &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read config file /nonexistent/honeydew.toml"),
            "{err}"
        );
    }

    #[test]
    fn declared_environment_overrides_file_secrets_and_debug_hides_values() {
        let file = "secret_env = [\"GITHUB_TOKEN\"]\n[secrets]\nGITHUB_TOKEN = \"from-file\"\nJIRA_TOKEN = \"jira-file\"\n";
        let config = load(
            Some(file),
            DaemonArgs::default(),
            &[("GITHUB_TOKEN", "from-env")],
        )
        .unwrap();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("from-env") && !debug.contains("jira-file"),
            "{debug}"
        );
        let secrets = config.secrets.into_inner();
        assert_eq!(secrets["GITHUB_TOKEN"], "from-env");
        assert_eq!(secrets["JIRA_TOKEN"], "jira-file");
    }

    /// Regression (issue 9, defect 14): a manifest could name any variable of the
    /// daemon's environment (`${AWS_SECRET_ACCESS_KEY}`) and have it sent to its host.
    #[test]
    fn only_declared_variables_are_secrets() {
        let env = [
            ("AWS_SECRET_ACCESS_KEY", "aws-value"),
            ("HONEYDEW_SECRET_GITHUB_TOKEN", "prefixed-value"),
            ("LINEAR_TOKEN", "listed-value"),
            ("PATH", "/usr/bin"),
        ];
        let args = DaemonArgs {
            secret_env: vec!["LINEAR_TOKEN".into()],
            ..DaemonArgs::default()
        };
        let config = load(None, args, &env).unwrap();
        let mut undeclared = config.undeclared_env.clone();
        undeclared.sort();
        assert_eq!(undeclared, ["AWS_SECRET_ACCESS_KEY", "PATH"]);
        let secrets = config.secrets.into_inner();
        assert_eq!(secrets.len(), 2, "{:?}", secrets.keys().collect::<Vec<_>>());
        assert_eq!(secrets["GITHUB_TOKEN"], "prefixed-value");
        assert_eq!(secrets["LINEAR_TOKEN"], "listed-value");
        assert!(!secrets.contains_key("AWS_SECRET_ACCESS_KEY"));
        let err = load(
            Some("secret_env = [\"NOT A NAME\"]"),
            DaemonArgs::default(),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a variable name"), "{err}");
    }

    #[test]
    fn limits_and_retry_numbers_from_outside_are_bounded() {
        for (file, expected) in [
            (
                "[limits]\ntimeout_ms = 18446744073709551615",
                "limits.timeout_ms",
            ),
            ("[limits]\nmemory_mib = 0", "limits.memory_mib"),
            ("[limits]\nmax_retries = 1000", "limits.max_retries"),
            ("shutdown_deadline_ms = 99999999999", "shutdown_deadline_ms"),
            ("[retry]\njitter = -1.0", "retry.jitter"),
            (
                "[retry]\nmax_after_ms = 18446744073709551615",
                "retry.max_after_ms",
            ),
            (
                "max_snoozes = 100001",
                "max_snoozes is 100001: use 0 to 100000",
            ),
        ] {
            let err = load(Some(file), DaemonArgs::default(), &[]).unwrap_err();
            assert!(err.to_string().contains(expected), "{file}: {err}");
        }
    }

    #[test]
    fn max_snoozes_defaults_to_a_hundred_and_a_flag_beats_the_file() {
        let default = load(None, DaemonArgs::default(), &[]).unwrap();
        assert_eq!(default.max_snoozes, 100);
        let from_file = load(Some("max_snoozes = 3"), DaemonArgs::default(), &[]).unwrap();
        assert_eq!(from_file.max_snoozes, 3);
        let args = DaemonArgs {
            max_snoozes: Some(0),
            ..DaemonArgs::default()
        };
        assert_eq!(
            load(Some("max_snoozes = 3"), args, &[])
                .unwrap()
                .max_snoozes,
            0
        );
    }

    proptest::proptest! {
        /// Whatever bytes a config file holds, loading answers Ok or a clear error.
        #[test]
        fn any_config_text_loads_or_is_refused_without_panicking(text in "\\PC{0,200}") {
            let _ = load(Some(&text), DaemonArgs::default(), &[]);
        }

        #[test]
        fn any_numbers_in_the_config_load_or_are_refused(
            timeout in proptest::num::u64::ANY,
            memory in proptest::num::u64::ANY,
            base in proptest::num::u64::ANY,
            multiplier in proptest::num::f64::ANY,
        ) {
            let file = format!(
                "[limits]\ntimeout_ms = {timeout}\nmemory_mib = {memory}\n[retry]\nbase_ms = {base}\nmultiplier = {multiplier:?}\n"
            );
            if let Ok(config) = load(Some(&file), DaemonArgs::default(), &[]) {
                proptest::prop_assert!(config.limits.timeout_ms.unwrap() <= MAX_TIMEOUT_MS);
                proptest::prop_assert!(config.backoff.validate().is_ok());
            }
        }
    }

    #[test]
    fn sync_flag_values() {
        assert_eq!(parse_sync("off").unwrap(), SyncMode::Off);
        assert!(
            parse_sync("fast")
                .unwrap_err()
                .contains("full, normal or off")
        );
    }

    #[test]
    fn a_database_url_is_postgres_and_never_shows_its_password() {
        let url: DatabaseUrl = "postgres://app:s3cret@db.example:5432/jobs"
            .parse()
            .unwrap();
        let shown = format!("{url:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("db.example"),
            "{shown}"
        );
        let pairs: DatabaseUrl = "host=/run/pg user=app password=s3cret".parse().unwrap();
        let shown = format!("{pairs:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("/run/pg"),
            "{shown}"
        );
        let err = "mysql://db/jobs".parse::<DatabaseUrl>().unwrap_err();
        assert!(
            err.contains("\"mysql\"") && err.contains("postgres://"),
            "{err}"
        );
        let file = load(
            Some("database_url = \"sqlite://x\""),
            DaemonArgs::default(),
            &[],
        );
        assert!(
            file.unwrap_err()
                .to_string()
                .contains("unsupported database URL")
        );
    }
}
