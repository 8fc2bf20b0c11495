//! Rate limits read in full, end to end, on SQLite and on PostgreSQL.
//!
//! Learned: an API that answers with its quota spent (`x-ratelimit-remaining: 0` and a
//! reset, or a 429 with `Retry-After`) holds every job of that plugin until the reset:
//! no request reaches the fake API before it (the fake notes when each arrives), the
//! jobs held lose no attempt, and all complete after it; the hold survives a restart
//! and, on PostgreSQL, holds another daemon's jobs; `honeydew limits` and `explain`
//! show it. Declared: a manifest's `[[rate_limit]]` is never exceeded.
//!
//! With an integration plugin against a local fake of its API that refuses with a rate
//! limit, the job goes back to pending with a `run_at` as far off as the API asked
//! (Linear's reset header, an HTTP-date `Retry-After`: a hold, no retry spent;
//! GitHub's secondary-limit minute: a retry), and never further than the daemon's
//! `retry.max_after`. Those tests do not wait for the next attempt: the job's `run_at`
//! is the daemon's decision.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use honeydew::api::pb::{self, JobStatus};
use honeydew_testkit::TestSchema;
use tonic::transport::Channel;

use crate::support::backend::{Backend, on_both_backends};
use crate::support::{
    Daemon, DataDir, HttpStub, PATIENCE, Reply, finished, get, honeydew, queue, stdout, submit,
    watch_until,
};

/// Backoff far below every wait under test, so the wait decides `run_at`.
const FAST_BACKOFF: &str = "[retry]\nbase_ms = 10\njitter = 0.0\n";

/// A data directory with `plugin`'s manifest pointed at `stub` (no credentials), and
/// `config` as `honeydew.toml`.
fn data_dir(plugin: &str, base_url: &str, config: &str) -> DataDir {
    let data = DataDir::with_plugins(&[plugin]);
    let origin = base_url.trim_end_matches("/graphql");
    std::fs::write(
        data.manifest(plugin),
        format!(
            "[network]\nallowed_hosts = [\"{origin}\"]\n\n[config]\nbase_url = \"{base_url}\"\n"
        ),
    )
    .unwrap();
    data.configure(config);
    data
}

/// The first wait of a job after an attempt (a retry or a rate-limit hold): its error
/// and its kind, its `run_at`, and the interval in which the daemon decided it (from
/// before the submit to after the wait was seen).
struct Retry {
    error: String,
    error_kind: String,
    retry_count: u32,
    run_at: DateTime<Utc>,
    decided_after: DateTime<Utc>,
    decided_before: DateTime<Utc>,
}

impl Retry {
    /// Asserts that the job was put off by between `shortest` and `longest`.
    fn assert_put_off(&self, shortest: Duration, longest: Duration) {
        let earliest = self.decided_after + TimeDelta::from_std(shortest).unwrap();
        let latest = self.decided_before + TimeDelta::from_std(longest).unwrap();
        assert!(
            (earliest..=latest).contains(&self.run_at),
            "run_at {} is not {shortest:?} to {longest:?} after the retry was decided \
             (between {} and {}); error {:?}",
            self.run_at,
            self.decided_after,
            self.decided_before,
            self.error
        );
    }
}

/// Submits `command` with `payload` and follows the job until it is pending again after
/// its first attempt.
async fn first_retry(daemon: &Daemon, command: &str, payload: &str) -> Retry {
    let channel = daemon.connect().await;
    let decided_after = Utc::now();
    let id = submit(&channel, command, payload).await;
    let request = pb::WatchJobRequest {
        job_id: id.clone(),
        ..Default::default()
    };
    let mut stream = queue(&channel)
        .watch_job(request)
        .await
        .expect("watch")
        .into_inner();
    let retried = async {
        while let Some(update) = stream.message().await.expect("watch stream") {
            match update.status() {
                JobStatus::Pending if update.attempt == 1 => return,
                JobStatus::Pending | JobStatus::Running => continue,
                other => panic!(
                    "job {id} ended {other:?} ({:?}) instead of a retry",
                    update.error
                ),
            }
        }
        panic!("watch of {id} ended before a retry");
    };
    tokio::time::timeout(PATIENCE, retried)
        .await
        .unwrap_or_else(|_| panic!("job {id} was not retried in time"));
    let job = get(&channel, &id).await;
    let decided_before = Utc::now();
    assert_eq!(job.status(), JobStatus::Pending, "{:?}", job.error);
    let run_at = job.run_at.as_ref().expect("a run_at");
    Retry {
        error: job.error.clone().unwrap_or_default(),
        error_kind: job.error_kind.clone().unwrap_or_default(),
        retry_count: job.retry_count,
        run_at: DateTime::from_timestamp(run_at.seconds, run_at.nanos as u32).unwrap(),
        decided_after,
        decided_before,
    }
}

/// `at` as an HTTP date (IMF-fixdate), as servers send `date` and `retry-after`.
fn http_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn headers(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect()
}

/// A stub API answering every request with `reply`'s status, headers and body.
async fn stub(
    reply: impl Fn() -> (u16, Vec<(String, String)>, String) + Send + Sync + 'static,
) -> HttpStub {
    HttpStub::start_replying(move |_, _| {
        let (status, headers, body) = reply();
        Reply {
            status,
            headers,
            body: body.into_bytes(),
        }
    })
    .await
}

/// Regression (issue 10): Linear's `RATELIMITED` was retried at once, ignoring the
/// reset header (Unix milliseconds), so jobs spent their retries inside the window.
/// Its spent quota is now a hold: the job waits for the reset and spends no retry.
#[tokio::test(flavor = "multi_thread")]
async fn linear_ratelimited_is_retried_once_its_reset_header_passes() {
    let linear =
        stub(|| {
            let now = Utc::now();
            let reset = now + TimeDelta::seconds(90);
            (
            400,
            headers(&[
                ("date", http_date(now)),
                ("x-ratelimit-requests-limit", "1500".into()),
                ("x-ratelimit-requests-remaining", "0".into()),
                ("x-ratelimit-requests-reset", reset.timestamp_millis().to_string()),
                ("x-ratelimit-complexity-remaining", "240000".into()),
                (
                    "x-ratelimit-complexity-reset",
                    (now + TimeDelta::hours(1)).timestamp_millis().to_string(),
                ),
            ]),
            r#"{"errors":[{"message":"Rate limit exceeded","extensions":{"code":"RATELIMITED"}}]}"#
                .to_owned(),
        )
        })
        .await;
    let data = data_dir(
        "linear",
        &format!("{}/graphql", linear.base_url),
        FAST_BACKOFF,
    );
    let daemon = Daemon::start(&data, &[]);

    let retry = first_retry(&daemon, "linear.teams", "{}").await;
    assert_eq!(retry.error_kind, "rate_limited");
    assert_eq!(retry.retry_count, 0, "a hold spends no retry");
    assert!(
        retry.error.starts_with("held by a rate limit until ")
            && retry
                .error
                .ends_with("the plugin said: Linear GraphQL error: Rate limit exceeded"),
        "{:?}",
        retry.error
    );
    // Measured from the response's `date`, whole seconds: up to a second more.
    retry.assert_put_off(Duration::from_secs(90), Duration::from_secs(91));
    let received = linear.received();
    assert_eq!(received.len(), 1, "no request before the reset");
    assert!(
        received[0].line.starts_with("POST /graphql "),
        "{:?}",
        received[0]
    );
}

/// Regression (issue 10): a GitHub secondary-limit 403 without `retry-after` was a
/// permanent failure; GitHub asks to wait at least a minute, and its primary limit's
/// reset (an hour off, with room left) is not the one refusing.
#[tokio::test(flavor = "multi_thread")]
async fn github_secondary_limit_without_retry_after_waits_a_minute() {
    let github = stub(|| {
        let now = Utc::now();
        (
            403,
            headers(&[
                ("date", http_date(now)),
                ("x-ratelimit-limit", "5000".into()),
                ("x-ratelimit-remaining", "4990".into()),
                ("x-ratelimit-reset", (now + TimeDelta::hours(1)).timestamp().to_string()),
            ]),
            r#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}"#
                .to_owned(),
        )
    })
    .await;
    let data = data_dir("github", &github.base_url, FAST_BACKOFF);
    let daemon = Daemon::start(&data, &[]);

    let retry = first_retry(
        &daemon,
        "github.commits",
        r#"{"owner":"octocat","repo":"hello"}"#,
    )
    .await;
    assert!(
        retry.error.starts_with("HTTP 403 (rate limited): "),
        "{:?}",
        retry.error
    );
    // Its quota has room: not a hold, a retry at the plugin's minute.
    assert_eq!(
        (retry.error_kind.as_str(), retry.retry_count),
        ("plugin_error", 1)
    );
    retry.assert_put_off(Duration::from_secs(60), Duration::from_secs(60));
}

/// Regression (issue 10): an HTTP-date `Retry-After` was ignored and the job retried
/// after the backoff alone. It holds the job until that date, spending no retry.
#[tokio::test(flavor = "multi_thread")]
async fn a_429_with_an_http_date_retry_after_waits_until_that_date() {
    let github = stub(|| {
        let now = Utc::now();
        (
            429,
            headers(&[
                ("date", http_date(now)),
                ("retry-after", http_date(now + TimeDelta::seconds(120))),
            ]),
            r#"{"message":"slow down"}"#.to_owned(),
        )
    })
    .await;
    let data = data_dir("github", &github.base_url, FAST_BACKOFF);
    let daemon = Daemon::start(&data, &[]);

    let retry = first_retry(
        &daemon,
        "github.commits",
        r#"{"owner":"octocat","repo":"hello"}"#,
    )
    .await;
    assert_eq!(retry.error_kind, "rate_limited");
    assert_eq!(retry.retry_count, 0);
    assert!(
        retry
            .error
            .ends_with(r#"the plugin said: HTTP 429: {"message":"slow down"}"#),
        "{:?}",
        retry.error
    );
    // Both dates in whole seconds of the server's clock: exactly two minutes.
    retry.assert_put_off(Duration::from_secs(120), Duration::from_secs(120));
}

/// The wait a server asks for is outside input: the daemon cuts it to its
/// `retry.max_after` (here 30 s) whatever the plugin passes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_wait_longer_than_max_after_is_cut_to_it() {
    let github = stub(|| {
        (
            429,
            headers(&[("retry-after", "7200".into())]),
            r#"{"message":"come back in two hours"}"#.to_owned(),
        )
    })
    .await;
    let config = format!("{FAST_BACKOFF}max_after_ms = 30000\n");
    let data = data_dir("github", &github.base_url, &config);
    let daemon = Daemon::start(&data, &[]);

    let retry = first_retry(
        &daemon,
        "github.commits",
        r#"{"owner":"octocat","repo":"hello"}"#,
    )
    .await;
    assert_eq!(retry.error_kind, "rate_limited");
    retry.assert_put_off(Duration::from_secs(30), Duration::from_secs(30));
}

on_both_backends!(
    a_spent_quota_holds_every_job_of_the_plugin_until_its_reset,
    a_429_with_retry_after_holds_the_plugins_jobs_without_spending_a_retry,
    a_hold_survives_a_restart,
    a_declared_limit_is_never_exceeded,
);

/// Jobs held back behind the one that met the limit.
const HELD_JOBS: usize = 5;

/// A fake API with a quota: the first request spends it (`first`: the answer that
/// says so, given the reset); every request before the reset is refused (403, quota
/// spent: a request the daemon should not have sent); from the reset on, 200 with
/// room. The reset is `wait` after the first request, rounded up to a whole second
/// (as `x-ratelimit-reset` counts). Notes when each request arrives.
struct Quota {
    stub: HttpStub,
    reset: Arc<OnceLock<DateTime<Utc>>>,
    arrivals: Arc<Mutex<Vec<DateTime<Utc>>>>,
}

impl Quota {
    async fn start(wait: Duration, first: fn(DateTime<Utc>) -> Reply) -> Quota {
        let reset = Arc::new(OnceLock::new());
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stub = HttpStub::start_replying({
            let (reset, arrivals) = (Arc::clone(&reset), Arc::clone(&arrivals));
            move |_, number| {
                let now = Utc::now();
                arrivals.lock().unwrap().push(now);
                let at = *reset.get_or_init(|| {
                    let at = now + TimeDelta::from_std(wait).unwrap();
                    DateTime::from_timestamp(at.timestamp() + 1, 0).unwrap()
                });
                if number == 1 {
                    return first(at);
                }
                let spent = now < at;
                Reply {
                    status: if spent { 403 } else { 200 },
                    headers: headers(&[
                        (
                            "x-ratelimit-remaining",
                            if spent { "0" } else { "4999" }.into(),
                        ),
                        ("x-ratelimit-reset", at.timestamp().to_string()),
                    ]),
                    body: br#"{"ok":true}"#.to_vec(),
                }
            }
        })
        .await;
        Quota {
            stub,
            reset,
            arrivals,
        }
    }

    /// The reset, once the first request set it.
    fn reset(&self) -> DateTime<Utc> {
        *self.reset.get().expect("a first request")
    }

    /// How many requests arrived before the reset.
    fn before_reset(&self) -> usize {
        let reset = self.reset();
        let arrivals = self.arrivals.lock().unwrap();
        arrivals.iter().filter(|at| **at < reset).count()
    }

    fn requests(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }
}

/// A 200 that spends the quota: remaining 0 until `reset` (GitHub's last allowed call).
fn spends_the_quota(reset: DateTime<Utc>) -> Reply {
    Reply {
        status: 200,
        headers: headers(&[
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset", reset.timestamp().to_string()),
        ]),
        body: br#"{"ok":true}"#.to_vec(),
    }
}

/// A 429 asking to come back at `reset` (in whole seconds, rounded up), no quota
/// headers.
fn too_many_requests(reset: DateTime<Utc>) -> Reply {
    let seconds = ((reset - Utc::now()).num_milliseconds() + 999) / 1000;
    Reply {
        status: 429,
        headers: headers(&[("retry-after", seconds.to_string())]),
        body: br#"{"message":"slow down"}"#.to_vec(),
    }
}

/// A data directory with the `fetch` plugin allowed to reach `base_url`, `extra` added
/// to its manifest, and a quick backoff (so a retry spent by mistake would show).
fn fetching(base_url: &str, extra: &str) -> DataDir {
    let data = DataDir::with_plugins(&["fetch"]);
    std::fs::write(
        data.manifest("fetch"),
        format!("[network]\nallowed_hosts = [\"{base_url}\"]\n{extra}"),
    )
    .unwrap();
    data.configure(FAST_BACKOFF);
    data
}

fn get_payload(base_url: &str) -> String {
    format!(r#"{{"url": "{base_url}/repos"}}"#)
}

/// Submits `count` fetches of `base_url`; their ids.
async fn submit_fetches(channel: &Channel, base_url: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        ids.push(submit(channel, "fetch.get", &get_payload(base_url)).await);
    }
    ids
}

/// Waits for every job of `ids` to complete, having spent no retry and run once.
async fn all_complete_in_one_attempt(channel: &Channel, ids: &[String]) {
    for id in ids {
        let job = finished(channel, id).await;
        assert_eq!(job.status(), JobStatus::Completed, "{id}: {:?}", job.error);
        assert_eq!(job.retry_count, 0, "{id}: no retry spent");
        assert_eq!(
            job.attempt, 1,
            "{id}: held jobs never started before the reset"
        );
    }
}

/// `honeydew limits --json` of the daemon at `data`.
fn limits_json(data: &DataDir) -> serde_json::Value {
    let output = honeydew(data.path(), &["limits", "--json"], "");
    assert!(output.status.success(), "{output:?}");
    serde_json::from_str(&stdout(&output)).expect("limits --json is JSON")
}

async fn a_spent_quota_holds_every_job_of_the_plugin_until_its_reset(postgres: bool) {
    let api = Quota::start(Duration::from_secs(3), spends_the_quota).await;
    let base_url = api.stub.base_url.clone();
    let backend = Backend::start_in(postgres, fetching(&base_url, ""), &[]).await;
    let channel = backend.daemon.connect().await;

    // The request that spends the quota completes; its answer holds the others.
    let first = submit(&channel, "fetch.get", &get_payload(&base_url)).await;
    all_complete_in_one_attempt(&channel, std::slice::from_ref(&first)).await;
    let held = submit_fetches(&channel, &base_url, HELD_JOBS).await;

    let limits = limits_json(&backend.data);
    let holds = limits["holds"].as_array().expect("holds");
    assert_eq!(holds.len(), 1, "{limits}");
    assert_eq!(holds[0]["plugin"], "fetch");
    assert_eq!(holds[0]["host"], base_url.as_str());
    let until: DateTime<Utc> = holds[0]["until"].as_str().unwrap().parse().unwrap();
    assert!(
        until >= api.reset(),
        "held until {until}, reset {}",
        api.reset()
    );
    let table = stdout(&honeydew(backend.data.path(), &["limits"], ""));
    assert!(
        table.starts_with("HELD") && table.contains(&format!("fetch  {base_url}")),
        "{table}"
    );
    if Utc::now() < api.reset() {
        let explained = honeydew(backend.data.path(), &["explain", &held[0]], "");
        assert!(
            stdout(&explained).contains("held by a rate limit until"),
            "{}",
            stdout(&explained)
        );
    }

    all_complete_in_one_attempt(&channel, &held).await;
    assert_eq!(
        api.before_reset(),
        1,
        "no request but the first before the reset"
    );
    assert_eq!(api.requests(), 1 + HELD_JOBS, "one request per job");
}

async fn a_429_with_retry_after_holds_the_plugins_jobs_without_spending_a_retry(postgres: bool) {
    let api = Quota::start(Duration::from_secs(3), too_many_requests).await;
    let base_url = api.stub.base_url.clone();
    let backend = Backend::start_in(postgres, fetching(&base_url, ""), &[]).await;
    let channel = backend.daemon.connect().await;

    let first = submit(&channel, "fetch.get", &get_payload(&base_url)).await;
    // Its attempt ends with the job pending until the reset, kind rate_limited.
    watch_until(&channel, &first, |update| {
        update.status() == JobStatus::Pending && update.attempt == 1
    })
    .await;
    let job = get(&channel, &first).await;
    assert_eq!(job.error_kind.as_deref(), Some("rate_limited"), "{job:?}");
    assert_eq!(job.retry_count, 0);
    let held = submit_fetches(&channel, &base_url, HELD_JOBS).await;

    let done = finished(&channel, &first).await;
    assert_eq!(done.status(), JobStatus::Completed, "{:?}", done.error);
    assert_eq!(
        (done.retry_count, done.attempt),
        (0, 2),
        "run again, no retry spent"
    );
    all_complete_in_one_attempt(&channel, &held).await;
    assert_eq!(
        api.before_reset(),
        1,
        "no request but the first before the reset"
    );
}

async fn a_hold_survives_a_restart(postgres: bool) {
    let api = Quota::start(Duration::from_secs(5), spends_the_quota).await;
    let base_url = api.stub.base_url.clone();
    let backend = Backend::start_in(postgres, fetching(&base_url, ""), &[]).await;
    let channel = backend.daemon.connect().await;
    let first = submit(&channel, "fetch.get", &get_payload(&base_url)).await;
    all_complete_in_one_attempt(&channel, std::slice::from_ref(&first)).await;

    let (backend, channel) = backend.restart().await;
    let held = submit_fetches(&channel, &base_url, HELD_JOBS).await;
    all_complete_in_one_attempt(&channel, &held).await;
    assert_eq!(
        api.before_reset(),
        1,
        "the restarted daemon sent nothing before the reset"
    );
    drop(backend);
}

async fn a_declared_limit_is_never_exceeded(postgres: bool) {
    const REQUESTS: usize = 2;
    const PER: Duration = Duration::from_secs(2);
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let stub = HttpStub::start({
        let arrivals = Arc::clone(&arrivals);
        move |_, _| {
            arrivals.lock().unwrap().push(Utc::now());
            (200, r#"{"ok":true}"#.to_owned())
        }
    })
    .await;
    let base_url = stub.base_url.clone();
    let declared =
        format!("\n[[rate_limit]]\nhost = \"{base_url}\"\nrequests = {REQUESTS}\nper = \"2s\"\n");
    let backend = Backend::start_in(postgres, fetching(&base_url, &declared), &[]).await;
    let channel = backend.daemon.connect().await;

    let ids = submit_fetches(&channel, &base_url, 6).await;
    for id in &ids {
        let job = finished(&channel, id).await;
        assert_eq!(job.status(), JobStatus::Completed, "{id}: {:?}", job.error);
        assert_eq!(
            job.retry_count, 0,
            "{id}: waiting for the window spends no retry"
        );
    }
    let mut arrivals = arrivals.lock().unwrap().clone();
    arrivals.sort();
    assert_eq!(arrivals.len(), ids.len(), "one request per job");
    // Any REQUESTS + 1 consecutive requests span at least PER (less the loopback's
    // delivery jitter): no PER-long span ever held more than REQUESTS.
    let jitter = TimeDelta::milliseconds(100);
    for window in arrivals.windows(REQUESTS + 1) {
        let span = window[REQUESTS] - window[0];
        assert!(
            span >= TimeDelta::from_std(PER).unwrap() - jitter,
            "{} requests within {span}: {arrivals:?}",
            REQUESTS + 1
        );
    }
    let limits = limits_json(&backend.data);
    let declared = &limits["declared"][0];
    assert_eq!(declared["plugin"], "fetch", "{limits}");
    assert_eq!(declared["requests"], REQUESTS);
    assert_eq!(declared["per_ms"], 2000);
    assert_eq!(declared["share"], REQUESTS, "one daemon: all of it");
}

/// Two daemons on one PostgreSQL: the hold one of them learns keeps the other's jobs
/// in, though that one never saw the answer (the first daemon is stopped meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_learned_by_one_daemon_holds_another_daemons_jobs() {
    let schema = TestSchema::create().await;
    let api = Quota::start(Duration::from_secs(4), spends_the_quota).await;
    let base_url = api.stub.base_url.clone();
    let args = ["--database-url", schema.url(), "--database-pool-size", "4"];
    let (data_a, data_b) = (fetching(&base_url, ""), fetching(&base_url, ""));
    let learner = Daemon::start(&data_a, &args);
    let channel = learner.connect().await;
    let first = submit(&channel, "fetch.get", &get_payload(&base_url)).await;
    all_complete_in_one_attempt(&channel, std::slice::from_ref(&first)).await;
    let (status, log) = learner.terminate();
    assert!(status.success(), "{status:?}: {log}");

    let other = Daemon::start(&data_b, &args);
    let channel = other.connect().await;
    let held = submit_fetches(&channel, &base_url, HELD_JOBS).await;
    let limits = limits_json(&data_b);
    assert_eq!(limits["holds"][0]["plugin"], "fetch", "{limits}");
    all_complete_in_one_attempt(&channel, &held).await;
    assert_eq!(
        api.before_reset(),
        1,
        "the other daemon sent nothing before the reset"
    );
}
