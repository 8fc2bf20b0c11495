//! Outgoing HTTP over `wasi:http/outgoing-handler`: a small blocking client.
//!
//! The daemon sends a request only when the plugin's manifest grants the URL's scheme,
//! host and port, and it adds the manifest's `[[auth]]` headers itself, so a plugin
//! never handles credentials. Bodies are read whole into memory, which the sandbox's
//! memory limit bounds.
//!
//! ```no_run
//! use honeydew_plugin_sdk::{PluginError, http::Request};
//!
//! fn stars(repo: &str) -> Result<u64, PluginError> {
//!     #[derive(serde::Deserialize)]
//!     struct Repo { stargazers_count: u64 }
//!     let response = Request::get(&format!("https://api.github.com/repos/{repo}"))
//!         .header("accept", "application/vnd.github+json")
//!         .send()?
//!         .error_for_status()?;
//!     Ok(response.json::<Repo>()?.stargazers_count)
//! }
//! ```

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, OutgoingBody,
    OutgoingRequest, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;
use crate::{PluginError, rate_limit};

/// The most bytes `blocking-write-and-flush` accepts in one call.
const WRITE_CHUNK: usize = 4096;
/// How many bytes to ask for per read of a response body.
const READ_CHUNK: u64 = 64 * 1024;
/// How much of an error response's body goes into the error message.
const ERROR_BODY_LIMIT: usize = 512;

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
}

/// An HTTP request under construction; [`Request::send`] sends it.
#[derive(Debug, Clone)]
#[must_use]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    /// A request with `method` to `url` (`scheme://host[:port][/path][?query]`).
    pub fn new(method: Method, url: &str) -> Self {
        Self {
            method,
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `GET` request to `url`.
    pub fn get(url: &str) -> Self {
        Self::new(Method::Get, url)
    }

    /// A `HEAD` request to `url`.
    pub fn head(url: &str) -> Self {
        Self::new(Method::Head, url)
    }

    /// A `POST` request to `url`; give it a body with [`Request::json`].
    pub fn post(url: &str) -> Self {
        Self::new(Method::Post, url)
    }

    /// The URL the request goes to, its query included.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Adds a header; a name may repeat.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Appends `name=value` to the URL's query string, percent-encoding both.
    pub fn query(mut self, name: &str, value: impl fmt::Display) -> Self {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        let value = value.to_string();
        let _ = write!(self.url, "{separator}{}={}", encode(name), encode(&value));
        self
    }

    /// Sets a JSON body and its `content-type`.
    ///
    /// Fails (permanently) only when `body` cannot be serialised, say a map whose keys
    /// are not strings.
    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Result<Self, PluginError> {
        self.body = serde_json::to_vec(body).map_err(|error| {
            PluginError::permanent(format!("cannot encode request body: {error}"))
        })?;
        Ok(self.header("content-type", "application/json"))
    }

    /// Sends the request and reads the whole response.
    ///
    /// A response of any status is `Ok`: classify it with [`Response::error_for_status`].
    /// Failing to reach the server is retriable, except when the daemon denies the
    /// destination or the request is malformed, which retrying cannot mend.
    pub fn send(self) -> Result<Response, PluginError> {
        let target = Target::parse(&self.url)?;
        let headers = Fields::new();
        for (name, value) in &self.headers {
            headers.append(name, value.as_bytes()).map_err(|error| {
                PluginError::permanent(format!("invalid header {name:?}: {error:?}"))
            })?;
        }
        if !self.body.is_empty() {
            // A known length spares the server a chunked body.
            let length = self.body.len().to_string();
            headers
                .set("content-length", &[length.into_bytes()])
                .map_err(|error| {
                    PluginError::permanent(format!("invalid content-length: {error:?}"))
                })?;
        }

        let request = OutgoingRequest::new(headers);
        let invalid =
            |part: &str| PluginError::permanent(format!("invalid {part} in URL {:?}", self.url));
        request
            .set_method(&self.method.into())
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&target.scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(target.authority))
            .map_err(|()| invalid("authority"))?;
        request
            .set_path_with_query(Some(&target.path_and_query))
            .map_err(|()| invalid("path"))?;

        // A bodiless request (GET, HEAD) must not take a body stream, or one is sent.
        let body = if self.body.is_empty() {
            None
        } else {
            Some(
                request
                    .body()
                    .map_err(|()| PluginError::permanent("request body taken twice"))?,
            )
        };
        let pending = outgoing_handler::handle(request, None).map_err(transport_error)?;
        if let Some(body) = body {
            write_body(body, &self.body)?;
        }
        read_response(wait_for(&pending)?)
    }
}

/// A response read whole: status, headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The headers in the order received; names are lowercase.
    pub headers: Vec<(String, String)>,
    /// The body; empty for `HEAD`.
    pub body: Vec<u8>,
}

impl Response {
    /// A response made by hand, as a plugin's unit tests feed its parsing code one.
    /// Header names are lowercased, as for a received response.
    pub fn new(status: u16, headers: &[(&str, &str)], body: &str) -> Self {
        Self {
            status,
            headers: headers
                .iter()
                .map(|&(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    /// The value of the first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The body parsed as JSON; a body that does not parse is a permanent error.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        serde_json::from_slice(&self.body).map_err(|error| {
            PluginError::permanent(format!(
                "unexpected response body (HTTP {}): {error}",
                self.status
            ))
        })
    }

    /// How long this response's rate-limit headers ask to wait before the next
    /// request, at most [`rate_limit::MAX_WAIT`]; `None` when none asks for a wait.
    ///
    /// Reads `retry-after` (seconds or an HTTP date) and the reset headers of GitHub,
    /// GitLab, Bitbucket, Linear and the IETF draft (`x-ratelimit-reset`,
    /// `ratelimit-reset`, `x-ratelimit-*-reset`), ignoring a reset whose limit still has
    /// room; [`rate_limit`] says how each is read.
    pub fn rate_limit_wait(&self) -> Option<Duration> {
        rate_limit::wait(self, SystemTime::now())
    }

    /// `Some(wait)` when the body is a GraphQL response reporting a rate limit
    /// (`errors[].extensions.code` `RATELIMITED`, Linear's, or `errors[].type`
    /// `RATE_LIMITED`, GitHub's), whatever the status: the wait the headers ask for
    /// ([`Response::rate_limit_wait`]), else [`rate_limit::UNTIMED_LIMIT_WAIT`].
    pub fn graphql_rate_limit(&self) -> Option<Duration> {
        rate_limit::graphql_wait(self, SystemTime::now())
    }

    /// `Ok(self)` for a 2xx status, else the error the status calls for.
    ///
    /// Retriable: 408 and 5xx, and rate limits (a 429; a 403 that is GitHub's rate
    /// limit; a GraphQL rate-limit error), each not before the wait its headers ask for
    /// ([`Response::rate_limit_wait`]; a GitHub or GraphQL rate limit that no header
    /// times waits a minute). Every other status (other 4xx, an unfollowed 3xx) is
    /// permanent.
    pub fn error_for_status(self) -> Result<Self, PluginError> {
        match self.status_error(SystemTime::now()) {
            Some(error) => Err(error),
            None => Ok(self),
        }
    }

    fn status_error(&self, clock: SystemTime) -> Option<PluginError> {
        if (200..300).contains(&self.status) {
            return None;
        }
        let refusal = rate_limit::refusal(self, clock);
        let mut message = format!("HTTP {}", self.status);
        if refusal.is_some() && self.status != 429 {
            message.push_str(" (rate limited)");
        }
        let body = self.text();
        let body = body.trim();
        if !body.is_empty() {
            let end = body
                .char_indices()
                .nth(ERROR_BODY_LIMIT)
                .map_or(body.len(), |(at, _)| at);
            let _ = write!(message, ": {}", &body[..end]);
        }
        let wait = match refusal {
            Some(refusal) => refusal.wait,
            None if matches!(self.status, 408 | 500..=599) => rate_limit::wait(self, clock),
            None => return Some(PluginError::permanent(message)),
        };
        Some(match wait {
            Some(wait) => PluginError::retriable_after(message, wait),
            None => PluginError::retriable(message),
        })
    }
}

/// Percent-encodes `text` for a URL path segment or query component: every byte but
/// ASCII letters, digits and `-._~`.
pub fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                encoded.push(char::from(byte));
            }
            _ => {
                let _ = write!(encoded, "%{byte:02X}");
            }
        }
    }
    encoded
}

/// A URL split the way `wasi:http` wants it.
#[derive(Debug)]
struct Target<'a> {
    scheme: Scheme,
    authority: &'a str,
    path_and_query: Cow<'a, str>,
}

impl<'a> Target<'a> {
    fn parse(url: &'a str) -> Result<Self, PluginError> {
        let invalid = || {
            PluginError::permanent(format!(
                "invalid URL {url:?}: expected scheme://host[:port][/path]"
            ))
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => Scheme::Other(scheme.to_owned()),
        };
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let (authority, path_and_query) =
            rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        if authority.is_empty() {
            return Err(invalid());
        }
        let path_and_query = match path_and_query.chars().next() {
            Some('/') => Cow::Borrowed(path_and_query),
            _ => Cow::Owned(format!("/{path_and_query}")),
        };
        Ok(Self {
            scheme,
            authority,
            path_and_query,
        })
    }
}

impl From<Method> for crate::bindings::wasi::http::types::Method {
    fn from(method: Method) -> Self {
        match method {
            Method::Get => Self::Get,
            Method::Head => Self::Head,
            Method::Post => Self::Post,
            Method::Put => Self::Put,
            Method::Patch => Self::Patch,
            Method::Delete => Self::Delete,
        }
    }
}

/// Streams `bytes` into a request body and finishes it.
fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), PluginError> {
    let stream = body
        .write()
        .map_err(|()| PluginError::permanent("request body written twice"))?;
    for chunk in bytes.chunks(WRITE_CHUNK) {
        stream
            .blocking_write_and_flush(chunk)
            .map_err(stream_error)?;
    }
    // The stream is a child of the body: it must go before the body is finished.
    drop(stream);
    OutgoingBody::finish(body, None).map_err(transport_error)
}

/// Blocks until the response (or the failure to get one) arrives.
fn wait_for(pending: &FutureIncomingResponse) -> Result<IncomingResponse, PluginError> {
    loop {
        match pending.get() {
            Some(Ok(Ok(response))) => return Ok(response),
            Some(Ok(Err(code))) => return Err(transport_error(code)),
            Some(Err(())) => return Err(PluginError::permanent("response taken twice")),
            None => pending.subscribe().block(),
        }
    }
}

/// Reads status, headers and the whole body of `response`.
fn read_response(response: IncomingResponse) -> Result<Response, PluginError> {
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| PluginError::permanent("response body taken twice"))?;
    let stream = incoming
        .stream()
        .map_err(|()| PluginError::permanent("response body read twice"))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(error) => return Err(stream_error(error)),
        }
    }
    drop(stream);
    IncomingBody::finish(incoming);
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Classifies a failure to exchange a request and response.
fn transport_error(code: ErrorCode) -> PluginError {
    match code {
        ErrorCode::HttpRequestDenied => PluginError::permanent(
            "HTTP request denied: the plugin's manifest does not grant this destination",
        ),
        ErrorCode::HttpRequestUriInvalid => PluginError::permanent("HTTP request URI invalid"),
        // The host caps response bodies; the same request would meet the same cap.
        ErrorCode::HttpResponseBodySize(size) => PluginError::permanent(match size {
            Some(size) => format!("HTTP response body of {size} bytes is over the host's limit"),
            None => "HTTP response body is over the host's limit".to_owned(),
        }),
        // The host caps response headers too, with the same reasoning.
        ErrorCode::HttpResponseHeaderSectionSize(size) => PluginError::permanent(match size {
            Some(size) => {
                format!("HTTP response headers of {size} bytes are over the host's limit")
            }
            None => "HTTP response headers are over the host's limit".to_owned(),
        }),
        code => PluginError::retriable(format!("HTTP transport error: {code:?}")),
    }
}

/// A body stream that broke mid-way: the connection failed, so try again later.
fn stream_error(error: StreamError) -> PluginError {
    let detail = match error {
        StreamError::LastOperationFailed(error) => error.to_debug_string(),
        StreamError::Closed => "stream closed".to_owned(),
    };
    PluginError::retriable(format!("HTTP body stream failed: {detail}"))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn status_classes() {
        let check = |status, expected: Option<bool>| {
            let retriable = Response::new(status, &[], "")
                .status_error(SystemTime::now())
                .map(|error| error.is_retriable());
            assert_eq!(retriable, expected, "HTTP {status}");
        };
        check(200, None);
        check(204, None);
        check(301, Some(false));
        check(400, Some(false));
        check(401, Some(false));
        check(404, Some(false));
        check(408, Some(true));
        check(429, Some(true));
        check(500, Some(true));
        check(503, Some(true));
    }

    #[test]
    fn retriable_errors_carry_the_rate_limit_wait() {
        // 2015-10-21 07:28:00 UTC.
        let clock = UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let check = |status, headers: &[(&str, &str)], body, expected: PluginError| {
            let error = Response::new(status, headers, body).status_error(clock);
            assert_eq!(error, Some(expected), "HTTP {status} {headers:?}");
        };
        let after = |message: &str, seconds| {
            PluginError::retriable_after(message, Duration::from_secs(seconds))
        };
        check(
            429,
            &[("Retry-After", "7")],
            "slow down",
            after("HTTP 429: slow down", 7),
        );
        check(
            503,
            &[("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT")],
            "",
            after("HTTP 503", 30),
        );
        check(
            503,
            &[("retry-after", "later")],
            "",
            PluginError::retriable("HTTP 503"),
        );
        check(429, &[], "", PluginError::retriable("HTTP 429"));
        check(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1445412600"),
            ],
            "",
            after("HTTP 403 (rate limited)", 120),
        );
        check(
            403,
            &[("x-ratelimit-remaining", "12")],
            "You have exceeded a secondary rate limit",
            after(
                "HTTP 403 (rate limited): You have exceeded a secondary rate limit",
                60,
            ),
        );
        check(
            400,
            &[],
            r#"{"errors":[{"extensions":{"code":"RATELIMITED"}}]}"#,
            after(
                r#"HTTP 400 (rate limited): {"errors":[{"extensions":{"code":"RATELIMITED"}}]}"#,
                60,
            ),
        );
        check(
            403,
            &[("x-ratelimit-remaining", "12")],
            "forbidden",
            PluginError::permanent("HTTP 403: forbidden"),
        );
    }

    #[test]
    fn error_message_keeps_a_bounded_body() {
        let body = "é".repeat(2 * ERROR_BODY_LIMIT);
        let error = Response::new(404, &[], &body)
            .status_error(SystemTime::now())
            .unwrap();
        assert_eq!(
            error.message().chars().count(),
            "HTTP 404: ".len() + ERROR_BODY_LIMIT
        );
    }

    #[test]
    fn urls_split_into_scheme_authority_path() {
        let check = |url, authority, path: &str| {
            let target = Target::parse(url).unwrap();
            assert_eq!(
                (target.authority, &*target.path_and_query),
                (authority, path),
                "{url}"
            );
        };
        check("https://api.github.com", "api.github.com", "/");
        check(
            "http://127.0.0.1:8080/count?x=1#frag",
            "127.0.0.1:8080",
            "/count?x=1",
        );
        check("https://example.com?q=1", "example.com", "/?q=1");
        assert!(Target::parse("api.github.com/users").is_err());
        assert!(Target::parse("https:///path").is_err());
    }

    #[test]
    fn query_values_are_encoded() {
        let request = Request::get("https://x.test/a")
            .query("sha", "feature/é x")
            .query("n", 5);
        assert_eq!(request.url, "https://x.test/a?sha=feature%2F%C3%A9%20x&n=5");
    }
}
