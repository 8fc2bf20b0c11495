//! Concurrency limits end to end, on SQLite and on PostgreSQL: the `fetch` plugin calls
//! a loopback server that holds every request until the test lets it go and counts
//! the requests in flight, so what runs at once is seen from outside the daemon.
//!
//! A plugin's `[limits] concurrency = 2` is never exceeded, and `explain` names it for
//! a job it holds; jobs with a concurrency key run one per key, and keys take turns
//! (a key with six jobs queued first does not make another key's two wait for all of
//! them); on PostgreSQL, two daemons on one database keep one limit between them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use honeydew::api::pb::{self, JobStatus};
use honeydew_testkit::TestSchema;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tonic::transport::Channel;

use crate::support::backend::{Backend, on_both_backends};
use crate::support::hold::{answer_empty_json, read_head};
use crate::support::{Daemon, DataDir, PATIENCE, finished, queue};

/// What the server saw: requests in flight now and at most, overall and by path (the
/// path is the job's key), and the paths in the order they arrived.
#[derive(Default)]
struct Seen {
    in_flight: usize,
    most: usize,
    by_path: HashMap<String, usize>,
    most_by_path: HashMap<String, usize>,
    arrivals: Vec<String>,
}

/// A loopback API whose answers wait for [`Gate::release`].
struct Gate {
    base_url: String,
    seen: Arc<Mutex<Seen>>,
    arrived: Arc<Notify>,
    release: Arc<Semaphore>,
}

impl Gate {
    async fn start() -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let arrived = Arc::new(Notify::new());
        let release = Arc::new(Semaphore::new(0));
        let (state, notify, permits) = (
            Arc::clone(&seen),
            Arc::clone(&arrived),
            Arc::clone(&release),
        );
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (seen, arrived, release) = (
                    Arc::clone(&state),
                    Arc::clone(&notify),
                    Arc::clone(&permits),
                );
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut socket).await else {
                        return;
                    };
                    let line = String::from_utf8_lossy(&head)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let path = line
                        .split(' ')
                        .nth(1)
                        .unwrap_or("/")
                        .trim_start_matches('/')
                        .to_owned();
                    {
                        let mut seen = seen.lock().unwrap();
                        seen.in_flight += 1;
                        seen.most = seen.most.max(seen.in_flight);
                        let now = {
                            let count = seen.by_path.entry(path.clone()).or_default();
                            *count += 1;
                            *count
                        };
                        let most = seen.most_by_path.entry(path.clone()).or_default();
                        *most = (*most).max(now);
                        seen.arrivals.push(path.clone());
                    }
                    arrived.notify_waiters();
                    let Ok(permit) = release.acquire().await else {
                        return;
                    };
                    permit.forget();
                    {
                        let mut seen = seen.lock().unwrap();
                        seen.in_flight -= 1;
                        *seen.by_path.get_mut(&path).unwrap() -= 1;
                    }
                    answer_empty_json(socket).await;
                });
            }
        });
        Gate {
            base_url: format!("http://{address}"),
            seen,
            arrived,
            release,
        }
    }

    /// Waits until `count` requests have arrived in all.
    async fn arrivals(&self, count: usize) {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let notified = self.arrived.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.seen.lock().unwrap().arrivals.len() >= count {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{count} requests never arrived"));
    }

    /// Lets `count` held answers go.
    fn release(&self, count: usize) {
        self.release.add_permits(count);
    }

    fn most(&self) -> usize {
        self.seen.lock().unwrap().most
    }
}

/// A data directory whose `fetch` may reach `gate`, with `limits` as its manifest's
/// `[limits]` table.
fn fetching(gate: &Gate, limits: &str) -> DataDir {
    let data = DataDir::with_plugins(&["fetch"]);
    std::fs::write(
        data.manifest("fetch"),
        format!(
            "[network]\nallowed_hosts = [\"{}\"]\n\n[limits]\n{limits}\n",
            gate.base_url
        ),
    )
    .unwrap();
    data
}

/// Submits a fetch of `gate`'s `path`, with `key` as its concurrency key; its id.
async fn submit_fetch(channel: &Channel, gate: &Gate, path: &str, key: Option<&str>) -> String {
    let request = pb::SubmitJobRequest {
        command: "fetch.get".into(),
        payload: format!(r#"{{"url": "{}/{path}"}}"#, gate.base_url).into_bytes(),
        concurrency_key: key.map(str::to_owned),
        ..Default::default()
    };
    queue(channel)
        .submit_job(request)
        .await
        .expect("submit")
        .into_inner()
        .job_id
}

async fn explain(channel: &Channel, id: &str) -> pb::ExplainJobResponse {
    let request = pb::ExplainJobRequest { job_id: id.into() };
    queue(channel)
        .explain_job(request)
        .await
        .expect("explain")
        .into_inner()
}

async fn all_completed(channel: &Channel, ids: &[String]) {
    for id in ids {
        let job = finished(channel, id).await;
        assert_eq!(job.status(), JobStatus::Completed, "{id}: {:?}", job.error);
        assert_eq!(job.attempt, 1, "{id}: a held job never started early");
    }
}

async fn a_plugins_limit_of_two_is_never_exceeded(postgres: bool) {
    const JOBS: usize = 8;
    let gate = Gate::start().await;
    let backend = Backend::start_in(postgres, fetching(&gate, "concurrency = 2"), &[]).await;
    let channel = backend.daemon.connect().await;
    let mut ids = Vec::new();
    for _ in 0..JOBS {
        ids.push(submit_fetch(&channel, &gate, "work", None).await);
    }
    gate.arrivals(2).await;
    let waiting = explain(&channel, ids.last().unwrap()).await;
    assert_eq!(waiting.status(), JobStatus::Pending);
    assert_eq!(
        waiting.holdup(),
        pb::Holdup::ConcurrencyLimited,
        "{}",
        waiting.explanation
    );
    assert_eq!(waiting.concurrency_scope.as_deref(), Some("fetch"));
    assert!(
        waiting.explanation.contains("plugin fetch runs 2 jobs")
            && waiting.explanation.contains("concurrency limit of 2"),
        "{}",
        waiting.explanation
    );
    gate.release(JOBS);
    all_completed(&channel, &ids).await;
    assert_eq!(
        gate.most(),
        2,
        "two at once, never more (the workers could run more)"
    );
}

async fn keys_run_one_job_each_at_a_time_and_take_turns(postgres: bool) {
    let gate = Gate::start().await;
    // One job of the plugin at a time, so the order of the turns shows.
    let backend = Backend::start_in(postgres, fetching(&gate, "concurrency = 1"), &[]).await;
    let channel = backend.daemon.connect().await;
    let mut ids = Vec::new();
    ids.push(submit_fetch(&channel, &gate, "a", Some("a")).await);
    gate.arrivals(1).await;
    for _ in 0..5 {
        ids.push(submit_fetch(&channel, &gate, "a", Some("a")).await);
    }
    for _ in 0..2 {
        ids.push(submit_fetch(&channel, &gate, "b", Some("b")).await);
    }
    let held = explain(&channel, ids.last().unwrap()).await;
    assert_eq!(
        held.holdup(),
        pb::Holdup::ConcurrencyLimited,
        "{}",
        held.explanation
    );
    // One answer at a time: each release lets exactly the next job start.
    for started in 1..ids.len() {
        gate.release(1);
        gate.arrivals(started + 1).await;
    }
    gate.release(1);
    all_completed(&channel, &ids).await;
    let seen = gate.seen.lock().unwrap();
    // a's second job was already waiting when a's first started; from then on every
    // start of a sends a's next job to the back, behind b's.
    assert_eq!(
        seen.arrivals.join(""),
        "aababaaa",
        "keys take turns once both wait"
    );
    assert_eq!(seen.most, 1);
}

async fn a_key_limit_of_one_holds_without_a_plugin_limit(postgres: bool) {
    let gate = Gate::start().await;
    let backend = Backend::start_in(postgres, fetching(&gate, ""), &[]).await;
    let channel = backend.daemon.connect().await;
    let mut ids = Vec::new();
    for key in ["a", "a", "a", "b", "c"] {
        ids.push(submit_fetch(&channel, &gate, key, Some(key)).await);
    }
    // a, b and c each start one job; a's others wait for it.
    gate.arrivals(3).await;
    let held = explain(&channel, &ids[2]).await;
    assert_eq!(
        held.holdup(),
        pb::Holdup::ConcurrencyLimited,
        "{}",
        held.explanation
    );
    assert_eq!(held.concurrency_scope.as_deref(), Some("fetch[a]"));
    gate.release(ids.len());
    all_completed(&channel, &ids).await;
    let seen = gate.seen.lock().unwrap();
    assert_eq!(seen.most_by_path["a"], 1, "one job of key a at a time");
    assert_eq!(seen.most, 3, "different keys run side by side");
}

on_both_backends!(
    a_plugins_limit_of_two_is_never_exceeded,
    keys_run_one_job_each_at_a_time_and_take_turns,
    a_key_limit_of_one_holds_without_a_plugin_limit,
);

/// Two daemons on one PostgreSQL keep one limit between them: each claims under the
/// limit's lock and counts the other's running jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_keep_one_limit_between_them() {
    const JOBS: usize = 12;
    let schema = TestSchema::create().await;
    let gate = Gate::start().await;
    let args = ["--database-url", schema.url(), "--database-pool-size", "4"];
    let (data_a, data_b) = (
        fetching(&gate, "concurrency = 2"),
        fetching(&gate, "concurrency = 2"),
    );
    let first = Daemon::start(&data_a, &args);
    let second = Daemon::start(&data_b, &args);
    let (channel_a, channel_b) = (first.connect().await, second.connect().await);
    let mut ids = Vec::new();
    for n in 0..JOBS {
        let channel = if n % 2 == 0 { &channel_a } else { &channel_b };
        ids.push(submit_fetch(channel, &gate, "work", None).await);
    }
    gate.arrivals(2).await;
    for started in 2..JOBS {
        gate.release(1);
        gate.arrivals(started + 1).await;
    }
    gate.release(2);
    all_completed(&channel_a, &ids).await;
    assert_eq!(gate.most(), 2, "two at once across both daemons");
}
