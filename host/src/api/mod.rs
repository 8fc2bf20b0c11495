//! The gRPC API: tonic services over the queue manager, the cron scheduler and the
//! plugin runtime.
//!
//! The generated messages and service traits are [`honeydew_proto::pb`] (re-exported
//! here as [`pb`]); this module and the `honeydew-cli` crate are the only places that
//! see tonic or prost types, and every service converts requests to domain types at
//! the edge (`convert.rs`) and maps domain errors to gRPC status codes there too.
//! [`serve`] runs the services (plus gRPC health and reflection, so `grpcurl` works
//! without the .proto files) on a Unix socket and optionally on TCP, where every
//! request must carry the daemon's bearer [`Token`] ([`RequireToken`]);
//! [`bind_unix_socket`] creates that socket with mode 0600 before anyone can connect,
//! and a small shim (`authority.rs`) lets clients that name the socket path as
//! `:authority` in. The client side ([`connect`], [`connect_with_token`], [`Address`])
//! is `honeydew_proto`'s, re-exported for the end-to-end tests and the benchmarks. The
//! API never owns the job store, the schedules or the runtime: it holds the
//! [`Manager`], the [`Scheduler`] and a [`PluginInventory`].

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

pub use honeydew_proto::client::{
    Address, CLIENT_MAX_RESPONSE_BYTES, ClientError, Connection, connect, connect_with_token,
};
pub use honeydew_proto::pb;
pub use server::{ApiConfig, RunningServer, ServeError, bind_unix_socket, serve};
pub use token::{
    BearerToken, RequireToken, TOKEN_FILE_NAME, Token, TokenError, generate_token,
    load_or_create_token,
};

/// What `ListPlugins` reports: the plugin runtime in the daemon.
pub trait PluginInventory: Send + Sync + 'static {
    /// Every loaded plugin.
    fn plugins(&self) -> Vec<PluginSummary>;

    /// Every component of the plugin directory that was refused, with its reason.
    fn skipped(&self) -> Vec<crate::runtime::SkippedPlugin> {
        Vec::new()
    }

    /// The rate limits plugins' requests keep, when any are kept.
    fn rate_limits(&self) -> Option<Arc<crate::rate_limits::RateLimits>> {
        None
    }
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
