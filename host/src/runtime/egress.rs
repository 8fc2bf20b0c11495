//! Outgoing HTTP policy: which hosts a plugin may reach, which credentials the host
//! adds on its behalf, which redirects it follows, how much of a response it may read
//! and how long it may wait.
//!
//! [`EgressHooks`] is wasmtime-wasi-http's send hook for one job. Every request a guest
//! sends passes through it before any connection is made: a request to a host that no
//! `allowed_hosts` entry matches is refused (the guest gets `HTTP-request-denied`) and
//! recorded so that the sandbox ends the job `egress_denied`; an allowed one gets its
//! `[[auth]]` headers (replacing any the guest set under the same name), timeouts no
//! outlasting the job's remaining deadline, and a capped response body.
//!
//! # Redirects
//!
//! The host follows redirects (301, 302, 303, 307, 308) for the guest, which sees only
//! the last response ([`send_following_redirects`], with the decisions in
//! `redirect`). Every hop is a request of its own as far as the policy goes: checked
//! against `allowed_hosts` (a hop to a host not granted is refused and recorded like a
//! direct request to it, naming the hop's URL), given the `[[auth]]` headers of its own
//! host only (those of the previous hop are removed first, so a credential never
//! reaches another host; the guest's own `Authorization`, `Proxy-Authorization`,
//! `Cookie` and any header named by an `[[auth]]` rule are dropped once a hop changes
//! origin), and given timeouts from what is left of the deadline. As the Fetch
//! standard says, a POST after 301 or 302, and any method but GET or HEAD after 303,
//! becomes a GET without body; every other request keeps its method and body, which
//! works only for a body the host kept: one whose declared `content-length` is at most
//! 64 KiB, read whole before the first hop goes out. After five redirects, or when a
//! body that streamed would have to be sent again, or when `Location` is not an http or
//! https URL with a host (or names a user), the guest gets the redirect itself, its
//! body replaced by the reason (`error_for_status` in the SDK makes that a permanent
//! error). The response-header cap applies to every hop, the body cap to the response
//! delivered. What this file logs of a hop, and the refusal it records for a
//! redirect's, leave the query out: a redirect's may carry a token, as GitHub's archive
//! links do.
//!
//! The host's own requests for a guest (a `workspace` archive download,
//! [`EgressHooks::send_for_host`]) take exactly this path, with only the body cap
//! changed to the workspace's.
//!
//! The hooks also count the job's unfinished requests ([`EgressHooks::requests_in_flight`]):
//! a request is in flight from the moment it is sent until its response failed, or its
//! body ended, failed or was dropped; a request counts once, however many hops it takes.
//! The sandbox asks that count when the deadline
//! passes, to tell a slow upstream (retriable) from a guest that overran (permanent),
//! and no job may have more than [`MAX_REQUESTS_IN_FLIGHT`] at once. What a guest can
//! make the host buffer is bounded here too: response header maps as large as the
//! guest's own ([`MAX_HEADER_MAP_BYTES`]), outgoing body chunks
//! ([`OUTGOING_BODY_CHUNK_BYTES`]), a request body kept for a redirect
//! ([`MAX_RESENT_BODY_BYTES`]). This file must not log header values: auth values
//! are secrets.
//!
//! When the daemon serves metrics, each request that goes out (each hop) is counted
//! under the `allowed_hosts` entry that granted it, and each refusal under its host
//! alone ([`EgressMetrics`]; no user, path or query ever becomes a label).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::redirect::{Hop, MAX_RESENT_BODY_BYTES, Next, Redirects, without_query};
use crate::metrics::EgressMetrics;
use crate::traces::{RequestParent, RequestSpan, TRACEPARENT};

/// The most bytes one header map may take, counted as wasmtime-wasi-http counts them
/// (each name and value plus its in-memory overhead): a guest's `fields` (its default
/// is 128 KiB) and an upstream's response headers alike. Four times the 8 KiB of
/// headers that common proxies accept.
pub(super) const MAX_HEADER_MAP_BYTES: usize = 32 * 1024;

/// The largest write to an outgoing body's stream; the host buffers two of them per
/// body (wasmtime-wasi-http's default is 1 MiB), as much as one header map holds.
const OUTGOING_BODY_CHUNK_BYTES: usize = MAX_HEADER_MAP_BYTES / 2;

/// The most outgoing requests one job may have unfinished at once; one more gets
/// `connection-limit-reached`. Each holds a connection and its buffers in the host.
const MAX_REQUESTS_IN_FLIGHT: usize = 16;

/// How long past the job's deadline the host's own HTTP timeouts may run: long enough
/// that the deadline, not a transport timeout, ends a job whose upstream is too slow
/// (so it is recorded `upstream_timeout`); the sandbox stops the job at the deadline.
const TIMEOUT_GRACE: Duration = Duration::from_secs(1);

/// How much of a refused URL goes into the log (the guest chose it).
const MAX_LOGGED_URL_BYTES: usize = 1024;

/// One `scheme://host[:port]` entry: the host may start with `*.` (any subdomain, not
/// the bare domain); the port may be `*`; no port means the scheme's default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct HostPattern {
    text: String,
    scheme: Scheme,
    host: HostMatch,
    port: PortMatch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn parse(text: &str) -> Option<Scheme> {
        match text.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostMatch {
    /// Exactly this host (lowercase, no trailing dot).
    Exact(String),
    /// Any subdomain of this domain.
    Subdomains(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortMatch {
    Any,
    Exact(u16),
}

impl HostPattern {
    /// Parses `scheme://host[:port]`.
    pub(super) fn parse(text: &str) -> anyhow::Result<HostPattern> {
        let Some((scheme, rest)) = text.split_once("://") else {
            bail!("expected scheme://host[:port], such as \"https://api.github.com\"");
        };
        let scheme = Scheme::parse(scheme)
            .with_context(|| format!("the scheme must be http or https, not {scheme:?}"))?;
        if rest.contains(['/', '?', '#', '@']) {
            bail!("an entry names a host and port only: no path, query or user");
        }
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let Some((address, after)) = bracketed.split_once(']') else {
                bail!("unclosed '[' in an IPv6 address");
            };
            let port = match after {
                "" => None,
                after => Some(after.strip_prefix(':').context("expected ':' after ']'")?),
            };
            (format!("[{}]", address.to_ascii_lowercase()), port)
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host.to_ascii_lowercase(), Some(port)),
                None => (rest.to_ascii_lowercase(), None),
            }
        };
        let port = match port {
            None => PortMatch::Exact(scheme.default_port()),
            Some("*") => PortMatch::Any,
            Some(port) => PortMatch::Exact(
                port.parse()
                    .ok()
                    .filter(|port| *port > 0)
                    .with_context(|| format!("invalid port {port:?}: a number or *"))?,
            ),
        };
        let host = host.trim_end_matches('.');
        let host = match host.strip_prefix("*.") {
            Some(domain) => HostMatch::Subdomains(domain.to_owned()),
            None => HostMatch::Exact(host.to_owned()),
        };
        let name = match &host {
            HostMatch::Exact(name) | HostMatch::Subdomains(name) => name,
        };
        let valid_name = !name.is_empty()
            && (name.starts_with('[')
                || (name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                    && !name.split('.').any(str::is_empty)));
        if !valid_name {
            bail!("invalid host {name:?} (a '*.' prefix is the only wildcard)");
        }
        Ok(HostPattern {
            text: text.to_owned(),
            scheme,
            host,
            port,
        })
    }

    /// Whether a request to `uri` matches this entry.
    fn matches(&self, uri: &Uri) -> bool {
        let Some(scheme) = uri.scheme_str().and_then(Scheme::parse) else {
            return false;
        };
        let Some(host) = uri.host() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        let host = host.trim_end_matches('.');
        let Some(port) = explicit_port(uri) else {
            return false;
        };
        let port = port.unwrap_or(scheme.default_port());
        scheme == self.scheme
            && match self.port {
                PortMatch::Any => true,
                PortMatch::Exact(allowed) => allowed == port,
            }
            && match &self.host {
                HostMatch::Exact(allowed) => allowed == host,
                HostMatch::Subdomains(domain) => host
                    .strip_suffix(domain.as_str())
                    .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.')),
            }
    }

    /// Whether every request this entry matches is also matched by `other`.
    pub(super) fn is_within(&self, other: &HostPattern) -> bool {
        let port_within = match (self.port, other.port) {
            (_, PortMatch::Any) => true,
            (PortMatch::Exact(mine), PortMatch::Exact(theirs)) => mine == theirs,
            (PortMatch::Any, PortMatch::Exact(_)) => false,
        };
        let host_within = match (&self.host, &other.host) {
            (HostMatch::Exact(mine), HostMatch::Exact(theirs)) => mine == theirs,
            (
                HostMatch::Exact(name) | HostMatch::Subdomains(name),
                HostMatch::Subdomains(domain),
            ) => {
                name.strip_suffix(domain.as_str())
                    .is_some_and(|prefix| prefix.ends_with('.'))
                    || matches!(&self.host, HostMatch::Subdomains(mine) if mine == domain)
            }
            (HostMatch::Subdomains(_), HostMatch::Exact(_)) => false,
        };
        self.scheme == other.scheme && port_within && host_within
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A header the host adds to requests matching `host`. Its value is a secret.
#[derive(Clone)]
pub(super) struct AuthHeader {
    host: HostPattern,
    name: HeaderName,
    value: HeaderValue,
}

impl AuthHeader {
    pub(super) fn new(host: HostPattern, name: HeaderName, value: HeaderValue) -> Self {
        Self { host, name, value }
    }

    #[cfg(test)]
    pub(super) fn value(&self) -> &HeaderValue {
        &self.value
    }
}

impl fmt::Debug for AuthHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthHeader")
            .field("host", &self.host.text)
            .field("name", &self.name)
            .field("value", &"(hidden)")
            .finish()
    }
}

/// One plugin's egress policy, shared by all its jobs.
#[derive(Debug)]
pub(super) struct EgressPolicy {
    plugin: String,
    allowed: Vec<HostPattern>,
    auth: Vec<AuthHeader>,
    max_response_body_bytes: usize,
    /// Counts requests by grant and denials by host, when metrics are on.
    metrics: Option<EgressMetrics>,
}

impl EgressPolicy {
    pub(super) fn new(
        plugin: String,
        allowed: Vec<HostPattern>,
        auth: Vec<AuthHeader>,
        max_response_body_bytes: usize,
    ) -> Self {
        Self {
            plugin,
            allowed,
            auth,
            max_response_body_bytes,
            metrics: None,
        }
    }

    /// This policy, counting into `metrics` (made for the same `allowed` entries).
    pub(super) fn counted_by(mut self, metrics: Option<EgressMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Counts a request to `uri` about to go out, under the entry that grants it.
    fn count_request(&self, uri: &Uri) {
        if let Some(metrics) = &self.metrics
            && let Some(entry) = self.allowed.iter().position(|pattern| pattern.matches(uri))
        {
            metrics.request(entry);
        }
    }

    /// Counts a refused request to `uri`, by its host only (never a user or a query).
    fn count_denied(&self, uri: &Uri) {
        if let Some(metrics) = &self.metrics {
            metrics.denied(uri.host().unwrap_or(""));
        }
    }

    /// A policy that lets nothing out (used while a plugin is being loaded).
    pub(super) fn deny_all(plugin: String) -> Self {
        Self::new(plugin, Vec::new(), Vec::new(), 0)
    }

    fn allows(&self, uri: &Uri) -> bool {
        self.allowed.iter().any(|pattern| pattern.matches(uri))
    }

    /// Sets the `[[auth]]` headers whose rule matches `uri` (replacing any under the
    /// same name) and returns their names, so that the next hop can drop them.
    fn add_auth(&self, headers: &mut HeaderMap, uri: &Uri) -> Vec<HeaderName> {
        let mut added = Vec::new();
        for auth in &self.auth {
            if auth.host.matches(uri) {
                headers.insert(auth.name.clone(), auth.value.clone());
                added.push(auth.name.clone());
            }
        }
        added
    }
}

/// The send hook of one job: enforces `policy`, remembers a refusal and counts the
/// requests in flight.
pub(super) struct EgressHooks {
    policy: Arc<EgressPolicy>,
    deadline: Instant,
    denied: Denied,
    in_flight: InFlight,
    /// The attempt's trace context, which each hop's client span continues.
    trace: RequestParent,
}

impl EgressHooks {
    /// Hooks for a job that must be over by `deadline`, made inside its attempt's span
    /// (whose context its requests continue).
    pub(super) fn new(policy: Arc<EgressPolicy>, deadline: Instant) -> Self {
        Self {
            policy,
            deadline,
            denied: Denied::default(),
            in_flight: InFlight::default(),
            trace: RequestParent::current(),
        }
    }

    /// The first URL this job was refused, if any: one the guest asked for, or a
    /// redirect's.
    pub(super) fn denied(&self) -> Option<&str> {
        self.denied.url()
    }

    /// How many of this job's requests are sent and not yet over: no response yet, or
    /// a response whose body has not ended, failed or been dropped.
    pub(super) fn requests_in_flight(&self) -> usize {
        self.in_flight.count()
    }
}

pub(super) type HttpResult<T> = Result<T, HttpError>;
/// The connection's I/O of a response, to be polled while its body is read.
pub(super) type IoFuture = Box<dyn Future<Output = HttpResult<()>> + Send>;

impl EgressHooks {
    /// The exchange for a request to `uri` with the guest's timeouts `options` and a
    /// response body capped at `body_limit`, or why it may not go out: refused by the
    /// policy (recorded) or one request too many in flight.
    fn exchange(
        &self,
        uri: &Uri,
        options: Option<RequestOptions>,
        body_limit: usize,
    ) -> HttpResult<Exchange> {
        if !self.policy.allows(uri) {
            self.policy.count_denied(uri);
            self.denied.record(&self.policy.plugin, uri.to_string());
            return Err(HttpError::HttpRequestDenied);
        }
        let in_flight = self.in_flight.count();
        if in_flight >= MAX_REQUESTS_IN_FLIGHT {
            tracing::warn!(plugin = %self.policy.plugin, in_flight, "egress refused: too many requests in flight");
            return Err(HttpError::ConnectionLimitReached);
        }
        Ok(Exchange {
            policy: Arc::clone(&self.policy),
            denied: self.denied.clone(),
            deadline: self.deadline,
            options,
            body_limit,
            // Lives in the exchange, then in the response's body until it is over.
            guard: self.in_flight.start(),
            trace: self.trace.clone(),
        })
    }

    /// Sends a request that the host makes on the guest's behalf (a `workspace`
    /// download) exactly as it sends the guest's own: the same allowlist, `[[auth]]`
    /// headers, redirects, deadline and count in flight, with the response body capped
    /// at `body_limit` bytes instead of the guest's cap. The returned I/O future drives
    /// the connection: poll it (spawn it) while reading the body.
    pub(super) fn send_for_host(
        &self,
        request: http::Request<WasiBody>,
        body_limit: u64,
    ) -> impl Future<Output = HttpResult<(http::Response<WasiBody>, IoFuture)>> + Send + 'static
    {
        let body_limit = usize::try_from(body_limit).unwrap_or(usize::MAX);
        let exchange = self.exchange(request.uri(), None, body_limit);
        async move { send_following_redirects(exchange?, request).await }
    }
}

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = HttpResult<(http::Response<WasiBody>, IoFuture)>> + Send> {
        let body_limit = self.policy.max_response_body_bytes;
        match self.exchange(request.uri(), options, body_limit) {
            Ok(exchange) => Box::new(send_following_redirects(exchange, request)),
            Err(err) => Box::new(async { Err(err) }),
        }
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        OUTGOING_BODY_CHUNK_BYTES
    }
}

/// The first URL a job was refused, shared by its hooks and the requests they sent
/// (a redirect's hop is refused after the guest's request left the hook).
#[derive(Clone, Default)]
struct Denied {
    first: Arc<OnceLock<String>>,
}

impl Denied {
    fn url(&self) -> Option<&str> {
        self.first.get().map(String::as_str)
    }

    /// Remembers `url` unless an earlier one was, and logs the first only: a guest
    /// retrying in a loop must not flood the log.
    fn record(&self, plugin: &str, url: String) {
        let logged = shortened(&url).to_owned();
        if self.first.set(url).is_ok() {
            tracing::warn!(plugin = %plugin, url = %logged, "egress denied: no network.allowed_hosts entry matches");
        }
    }
}

/// What one guest request needs on its way, across all its hops.
struct Exchange {
    policy: Arc<EgressPolicy>,
    denied: Denied,
    deadline: Instant,
    /// The guest's timeouts, cut for each hop to what is left of the deadline.
    options: Option<RequestOptions>,
    /// The most bytes of the response body delivered.
    body_limit: usize,
    guard: InFlightGuard,
    trace: RequestParent,
}

/// Sends `request` (whose first hop the policy allowed), following redirects as the
/// module's documentation says: each hop is checked against the policy and gets the
/// auth headers of its own host; the decisions of what the next hop is are
/// `redirect`'s. Ends with the response the guest gets, its body capped and counted in
/// flight until it is over.
async fn send_following_redirects(
    exchange: Exchange,
    request: http::Request<WasiBody>,
) -> HttpResult<(http::Response<WasiBody>, IoFuture)> {
    let Exchange {
        policy,
        denied,
        deadline,
        options,
        body_limit,
        guard,
        trace,
    } = exchange;
    let plugin = policy.plugin.as_str();
    let (parts, body) = request.into_parts();
    let mut hop = Hop {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
    };
    let mut body = RequestBody::keep_if_small(body, &hop.headers).await?;
    let mut redirects = Redirects::new(
        body.can_resend(),
        policy.auth.iter().map(|auth| auth.name.clone()),
    );
    loop {
        let host_added = policy.add_auth(&mut hop.headers, &hop.uri);
        let mut request = http::Request::new(body.for_hop());
        *request.method_mut() = hop.method.clone();
        *request.uri_mut() = hop.uri.clone();
        *request.headers_mut() = hop.headers.clone();
        // For the log and the trace only, so without the query (see below).
        let url = without_query(&hop.uri);
        policy.count_request(&hop.uri);
        // Each hop is a client span of its own, its context in the hop's header (in
        // place of any the guest set: only the host knows the attempt's trace).
        let span = trace.request(
            hop.method.as_str(),
            &url,
            hop.uri.host().unwrap_or_default(),
        );
        if let Some(value) = span
            .traceparent()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            request.headers_mut().insert(TRACEPARENT, value);
        }
        let sent =
            wasmtime_wasi_http::default_send_request(request, Some(clamp(options, deadline))).await;
        let (response, io) = match sent {
            Ok(answered) => answered,
            Err(err) => {
                span.failed(&format!("{err:?}"));
                return Err(err);
            }
        };
        span.answered(response.status().as_u16());
        let header_bytes = header_map_bytes(response.headers());
        if header_bytes > MAX_HEADER_MAP_BYTES {
            tracing::warn!(plugin = %plugin, url = %shortened(&url), header_bytes, "response headers over the cap");
            return Err(HttpError::HttpResponseHeaderSectionSize(
                u32::try_from(header_bytes).ok(),
            ));
        }
        let location = response.headers().get(http::header::LOCATION);
        let response = match redirects.next(&hop, response.status(), location, &host_added) {
            Next::Deliver => response.map(BodyExt::boxed_unsync),
            Next::Refuse(reason) => {
                tracing::warn!(plugin = %plugin, url = %shortened(&url), status = response.status().as_u16(), reason = %shortened(&reason), "redirect not followed");
                explained(response, reason)
            }
            Next::Follow {
                hop: next,
                keeps_body,
            } => {
                // The redirect's own body is not read: dropping it closes its connection.
                drop((response, io));
                if !keeps_body {
                    body = RequestBody::Kept(Bytes::new());
                }
                // Without its query: a redirect's may carry a token, and this goes into
                // the job's error and the log.
                let next_url = without_query(&next.uri);
                let from = without_query(&hop.uri);
                if !policy.allows(&next.uri) {
                    policy.count_denied(&next.uri);
                    denied.record(plugin, format!("{next_url} (a redirect from {from})"));
                    return Err(HttpError::HttpRequestDenied);
                }
                tracing::debug!(plugin = %plugin, from = %shortened(&from), to = %shortened(&next_url), "following a redirect");
                hop = next;
                continue;
            }
        };
        let limit = body_limit;
        let declared = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if let Some(declared) = declared
            && declared > limit as u64
        {
            tracing::warn!(plugin = %plugin, url = %shortened(&url), limit, declared, "response body over the cap");
            return Err(HttpError::HttpResponseBodySize(Some(declared)));
        }
        let plugin = plugin.to_owned();
        let response = response.map(|body| {
            TrackedBody {
                inner: cap_body(body, limit, plugin, url),
                guard: Some(guard),
                span: Some(span),
            }
            .boxed_unsync()
        });
        return Ok((response, Box::new(io) as IoFuture));
    }
}

/// A request's body, as the hops of the request send it.
enum RequestBody {
    /// Read whole (empty, or of a small declared length): every hop sends it.
    Kept(Bytes),
    /// Streamed as the guest writes it, by the first hop only.
    Streamed(Option<WasiBody>),
}

impl RequestBody {
    /// Keeps `body` when it is empty, or when `headers` declare a `content-length` of at
    /// most [`MAX_RESENT_BODY_BYTES`] (then it is read whole here, as the guest writes
    /// it, before the request goes out); else it will stream. A body with trailers
    /// (rare in requests) streams too.
    async fn keep_if_small(body: WasiBody, headers: &HeaderMap) -> HttpResult<RequestBody> {
        if body.is_end_stream() {
            return Ok(RequestBody::Kept(Bytes::new()));
        }
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if declared.is_none_or(|length| length > MAX_RESENT_BODY_BYTES) {
            return Ok(RequestBody::Streamed(Some(body)));
        }
        // wasmtime-wasi-http holds the guest to its declared length; the limit holds the
        // host's buffer to the cap whatever the guest does.
        let limit = usize::try_from(MAX_RESENT_BODY_BYTES).unwrap_or(usize::MAX);
        let collected = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|err| match err.downcast::<HttpError>() {
                Ok(err) => *err,
                Err(err) if err.is::<LengthLimitError>() => {
                    HttpError::HttpRequestBodySize(Some(MAX_RESENT_BODY_BYTES))
                }
                Err(err) => HttpError::InternalError(Some(err.to_string())),
            })?;
        if collected.trailers().is_some() {
            return Ok(RequestBody::Streamed(Some(
                collected.map_err(|never| match never {}).boxed_unsync(),
            )));
        }
        Ok(RequestBody::Kept(collected.to_bytes()))
    }

    fn can_resend(&self) -> bool {
        matches!(self, RequestBody::Kept(_))
    }

    /// The body of the next hop: the kept one again, or the stream if not sent yet.
    /// (`redirect` follows a redirect that needs the body again only if it was kept.)
    fn for_hop(&mut self) -> WasiBody {
        let bytes = match self {
            RequestBody::Kept(bytes) => bytes.clone(),
            RequestBody::Streamed(stream) => match stream.take() {
                Some(stream) => return stream,
                None => Bytes::new(),
            },
        };
        if bytes.is_empty() {
            return http_body_util::Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed_unsync();
        }
        http_body_util::Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync()
    }
}

/// `response` (a redirect not followed) with `reason` as its body in place of its own,
/// so that the guest, and the job's error, say why it got a redirect.
fn explained<B>(response: http::Response<B>, reason: String) -> http::Response<WasiBody> {
    // The redirect's own body is not read: dropping it closes its connection.
    let (mut parts, _) = response.into_parts();
    for name in [
        http::header::CONTENT_ENCODING,
        http::header::TRANSFER_ENCODING,
        http::header::CONTENT_TYPE,
    ] {
        parts.headers.remove(name);
    }
    parts.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    parts.headers.insert(
        http::header::CONTENT_LENGTH,
        HeaderValue::from(reason.len()),
    );
    let body = http_body_util::Full::new(Bytes::from(reason))
        .map_err(|never| match never {})
        .boxed_unsync();
    http::Response::from_parts(parts, body)
}

/// The guest's timeouts `options`, each cut to what is left until `deadline` plus
/// [`TIMEOUT_GRACE`].
fn clamp(options: Option<RequestOptions>, deadline: Instant) -> RequestOptions {
    let remaining = deadline.saturating_duration_since(Instant::now()) + TIMEOUT_GRACE;
    let cut = |timeout: Option<Duration>| Some(timeout.map_or(remaining, |t| t.min(remaining)));
    let options = options.unwrap_or_default();
    RequestOptions {
        connect_timeout: cut(options.connect_timeout),
        first_byte_timeout: cut(options.first_byte_timeout),
        between_bytes_timeout: cut(options.between_bytes_timeout),
    }
}

/// The unfinished requests of one job.
#[derive(Clone, Default)]
struct InFlight {
    count: Arc<AtomicUsize>,
}

impl InFlight {
    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Counts one more request, until the guard is dropped.
    fn start(&self) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard {
            count: Arc::clone(&self.count),
        }
    }
}

/// One request in flight; dropping it ends the request's count.
struct InFlightGuard {
    count: Arc<AtomicUsize>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted in flight, and its client span
/// open, until it ends or fails (or is dropped, with the guard and the span).
struct TrackedBody {
    inner: WasiBody,
    guard: Option<InFlightGuard>,
    span: Option<RequestSpan>,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(context);
        if let Poll::Ready(Some(Err(err))) = &polled
            && let Some(span) = &self.span
        {
            span.failed(&format!("{err:?}"));
        }
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.guard = None;
            self.span = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The size of `headers` as wasmtime-wasi-http accounts for a header map.
fn header_map_bytes(headers: &HeaderMap) -> usize {
    let names: usize = headers
        .keys()
        .map(|name| name.as_str().len() + size_of::<HeaderName>())
        .sum();
    let values: usize = headers
        .values()
        .map(|value| value.len() + size_of::<HeaderValue>())
        .sum();
    names.saturating_add(values)
}

/// The start of `url`, for the log.
fn shortened(url: &str) -> &str {
    &url[..url.floor_char_boundary(MAX_LOGGED_URL_BYTES)]
}

/// `body`, failing with `HttpResponseBodySize` once more than `limit` bytes came.
fn cap_body(body: WasiBody, limit: usize, plugin: String, url: String) -> WasiBody {
    Limited::new(body, limit)
        .map_err(move |err| body_error(err, limit, &plugin, &url))
        .boxed_unsync()
}

/// Turns the capped body's error back into wasi-http's, logging a cap hit.
fn body_error(
    err: Box<dyn std::error::Error + Send + Sync>,
    limit: usize,
    plugin: &str,
    url: &str,
) -> HttpError {
    match err.downcast::<HttpError>() {
        Ok(err) => *err,
        Err(err) if err.is::<LengthLimitError>() => {
            tracing::warn!(plugin = %plugin, url = %url, limit, "response body over the cap");
            HttpError::HttpResponseBodySize(Some(limit as u64))
        }
        Err(err) => HttpError::InternalError(Some(err.to_string())),
    }
}

/// The port `uri`'s authority names: `Some(None)` when it names none, `None` when what
/// it names is no port (`:99999`, `:`). `Uri::port` cannot tell those apart: it reads
/// an unparsable port as absent, which would pass for the default port and draw that
/// host's credential.
fn explicit_port(uri: &Uri) -> Option<Option<u16>> {
    let authority = uri.authority().map_or("", |authority| authority.as_str());
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let host = &authority[host_start..];
    // An IPv6 literal's colons are inside its brackets.
    let after_host = host.rfind(']').map_or(0, |bracket| bracket + 1);
    match host[after_host..].rfind(':') {
        None => Some(None),
        Some(colon) => host[after_host + colon + 1..].parse::<u16>().ok().map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> HostPattern {
        HostPattern::parse(text).unwrap_or_else(|err| panic!("{text}: {err:#}"))
    }

    fn check(entry: &str, url: &str, expected: bool) {
        let uri: Uri = url.parse().unwrap();
        assert_eq!(pattern(entry).matches(&uri), expected, "{entry} vs {url}");
    }

    #[test]
    fn entries_match_scheme_host_and_port() {
        check(
            "https://api.github.com",
            "https://api.github.com/repos",
            true,
        );
        check(
            "https://api.github.com",
            "https://API.GitHub.com./repos",
            true,
        );
        check(
            "https://api.github.com",
            "https://api.github.com:443/",
            true,
        );
        check("https://api.github.com", "http://api.github.com/", false);
        check(
            "https://api.github.com",
            "https://api.github.com:8443/",
            false,
        );
        check(
            "https://api.github.com",
            "https://evil.com/?api.github.com",
            false,
        );
        check(
            "https://api.github.com",
            "https://api.github.com.evil.com/",
            false,
        );
        check("http://127.0.0.1:8080", "http://127.0.0.1:8080/x", true);
        check("http://127.0.0.1:8080", "http://127.0.0.1:8081/x", false);
        check("http://127.0.0.1:*", "http://127.0.0.1:1/x", true);
        check("http://127.0.0.1:*", "http://127.0.0.1/x", true);
        check("http://127.0.0.1:*", "http://localhost:80/x", false);
        check("http://[::1]:9000", "http://[::1]:9000/", true);
    }

    #[test]
    fn an_unreadable_port_matches_no_entry() {
        for url in [
            "https://api.github.com:99999/repos",
            "https://api.github.com:65536/",
            "https://api.github.com:/",
            "https://user:pw@api.github.com:4x3/",
        ] {
            let Ok(uri) = url.parse::<Uri>() else {
                continue; // refused by the parser already: it never reaches the policy
            };
            assert!(
                !pattern("https://api.github.com").matches(&uri),
                "{url} must not pass for the default port"
            );
            assert!(!pattern("https://api.github.com:*").matches(&uri), "{url}");
        }
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        check("https://*.github.com", "https://api.github.com/", true);
        check("https://*.github.com", "https://a.b.github.com/", true);
        check("https://*.github.com", "https://github.com/", false);
        check("https://*.github.com", "https://evilgithub.com/", false);
        check("https://*.github.com", "https://.github.com/", false);
    }

    #[test]
    fn malformed_entries_are_refused_with_a_reason() {
        for (entry, reason) in [
            ("api.github.com", "expected scheme://host[:port]"),
            ("ftp://x.com", "the scheme must be http or https"),
            ("https://x.com/path", "no path"),
            ("https://user@x.com", "no path, query or user"),
            ("https://x.com:port", "invalid port \"port\""),
            ("https://x.com:0", "invalid port"),
            ("https://a.*.com", "invalid host"),
            ("https://*", "invalid host"),
            ("https://", "invalid host"),
            ("https://.github.com", "invalid host"),
            ("https://api..github.com", "invalid host"),
            ("http://[::1", "unclosed '['"),
        ] {
            let error = format!("{:#}", HostPattern::parse(entry).unwrap_err());
            assert!(error.contains(reason), "{entry}: {error}");
        }
    }

    #[test]
    fn within_compares_coverage() {
        let within = |a: &str, b: &str| pattern(a).is_within(&pattern(b));
        assert!(within("https://api.github.com", "https://api.github.com"));
        assert!(within("https://api.github.com", "https://*.github.com"));
        assert!(within("https://*.api.github.com", "https://*.github.com"));
        assert!(within("https://*.github.com", "https://*.github.com:*"));
        assert!(within("http://127.0.0.1:9", "http://127.0.0.1:*"));
        assert!(!within("https://*.github.com", "https://api.github.com"));
        assert!(!within("https://github.com", "https://*.github.com"));
        assert!(!within("http://api.github.com", "https://api.github.com"));
        assert!(!within("https://x.com:*", "https://x.com"));
    }

    #[test]
    fn timeouts_end_just_after_the_deadline() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let options = clamp(
            Some(RequestOptions {
                connect_timeout: Some(Duration::from_secs(60)),
                first_byte_timeout: Some(Duration::from_millis(10)),
                between_bytes_timeout: None,
            }),
            deadline,
        );
        let latest = Duration::from_secs(5) + TIMEOUT_GRACE;
        assert!(options.connect_timeout.unwrap() <= latest);
        assert_eq!(options.first_byte_timeout, Some(Duration::from_millis(10)));
        assert!(options.between_bytes_timeout.unwrap() <= latest);
        assert!(options.between_bytes_timeout.unwrap() > Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_request_is_in_flight_until_its_body_ends_or_is_dropped() {
        let in_flight = InFlight::default();
        let mut finished = TrackedBody {
            inner: body_of("12345"),
            guard: Some(in_flight.start()),
            span: None,
        };
        let abandoned = TrackedBody {
            inner: body_of("678"),
            guard: Some(in_flight.start()),
            span: None,
        };
        assert_eq!(in_flight.count(), 2);
        let frame = finished.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "12345");
        assert_eq!(in_flight.count(), 2, "the body has not ended yet");
        assert!(finished.frame().await.is_none());
        assert_eq!(
            in_flight.count(),
            1,
            "the body ended, though it is still held"
        );
        drop(abandoned);
        assert_eq!(in_flight.count(), 0);
    }

    fn body_of(text: &'static str) -> WasiBody {
        http_body_util::Full::new(bytes::Bytes::from_static(text.as_bytes()))
            .map_err(|never: std::convert::Infallible| -> HttpError { match never {} })
            .boxed_unsync()
    }

    #[tokio::test]
    async fn bodies_are_capped() {
        let within = cap_body(body_of("12345"), 5, "p".into(), "u".into());
        assert_eq!(within.collect().await.unwrap().to_bytes(), "12345");
        let over = cap_body(body_of("123456"), 5, "p".into(), "u".into());
        let error = over.collect().await.unwrap_err();
        assert!(
            matches!(error, HttpError::HttpResponseBodySize(Some(5))),
            "{error}"
        );
    }

    #[test]
    fn inner_body_errors_pass_through() {
        let inner = body_error(Box::new(HttpError::ConnectionReadTimeout), 10, "p", "u");
        assert!(matches!(inner, HttpError::ConnectionReadTimeout));
    }
}
