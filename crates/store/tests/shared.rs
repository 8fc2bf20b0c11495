//! The shared queue of PostgreSQL, where several daemons (nodes) claim from one
//! database: claims across nodes, the wake-ups, the rescue of a dead node's jobs, and
//! the fence that keeps a presumed-dead node from overwriting what the rescuer decided,
//! cancels asked of another node's job, and the announcements of every job change.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use honeydew_core::concurrency::ConcurrencyLimits;
use honeydew_core::job::{ErrorKind, Job, JobId, JobStatus};
use honeydew_core::rate_limit::RateLimitHold;
use honeydew_core::store::{
    AttemptReport, ClaimNext, Claimed, ClusterSignal, JobChange, Outcome, Rescued, SharedQueue,
    Store, StoreError, UniqueInsert, Uniqueness,
};
use honeydew_store::{PostgresConfig, PostgresStore};
use honeydew_testkit::TestSchema;

async fn node(schema: &TestSchema, id: &str) -> Store {
    let config = PostgresConfig {
        pool_size: 4,
        ..PostgresConfig::new(schema.url(), id)
    };
    Store::new(PostgresStore::open(config).await.expect("open the store"))
}

fn shared(store: &Store) -> &dyn SharedQueue {
    store.shared().expect("PostgreSQL is a shared queue")
}

async fn claim(store: &Store, commands: Option<&[&str]>) -> Option<Claimed> {
    let commands = commands.map(|c| c.iter().map(|s| s.to_string()).collect());
    match shared(store)
        .claim_next(commands, &ConcurrencyLimits::default(), 1)
        .await
        .unwrap()
    {
        ClaimNext::Claimed(claimed) => Some(*claimed),
        ClaimNext::NothingUntil(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_claim_the_best_job_they_serve_and_never_the_same_one() {
    let schema = TestSchema::create().await;
    let (a, b) = (node(&schema, "a").await, node(&schema, "b").await);
    let low = Job::new("echo.echo", vec![], 1, 0);
    let high = Job::new("echo.echo", vec![], 9, 0);
    let other = Job::new("github.commits", vec![], 100, 0);
    for job in [&low, &high, &other] {
        a.insert_job(job.clone()).await.unwrap();
    }
    let first = claim(&b, Some(&["echo.echo"])).await.unwrap();
    assert_eq!(
        first.job.id, high.id,
        "priority first, among served commands"
    );
    assert_eq!(first.attempt, 1);
    assert_eq!(
        claim(&a, Some(&["echo.echo"])).await.unwrap().job.id,
        low.id
    );
    assert!(claim(&a, Some(&["echo.echo"])).await.is_none());
    assert_eq!(claim(&a, None).await.unwrap().job.id, other.id);

    // Two nodes racing over many jobs take each exactly once.
    let jobs: Vec<Job> = (0..200)
        .map(|n| Job::new("echo.echo", vec![], n % 7, 0))
        .collect();
    for job in &jobs {
        a.insert_job(job.clone()).await.unwrap();
    }
    let drain = |store: Store| {
        tokio::spawn(async move {
            let mut taken = Vec::new();
            while let Some(claimed) = claim(&store, None).await {
                taken.push(claimed.job.id);
            }
            taken
        })
    };
    let (ta, tb) = (drain(a.clone()), drain(b.clone()));
    let (ta, tb) = (ta.await.unwrap(), tb.await.unwrap());
    assert_eq!(ta.len() + tb.len(), jobs.len());
    let all: HashSet<_> = ta.iter().chain(&tb).collect();
    assert_eq!(all.len(), jobs.len(), "no job claimed twice");
}

/// Claims with `limits` on `store` until nothing is claimable; the jobs claimed.
async fn claim_all(store: &Store, limits: &ConcurrencyLimits) -> Vec<Claimed> {
    let mut claimed = Vec::new();
    loop {
        match shared(store).claim_next(None, limits, 1).await.unwrap() {
            ClaimNext::Claimed(job) => claimed.push(*job),
            // Taken or filled between the look and the claim: look again.
            ClaimNext::NothingUntil(Some(due)) if due <= Utc::now() + TimeDelta::seconds(1) => {}
            ClaimNext::NothingUntil(_) => return claimed,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_racing_for_limited_jobs_never_run_more_than_the_limit() {
    let schema = TestSchema::create().await;
    let (a, b) = (node(&schema, "a").await, node(&schema, "b").await);
    let mut limits = ConcurrencyLimits::default();
    limits.running.insert("github".into(), 3);
    limits.running.insert("echo.echo".into(), 2);
    for n in 0..40 {
        let command = if n % 2 == 0 {
            "github.commits"
        } else {
            "echo.echo"
        };
        a.insert_job(Job::new(command, vec![], 0, 0)).await.unwrap();
    }
    let unlimited = Job::new("echo.other", vec![], 0, 0);
    a.insert_job(unlimited.clone()).await.unwrap();
    let race = |store: Store, limits: ConcurrencyLimits| {
        tokio::spawn(async move { claim_all(&store, &limits).await })
    };
    let (ta, tb) = (
        race(a.clone(), limits.clone()),
        race(b.clone(), limits.clone()),
    );
    let claimed: Vec<Claimed> = ta
        .await
        .unwrap()
        .into_iter()
        .chain(tb.await.unwrap())
        .collect();
    let of = |command: &str| claimed.iter().filter(|c| c.job.command == command).count();
    assert_eq!(of("github.commits"), 3, "github's limit, across both nodes");
    assert_eq!(of("echo.echo"), 2, "echo.echo's limit");
    assert_eq!(of("echo.other"), 1, "an unlimited command passes");
    // A slot freed on one node is taken on the other.
    let done = claimed
        .iter()
        .find(|c| c.job.command == "github.commits")
        .unwrap();
    let outcome = Outcome::Completed(b"{}".to_vec());
    a.finish(done.job.id, done.attempt, outcome, AttemptReport::default())
        .await
        .unwrap();
    let next = claim_all(&b, &limits).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].job.command, "github.commits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_jobs_run_one_per_key_and_keys_take_turns() {
    let schema = TestSchema::create().await;
    let a = node(&schema, "a").await;
    let keyed = |key: &str| Job {
        concurrency_key: Some(key.into()),
        ..Job::new("github.commits", vec![], 0, 0)
    };
    let mut limits = ConcurrencyLimits::default();
    limits.running.insert("github".into(), 1);
    let first = keyed("a");
    a.insert_job(first.clone()).await.unwrap();
    let started = claim_all(&a, &limits).await;
    assert_eq!(started.len(), 1);
    let later_a: Vec<Job> = (0..3).map(|_| keyed("a")).collect();
    let b = keyed("b");
    for job in later_a.iter().chain([&b]) {
        a.insert_job(job.clone()).await.unwrap();
    }
    let mut order = vec![started[0].job.concurrency_key.clone().unwrap()];
    let mut running = started[0].clone();
    loop {
        let outcome = Outcome::Completed(b"{}".to_vec());
        a.finish(
            running.job.id,
            running.attempt,
            outcome,
            AttemptReport::default(),
        )
        .await
        .unwrap();
        let next = claim_all(&a, &limits).await;
        let Some(next) = next.into_iter().next() else {
            break;
        };
        order.push(next.job.concurrency_key.clone().unwrap());
        running = next;
    }
    // a's second job was waiting when a's first started, b's came later; then a's
    // third rejoins behind b.
    assert_eq!(order.concat(), "aabaa");
    // Without a plugin limit, one per key still.
    let schema = TestSchema::create().await;
    let a = node(&schema, "a").await;
    for key in ["x", "x", "y"] {
        a.insert_job(keyed(key)).await.unwrap();
    }
    let claimed = claim_all(&a, &ConcurrencyLimits::default()).await;
    let mut keys: Vec<String> = claimed
        .into_iter()
        .filter_map(|c| c.job.concurrency_key)
        .collect();
    keys.sort();
    assert_eq!(keys, ["x", "y"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_eligible_says_when_the_next_job_is_due() {
    let schema = TestSchema::create().await;
    let a = node(&schema, "a").await;
    assert!(matches!(
        shared(&a)
            .claim_next(None, &ConcurrencyLimits::default(), 1)
            .await
            .unwrap(),
        ClaimNext::NothingUntil(None)
    ));
    let mut later = Job::new("echo.echo", vec![], 0, 0);
    later.run_at = later.created_at + TimeDelta::minutes(10);
    a.insert_job(later.clone()).await.unwrap();
    match shared(&a)
        .claim_next(None, &ConcurrencyLimits::default(), 1)
        .await
        .unwrap()
    {
        ClaimNext::NothingUntil(Some(due)) => assert_eq!(due, later.run_at),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_on_one_node_wakes_the_others() {
    let schema = TestSchema::create().await;
    let (a, b) = (node(&schema, "a").await, node(&schema, "b").await);
    let mut wake = shared(&b).wake_ups();
    // The listener's first bump (it is connected) may or may not have been seen.
    let _ = tokio::time::timeout(Duration::from_secs(5), wake.changed()).await;
    wake.borrow_and_update();
    a.insert_job(Job::new("echo.echo", vec![], 0, 0))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), wake.changed())
        .await
        .expect("no wake-up within 5 s of a submit on another node")
        .unwrap();
    assert!(claim(&b, None).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_jobs_are_rescued_once_and_its_late_outcome_changes_nothing() {
    let schema = TestSchema::create().await;
    let (a, b) = (node(&schema, "a").await, node(&schema, "b").await);
    let job = Job::new("echo.echo", vec![], 0, 2);
    let spent = Job::new("echo.echo", vec![], 0, 0);
    a.insert_job(job.clone()).await.unwrap();
    a.insert_job(spent.clone()).await.unwrap();
    let first = claim(&a, None).await.unwrap();
    let second = claim(&a, None).await.unwrap();
    // Node a is alive: nothing to rescue.
    assert_eq!(
        shared(&b).rescue_expired(30_000).await.unwrap(),
        Rescued::default()
    );
    // Node a stops heartbeating (frozen, or dead) for longer than the lease.
    honeydew_testkit::run(
        schema.url(),
        "UPDATE nodes SET heartbeat_at = now() - interval '1 minute' WHERE id = 'a'",
    )
    .await
    .unwrap();
    let rescued = shared(&b).rescue_expired(30_000).await.unwrap();
    assert_eq!(
        rescued,
        Rescued {
            reset: 1,
            failed: 1,
            cancelled: 0
        }
    );
    assert_eq!(
        shared(&b).rescue_expired(30_000).await.unwrap(),
        Rescued::default()
    );
    let (retried, failed) = if first.job.id == job.id {
        (first, second)
    } else {
        (second, first)
    };
    let stored = b.get_job(job.id).await.unwrap();
    assert_eq!((stored.status, stored.retry_count), (JobStatus::Pending, 1));
    assert_eq!(stored.error_kind, Some(ErrorKind::Interrupted));
    assert!(
        stored.error.unwrap().contains("node a"),
        "says whose daemon died"
    );
    assert_eq!(b.get_job(spent.id).await.unwrap().status, JobStatus::Failed);
    let attempts = b.attempts(job.id).await.unwrap();
    assert_eq!(attempts[0].outcome.as_deref(), Some("interrupted"));

    // The rescuer runs it again; node a wakes up and reports its old attempt.
    let again = claim(&b, None).await.unwrap();
    assert_eq!((again.job.id, again.attempt), (job.id, 2));
    let report = AttemptReport {
        finished_at: Utc::now(),
        ..AttemptReport::default()
    };
    for (claimed, name) in [(&retried, "retried"), (&failed, "failed")] {
        let late = a
            .finish(
                claimed.job.id,
                claimed.attempt,
                Outcome::Completed(b"late".to_vec()),
                report.clone(),
            )
            .await;
        assert!(
            matches!(late, Err(StoreError::StaleTransition { .. })),
            "{name}: {late:?}"
        );
    }
    assert_eq!(b.get_job(job.id).await.unwrap().status, JobStatus::Running);
    b.finish(job.id, 2, Outcome::Completed(b"ok".to_vec()), report)
        .await
        .unwrap();
    assert_eq!(
        b.get_job(job.id).await.unwrap().result.as_deref(),
        Some(&b"ok"[..])
    );
}

/// Waits until `store`'s listener is connected (its first wake-up is the sign).
async fn listening(store: &Store) {
    let mut wake = shared(store).wake_ups();
    tokio::time::timeout(Duration::from_secs(5), wake.wait_for(|bumps| *bumps > 0))
        .await
        .expect("the listener connects within 5 s")
        .unwrap();
}

/// Waits for the first signal that `matches`, for at most 5 s.
async fn signal_where(
    signals: &mut tokio::sync::broadcast::Receiver<ClusterSignal>,
    matches: impl Fn(&ClusterSignal) -> bool,
) -> ClusterSignal {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let signal = signals.recv().await.expect("signals");
            if matches(&signal) {
                return signal;
            }
        }
    })
    .await
    .expect("no such signal within 5 s")
}

fn retry_outcome() -> Outcome {
    Outcome::Retry {
        kind: ErrorKind::PluginError,
        error: "try again".into(),
        run_at: Utc::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_asked_on_one_node_reaches_the_node_running_the_job() {
    let schema = TestSchema::create().await;
    // Other tests' nodes are named `a` and `b` too, in schemas of their own.
    let (id_a, id_b) = ("a".to_owned(), "b".to_owned());
    let (a, b) = (node(&schema, &id_a).await, node(&schema, &id_b).await);
    let mut to_a = shared(&a).signals();
    let mut to_b = shared(&b).signals();
    listening(&a).await;
    listening(&b).await;
    let job = Job::new("echo.echo", vec![], 0, 3);
    a.insert_job(job.clone()).await.unwrap();
    assert_eq!(
        shared(&b).request_cancel(job.id).await.unwrap(),
        None,
        "a pending job is not running anywhere"
    );
    let claimed = claim(&a, None).await.unwrap();
    let asked = shared(&b).request_cancel(job.id).await.unwrap();
    assert_eq!(asked, Some((id_a.clone(), claimed.attempt)));
    let heard = signal_where(&mut to_a, |s| {
        matches!(s, ClusterSignal::CancelRequested { .. })
    })
    .await;
    assert_eq!(
        heard,
        ClusterSignal::CancelRequested {
            id: job.id,
            attempt: claimed.attempt
        }
    );
    // Kept in the database too, for a node that missed the message.
    assert_eq!(
        shared(&a).cancels_requested().await.unwrap(),
        vec![(job.id, claimed.attempt)]
    );
    assert!(shared(&b).cancels_requested().await.unwrap().is_empty());
    // Node b, which does not run it, is not told.
    let stray = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let ClusterSignal::CancelRequested { .. } = to_b.recv().await.unwrap() {
                return;
            }
        }
    })
    .await;
    assert!(stray.is_err(), "the cancel went to node a only");
}

/// Regression: notification channels were database-wide, so a cancel asked in one
/// schema reached the node of the same id in every other schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_in_another_schema_is_not_heard_by_a_node_of_the_same_id() {
    let (one, two) = (TestSchema::create().await, TestSchema::create().await);
    let (in_one, in_two) = (node(&one, "n").await, node(&two, "n").await);
    let mut heard_in_two = shared(&in_two).signals();
    listening(&in_one).await;
    listening(&in_two).await;
    let elsewhere = Job::new("echo.echo", vec![], 0, 0);
    in_one.insert_job(elsewhere.clone()).await.unwrap();
    claim(&in_one, None).await.unwrap();
    assert!(
        shared(&in_one)
            .request_cancel(elsewhere.id)
            .await
            .unwrap()
            .is_some()
    );
    // Asked after the other schema's cancel committed: PostgreSQL delivers
    // notifications in commit order, so a leaked one would be heard first.
    let here = Job::new("echo.echo", vec![], 0, 0);
    in_two.insert_job(here.clone()).await.unwrap();
    let claimed = claim(&in_two, None).await.unwrap();
    assert!(
        shared(&in_two)
            .request_cancel(here.id)
            .await
            .unwrap()
            .is_some()
    );
    let heard = signal_where(&mut heard_in_two, |s| {
        matches!(s, ClusterSignal::CancelRequested { .. })
    })
    .await;
    assert_eq!(
        heard,
        ClusterSignal::CancelRequested {
            id: here.id,
            attempt: claimed.attempt
        },
        "the first cancel heard in schema two is its own"
    );
}

/// Regression: the trigger functions looked `job_watches` up on the caller's search
/// path, so an update of the jobs from a session whose path lacks the schema (psql
/// with the default path) failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_can_be_updated_from_a_session_whose_search_path_lacks_the_schema() {
    let schema = TestSchema::create().await;
    let store = node(&schema, "a").await;
    let job = Job::new("echo.echo", vec![], 0, 0);
    store.insert_job(job.clone()).await.unwrap();
    let mut wake = shared(&store).wake_ups();
    listening(&store).await;
    wake.borrow_and_update();
    honeydew_testkit::run(
        honeydew_testkit::server_url(),
        &format!(
            "UPDATE {}.jobs SET priority = 7 WHERE id = '{}'",
            schema.name(),
            job.id
        ),
    )
    .await
    .expect("the update and its triggers run outside the daemon's search path");
    tokio::time::timeout(Duration::from_secs(5), wake.changed())
        .await
        .expect("the pending job's update wakes the schema's nodes within 5 s")
        .unwrap();
    assert_eq!(store.get_job(job.id).await.unwrap().priority, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_ending_in_a_retry_after_a_cancel_was_asked_ends_cancelled() {
    let schema = TestSchema::create().await;
    let (a, b) = (node(&schema, "a").await, node(&schema, "b").await);
    let job = Job::new("echo.echo", vec![], 0, 3);
    a.insert_job(job.clone()).await.unwrap();
    let claimed = claim(&a, None).await.unwrap();
    shared(&b).request_cancel(job.id).await.unwrap().unwrap();
    // Node a's plugin failed retriably before the cancel reached its sandbox.
    let report = AttemptReport {
        finished_at: Utc::now(),
        ..AttemptReport::default()
    };
    a.finish(job.id, claimed.attempt, retry_outcome(), report)
        .await
        .unwrap();
    let stored = a.get_job(job.id).await.unwrap();
    assert_eq!(stored.status, JobStatus::Cancelled);
    assert_eq!(stored.error_kind, Some(ErrorKind::Cancelled));
    assert_eq!(stored.retry_count, 0, "no retry spent on a cancelled job");
    assert!(stored.completed_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_ending_in_a_snooze_after_a_cancel_was_asked_ends_cancelled() {
    let schema = TestSchema::create().await;
    let (a, b) = (node(&schema, "a").await, node(&schema, "b").await);
    let job = Job::new("snoozer.snooze", vec![], 0, 3);
    a.insert_job(job.clone()).await.unwrap();
    let claimed = claim(&a, None).await.unwrap();
    shared(&b).request_cancel(job.id).await.unwrap().unwrap();
    // Node a's plugin snoozed before the cancel reached its sandbox.
    let snoozed = Outcome::Snoozed {
        reason: "later".into(),
        run_at: Utc::now() + TimeDelta::hours(1),
    };
    let report = AttemptReport {
        finished_at: Utc::now(),
        ..AttemptReport::default()
    };
    a.finish(job.id, claimed.attempt, snoozed, report)
        .await
        .unwrap();
    let stored = a.get_job(job.id).await.unwrap();
    assert_eq!(stored.status, JobStatus::Cancelled);
    assert_eq!(stored.error_kind, Some(ErrorKind::Cancelled));
    assert_eq!(
        stored.snooze_count, 0,
        "no snooze counted on a cancelled job"
    );
    assert!(stored.completed_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_job_whose_cancel_was_asked_is_cancelled_not_rescued() {
    let schema = TestSchema::create().await;
    let (a, b) = (node(&schema, "a").await, node(&schema, "b").await);
    let job = Job::new("echo.echo", vec![], 0, 3);
    a.insert_job(job.clone()).await.unwrap();
    claim(&a, None).await.unwrap();
    shared(&b).request_cancel(job.id).await.unwrap().unwrap();
    honeydew_testkit::run(
        schema.url(),
        "UPDATE nodes SET heartbeat_at = now() - interval '1 minute' WHERE id = 'a'",
    )
    .await
    .unwrap();
    assert_eq!(
        shared(&b).rescue_expired(30_000).await.unwrap(),
        Rescued {
            reset: 0,
            failed: 0,
            cancelled: 1
        }
    );
    let stored = b.get_job(job.id).await.unwrap();
    assert_eq!(stored.status, JobStatus::Cancelled);
    assert!(claim(&b, None).await.is_none(), "nothing left to run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_claim_starts_without_the_cancel_asked_of_an_earlier_attempt() {
    let schema = TestSchema::create().await;
    let a = node(&schema, "a").await;
    let job = Job::new("echo.echo", vec![], 0, 3);
    a.insert_job(job.clone()).await.unwrap();
    let first = claim(&a, None).await.unwrap();
    shared(&a).request_cancel(job.id).await.unwrap().unwrap();
    // The attempt was cut by a shutdown before the cancel reached its sandbox: the job
    // does not go back to pending, it ends cancelled as asked.
    let report = AttemptReport {
        finished_at: Utc::now(),
        ..AttemptReport::default()
    };
    a.finish(job.id, first.attempt, Outcome::Interrupted, report)
        .await
        .unwrap();
    assert_eq!(
        a.get_job(job.id).await.unwrap().status,
        JobStatus::Cancelled
    );

    // A job that really goes back to pending and is claimed again starts clean.
    let other = Job::new("echo.echo", vec![], 0, 3);
    a.insert_job(other.clone()).await.unwrap();
    let first = claim(&a, None).await.unwrap();
    let report = AttemptReport {
        finished_at: Utc::now(),
        ..AttemptReport::default()
    };
    a.finish(other.id, first.attempt, retry_outcome(), report)
        .await
        .unwrap();
    let again = claim(&a, None).await.unwrap();
    assert_eq!((again.job.id, again.attempt), (other.id, 2));
    assert!(shared(&a).cancels_requested().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_jobs_changes_are_announced_to_every_node() {
    let schema = TestSchema::create().await;
    let (a, b) = (node(&schema, "a").await, node(&schema, "b").await);
    let mut changes = shared(&b).job_changes();
    listening(&b).await;
    let job = Job::new("echo.echo", vec![], 0, 3);
    shared(&b).watch(&[job.id]).await.unwrap();
    a.insert_job(job.clone()).await.unwrap();
    let claimed = claim(&a, None).await.unwrap();
    let report = AttemptReport {
        finished_at: Utc::now(),
        ..AttemptReport::default()
    };
    a.finish(
        job.id,
        claimed.attempt,
        Outcome::Completed(b"ok".to_vec()),
        report,
    )
    .await
    .unwrap();
    let mut heard = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while heard.len() < 3 {
            let change: JobChange = changes.recv().await.unwrap();
            if change.id == job.id {
                heard.push((change.status, change.attempt));
            }
        }
    })
    .await
    .expect("three changes within 5 s");
    assert_eq!(
        heard,
        [
            (JobStatus::Pending, 0),
            (JobStatus::Running, 1),
            (JobStatus::Completed, 1)
        ]
    );
    // A submit of many jobs in one statement is announced in full (100 to a payload).
    let many: Vec<Job> = (0..250)
        .map(|_| Job::new("echo.echo", vec![], 0, 0))
        .collect();
    let ids: HashSet<_> = many.iter().map(|job| job.id).collect();
    let watched: Vec<JobId> = ids.iter().copied().collect();
    shared(&b).watch(&watched).await.unwrap();
    let inserts = many.into_iter().map(|job| {
        let a = a.clone();
        async move { a.insert_job(job).await.unwrap() }
    });
    futures_util::future::join_all(inserts).await;
    let mut seen = HashSet::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while seen.len() < ids.len() {
            let change = changes.recv().await.unwrap();
            if ids.contains(&change.id) {
                seen.insert(change.id);
            }
        }
    })
    .await
    .expect("every submit announced within 5 s");
}

/// Announcements are read in commit order: once `marker`'s insert is heard, every
/// change committed before it would have been heard too. The ids heard until then.
async fn heard_until(
    changes: &mut tokio::sync::broadcast::Receiver<JobChange>,
    marker: JobId,
) -> HashSet<JobId> {
    let mut heard = HashSet::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let change = changes.recv().await.unwrap();
            if change.id == marker {
                return;
            }
            heard.insert(change.id);
        }
    })
    .await
    .expect("the marker job announced within 5 s");
    heard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_of_jobs_nobody_watches_are_not_announced() {
    let schema = TestSchema::create().await;
    let (a, b) = (node(&schema, "a").await, node(&schema, "b").await);
    let mut changes = shared(&b).job_changes();
    listening(&b).await;
    // A whole life, submit to completion, of a job nobody watches...
    let quiet = Job::new("echo.echo", vec![], 0, 3);
    a.insert_job(quiet.clone()).await.unwrap();
    let claimed = claim(&a, None).await.unwrap();
    let report = AttemptReport {
        finished_at: Utc::now(),
        ..AttemptReport::default()
    };
    a.finish(
        quiet.id,
        claimed.attempt,
        Outcome::Completed(vec![]),
        report,
    )
    .await
    .unwrap();
    // ...then a watched one, committed after it.
    let marker = Job::new("echo.echo", vec![], 0, 0);
    shared(&a).watch(&[marker.id]).await.unwrap();
    a.insert_job(marker.clone()).await.unwrap();
    let heard = heard_until(&mut changes, marker.id).await;
    assert!(
        !heard.contains(&quiet.id),
        "an unwatched job's changes were announced"
    );

    // A watch held twice on a node lasts until both end; then the job goes quiet.
    let job = Job::new("echo.echo", vec![], 0, 3);
    shared(&b).watch(&[job.id]).await.unwrap();
    shared(&b).watch(&[job.id]).await.unwrap();
    shared(&b).unwatch(&[job.id]).await.unwrap();
    a.insert_job(job.clone()).await.unwrap();
    let marker = Job::new("echo.echo", vec![], 0, 0);
    shared(&a).watch(&[marker.id]).await.unwrap();
    a.insert_job(marker.clone()).await.unwrap();
    assert!(
        heard_until(&mut changes, marker.id).await.contains(&job.id),
        "still watched once"
    );
    shared(&b).unwatch(&[job.id]).await.unwrap();
    claim(&a, None).await.unwrap();
    let marker = Job::new("echo.echo", vec![], 0, 0);
    shared(&a).watch(&[marker.id]).await.unwrap();
    a.insert_job(marker.clone()).await.unwrap();
    assert!(
        !heard_until(&mut changes, marker.id).await.contains(&job.id),
        "no watch left, yet announced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_watches_end_with_its_rescue() {
    let schema = TestSchema::create().await;
    let (a, b) = (node(&schema, "a").await, node(&schema, "b").await);
    let mut changes = shared(&a).job_changes();
    listening(&a).await;
    let job = Job::new("echo.echo", vec![], 0, 0);
    shared(&b).watch(&[job.id]).await.unwrap();
    drop(b);
    // b stops heartbeating for longer than the lease.
    honeydew_testkit::run(
        schema.url(),
        "UPDATE nodes SET heartbeat_at = now() - interval '1 minute' WHERE id = 'b'",
    )
    .await
    .unwrap();
    shared(&a).rescue_expired(30_000).await.unwrap();
    a.insert_job(job.clone()).await.unwrap();
    let marker = Job::new("echo.echo", vec![], 0, 0);
    shared(&a).watch(&[marker.id]).await.unwrap();
    a.insert_job(marker.clone()).await.unwrap();
    assert!(
        !heard_until(&mut changes, marker.id).await.contains(&job.id),
        "a dead node's watch outlived its rescue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_submitting_one_unique_key_at_once_store_one_job() {
    let schema = TestSchema::create().await;
    let (a, b) = (node(&schema, "a").await, node(&schema, "b").await);
    let submits = (0..32).map(|n| {
        let store = if n % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move {
            let unique = Uniqueness {
                key: "tenant:42".into(),
                within: None,
                states: Uniqueness::DEFAULT_STATES.to_vec(),
                replace: false,
            };
            store
                .insert_unique(Job::new("echo.echo", vec![], 0, 0), unique)
                .await
                .unwrap()
        })
    });
    let answers: Vec<UniqueInsert> = futures_util::future::join_all(submits)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let inserted = answers
        .iter()
        .filter(|answer| **answer == UniqueInsert::Inserted)
        .count();
    assert_eq!(inserted, 1, "{answers:?}");
    let pending = claim(&a, None).await;
    assert!(pending.is_some());
    assert!(claim(&b, None).await.is_none(), "one job in all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_holds_jobs_back_from_every_nodes_claims() {
    let schema = TestSchema::create().await;
    let (a, b) = (node(&schema, "a").await, node(&schema, "b").await);
    let held = Job::new("echo.echo", vec![], 9, 0);
    let other = Job::new("github.commits", vec![], 0, 0);
    for job in [&held, &other] {
        a.insert_job(job.clone()).await.unwrap();
    }
    assert!(a.pause("echo".into(), Utc::now()).await.unwrap());
    let first = claim(&b, None).await.unwrap();
    assert_eq!(first.job.id, other.id, "the paused plugin's job is skipped");
    // Nothing else is eligible: no due time either, so idle workers sleep rather than
    // spin on the held job.
    match shared(&b)
        .claim_next(None, &ConcurrencyLimits::default(), 1)
        .await
        .unwrap()
    {
        ClaimNext::NothingUntil(due) => assert_eq!(due, None),
        ClaimNext::Claimed(claimed) => panic!("claimed {:?} while paused", claimed.job.id),
    }
    let mut wake = shared(&b).wake_ups();
    listening(&b).await;
    wake.borrow_and_update();
    assert!(a.resume("echo".into()).await.unwrap());
    tokio::time::timeout(Duration::from_secs(5), wake.changed())
        .await
        .expect("the resume wakes the other node within 5 s")
        .unwrap();
    assert_eq!(claim(&b, None).await.unwrap().job.id, held.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_hold_keeps_its_plugins_jobs_from_every_nodes_claims_until_it_ends() {
    let schema = TestSchema::create().await;
    let (a, b) = (node(&schema, "a").await, node(&schema, "b").await);
    let held = Job::new("github.commits", vec![], 9, 0);
    let other = Job::new("echo.echo", vec![], 0, 0);
    for job in [&held, &other] {
        a.insert_job(job.clone()).await.unwrap();
    }
    let until = Utc::now() + TimeDelta::milliseconds(1500);
    a.hold_rate_limit(RateLimitHold {
        plugin: "github".into(),
        host: "https://api.github.com".into(),
        credential: String::new(),
        until,
        learned_at: Utc::now(),
        node: Some("a".into()),
    })
    .await
    .unwrap();
    let first = claim(&b, None).await.unwrap();
    assert_eq!(first.job.id, other.id, "the held plugin's job is skipped");
    // Idle workers sleep until the hold ends rather than spin on the held job.
    match shared(&b)
        .claim_next(None, &ConcurrencyLimits::default(), 1)
        .await
        .unwrap()
    {
        ClaimNext::NothingUntil(due) => {
            let due = due.expect("a due time: the hold's end");
            assert!(
                (due - until).num_milliseconds().abs() <= 1,
                "{due} vs {until}"
            );
        }
        ClaimNext::Claimed(claimed) => panic!("claimed {:?} while held", claimed.job.id),
    }
    // The hold's end is the behaviour under test: wait for it to pass.
    tokio::time::sleep((until - Utc::now()).to_std().unwrap_or_default()).await;
    assert_eq!(claim(&b, None).await.unwrap().job.id, held.id);
}
