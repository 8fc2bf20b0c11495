//! Rate limits, declared and learned: when a plugin's requests to one host with one
//! credential must wait, and until when.
//!
//! [`RateLimits`] is the daemon's one record of them. It **learns** from responses
//! (the runtime's egress hands it every response's status and headers; reading them
//! is `honeydew_core::rate_limit`'s): a spent quota becomes a hold keyed by
//! ([`HoldKey`]) the plugin, the `allowed_hosts` entry and the credential (the names of
//! the secrets its `[[auth]]` headers carry, never a value), until the reset, clamped
//! to [`MIN_HOLD`]..the retry maximum. It also keeps the limits a manifest
//! **declares** (`[[rate_limit]] host, requests, per`): a sliding window of the last
//! `requests` sends, so that no `per`-long span ever holds more; a request that would
//! exceed it is held like a spent quota, until the oldest send in the window ages out.
//! On a shared store each live node keeps its share, `requests / live nodes` (at least
//! one; the cluster's beat counts the nodes), so that together they stay within it.
//!
//! A hold is written to the store before the response that taught it reaches the
//! guest, so it holds every node of a shared store (whose claims consult the table)
//! and survives a restart (start-up [`RateLimits::restore`]s the live ones). On
//! SQLite the in-memory queue holds the plugin's jobs back ([`RateLimits::on_hold`]
//! tells it). What happens to an attempt that meets a hold (its job goes back to
//! pending at the reset, spending no retry) is the sandbox's and the worker's.
//!
//! The clock is always a parameter; the only I/O is the store write of a new hold.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::rate_limit::{MAX_KEY_BYTES, RateLimitHold};
use crate::retry::{Failure, later_by};
use crate::store::{Outcome, Store};

/// The shortest hold: a reset already passed (clock skew, most likely) or a wait of
/// 0 still holds this long, so that held jobs do not hammer a server still counting.
pub const MIN_HOLD: Duration = Duration::from_secs(1);

/// The most requests a declared limit may count in its window.
pub const MAX_DECLARED_REQUESTS: u32 = 100_000;

/// The longest window a declared limit may have: a week.
pub const MAX_DECLARED_PER: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Which requests a hold stops: one plugin's, to one `allowed_hosts` entry, with one
/// credential.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HoldKey {
    /// The plugin.
    pub plugin: String,
    /// The `allowed_hosts` entry the request matched.
    pub host: String,
    /// The names of the secrets its `[[auth]]` headers carry, comma-separated; empty
    /// for a request without credentials.
    pub credential: String,
}

/// A limit a manifest declares, as `honeydew limits` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredState {
    /// The plugin.
    pub plugin: String,
    /// The host entry it covers.
    pub host: String,
    /// How many requests...
    pub requests: u32,
    /// ...per this long.
    pub per: Duration,
    /// This daemon's share of `requests`: all of them, or on a shared store
    /// `requests / live nodes` (at least 1).
    pub share: u32,
    /// Requests sent within the last `per`, by this daemon.
    pub used: u32,
    /// When the next request may go out, if the window is full now.
    pub full_until: Option<DateTime<Utc>>,
}

/// One declared limit's window.
struct Window {
    requests: u32,
    per: Duration,
    /// When each of the last `requests` sends went out, oldest first.
    sent: VecDeque<DateTime<Utc>>,
}

impl Window {
    /// How many of its requests one of `nodes` live nodes may send.
    fn share(&self, nodes: u32) -> u32 {
        (self.requests / nodes.max(1)).max(1)
    }

    fn expire(&mut self, now: DateTime<Utc>) {
        let per = TimeDelta::from_std(self.per).unwrap_or(TimeDelta::MAX);
        while self.sent.front().is_some_and(|at| *at + per <= now) {
            self.sent.pop_front();
        }
    }

    /// When the window has room again for one of `nodes` live nodes, if it is full at
    /// `now`.
    fn full_until(&mut self, now: DateTime<Utc>, nodes: u32) -> Option<DateTime<Utc>> {
        self.expire(now);
        let share = self.share(nodes) as usize;
        if self.sent.len() < share {
            return None;
        }
        let per = TimeDelta::from_std(self.per).unwrap_or(TimeDelta::MAX);
        // The send whose ageing out makes room for one more.
        self.sent
            .get(self.sent.len() - share)
            .map(|oldest| *oldest + per)
    }
}

/// What is called when a hold of a plugin is learned or restored: the plugin and when
/// the hold ends.
type OnHold = Box<dyn Fn(&str, DateTime<Utc>) + Send + Sync>;

/// The daemon's rate limits: holds learned from responses and limits declared by
/// manifests. Shared by every plugin's egress policy.
pub struct RateLimits {
    store: Store,
    node: Option<String>,
    max_hold: Duration,
    holds: Mutex<HashMap<HoldKey, DateTime<Utc>>>,
    declared: Mutex<HashMap<(String, String), Window>>,
    /// Live nodes sharing each declared limit (1 on a store one daemon opens).
    nodes: AtomicU32,
    on_hold: OnceLock<OnHold>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("node", &self.node)
            .field("max_hold", &self.max_hold)
            .finish_non_exhaustive()
    }
}

impl RateLimits {
    /// Limits kept in `store`, learned on `node` (a shared store's node id), with holds
    /// of at most `max_hold` (the retry maximum: no API makes a job wait longer than
    /// its own retry could).
    pub fn new(store: Store, node: Option<String>, max_hold: Duration) -> Self {
        Self {
            store,
            node,
            max_hold: max_hold.max(MIN_HOLD),
            holds: Mutex::default(),
            declared: Mutex::default(),
            nodes: AtomicU32::new(1),
            on_hold: OnceLock::new(),
        }
    }

    /// Has `notify` called with the plugin and the end of each hold learned or restored
    /// from now on (the in-memory queue holds the plugin's jobs back). Set once.
    pub fn on_hold(&self, notify: impl Fn(&str, DateTime<Utc>) + Send + Sync + 'static) {
        let _ = self.on_hold.set(Box::new(notify));
    }

    /// The end of the live hold on `key` at `now`, if any.
    pub fn held_until(&self, key: &HoldKey, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut holds = self.lock_holds();
        match holds.get(key) {
            Some(until) if *until > now => Some(*until),
            Some(_) => {
                holds.remove(key);
                None
            }
            None => None,
        }
    }

    /// Records that requests of `key` must wait `wait` from `now` (clamped to
    /// [`MIN_HOLD`]..the maximum), keeping a later end already known; writes it to the
    /// store before returning, so that every node holds it. The hold's end.
    pub async fn learn(&self, key: HoldKey, wait: Duration, now: DateTime<Utc>) -> DateTime<Utc> {
        let wait = wait.clamp(MIN_HOLD, self.max_hold);
        let until = now + TimeDelta::from_std(wait).unwrap_or(TimeDelta::MAX);
        let until = {
            let mut holds = self.lock_holds();
            let end = holds.entry(key.clone()).or_insert(until);
            *end = (*end).max(until);
            *end
        };
        tracing::warn!(
            plugin = %key.plugin, host = %key.host, credential = %key.credential,
            until = %until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "rate limit reached: the plugin's requests to this host wait until the reset"
        );
        if let Some(notify) = self.on_hold.get() {
            notify(&key.plugin, until);
        }
        let hold = RateLimitHold {
            plugin: cut(key.plugin),
            host: cut(key.host),
            credential: cut(key.credential),
            until,
            learned_at: now,
            node: self.node.clone(),
        };
        if let Err(err) = self.store.hold_rate_limit(hold).await {
            tracing::error!(error = %err, "cannot store a rate-limit hold; it holds on this daemon only");
        }
        until
    }

    /// Takes up a hold read back from the store (at start-up, after a restart).
    pub fn restore(&self, hold: &RateLimitHold) {
        let key = HoldKey {
            plugin: hold.plugin.clone(),
            host: hold.host.clone(),
            credential: hold.credential.clone(),
        };
        {
            let mut holds = self.lock_holds();
            let end = holds.entry(key).or_insert(hold.until);
            *end = (*end).max(hold.until);
        }
        if let Some(notify) = self.on_hold.get() {
            notify(&hold.plugin, hold.until);
        }
    }

    /// Declares `requests` per `per` for `plugin`'s requests to `host` (its manifest's
    /// `[[rate_limit]]`); a window already counting keeps its sends.
    pub fn declare(&self, plugin: &str, host: &str, requests: u32, per: Duration) {
        let mut declared = self.lock_declared();
        let window = declared
            .entry((plugin.to_owned(), host.to_owned()))
            .or_insert_with(|| Window {
                requests,
                per,
                sent: VecDeque::new(),
            });
        window.requests = requests;
        window.per = per;
    }

    /// Shares each declared limit among `nodes` live nodes (this one included) from now
    /// on.
    pub fn share_among(&self, nodes: u32) {
        self.nodes.store(nodes.max(1), Ordering::Relaxed);
    }

    /// Counts a request of `plugin` to the declared `host` about to go out at `now`;
    /// `Err(until)` when the window is full: then it must not go out before `until`.
    pub fn take_declared(
        &self,
        plugin: &str,
        host: &str,
        now: DateTime<Utc>,
    ) -> Result<(), DateTime<Utc>> {
        let mut declared = self.lock_declared();
        let Some(window) = declared.get_mut(&(plugin.to_owned(), host.to_owned())) else {
            return Ok(());
        };
        if let Some(until) = window.full_until(now, self.nodes.load(Ordering::Relaxed)) {
            return Err(until);
        }
        window.sent.push_back(now);
        Ok(())
    }

    /// The declared limits and how full each window is at `now`, by plugin and host.
    pub fn declared(&self, now: DateTime<Utc>) -> Vec<DeclaredState> {
        let nodes = self.nodes.load(Ordering::Relaxed);
        let mut declared = self.lock_declared();
        let mut states: Vec<DeclaredState> = declared
            .iter_mut()
            .map(|((plugin, host), window)| {
                let full_until = window.full_until(now, nodes);
                DeclaredState {
                    plugin: plugin.clone(),
                    host: host.clone(),
                    requests: window.requests,
                    per: window.per,
                    share: window.share(nodes),
                    used: u32::try_from(window.sent.len()).unwrap_or(u32::MAX),
                    full_until,
                }
            })
            .collect();
        states.sort_by(|a, b| (&a.plugin, &a.host).cmp(&(&b.plugin, &b.host)));
        states
    }

    /// Every hold live at `now`, as the store has them (every node's, on a shared
    /// store).
    pub async fn holds(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<RateLimitHold>, crate::store::StoreError> {
        self.store.rate_limit_holds(now).await
    }

    fn lock_holds(&self) -> std::sync::MutexGuard<'_, HashMap<HoldKey, DateTime<Utc>>> {
        self.holds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_declared(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Window>> {
        self.declared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The outcome of an attempt that a rate limit held (`failure` of kind
/// `rate_limited`, whose `after` is the wait until the reset), at `now`: back to
/// pending at the reset, no retry spent.
pub fn outcome(failure: &Failure, now: DateTime<Utc>) -> Outcome {
    let after = match failure {
        Failure::Retriable { after, .. } => after.unwrap_or(MIN_HOLD),
        Failure::Permanent { .. } => MIN_HOLD,
    };
    Outcome::RateLimited {
        reason: failure.message().to_owned(),
        run_at: later_by(now, after.max(MIN_HOLD)),
    }
}

/// The most attempts a job may have before a rate limit that holds it once more fails
/// it instead (kind `rate_limited`): an API that refuses for ever must not keep a job,
/// and its attempt rows, growing for ever.
pub const MAX_HELD_ATTEMPTS: u32 = 1000;

/// `outcome` of attempt number `attempt`, failed instead once a job held by rate limits
/// reaches [`MAX_HELD_ATTEMPTS`].
pub fn bounded(outcome: Outcome, attempt: u32) -> Outcome {
    match outcome {
        Outcome::RateLimited { reason, .. } if attempt >= MAX_HELD_ATTEMPTS => Outcome::Failed {
            kind: crate::job::ErrorKind::RateLimited,
            error: format!(
                "{reason}; the job has made {attempt} attempts, as many as a job held by rate \
                 limits may ({MAX_HELD_ATTEMPTS})"
            ),
        },
        outcome => outcome,
    }
}

/// `text` within [`MAX_KEY_BYTES`], cut on a char boundary.
fn cut(mut text: String) -> String {
    let end = text.floor_char_boundary(MAX_KEY_BYTES);
    text.truncate(end);
    text
}

/// Parses a declared window, `per = "1h"`: a whole number and a unit (`ms`, `s`, `m`,
/// `h`, `d`), between a second and [`MAX_DECLARED_PER`].
pub fn parse_per(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("per = {text:?}: expected a number and a unit, such as \"1h\""))?;
    let unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "per = {text:?}: unknown unit {other:?} (ms, s, m, h or d)"
            ));
        }
    };
    let per = Duration::from_millis(number.saturating_mul(unit_ms));
    if !(Duration::from_secs(1)..=MAX_DECLARED_PER).contains(&per) {
        return Err(format!("per = {text:?}: a window is between 1s and 7d"));
    }
    Ok(per)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteConfig, SqliteStore};

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::seconds(1_800_000_000 + seconds)
    }

    async fn limits() -> (RateLimits, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(SqliteConfig::new(dir.path().join("db"))).unwrap();
        (
            RateLimits::new(Store::new(store), None, Duration::from_secs(60)),
            dir,
        )
    }

    fn key(credential: &str) -> HoldKey {
        HoldKey {
            plugin: "github".into(),
            host: "https://api.github.com".into(),
            credential: credential.into(),
        }
    }

    #[tokio::test]
    async fn holds_are_clamped_keep_the_later_end_and_end_at_it() {
        let (limits, _dir) = limits().await;
        let now = at(0);
        // A reset already passed still holds a second; one too far holds the maximum.
        assert_eq!(limits.learn(key("A"), Duration::ZERO, now).await, at(1));
        assert_eq!(
            limits
                .learn(key("A"), Duration::from_secs(86_400), now)
                .await,
            at(60)
        );
        assert_eq!(
            limits.learn(key("A"), Duration::from_secs(5), now).await,
            at(60),
            "the later end stays"
        );
        assert_eq!(limits.held_until(&key("A"), at(59)), Some(at(60)));
        assert_eq!(limits.held_until(&key("A"), at(60)), None, "ended");
        assert_eq!(
            limits.held_until(&key("B"), now),
            None,
            "another credential"
        );
        let stored = limits.holds(now).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].until, at(60));
    }

    #[tokio::test]
    async fn a_declared_window_never_holds_more_than_its_requests() {
        let (limits, _dir) = limits().await;
        limits.declare(
            "github",
            "https://api.github.com",
            2,
            Duration::from_secs(10),
        );
        let take = |seconds| limits.take_declared("github", "https://api.github.com", at(seconds));
        assert_eq!(take(0), Ok(()));
        assert_eq!(take(3), Ok(()));
        assert_eq!(take(4), Err(at(10)), "full until the first send ages out");
        assert_eq!(take(10), Ok(()));
        assert_eq!(take(12), Err(at(13)));
        assert_eq!(take(13), Ok(()));
        assert_eq!(
            limits.take_declared("github", "https://other.example", at(13)),
            Ok(()),
            "no limit declared there"
        );
        let states = limits.declared(at(13));
        assert_eq!(states[0].used, 2);
        assert_eq!(states[0].full_until, Some(at(20)));
    }

    #[tokio::test]
    async fn live_nodes_share_a_declared_limit() {
        let (limits, _dir) = limits().await;
        limits.declare(
            "github",
            "https://api.github.com",
            5,
            Duration::from_secs(10),
        );
        limits.share_among(2);
        let take = |seconds| limits.take_declared("github", "https://api.github.com", at(seconds));
        assert_eq!((take(0), take(1)), (Ok(()), Ok(())));
        assert_eq!(take(2), Err(at(10)), "two of five is this node's share");
        limits.share_among(1);
        assert_eq!(take(2), Ok(()), "alone again, all five");
        limits.share_among(9);
        assert_eq!(take(3), Err(at(12)), "at least one each");
        assert_eq!(limits.declared(at(3))[0].share, 1);
    }

    #[test]
    fn a_held_attempt_spends_no_retry_until_the_attempt_cap() {
        let failure = Failure::Retriable {
            kind: crate::job::ErrorKind::RateLimited,
            message: "held".into(),
            after: Some(Duration::from_secs(30)),
        };
        let held = outcome(&failure, at(0));
        assert!(
            matches!(&held, Outcome::RateLimited { run_at, .. } if *run_at == at(30)),
            "{held:?}"
        );
        assert!(matches!(
            bounded(held.clone(), MAX_HELD_ATTEMPTS - 1),
            Outcome::RateLimited { .. }
        ));
        assert!(matches!(
            bounded(held, MAX_HELD_ATTEMPTS),
            Outcome::Failed {
                kind: crate::job::ErrorKind::RateLimited,
                ..
            }
        ));
    }

    #[test]
    fn windows_are_a_number_and_a_unit_within_bounds() {
        assert_eq!(parse_per("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_per("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_per("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_per("1d"), Ok(Duration::from_secs(86_400)));
        for bad in [
            "",
            "h",
            "1",
            "1w",
            "500ms",
            "8d",
            "-1h",
            "99999999999999999999d",
        ] {
            assert!(parse_per(bad).is_err(), "{bad:?}");
        }
    }
}
