//! The daemon's HTTP listener (`--listen-http`): `/metrics` and the dashboard
//! ([`crate::dashboard`], at `/dashboard/`), on one axum router. It owns the listener, the routes and who may use them;
//! what a scrape says is [`crate::metrics`]'s, the token itself [`crate::api`]'s.
//!
//! Who may use it: on a loopback address (the default, and all the configuration
//! allows without `listen_http_public`) `/metrics` is open to whoever can connect, as
//! Prometheus scrapers expect; on any other address every request, unknown paths
//! included, must carry the daemon's bearer token (`Authorization: Bearer <token>`,
//! the token of `<data-dir>/token`) or gets 401. [`Access`] names that choice per group
//! of routes, so routes that must always require the token are added as
//! [`Access::Token`] whatever the address. The dashboard's routes keep their own rule
//! on every address, loopback included: a browser session opened with the token (or
//! the token itself), never nothing.
//!
//! Shutdown: [`RunningHttp::stop`] stops accepting, lets requests in flight finish
//! within a grace period, then drops what is left.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::Token;
use crate::dashboard::Dashboard;
use crate::metrics::{self, Metrics};
use crate::queue::Manager;

/// What the routes read.
pub struct HttpState {
    /// The queue (the store behind it, the running jobs).
    pub manager: Arc<Manager>,
    /// What is counted.
    pub metrics: Arc<Metrics>,
}

/// Who may use a group of routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Whoever can connect to the listener (only loopback, unless the operator opted
    /// in to another address: then the whole listener requires the token).
    Listener,
    /// Only requests that carry the daemon's bearer token, on any address.
    Token,
}

/// The token check of the listener: the token and where it lives (named in a refusal).
#[derive(Clone)]
struct TokenCheck {
    token: Token,
    token_file: Arc<Path>,
}

/// The routes: `/metrics` with [`Access::Listener`]; with `public` (a non-loopback
/// address) every request must carry the token, but the dashboard's, which require
/// its login on every address.
pub fn router(
    state: Arc<HttpState>,
    dashboard: Option<Arc<Dashboard>>,
    token: Token,
    token_file: &Path,
    public: bool,
) -> Router {
    let check = TokenCheck {
        token,
        token_file: token_file.into(),
    };
    let scrape = Router::new()
        .route("/metrics", get(scrape))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") });
    let routes = with_access(scrape, Access::Listener, &check);
    let routes = if public {
        routes.layer(middleware::from_fn_with_state(check, require_token))
    } else {
        routes
    };
    let routes = match dashboard {
        Some(dashboard) => routes.merge(crate::dashboard::router(dashboard)),
        None => routes,
    };
    routes.with_state(state)
}

/// `routes`, behind the token when `access` asks for it.
fn with_access(
    routes: Router<Arc<HttpState>>,
    access: Access,
    check: &TokenCheck,
) -> Router<Arc<HttpState>> {
    match access {
        Access::Listener => routes,
        Access::Token => {
            routes.route_layer(middleware::from_fn_with_state(check.clone(), require_token))
        }
    }
}

/// Passes a request that carries the token; answers 401 to any other.
async fn require_token(State(check): State<TokenCheck>, request: Request, next: Next) -> Response {
    let offered = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .and_then(|value| {
            value
                .strip_prefix(b"Bearer ")
                .or_else(|| value.strip_prefix(b"bearer "))
        });
    if offered.is_some_and(|offered| check.token.matches(offered)) {
        return next.run(request).await;
    }
    let message = format!(
        "this listener requires the daemon's bearer token: send `Authorization: Bearer <token>` \
         with the token in {}\n",
        check.token_file.display()
    );
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        message,
    )
        .into_response()
}

/// `GET /metrics`: the exposition, or 503 when the store cannot be read.
async fn scrape(State(state): State<Arc<HttpState>>) -> Response {
    let store = state.manager.store();
    match state
        .metrics
        .render(store, state.manager.running_jobs())
        .await
    {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the job counts for a metrics scrape");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the job database: {err}\n"),
            )
                .into_response()
        }
    }
}

/// The listener, serving.
pub struct RunningHttp {
    address: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
    /// Its event streams never end by themselves: closed first at stop.
    dashboard: Option<Arc<Dashboard>>,
}

/// Serves `router` on `listener` until [`RunningHttp::stop`].
pub fn serve(listener: TcpListener, router: Router) -> std::io::Result<RunningHttp> {
    let address = listener.local_addr()?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    Ok(RunningHttp {
        address,
        stop,
        task,
        dashboard: None,
    })
}

impl RunningHttp {
    /// The address it listens on (the port chosen when `:0` was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// This listener, ending `dashboard`'s event streams when it stops.
    pub fn with_dashboard(mut self, dashboard: Arc<Dashboard>) -> Self {
        self.dashboard = Some(dashboard);
        self
    }

    /// Stops accepting; requests in flight get `grace` to finish, then are dropped.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(dashboard) = &self.dashboard {
            dashboard.close();
        }
        self.stop.cancel();
        match tokio::time::timeout(grace, &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => tracing::warn!(error = %err, "the http listener failed"),
            Ok(Err(err)) => tracing::warn!(error = %err, "the http listener's task failed"),
            Err(_) => self.task.abort(),
        }
    }
}
