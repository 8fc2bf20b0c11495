//! Rate limits on the egress path: the hook `egress` calls before each hop goes out
//! and after each response comes back, and what a job's attempt remembers of them.
//!
//! [`EgressLimits`] is one plugin's view of the daemon's [`RateLimits`]: before a hop,
//! a live hold on its key (the plugin, the `allowed_hosts` entry it matches, the names
//! of the secrets its `[[auth]]` headers carry) or a full declared window refuses it
//! without any connection: the guest gets a `429` with `retry-after` and a body that
//! says why, made here. After a response, its status and headers are read
//! (`honeydew_core::rate_limit`) and a spent quota becomes a hold, stored before the
//! guest sees the response. A held request, or a refusal (a 4xx or 5xx saying the
//! quota is spent; not a success that spent its last), is noted in the job's
//! [`RateLimited`], which keeps the latest end, so that the sandbox ends a failed
//! attempt `rate_limited` (pending again at the reset, no retry spent) instead of as
//! the plugin's error. This file logs no header
//! value (auth values are secrets): only names of secrets and host entries.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderMap, HeaderValue, Uri};
use http_body_util::BodyExt;
use wasmtime_wasi_http::WasiBody;

use super::egress::HostPattern;
use crate::rate_limit::wait_from_response;
use crate::rate_limits::{HoldKey, RateLimits};

/// One plugin's limits: the daemon's record and the hosts its manifest declares a
/// limit for.
pub(super) struct EgressLimits {
    pub(super) limits: Arc<RateLimits>,
    /// Each `[[rate_limit]]` host of the manifest.
    pub(super) declared: Vec<HostPattern>,
}

impl std::fmt::Debug for EgressLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressLimits")
            .field("declared", &self.declared)
            .finish_non_exhaustive()
    }
}

/// The end of a limit met, and a sentence naming the limit.
type Met = Option<(DateTime<Utc>, String)>;

/// What one job's attempt met: the latest end of a rate limit that held or refused one
/// of its requests, and which.
#[derive(Clone, Default)]
pub(super) struct RateLimited {
    latest: Arc<Mutex<Met>>,
}

impl RateLimited {
    /// The latest end met, with a sentence naming the limit.
    pub(super) fn get(&self) -> Met {
        self.lock().clone()
    }

    fn record(&self, until: DateTime<Utc>, reason: String) {
        let mut latest = self.lock();
        if latest.as_ref().is_none_or(|(end, _)| until >= *end) {
            *latest = Some((until, reason));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Met> {
        self.latest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl EgressLimits {
    /// Before a hop to `uri` under `key` goes out: `Some(refusal)` when a hold or a
    /// declared window keeps it in; the request must then not be sent.
    pub(super) async fn before_send(
        &self,
        key: HoldKey,
        uri: &Uri,
        met: &RateLimited,
    ) -> Option<http::Response<WasiBody>> {
        let now = Utc::now();
        if let Some(until) = self.limits.held_until(&key, now) {
            return Some(refuse(&key, until, "its quota is spent", met));
        }
        for declared in self.declared.iter().filter(|host| host.matches(uri)) {
            let host = declared.to_string();
            if let Err(until) = self.limits.take_declared(&key.plugin, &host, now) {
                // Held like a spent quota, so that dispatch waits too.
                let wait = (until - now).to_std().unwrap_or_default();
                let until = self.limits.learn(key.clone(), wait, now).await;
                return Some(refuse(&key, until, "its declared limit is reached", met));
            }
        }
        None
    }

    /// After a response with `status` and `headers` to a hop under `key`: learns the
    /// hold it asks for, if any, and when the response refused the request, notes it
    /// in the job's `met`.
    pub(super) async fn after_response(
        &self,
        key: HoldKey,
        status: u16,
        headers: &HeaderMap,
        met: &RateLimited,
    ) {
        let now = Utc::now();
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        let Some(wait) = wait_from_response(status, header, now) else {
            return;
        };
        let until = self.limits.learn(key.clone(), wait, now).await;
        // A success that spent the last of the quota served the job: only a refusal
        // makes its attempt one that a rate limit held.
        if status < 400 {
            return;
        }
        met.record(
            until,
            reason(
                &key,
                until,
                &format!("it answered {status} with its quota spent"),
            ),
        );
    }
}

/// The refusal of a request held by a rate limit until `until`, recorded in `met`.
fn refuse(
    key: &HoldKey,
    until: DateTime<Utc>,
    why: &str,
    met: &RateLimited,
) -> http::Response<WasiBody> {
    let reason = reason(key, until, why);
    met.record(until, reason.clone());
    let wait_seconds = (until - Utc::now()).num_seconds().max(1);
    let body = format!("held by the daemon: {reason}");
    let mut response = http::Response::new(
        http_body_util::Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    headers.insert(http::header::RETRY_AFTER, HeaderValue::from(wait_seconds));
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The sentence a held job records: which limit, until when.
fn reason(key: &HoldKey, until: DateTime<Utc>, why: &str) -> String {
    let credential = if key.credential.is_empty() {
        String::new()
    } else {
        format!(" with credential {}", key.credential)
    };
    format!(
        "held by a rate limit until {}: {}{credential} ({why})",
        until.to_rfc3339_opts(SecondsFormat::Secs, true),
        key.host,
    )
}
