//! Several daemons on one PostgreSQL database, as a team that outgrew one machine runs
//! them: each with its own data directory, plugins and socket, all sharing one queue.
//! Every job runs once (counted outside the daemons, by the loopback server the jobs
//! call); a daemon killed mid-run has its jobs rescued by the others after its lease; a
//! daemon frozen past its lease and resumed changes nothing it no longer owns; a cancel
//! sent to any daemon stops the job where it runs, a watch on any daemon sees it; a
//! schedule fires once per instant across all of them, whichever daemon added it.
//!
//! Sizes are small here (`HONEYDEW_CLUSTER_JOBS`, 1500 by default); `just cluster-test`
//! runs the full 10k.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use honeydew_testkit::TestSchema;

use honeydew::api::pb::{self, CancelOutcome, JobStatus, schedules_client::SchedulesClient};

use crate::support::{Daemon, DataDir, HttpStub, queue, running, submit, watch_to_end};

/// One daemon of the cluster, with its data directory.
struct Node {
    data: DataDir,
    daemon: Option<Daemon>,
}

impl Node {
    fn start(schema: &TestSchema, plugins: &[&str], lease_ms: u64) -> Node {
        Node::start_with(schema, plugins, lease_ms, &[])
    }

    fn start_with(schema: &TestSchema, plugins: &[&str], lease_ms: u64, extra: &[&str]) -> Node {
        let data = DataDir::with_plugins(plugins);
        let lease = lease_ms.to_string();
        // PostgreSQL allows 100 connections by default, and two tests of three daemons
        // may run at once: 4 + 2 + 1 each.
        let mut args = vec![
            "--database-url",
            schema.url(),
            "--lease-ms",
            &lease,
            "--database-pool-size",
            "4",
        ];
        args.extend_from_slice(extra);
        let daemon = Daemon::start(&data, &args);
        Node {
            data,
            daemon: Some(daemon),
        }
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("running")
    }

    fn node_id(&self) -> String {
        std::fs::read_to_string(self.data.path().join("node-id"))
            .expect("node id")
            .trim()
            .to_owned()
    }
}

/// One row of `sql`'s answer, as text.
async fn query(schema: &TestSchema, sql: &str) -> Vec<Vec<String>> {
    let (client, connection) = tokio_postgres::connect(schema.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .simple_query(sql)
        .await
        .expect(sql)
        .into_iter()
        .filter_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("").to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

async fn count(schema: &TestSchema, sql: &str) -> usize {
    query(schema, sql).await[0][0].parse().expect("a count")
}

/// Waits until `sql` counts `expected`, looking every 50 ms, for at most `within`.
async fn wait_for_count(schema: &TestSchema, sql: &str, expected: usize, within: Duration) {
    let started = Instant::now();
    loop {
        let now = count(schema, sql).await;
        if now == expected {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{sql}: {now}, not {expected}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_daemons_share_one_queue_and_run_every_job_once() {
    let jobs: usize = std::env::var("HONEYDEW_CLUSTER_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1500);
    let schema = TestSchema::create().await;
    let stub = HttpStub::start(|_, _| (200, "{}".into())).await;
    let nodes: Vec<Node> = (0..3)
        .map(|_| Node::start(&schema, &["fetch"], 30_000))
        .collect();
    let mut channels = Vec::new();
    for node in &nodes {
        channels.push(node.daemon().connect().await);
    }
    // Submits spread over the three daemons, 32 at a time.
    let started = Instant::now();
    let mut submitting = tokio::task::JoinSet::new();
    for client in 0..32 {
        let channel = channels[client % 3].clone();
        let base = stub.base_url.clone();
        submitting.spawn(async move {
            for n in (client..jobs).step_by(32) {
                let payload = format!(r#"{{"url": "{base}/job/{n}"}}"#);
                submit(&channel, "fetch.get", &payload).await;
            }
        });
    }
    submitting.join_all().await;
    wait_for_count(
        &schema,
        "SELECT count(*) FROM jobs WHERE status = 'completed'",
        jobs,
        Duration::from_secs(300),
    )
    .await;
    let elapsed = started.elapsed();
    eprintln!(
        "{jobs} jobs over 3 daemons in {:.2} s: {:.0} jobs/s",
        elapsed.as_secs_f64(),
        jobs as f64 / elapsed.as_secs_f64()
    );

    // Each job ran exactly once, counted by the server they called.
    let mut calls: HashMap<String, usize> = HashMap::new();
    for request in stub.received() {
        *calls.entry(request.line).or_default() += 1;
    }
    assert_eq!(calls.len(), jobs, "every job called once");
    assert!(calls.values().all(|&n| n == 1), "no job called twice");
    assert_eq!(
        count(&schema, "SELECT count(*) FROM job_attempts").await,
        jobs,
        "one attempt each"
    );
    // And the work was shared.
    let by_node = query(
        &schema,
        "SELECT node_id, count(*) FROM job_attempts GROUP BY node_id ORDER BY node_id",
    )
    .await;
    let ids: Vec<String> = {
        let mut ids: Vec<String> = nodes.iter().map(Node::node_id).collect();
        ids.sort();
        ids
    };
    let ran: Vec<String> = by_node.iter().map(|row| row[0].clone()).collect();
    assert_eq!(ran, ids, "every daemon ran jobs: {by_node:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_daemons_jobs_are_rescued_by_the_others_after_its_lease() {
    let lease_ms = 2_000;
    let schema = TestSchema::create().await;
    let mut nodes: Vec<Node> = (0..3)
        .map(|_| Node::start(&schema, &["spin"], lease_ms))
        .collect();
    let channel = nodes[0].daemon().connect().await;
    // More one-second jobs than the three daemons' workers: some wait.
    let total = 60;
    for _ in 0..total {
        submit(&channel, "spin.sleep", r#"{"ms": 1000}"#).await;
    }
    let victim = nodes.remove(1);
    let victim_id = victim.node_id();
    let running_there =
        format!("SELECT count(*) FROM jobs WHERE status = 'running' AND node_id = '{victim_id}'");
    let started = Instant::now();
    while count(&schema, &running_there).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the victim never ran a job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed_at = Instant::now();
    let mut victim = victim;
    victim.daemon.take().expect("running").kill();
    let lost: Vec<String> = query(
        &schema,
        &format!("SELECT id FROM jobs WHERE status = 'running' AND node_id = '{victim_id}'"),
    )
    .await
    .into_iter()
    .map(|row| row[0].clone())
    .collect();

    wait_for_count(
        &schema,
        "SELECT count(*) FROM jobs WHERE status = 'completed'",
        total,
        Duration::from_secs(60),
    )
    .await;
    let rescued_in = killed_at.elapsed();
    eprintln!(
        "all jobs done {:.2} s after the kill (lease {lease_ms} ms)",
        rescued_in.as_secs_f64()
    );
    // The lost attempts are counted and say why; only those jobs ran twice.
    let interrupted = query(
        &schema,
        "SELECT job_id, error FROM job_attempts WHERE outcome = 'interrupted'",
    )
    .await;
    let mut interrupted_ids: Vec<String> = interrupted.iter().map(|row| row[0].clone()).collect();
    interrupted_ids.sort();
    let mut lost_sorted = lost.clone();
    lost_sorted.sort();
    assert!(!lost.is_empty());
    // A job the victim claimed between the two reads above may be among them too.
    assert!(
        lost_sorted.iter().all(|id| interrupted_ids.contains(id)),
        "every job the victim was running was rescued: {lost_sorted:?} vs {interrupted_ids:?}"
    );
    assert!(
        interrupted
            .iter()
            .all(|row| row[1].contains(&victim_id) && row[1].contains("stopped heartbeating")),
        "{interrupted:?}"
    );
    let twice = count(
        &schema,
        "SELECT count(*) FROM (SELECT job_id FROM job_attempts GROUP BY job_id HAVING count(*) > 1) t",
    )
    .await;
    assert_eq!(
        twice,
        interrupted_ids.len(),
        "duplicates only among the victim's jobs"
    );
    assert_eq!(
        count(&schema, "SELECT count(*) FROM jobs WHERE retry_count > 0").await,
        interrupted_ids.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_daemon_resumed_past_its_lease_changes_nothing_it_no_longer_owns() {
    let lease_ms = 1_500;
    let schema = TestSchema::create().await;
    let frozen = Node::start(&schema, &["spin"], lease_ms);
    let channel = frozen.daemon().connect().await;
    let frozen_id = frozen.node_id();
    let job = submit(&channel, "spin.sleep", r#"{"ms": 2500}"#).await;
    wait_for_count(
        &schema,
        &format!("SELECT count(*) FROM jobs WHERE status = 'running' AND node_id = '{frozen_id}'"),
        1,
        Duration::from_secs(10),
    )
    .await;
    frozen.daemon().signal("STOP");
    // Another daemon joins, finds the frozen one's lease expired, and runs the job again.
    let rescuer = Node::start(&schema, &["spin"], lease_ms);
    let done = format!(
        "SELECT count(*) FROM jobs WHERE id = '{job}' AND status = 'completed' AND attempt = 2"
    );
    wait_for_count(&schema, &done, 1, Duration::from_secs(30)).await;
    let before = query(
        &schema,
        &format!("SELECT status, attempt, result, updated_at FROM jobs WHERE id = '{job}'"),
    )
    .await;

    // The frozen daemon wakes: its sandbox finishes attempt 1, whose outcome is refused.
    frozen.daemon().signal("CONT");
    let mut frozen = frozen;
    let daemon = frozen.daemon.as_mut().expect("running");
    assert!(
        daemon.wait_for_line("the job moved on while this attempt ran"),
        "the frozen daemon's late outcome is refused"
    );
    let after = query(
        &schema,
        &format!("SELECT status, attempt, result, updated_at FROM jobs WHERE id = '{job}'"),
    )
    .await;
    assert_eq!(after, before, "what the rescuer decided stands");
    let attempts = query(
        &schema,
        &format!("SELECT attempt, outcome, node_id FROM job_attempts WHERE job_id = '{job}' ORDER BY attempt"),
    )
    .await;
    assert_eq!(attempts[0][1], "interrupted");
    assert_eq!(attempts[0][2], frozen_id);
    assert_eq!(attempts[1][1], "completed");
    assert_eq!(attempts[1][2], rescuer.node_id());
    // Both daemons go on serving.
    let next = submit(&channel, "spin.sleep", r#"{"ms": 10}"#).await;
    wait_for_count(
        &schema,
        &format!("SELECT count(*) FROM jobs WHERE id = '{next}' AND status = 'completed'"),
        1,
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_sent_to_any_daemon_stops_the_job_where_it_runs_and_every_daemon_sees_it() {
    let schema = TestSchema::create().await;
    let nodes: Vec<Node> = (0..3)
        .map(|_| Node::start_with(&schema, &["spin"], 30_000, &["--timeout-ms", "120000"]))
        .collect();
    let mut channels = Vec::new();
    for node in &nodes {
        channels.push(node.daemon().connect().await);
    }
    let job = submit(&channels[0], "spin.sleep", r#"{"ms": 60000}"#).await;
    running(&channels[0], &job).await;
    let runner_id = query(
        &schema,
        &format!("SELECT node_id FROM jobs WHERE id = '{job}'"),
    )
    .await[0][0]
        .clone();
    let runner = nodes
        .iter()
        .position(|node| node.node_id() == runner_id)
        .expect("one of the three runs it");
    let others: Vec<usize> = (0..3).filter(|&n| n != runner).collect();
    let (canceller, watcher) = (others[0], others[1]);

    // A watch on a daemon that does not run the job...
    let watching = {
        let channel = channels[watcher].clone();
        let job = job.clone();
        tokio::spawn(async move { watch_to_end(&channel, &job).await })
    };
    // ... and a cancel sent to another one that does not either.
    let asked = Instant::now();
    let outcome = queue(&channels[canceller])
        .cancel_job(pb::CancelJobRequest {
            job_id: job.clone(),
        })
        .await
        .expect("cancel")
        .into_inner()
        .outcome();
    assert_eq!(outcome, CancelOutcome::Cancelling);
    let updates = watching.await.expect("watch");
    let stopped_in = asked.elapsed();
    let statuses: Vec<JobStatus> = updates.iter().map(|update| update.status()).collect();
    assert_eq!(
        statuses,
        [JobStatus::Running, JobStatus::Cancelled],
        "the watcher saw it run, then end cancelled"
    );
    assert!(
        stopped_in < Duration::from_secs(10),
        "the sandbox of a 60 s job stopped {stopped_in:?} after the cancel"
    );
    let attempts = query(
        &schema,
        &format!("SELECT outcome, node_id FROM job_attempts WHERE job_id = '{job}'"),
    )
    .await;
    assert_eq!(attempts, [["cancelled".to_owned(), runner_id]]);
    eprintln!("a cancel through another daemon stopped the job in {stopped_in:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_every_second_submits_one_job_per_instant_across_three_daemons() {
    let schema = TestSchema::create().await;
    let mut nodes: Vec<Node> = (0..3)
        .map(|_| Node::start(&schema, &["echo"], 30_000))
        .collect();
    let mut channels = Vec::new();
    for node in &nodes {
        channels.push(node.daemon().connect().await);
    }
    // Added on the first daemon, which then stops: the other two keep it going.
    SchedulesClient::new(channels[0].clone())
        .schedule_job(pb::ScheduleJobRequest {
            name: "every-second".into(),
            cron_expr: "* * * * * *".into(),
            command: "echo.echo".into(),
            payload: b"{}".to_vec(),
            ..Default::default()
        })
        .await
        .expect("schedule");
    let jobs = "SELECT count(*) FROM jobs WHERE command = 'echo.echo'";
    let started = Instant::now();
    while count(&schema, jobs).await < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the schedule never fired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = nodes.remove(0).daemon.take().expect("running").terminate();
    assert!(status.success());
    let before = count(&schema, jobs).await;
    while count(&schema, jobs).await < before + 4 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the other daemons did not go on firing the schedule"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Removed on the second daemon: the third stops firing it too.
    SchedulesClient::new(channels[1].clone())
        .unschedule_job(pb::UnscheduleJobRequest {
            schedule: "every-second".into(),
        })
        .await
        .expect("unschedule");
    let removed = count(&schema, jobs).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = count(&schema, jobs).await;
    assert!(
        after <= removed + 1,
        "{} jobs after the schedule was removed",
        after - removed
    );

    // One job per instant: as many jobs as whole seconds from the first to the last,
    // never two in one second.
    let span = query(
        &schema,
        "SELECT count(*), round(extract(epoch FROM max(created_at) - min(created_at)))::int \
         FROM jobs WHERE command = 'echo.echo'",
    )
    .await;
    let (total, seconds): (usize, usize) =
        (span[0][0].parse().unwrap(), span[0][1].parse().unwrap());
    assert_eq!(
        total,
        seconds + 1,
        "one job per instant, none missed, none doubled"
    );
    let doubled = count(
        &schema,
        "SELECT count(*) FROM (SELECT date_trunc('second', created_at) FROM jobs \
         WHERE command = 'echo.echo' GROUP BY 1 HAVING count(*) > 1) t",
    )
    .await;
    assert_eq!(doubled, 0);
    assert_eq!(
        count(&schema, "SELECT count(*) FROM jobs WHERE command = 'echo.echo' AND status <> 'completed' AND created_at < now() - interval '5 seconds'").await,
        0,
        "and every one of them ran"
    );
}
