//! The gRPC API: tonic services over the queue manager, the cron scheduler and the
//! plugin runtime.
//!
//! This module and [`crate::cli`] are the only places that see tonic or prost types;
//! every service converts requests to domain types at the edge (`convert.rs`) and maps
//! domain errors to gRPC status codes there too. [`serve`] runs the services (plus gRPC
//! health and reflection, so `grpcurl` works without the .proto files) on a Unix socket
//! and optionally on TCP, where every request must carry the daemon's bearer
//! [`Token`]; [`bind_unix_socket`] creates that socket with mode 0600 before anyone
//! can connect, and a small shim (`authority.rs`) lets clients that name the socket
//! path as `:authority` in. [`connect`] and [`connect_with_token`] are the client
//! side, used by the CLI, the end-to-end tests and the benchmark. The API never owns the job store, the schedules or the
//! runtime: it holds the [`Manager`], the [`Scheduler`] and a [`PluginInventory`].

mod authority;
mod convert;
mod plugins;
mod proxies;
mod queue;
mod schedules;
mod server;
mod token;
mod watch;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::queue::Manager;
use crate::runtime::PluginSummary;
use crate::scheduler::Scheduler;

pub use server::{
    Address, ApiConfig, CLIENT_MAX_RESPONSE_BYTES, ClientError, Connection, RunningServer,
    ServeError, bind_unix_socket, connect, connect_with_token, serve,
};
pub use token::{BearerToken, RequireToken, TOKEN_FILE_NAME, Token, TokenError};

/// The generated protobuf messages and tonic services of `proto/honeydew/v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("honeydew.v1");

    /// The encoded descriptor set of every .proto file, served by reflection.
    pub(crate) const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("honeydew_descriptor");
}

/// What `ListPlugins` reports: the plugin runtime in the daemon.
pub trait PluginInventory: Send + Sync + 'static {
    /// Every loaded plugin.
    fn plugins(&self) -> Vec<PluginSummary>;
}

/// What every service shares.
struct ApiState {
    manager: Arc<Manager>,
    scheduler: Arc<Scheduler>,
    plugins: Arc<dyn PluginInventory>,
    config: ApiConfig,
    /// Fired at shutdown: open `WatchJob` streams end with UNAVAILABLE.
    closing: CancellationToken,
}
