//! The shared queue of PostgreSQL, where several daemons (nodes) claim from one
//! database: claims across nodes, the wake-ups, the rescue of a dead node's jobs, and
//! the fence that keeps a presumed-dead node from overwriting what the rescuer decided.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use honeydew_core::job::{ErrorKind, Job, JobStatus};
use honeydew_core::store::{
    AttemptReport, ClaimNext, Claimed, Outcome, Rescued, SharedQueue, Store, StoreError,
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
    match shared(store).claim_next(commands, 1).await.unwrap() {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_eligible_says_when_the_next_job_is_due() {
    let schema = TestSchema::create().await;
    let a = node(&schema, "a").await;
    assert!(matches!(
        shared(&a).claim_next(None, 1).await.unwrap(),
        ClaimNext::NothingUntil(None)
    ));
    let mut later = Job::new("echo.echo", vec![], 0, 0);
    later.run_at = later.created_at + TimeDelta::minutes(10);
    a.insert_job(later.clone()).await.unwrap();
    match shared(&a).claim_next(None, 1).await.unwrap() {
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
            failed: 1
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
