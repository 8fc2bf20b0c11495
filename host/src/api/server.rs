//! Serving the API on a Unix socket (and optionally TCP). Connecting to it is the
//! client's side, in [`honeydew_proto::client`].
//!
//! The socket is bound inside a freshly created directory of mode 0700 beside its path,
//! given mode 0600, then renamed into place: no one else can reach it while it exists
//! with the default permissions, it appears at its path already private, and the
//! rename atomically replaces a stale socket left by a daemon that died. (A restrictive
//! umask around the bind would do as well, but the umask is the whole process's, and
//! other threads create files and directories meanwhile.) Keeping a second daemon away
//! from a live socket is the caller's job (the daemon holds the data directory's lock
//! before binding). Connections on the socket pass through [`super::authority`], so
//! that clients naming the socket path as `:authority` are served; requests over TCP
//! must carry the daemon's bearer token ([`super::token`]).
//! Shutdown is in two steps: [`RunningServer::stop_accepting`] refuses new connections
//! and requests while in-flight ones finish, then [`RunningServer::finish`] ends open
//! `WatchJob` streams and waits, within a grace period, for the connections to close.

use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptorLayer;
use tonic::transport::Server;

use super::authority::UnixAuthorityShim;
use super::pb::{
    bitbucket_server::BitbucketServer, git_hub_server::GitHubServer, git_lab_server::GitLabServer,
    jira_server::JiraServer, linear_server::LinearServer, plugins_server::PluginsServer,
    queue_server::QueueServer, schedules_server::SchedulesServer,
};
use super::plugins::PluginsService;
use super::proxies::ProxyService;
use super::queue::QueueService;
use super::schedules::SchedulesService;
use super::token::RequireToken;
use super::{ApiState, PluginInventory, pb};
use crate::queue::Manager;
use crate::scheduler::Scheduler;

/// Room for a message's other fields besides its payload or result.
const MESSAGE_SLACK_BYTES: usize = 1024 * 1024;

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
    /// The jobs' workspaces, which `PruneJobs` removes with their jobs.
    pub workspaces: Option<crate::workspace::Workspaces>,
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
            workspaces: None,
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

/// Binds the Unix socket at `path` with mode 0600, replacing a stale socket there; it
/// is bound in a private directory and renamed into place (see the module docs).
pub fn bind_unix_socket(path: &Path) -> io::Result<UnixListener> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket path has no file name",
        )
    })?;
    let staging_dir = path.with_file_name(format!(
        ".{}.{}.d",
        name.to_string_lossy(),
        std::process::id()
    ));
    // Left over by a daemon with our pid that died here; we hold the data dir's lock.
    let _ = fs::remove_dir_all(&staging_dir);
    fs::DirBuilder::new().mode(0o700).create(&staging_dir)?;
    let staging = staging_dir.join(name);
    let placed = UnixListener::bind(&staging).and_then(|listener| {
        fs::set_permissions(&staging, Permissions::from_mode(0o600))?;
        fs::rename(&staging, path)?;
        Ok(listener)
    });
    let _ = fs::remove_dir_all(&staging_dir);
    placed
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

/// Serves every service on `unix` and, when given, `tcp` (whose requests must pass
/// its [`RequireToken`]), until [`RunningServer::stop_accepting`].
pub async fn serve(
    manager: Arc<Manager>,
    scheduler: Arc<Scheduler>,
    plugins: Arc<dyn PluginInventory>,
    config: ApiConfig,
    unix: UnixListener,
    tcp: Option<(TcpListener, RequireToken)>,
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
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|err| ServeError::Reflection(err.to_string()))?;
    // v1alpha too: grpcurl before 1.8.8, grpc_cli and other tools ask only for it.
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|err| ServeError::Reflection(err.to_string()))?;

    let proxies = ProxyService::new(Arc::clone(&state));
    macro_rules! limited {
        ($server:ident, $service:expr) => {
            $server::new($service)
                .max_decoding_message_size(request_limit)
                .max_encoding_message_size(response_limit)
        };
    }
    // Checked on every request, health and reflection included: over TCP they too
    // would tell anyone what runs here. Without a TCP listener every connection is the
    // Unix socket's, which needs no token.
    let tcp_check = tcp.as_ref().map(|(_, check)| check.clone());
    let access = move |request: tonic::Request<()>| match &tcp_check {
        Some(check) => check.check(request),
        None => Ok(request),
    };
    let router = Server::builder()
        .layer(InterceptorLayer::new(access))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
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
    if let Some((tcp, _)) = tcp {
        let router = router.clone();
        let stop = stop_accepting.clone().cancelled_owned();
        listeners.spawn(router.serve_with_incoming_shutdown(TcpListenerStream::new(tcp), stop));
    }
    let stop = stop_accepting.clone().cancelled_owned();
    let unix = UnixListenerStream::new(unix).map(|accepted| accepted.map(UnixAuthorityShim::new));
    listeners.spawn(router.serve_with_incoming_shutdown(unix, stop));
    Ok(RunningServer {
        stop_accepting,
        closing,
        listeners,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use notify::event::{CreateKind, EventKind};
    use notify::{RecursiveMode, Watcher};

    use super::*;

    /// Binding under a plain staging name let others connect while the socket still had
    /// the umask's mode; now nothing but a private directory is ever created beside it,
    /// and the socket arrives by rename, already 0600.
    #[tokio::test]
    async fn the_socket_is_never_created_where_others_could_connect_before_it_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let (sender, events) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = sender.send(event);
        })
        .unwrap();
        watcher
            .watch(dir.path(), RecursiveMode::NonRecursive)
            .unwrap();

        let socket = dir.path().join("honeydew.sock");
        let _listener = bind_unix_socket(&socket).unwrap();
        // Events arrive in order: once the sentinel's is seen, the bind's all were.
        let sentinel = dir.path().join("sentinel");
        fs::write(&sentinel, "").unwrap();
        let mut created = Vec::new();
        loop {
            let event: notify::Event = events
                .recv_timeout(Duration::from_secs(30))
                .expect("the sentinel's event")
                .unwrap();
            if event.paths.contains(&sentinel) {
                break;
            }
            if let EventKind::Create(kind) = event.kind {
                created.push((kind, event.paths));
            }
        }
        for (kind, paths) in &created {
            assert_eq!(*kind, CreateKind::Folder, "a file was created at {paths:?}");
        }
        let mode = fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(
            left.len(),
            2,
            "only the socket and the sentinel remain: {left:?}"
        );
    }
}
