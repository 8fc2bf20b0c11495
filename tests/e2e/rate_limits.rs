//! Rate limits read in full, end to end: an integration plugin against a local fake of
//! its API that refuses with a rate limit; the job goes back to pending with a `run_at`
//! as far off as the API asked (Linear's reset header, GitHub's secondary-limit minute,
//! an HTTP-date `Retry-After`), and never further than the daemon's `retry.max_after`.
//!
//! No test waits for the retry itself: the job's `run_at` is the daemon's decision.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use honeydew::api::pb::{self, JobStatus};

use crate::support::{Daemon, DataDir, HttpStub, PATIENCE, Reply, get, queue, submit};

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

/// The first retry of a job: its error, its `run_at`, and the interval in which the
/// daemon decided it (from before the submit to after the retry was seen).
struct Retry {
    error: String,
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

/// Submits `command` with `payload` and follows the job until its first retry.
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
                JobStatus::Pending if update.retry_count == 1 => return,
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
    assert_eq!(job.retry_count, 1);
    let run_at = job.run_at.as_ref().expect("a run_at");
    Retry {
        error: job.error.clone().unwrap_or_default(),
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
    assert_eq!(retry.error, "Linear GraphQL error: Rate limit exceeded");
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
    retry.assert_put_off(Duration::from_secs(60), Duration::from_secs(60));
}

/// Regression (issue 10): an HTTP-date `Retry-After` was ignored and the job retried
/// after the backoff alone.
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
    assert_eq!(retry.error, r#"HTTP 429: {"message":"slow down"}"#);
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
    retry.assert_put_off(Duration::from_secs(30), Duration::from_secs(30));
}
