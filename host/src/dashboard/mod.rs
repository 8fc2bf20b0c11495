//! The dashboard: web pages over the queue, served at `/dashboard/` on the HTTP
//! listener of `--listen-http` (`/` redirects there). It owns the pages, their assets,
//! who may see them and which requests may act; what they show comes from the
//! [`Manager`], the [`Scheduler`] and the [`PluginInventory`], read through `api.rs`'s
//! JSON endpoints. It never writes the store except through the manager's actions
//! (cancel, retry, pause, resume), as the gRPC API does.
//!
//! Assets are compiled in (`assets/`: one HTML page for the app, one for the login, a
//! stylesheet, one plain JavaScript file, an icon), so nothing is fetched from outside;
//! the Content-Security-Policy allows scripts, styles and connections only from the
//! daemon itself, and no inline script.
//!
//! Who may see it, on any address, loopback included: a browser with a session. A
//! session is opened by logging in with the daemon's token (the form, or
//! `/dashboard/login#token=...`, whose fragment the browser never sends, so the token
//! reaches no log); its id lives in an `HttpOnly`, `SameSite=Strict` cookie
//! ([`session`]). Without one, a page redirects to the login and the API answers 401.
//! A request carrying the token itself (`Authorization: Bearer`) is let in too, for
//! scripts. Actions (POST) from a browser must also be same-origin: `Origin` must name
//! the host the page was served from, `Sec-Fetch-Site` must say `same-origin` when
//! sent, and the custom header `X-Honeydew-Csrf` must be present, which no cross-site
//! form can send and no cross-site script can without a preflight that is never
//! granted.
//!
//! Live updates: `/dashboard/api/events` streams this daemon's job events (server-sent
//! events); pages also poll slowly, which catches what other daemons of a shared store
//! did. [`Dashboard::close`] ends the streams at shutdown.

mod api;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::api::{PluginInventory, Token};
use crate::queue::Manager;
use crate::scheduler::Scheduler;
use session::Sessions;

/// The cookie that carries the session id.
const COOKIE: &str = "honeydew_session";

/// The header every action must carry (any value).
pub const CSRF_HEADER: &str = "x-honeydew-csrf";

/// Sent with every dashboard response.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

const APP_HTML: &str = include_str!("assets/app.html");
const LOGIN_HTML: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON_SVG: &str = include_str!("assets/icon.svg");

/// What the dashboard reads and acts on, and its sessions.
pub struct Dashboard {
    manager: Arc<Manager>,
    scheduler: Arc<Scheduler>,
    plugins: Arc<dyn PluginInventory>,
    sessions: Sessions,
    workers: usize,
    closing: CancellationToken,
}

impl Dashboard {
    /// A dashboard over the daemon's parts; logins must offer `token`. `workers` is
    /// the size of this daemon's pool, shown beside the running jobs.
    pub fn new(
        manager: Arc<Manager>,
        scheduler: Arc<Scheduler>,
        plugins: Arc<dyn PluginInventory>,
        token: Token,
        workers: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            manager,
            scheduler,
            plugins,
            sessions: Sessions::new(token),
            workers,
            closing: CancellationToken::new(),
        })
    }

    /// Ends every open event stream (at shutdown, so that the listener can drain).
    pub fn close(&self) {
        self.closing.cancel();
    }
}

/// The dashboard's routes (`/`, `/dashboard`, `/dashboard/...`), with their own access
/// rules (see the module documentation), for any state of the router they join.
pub fn router<S: Clone + Send + Sync + 'static>(dashboard: Arc<Dashboard>) -> Router<S> {
    let pages = Router::new()
        .route("/dashboard/", get(app_page))
        .route("/dashboard/jobs", get(app_page))
        .route("/dashboard/jobs/{id}", get(app_page))
        .route("/dashboard/schedules", get(app_page))
        .route("/dashboard/plugins", get(app_page));
    let api = api::router().route_layer(middleware::from_fn_with_state(
        Arc::clone(&dashboard),
        require_session,
    ));
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard/") }))
        .route("/dashboard", get(|| async { Redirect::to("/dashboard/") }))
        .route("/dashboard/login", get(login_page).post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/assets/{file}", get(asset))
        .merge(pages)
        .merge(api)
        .layer(middleware::from_fn(security_headers))
        .with_state(dashboard)
}

/// How a request was let in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    /// A browser with a session cookie: actions must prove they are same-origin.
    Session,
    /// A client that sent the token itself (no browser sends it on its own).
    Bearer,
    /// Neither.
    Nobody,
}

impl Dashboard {
    fn caller(&self, headers: &HeaderMap) -> Caller {
        if let Some(offered) = bearer(headers)
            && self.sessions.token_matches(offered)
        {
            return Caller::Bearer;
        }
        match (session_id(headers), host(headers)) {
            (Some(id), Some(host)) if self.sessions.check(id, host) => Caller::Session,
            _ => Caller::Nobody,
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
}

fn host(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::HOST)?.to_str().ok()
}

/// The session id of the request's cookie.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Why a browser's action is refused as cross-site, if it is.
fn cross_site(headers: &HeaderMap, need_csrf_header: bool) -> Option<&'static str> {
    let host = host(headers)?;
    if let Some(site) = headers.get("sec-fetch-site")
        && site.as_bytes() != b"same-origin"
    {
        return Some("the request did not come from the dashboard's own pages");
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|origin_host| origin_host == host);
        if !same {
            return Some("the request's Origin is not the dashboard's");
        }
    }
    if need_csrf_header && !headers.contains_key(CSRF_HEADER) {
        return Some("an action must carry the X-Honeydew-Csrf header");
    }
    None
}

/// Lets a request with a session or the token through to the API; a browser's action
/// must be same-origin too.
async fn require_session(
    State(dashboard): State<Arc<Dashboard>>,
    request: Request,
    next: Next,
) -> Response {
    let caller = dashboard.caller(request.headers());
    if caller == Caller::Nobody {
        return api::error(
            StatusCode::UNAUTHORIZED,
            "log in to the dashboard first (/dashboard/login) with the daemon's token",
        );
    }
    let acts = !matches!(*request.method(), Method::GET | Method::HEAD);
    if acts
        && caller == Caller::Session
        && let Some(reason) = cross_site(request.headers(), true)
    {
        return api::error(StatusCode::FORBIDDEN, reason);
    }
    next.run(request).await
}

/// Security headers on every dashboard answer; nothing of it is cached.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it a browser sends `Origin: null` with a form's POST,
    // which the same-origin check must refuse.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A page of the app: the one HTML shell, which the script fills in for its path.
async fn app_page(State(dashboard): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    match dashboard.caller(&headers) {
        Caller::Nobody => Redirect::to("/dashboard/login").into_response(),
        Caller::Session | Caller::Bearer => html(StatusCode::OK, APP_HTML.to_owned()),
    }
}

/// The login form, with `message` shown above it.
fn login_form(status: StatusCode, message: Option<&str>) -> Response {
    let page = match message {
        Some(message) => LOGIN_HTML.replace(
            "<p id=\"login-error\" class=\"error\" hidden></p>",
            &format!(
                "<p id=\"login-error\" class=\"error\">{}</p>",
                escape_html(message)
            ),
        ),
        None => LOGIN_HTML.to_owned(),
    };
    html(status, page)
}

async fn login_page() -> Response {
    login_form(StatusCode::OK, None)
}

/// `POST /dashboard/login` with the form's `token`: a session cookie and the overview,
/// or the form again with 401.
async fn login(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(reason) = cross_site(&headers, false) {
        return login_form(StatusCode::FORBIDDEN, Some(reason));
    }
    let Some(host) = host(&headers) else {
        return login_form(StatusCode::BAD_REQUEST, Some("the request has no Host"));
    };
    let offered = form_urlencoded::parse(&body)
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    match dashboard.sessions.login(&offered, host) {
        Some(id) => {
            tracing::info!(sessions = dashboard.sessions.len(), "dashboard login");
            let cookie = format!(
                "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                session::SESSION_LIFETIME.as_secs()
            );
            // A 303: the browser follows it with a GET.
            let mut response = Redirect::to("/dashboard/").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        None => {
            tracing::warn!("dashboard login refused: wrong token");
            login_form(
                StatusCode::UNAUTHORIZED,
                Some(
                    "that is not the daemon's token: it is in the file `token` of the data directory",
                ),
            )
        }
    }
}

/// `POST /dashboard/logout`: ends the session (same-origin only), back to the login.
async fn logout(State(dashboard): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    if let Some(reason) = cross_site(&headers, false) {
        return login_form(StatusCode::FORBIDDEN, Some(reason));
    }
    if let Some(id) = session_id(&headers) {
        dashboard.sessions.logout(id);
    }
    let mut response = Redirect::to("/dashboard/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("honeydew_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

/// `GET /dashboard/assets/FILE`: the compiled-in stylesheet, script and icon (no data,
/// so no session needed: the login page uses them).
async fn asset(Path(file): Path<String>) -> Response {
    let (kind, body) = match file.as_str() {
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "app.css" => ("text/css; charset=utf-8", APP_CSS),
        "icon.svg" => ("image/svg+xml", ICON_SVG),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    Response::builder()
        .header(header::CONTENT_TYPE, kind)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn an_action_from_another_site_is_refused() {
        let host = ("host", "127.0.0.1:8080");
        let same = [
            host,
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
            (CSRF_HEADER, "1"),
        ];
        assert_eq!(cross_site(&headers(&same), true), None);
        let cases: [&[(&'static str, &str)]; 4] = [
            &[host, ("origin", "http://evil.example"), (CSRF_HEADER, "1")],
            &[host, ("sec-fetch-site", "cross-site"), (CSRF_HEADER, "1")],
            &[host, ("sec-fetch-site", "same-site"), (CSRF_HEADER, "1")],
            &[host, ("origin", "http://127.0.0.1:8080")],
        ];
        for case in cases {
            assert!(cross_site(&headers(case), true).is_some(), "{case:?}");
        }
        // The login form needs no custom header, only the same origin.
        assert_eq!(
            cross_site(
                &headers(&[host, ("origin", "http://127.0.0.1:8080")]),
                false
            ),
            None
        );
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let map = headers(&[("cookie", "a=1; honeydew_session=abc; b=2")]);
        assert_eq!(session_id(&map), Some("abc"));
        assert_eq!(
            session_id(&headers(&[("cookie", "honeydew_sessionx=1")])),
            None
        );
    }
}
