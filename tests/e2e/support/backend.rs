//! One daemon on one backend (SQLite in its data directory, or a PostgreSQL schema of
//! its own), and [`on_both_backends!`], which runs a behaviour once on each.

use honeydew_testkit::TestSchema;
use tonic::transport::Channel;

use super::{Daemon, DataDir, running, submit};

/// A daemon on one backend: SQLite in its data directory, or a PostgreSQL schema.
pub struct Backend {
    pub data: DataDir,
    pub daemon: Daemon,
    args: Vec<String>,
    _schema: Option<TestSchema>,
}

impl Backend {
    /// A daemon with `plugins` and the flags `extra`, on PostgreSQL when `postgres`.
    pub async fn start(postgres: bool, plugins: &[&str], extra: &[&str]) -> Backend {
        Self::start_in(postgres, DataDir::with_plugins(plugins), extra).await
    }

    /// A daemon on the data directory `data` (configured already), with the flags
    /// `extra`, on PostgreSQL when `postgres`.
    pub async fn start_in(postgres: bool, data: DataDir, extra: &[&str]) -> Backend {
        let schema = if postgres {
            Some(TestSchema::create().await)
        } else {
            None
        };
        let mut args: Vec<&str> = extra.to_vec();
        if let Some(schema) = &schema {
            args.extend(["--database-url", schema.url(), "--database-pool-size", "4"]);
        }
        let daemon = Daemon::start(&data, &args);
        Backend {
            data,
            daemon,
            args: args.iter().map(|arg| arg.to_string()).collect(),
            _schema: schema,
        }
    }

    /// Stops the daemon (SIGTERM, a clean stop) and starts it again on the same data
    /// and database; the new daemon and a channel to it.
    pub async fn restart(self) -> (Backend, Channel) {
        let Backend {
            data,
            daemon,
            args,
            _schema,
        } = self;
        let (status, log) = daemon.terminate();
        assert!(status.success(), "{status:?}: {log}");
        let daemon = Daemon::start(&data, &args.iter().map(String::as_str).collect::<Vec<_>>());
        let channel = daemon.connect().await;
        let backend = Backend {
            data,
            daemon,
            args,
            _schema,
        };
        (backend, channel)
    }

    /// A daemon with one worker (plugins echo and spin), held by a `spin.sleep` of
    /// `ms` that is running when this returns: whatever is submitted next stays pending
    /// until it ends or is cancelled. The backend, a channel, the blocker's id.
    pub async fn held(postgres: bool, ms: u64) -> (Backend, Channel, String) {
        let backend = Backend::start(
            postgres,
            &["echo", "spin"],
            &["--workers", "1", "--timeout-ms", "120000"],
        )
        .await;
        let channel = backend.daemon.connect().await;
        let blocker = submit(&channel, "spin.sleep", &format!(r#"{{"ms": {ms}}}"#)).await;
        running(&channel, &blocker).await;
        (backend, channel, blocker)
    }
}

/// Runs each named behaviour (an `async fn NAME(postgres: bool)` of the calling
/// module) on both backends, as tests `sqlite::NAME` and `postgres::NAME`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(false).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(true).await
                }
            )*
        }
    };
}

pub(crate) use on_both_backends;
