//! Serving the API on a Unix socket (and optionally TCP), and connecting to it.
//!
//! The socket is bound under a private name, given mode 0600, then renamed into place:
//! it appears at its path already private, and the rename atomically replaces a stale
//! socket left by a daemon that died. Keeping a second daemon away from a live socket
//! is the caller's job (the daemon holds the data directory's lock before binding).
//! Shutdown is in two steps: [`RunningServer::stop_accepting`] refuses new connections
//! and requests while in-flight ones finish, then [`RunningServer::finish`] ends open
//! `WatchJob` streams and waits, within a grace period, for the connections to close.

use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinSet;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Server};

use super::pb::{
    bitbucket_server::BitbucketServer, git_hub_server::GitHubServer, git_lab_server::GitLabServer,
    jira_server::JiraServer, linear_server::LinearServer, plugins_server::PluginsServer,
    queue_server::QueueServer, schedules_server::SchedulesServer,
};
use super::plugins::PluginsService;
use super::proxies::ProxyService;
use super::queue::QueueService;
use super::schedules::SchedulesService;
use super::{ApiState, PluginInventory, pb};
use crate::queue::Manager;
use crate::scheduler::Scheduler;

/// Room for a message's other fields besides its payload or result.
const MESSAGE_SLACK_BYTES: usize = 1024 * 1024;

/// The largest response a client should accept (results can be large); give it to
/// generated clients with `max_decoding_message_size`.
pub const CLIENT_MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Message size limits of the server.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// The largest request message decoded; larger ones fail with OUT_OF_RANGE before
    /// reaching a service. Payloads between the manager's limit and this one get the
    /// manager's precise INVALID_ARGUMENT instead.
    pub max_request_bytes: usize,
    /// The largest response message encoded; also bounds a full `ListJobs` page.
    pub max_response_bytes: usize,
    /// What `PruneJobs` deletes when the request names no age.
    pub retention: crate::retention::RetentionPolicy,
}

impl ApiConfig {
    /// Limits that fit the largest payload accepted and the largest result produced.
    pub fn for_sizes(max_payload_bytes: usize, max_result_bytes: usize) -> Self {
        Self {
            max_request_bytes: max_payload_bytes
                .saturating_mul(2)
                .saturating_add(MESSAGE_SLACK_BYTES),
            max_response_bytes: max_payload_bytes
                .saturating_add(max_result_bytes)
                .saturating_add(MESSAGE_SLACK_BYTES),
            retention: crate::retention::RetentionPolicy::default(),
        }
    }
}

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The reflection service could not read the API's descriptors (a build problem).
    #[error("cannot build the reflection service: {0}")]
    Reflection(String),
    /// A listener failed.
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Binds the Unix socket at `path` with mode 0600, replacing a stale socket there.
pub fn bind_unix_socket(path: &Path) -> io::Result<UnixListener> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket path has no file name",
        )
    })?;
    let staging = path.with_file_name(format!(
        ".{}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&staging);
    let listener = UnixListener::bind(&staging)?;
    let placed = fs::set_permissions(&staging, Permissions::from_mode(0o600))
        .and_then(|()| fs::rename(&staging, path));
    if let Err(err) = placed {
        let _ = fs::remove_file(&staging);
        return Err(err);
    }
    Ok(listener)
}

/// The API, running.
pub struct RunningServer {
    stop_accepting: CancellationToken,
    closing: CancellationToken,
    listeners: JoinSet<Result<(), tonic::transport::Error>>,
}

impl RunningServer {
    /// Refuses new connections and requests; requests in flight carry on.
    pub fn stop_accepting(&self) {
        self.stop_accepting.cancel();
    }

    /// Ends open `WatchJob` streams (UNAVAILABLE) and waits up to `grace` for every
    /// connection to close, then drops what is left.
    pub async fn finish(mut self, grace: Duration) -> Result<(), ServeError> {
        self.stop_accepting.cancel();
        self.closing.cancel();
        let drained = tokio::time::timeout(grace, async {
            let mut result = Ok(());
            while let Some(joined) = self.listeners.join_next().await {
                if let Ok(Err(err)) = joined {
                    result = Err(ServeError::from(err));
                }
            }
            result
        })
        .await;
        match drained {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(
                    grace_ms = grace.as_millis() as u64,
                    "gRPC connections still open at the deadline; closing them"
                );
                self.listeners.shutdown().await;
                Ok(())
            }
        }
    }
}

/// Serves every service on `unix` and, when given, `tcp`, until
/// [`RunningServer::stop_accepting`].
pub async fn serve(
    manager: Arc<Manager>,
    scheduler: Arc<Scheduler>,
    plugins: Arc<dyn PluginInventory>,
    config: ApiConfig,
    unix: UnixListener,
    tcp: Option<TcpListener>,
) -> Result<RunningServer, ServeError> {
    let closing = CancellationToken::new();
    let (request_limit, response_limit) = (config.max_request_bytes, config.max_response_bytes);
    let state = Arc::new(ApiState {
        manager,
        scheduler,
        plugins,
        config,
        closing: closing.clone(),
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<QueueServer<QueueService>>().await;
    health
        .set_serving::<SchedulesServer<SchedulesService>>()
        .await;
    health.set_serving::<PluginsServer<PluginsService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|err| ServeError::Reflection(err.to_string()))?;

    let proxies = ProxyService::new(Arc::clone(&state));
    macro_rules! limited {
        ($server:ident, $service:expr) => {
            $server::new($service)
                .max_decoding_message_size(request_limit)
                .max_encoding_message_size(response_limit)
        };
    }
    let router = Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(limited!(QueueServer, QueueService::new(Arc::clone(&state))))
        .add_service(limited!(
            SchedulesServer,
            SchedulesService::new(Arc::clone(&state))
        ))
        .add_service(limited!(
            PluginsServer,
            PluginsService::new(Arc::clone(&state))
        ))
        .add_service(limited!(GitHubServer, proxies.clone()))
        .add_service(limited!(GitLabServer, proxies.clone()))
        .add_service(limited!(JiraServer, proxies.clone()))
        .add_service(limited!(LinearServer, proxies.clone()))
        .add_service(limited!(BitbucketServer, proxies));

    let stop_accepting = CancellationToken::new();
    let mut listeners = JoinSet::new();
    if let Some(tcp) = tcp {
        let router = router.clone();
        let stop = stop_accepting.clone().cancelled_owned();
        listeners.spawn(router.serve_with_incoming_shutdown(TcpListenerStream::new(tcp), stop));
    }
    let stop = stop_accepting.clone().cancelled_owned();
    listeners.spawn(router.serve_with_incoming_shutdown(UnixListenerStream::new(unix), stop));
    Ok(RunningServer {
        stop_accepting,
        closing,
        listeners,
    })
}

/// Why a client could not reach the daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing answers at the address.
    #[error("cannot reach the daemon at {address}: {reason}")]
    Unreachable {
        /// The socket path or TCP address.
        address: String,
        /// What the connection attempt said.
        reason: String,
    },
}

/// Where a client finds the daemon.
#[derive(Clone, Debug)]
pub enum Address {
    /// The Unix socket at this path.
    Unix(PathBuf),
    /// A TCP `host:port`.
    Tcp(String),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(path) => path.display().fmt(f),
            Address::Tcp(address) => address.fmt(f),
        }
    }
}

/// Opens a connection to the daemon; fails at once when nothing listens there.
pub async fn connect(address: &Address) -> Result<Channel, ClientError> {
    let unreachable = |reason: String| ClientError::Unreachable {
        address: address.to_string(),
        reason,
    };
    let uri = match address {
        Address::Unix(path) => format!("unix:{}", path.display()),
        Address::Tcp(address) => format!("http://{address}"),
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|err| unreachable(err.to_string()))?;
    endpoint
        .connect()
        .await
        .map_err(|err| unreachable(error_chain(&err)))
}

/// An error and its sources, joined: tonic's own message alone says only "transport
/// error".
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
