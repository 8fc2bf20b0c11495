//! Cron schedules end to end through the daemon: an every-second schedule submits jobs
//! that complete, removal stops it, schedules survive a restart, the misfire policies
//! after a real downtime, and the CLI's `schedule add|rm|ls` with its refusals. Fires
//! are awaited on the daemon's own `schedule triggered` log line and on `WatchJob`;
//! only "no more jobs" is observed over a bounded window, since nothing announces it.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, SubsecRound, TimeDelta, Timelike, Utc};
use honeydew::api::pb::{self, JobStatus, schedules_client::SchedulesClient};
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{
    Daemon, DataDir, finished, get, honeydew, honeydew_command, queue, result_text, run_cli,
    stderr, stdout,
};

/// An every-second schedule of `echo.echo` with `payload`.
fn every_second(name: &str, payload: &str) -> pb::ScheduleJobRequest {
    pb::ScheduleJobRequest {
        name: name.into(),
        cron_expr: "* * * * * *".into(),
        command: "echo.echo".into(),
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn schedules(channel: &Channel) -> SchedulesClient<Channel> {
    SchedulesClient::new(channel.clone())
}

async fn add(channel: &Channel, request: pb::ScheduleJobRequest) -> pb::Schedule {
    schedules(channel)
        .schedule_job(request)
        .await
        .expect("schedule job")
        .into_inner()
        .schedule
        .expect("the stored schedule")
}

async fn list(channel: &Channel) -> Vec<pb::Schedule> {
    schedules(channel)
        .list_schedules(pb::ListSchedulesRequest {})
        .await
        .expect("list schedules")
        .into_inner()
        .schedules
}

/// Every `echo.echo` job in the store.
async fn echo_jobs(channel: &Channel) -> Vec<pb::Job> {
    let request = pb::ListJobsRequest {
        command: "echo.echo".into(),
        limit: 1000,
        ..Default::default()
    };
    queue(channel)
        .list_jobs(request)
        .await
        .expect("list jobs")
        .into_inner()
        .jobs
}

/// Waits for the daemon to log that schedule `name` triggered; returns the job's id.
fn triggered_job(daemon: &mut Daemon, name: &str) -> String {
    loop {
        let line = daemon
            .line_containing("schedule triggered")
            .unwrap_or_else(|| panic!("honeydewd exited before schedule {name} triggered"));
        if !line.contains(&format!("schedule_name={name} ")) {
            continue;
        }
        let job_id = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("job_id="))
            .unwrap_or_else(|| panic!("no job_id in {line:?}"));
        return job_id.to_owned();
    }
}

fn time(timestamp: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let timestamp = timestamp?;
    DateTime::from_timestamp(timestamp.seconds, timestamp.nanos as u32)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_every_second_submits_jobs_that_complete() {
    let data = DataDir::with_plugins(&["echo"]);
    let mut daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;

    let before = Utc::now();
    let added = add(
        &channel,
        pb::ScheduleJobRequest {
            priority: 5,
            max_retries: Some(2),
            ..every_second("ticker", r#"{"tick":true}"#)
        },
    )
    .await;
    assert_eq!(added.name, "ticker");
    assert_eq!(added.cron_expr, "* * * * * *");
    assert_eq!(added.timezone, "UTC", "UTC when no zone is given");
    assert_eq!(added.misfire(), pb::MisfirePolicy::Skip);
    assert!(added.enabled);
    assert_eq!(added.last_run_at, None);
    assert_eq!(added.last_job_id, "");
    let next = time(added.next_run_at.as_ref()).expect("a next run");
    assert!(
        next > before && next <= Utc::now() + TimeDelta::seconds(1),
        "next run {next} is the coming second"
    );

    let first = triggered_job(&mut daemon, "ticker");
    let second = triggered_job(&mut daemon, "ticker");
    assert_ne!(first, second, "one job per instant");
    for id in [&first, &second] {
        let job = finished(&channel, id).await;
        assert_eq!(job.status(), JobStatus::Completed, "{job:?}");
        assert_eq!(job.command, "echo.echo");
        assert_eq!(job.priority, 5);
        assert_eq!(job.max_retries, 2);
        assert_eq!(result_text(&job), r#"{"tick":true}"#);
    }

    let jobs: HashSet<String> = echo_jobs(&channel)
        .await
        .into_iter()
        .map(|job| job.id)
        .collect();
    assert!(jobs.contains(&first) && jobs.contains(&second), "{jobs:?}");

    let [schedule] = &list(&channel).await[..] else {
        panic!("one schedule expected");
    };
    assert_eq!(schedule.id, added.id);
    // The schedule may have fired again since: its last job is one of its own.
    let last_job = get(&channel, &schedule.last_job_id).await;
    assert_eq!(
        (last_job.command.as_str(), last_job.payload.as_slice()),
        ("echo.echo", &br#"{"tick":true}"#[..])
    );
    let last_run = time(schedule.last_run_at.as_ref()).expect("a last run");
    let next_run = time(schedule.next_run_at.as_ref()).expect("a next run");
    assert!(last_run > before, "{last_run}");
    assert!(next_run > last_run, "next {next_run} after last {last_run}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_schedule_submits_no_more_jobs() {
    let data = DataDir::with_plugins(&["echo"]);
    let mut daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;

    let added = add(&channel, every_second("short-lived", "{}")).await;
    triggered_job(&mut daemon, "short-lived");

    let removed = schedules(&channel)
        .unschedule_job(pb::UnscheduleJobRequest {
            schedule: added.id.clone(),
        })
        .await
        .expect("unschedule by id")
        .into_inner()
        .schedule
        .expect("the removed schedule");
    assert_eq!(removed.name, "short-lived");
    assert!(list(&channel).await.is_empty());
    let submitted = echo_jobs(&channel).await.len();
    assert!(submitted >= 1);

    // Nothing can announce that a job was not submitted: watch for a while instead.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        echo_jobs(&channel).await.len(),
        submitted,
        "no job after the removal"
    );
    let triggers = daemon.stderr().matches("schedule triggered").count();
    assert_eq!(
        triggers, submitted,
        "one trigger per job, none after removal"
    );

    let status = schedules(&channel)
        .unschedule_job(pb::UnscheduleJobRequest {
            schedule: "short-lived".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn schedules_survive_a_restart_and_fire_again() {
    let data = DataDir::with_plugins(&["echo"]);
    let mut daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;
    let added = add(&channel, every_second("durable", r#"{"again":1}"#)).await;
    let before_restart = triggered_job(&mut daemon, "durable");

    let (status, log) = daemon.terminate();
    assert!(status.success(), "{status:?}\n{log}");

    let mut daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;
    let [schedule] = &list(&channel).await[..] else {
        panic!("the schedule is still there");
    };
    assert_eq!(
        (
            &schedule.id,
            &schedule.name,
            &schedule.cron_expr,
            &schedule.payload
        ),
        (&added.id, &added.name, &added.cron_expr, &added.payload)
    );
    assert!(schedule.last_run_at.is_some());

    let after_restart = triggered_job(&mut daemon, "durable");
    assert_ne!(after_restart, before_restart);
    let job = finished(&channel, &after_restart).await;
    assert_eq!(job.status(), JobStatus::Completed);
    assert_eq!(result_text(&job), r#"{"again":1}"#);
}

/// What a restart after a missed instant did: the jobs in the store, the schedule, and
/// the `scheduler started` event of the restart in `daemon.log`.
struct AfterDowntime {
    jobs: Vec<pb::Job>,
    schedule: pb::Schedule,
    started: Value,
    instant: DateTime<Utc>,
}

/// Adds (with the CLI) a daily schedule, stops the daemon, makes its next instant one
/// that passed while the daemon was down, and starts it again. The instant is placed
/// in the record (as a daemon down across it would have left it) rather than waited
/// for, so nothing depends on how fast the daemon stops. With `remove_plugin`, the
/// schedule's plugin is gone by the restart.
async fn restart_after_missed_instant(misfire: &str, remove_plugin: bool) -> AfterDowntime {
    let data = DataDir::with_plugins(&["echo"]);
    let daemon = Daemon::start(&data, &[]);

    // A minute ago: the daily schedule's next instant is tomorrow's.
    let instant = Utc::now().trunc_subsecs(0) - TimeDelta::seconds(60);
    let cron = format!(
        "{} {} {} * * *",
        instant.second(),
        instant.minute(),
        instant.hour()
    );
    let output = honeydew(
        data.path(),
        &[
            "schedule",
            "add",
            "nightly",
            "--cron",
            &cron,
            "echo.echo",
            "--payload",
            r#"{"caught":"up"}"#,
            "--misfire",
            misfire,
            "--json",
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let added: Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(added["misfire"], misfire);
    let stamp = |at: DateTime<Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_eq!(added["next_run_at"], stamp(instant + TimeDelta::days(1)));

    let (status, log) = daemon.terminate();
    assert!(status.success(), "{status:?}\n{log}");
    // The daemon was down across the instant: its next run is the one it missed.
    let db = rusqlite::Connection::open(data.path().join("honeydew.db")).expect("open db");
    let moved = db
        .execute(
            "UPDATE schedules SET next_run_at = ?1 WHERE name = 'nightly'",
            [stamp(instant)],
        )
        .expect("move next_run_at");
    assert_eq!(moved, 1);
    drop(db);
    if remove_plugin {
        for file in ["echo.wasm", "echo.toml"] {
            std::fs::remove_file(data.path().join("plugins").join(file)).expect("remove plugin");
        }
    }

    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;
    // Start-up settles misfires before it serves: what it submitted is already stored.
    let jobs = echo_jobs(&channel).await;
    for job in &jobs {
        let job = finished(&channel, &job.id).await;
        assert_eq!(job.status(), JobStatus::Completed, "{job:?}");
        assert_eq!(result_text(&job), r#"{"caught":"up"}"#);
    }
    let [schedule] = &list(&channel).await[..] else {
        panic!("one schedule expected");
    };
    let schedule = schedule.clone();
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{status:?}\n{log}");

    let mut started = data.log_events("scheduler started");
    assert_eq!(started.len(), 2, "two starts: {started:?}");
    AfterDowntime {
        jobs,
        schedule,
        started: started.pop().expect("the restart"),
        instant,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_once_submits_one_job_for_an_instant_missed_while_down() {
    let after = restart_after_missed_instant("run_once", false).await;

    assert_eq!(after.jobs.len(), 1, "{:?}", after.jobs);
    assert_eq!(after.schedule.last_job_id, after.jobs[0].id);
    assert!(after.schedule.last_run_at.is_some());
    assert_eq!(
        time(after.schedule.next_run_at.as_ref()),
        Some(after.instant + TimeDelta::days(1))
    );
    let report = &after.started;
    assert_eq!(
        (&report["loaded"], &report["caught_up"], &report["skipped"]),
        (&json!(1), &json!(1), &json!(0)),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn skip_submits_nothing_for_an_instant_missed_while_down() {
    let after = restart_after_missed_instant("skip", false).await;

    assert!(after.jobs.is_empty(), "{:?}", after.jobs);
    assert_eq!(after.schedule.last_run_at, None);
    assert_eq!(after.schedule.last_job_id, "");
    assert_eq!(
        time(after.schedule.next_run_at.as_ref()),
        Some(after.instant + TimeDelta::days(1))
    );
    let report = &after.started;
    assert_eq!(
        (&report["loaded"], &report["caught_up"], &report["skipped"]),
        (&json!(1), &json!(0), &json!(1)),
        "{report}"
    );
}

/// Regression (issue 9, defect 6): a `run_once` schedule whose command was not loaded
/// at start (its plugin removed) made the daemon refuse to start.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_once_schedule_whose_plugin_is_gone_is_recorded_and_the_daemon_starts() {
    let after = restart_after_missed_instant("run_once", true).await;

    assert!(after.jobs.is_empty(), "{:?}", after.jobs);
    let error = after
        .schedule
        .last_error
        .clone()
        .expect("the schedule records why");
    assert!(error.contains("no plugin serves \"echo.echo\""), "{error}");
    assert!(after.schedule.last_error_at.is_some());
    assert_eq!(
        time(after.schedule.next_run_at.as_ref()),
        Some(after.instant + TimeDelta::days(1)),
        "the schedule moves on to its next instant"
    );
    let report = &after.started;
    assert_eq!(
        (&report["loaded"], &report["caught_up"], &report["failed"]),
        (&json!(1), &json!(0), &json!(1)),
        "{report}"
    );
}

#[test]
fn the_cli_adds_lists_in_local_time_and_removes_schedules() {
    let data = DataDir::with_plugins(&["echo"]);
    let _daemon = Daemon::start(&data, &[]);
    let payload = data.path().join("payload.json");
    std::fs::write(&payload, r#"{"report":"daily"}"#).unwrap();

    let output = honeydew(
        data.path(),
        &[
            "schedule",
            "add",
            "daily-report",
            "--cron",
            "30 9 * * 1-5",
            "--tz",
            "Europe/Paris",
            "echo.echo",
            "--payload",
            &format!("@{}", payload.display()),
            "--priority",
            "3",
            "--max-retries",
            "1",
            "--misfire",
            "run_once",
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("daily-report"),
        "{}",
        stdout(&output)
    );

    let output = honeydew(data.path(), &["schedule", "ls", "--json"], "");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let listed: Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    let schedule = &listed[0];
    assert_eq!(schedule["name"], "daily-report");
    assert_eq!(schedule["cron_expr"], "30 9 * * 1-5");
    assert_eq!(schedule["timezone"], "Europe/Paris");
    assert_eq!(schedule["command"], "echo.echo");
    assert_eq!(schedule["payload"], json!({"report": "daily"}));
    assert_eq!(schedule["priority"], 3);
    assert_eq!(schedule["max_retries"], 1);
    assert_eq!(schedule["misfire"], "run_once");
    assert_eq!(schedule["last_run_at"], Value::Null);
    let next_run: DateTime<Utc> = schedule["next_run_at"]
        .as_str()
        .expect("a next run")
        .parse()
        .expect("RFC 3339");

    // The table shows times in the CLI's local zone: run it in UTC+05:45.
    let mut command = honeydew_command(data.path(), &["schedule", "ls"]);
    command.env("TZ", "NPT-5:45");
    let output = run_cli(command, "");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let table = stdout(&output);
    let kathmandu = FixedOffset::east_opt(5 * 3600 + 45 * 60).unwrap();
    let next_local = next_run
        .with_timezone(&kathmandu)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let mut lines = table.lines();
    let header = lines.next().expect("a header");
    assert!(
        header.starts_with("NAME") && header.ends_with("NEXT RUN"),
        "{table}"
    );
    let row = lines.next().expect("a row");
    for cell in [
        "daily-report",
        "30 9 * * 1-5",
        "Europe/Paris",
        "echo.echo",
        "run_once",
        &next_local,
    ] {
        assert!(row.contains(cell), "{cell:?} missing from {table}");
    }
    assert!(row.ends_with(&next_local), "{table}");
    assert_eq!(lines.next(), None, "{table}");

    let output = honeydew(data.path(), &["schedule", "rm", "daily-report"], "");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!(
            "removed schedule daily-report ({})\n",
            schedule["id"].as_str().unwrap()
        )
    );
    let output = honeydew(data.path(), &["schedule", "ls", "--json"], "");
    assert_eq!(stdout(&output).trim(), "[]");
}

#[test]
fn the_cli_refuses_invalid_schedules_with_the_reason_and_exit_code() {
    let data = DataDir::with_plugins(&["echo"]);
    let _daemon = Daemon::start(&data, &[]);
    let add = |name: &str, cron: &str, extra: &[&str]| {
        let mut args = vec!["schedule", "add", name, "--cron", cron];
        args.extend_from_slice(extra);
        honeydew(data.path(), &args, "")
    };

    let output = add("nightly", "0 3 * * *", &["echo.echo"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    // Each refusal: the exit code and the start of the message on stderr.
    let cases: Vec<(std::process::Output, i32, &str)> = vec![
        (
            add("bad", "61 * * * *", &["echo.echo"]),
            2,
            "honeydew: invalid cron expression \"61 * * * *\"",
        ),
        (
            add("bad", "every day", &["echo.echo"]),
            2,
            "honeydew: invalid cron expression \"every day\": it has 2 fields",
        ),
        (
            add("bad", "0 9 * * *", &["--tz", "Mars/Olympus", "echo.echo"]),
            2,
            "honeydew: unknown time zone \"Mars/Olympus\"",
        ),
        (
            add("bad", "0 9 * * *", &["nope.nothing"]),
            2,
            "honeydew: no plugin serves \"nope.nothing\"",
        ),
        (
            add("bad", "0 9 * * *", &["echo.echo", "--payload", "{oops"]),
            2,
            "honeydew: payload is not valid JSON",
        ),
        (
            add("bad", "0 9 * * *", &["echo.echo", "--misfire", "sometimes"]),
            2,
            "error: invalid value 'sometimes' for '--misfire <MISFIRE>'",
        ),
        (
            add("nightly", "0 4 * * *", &["echo.echo"]),
            1,
            "honeydew: a schedule named \"nightly\" already exists",
        ),
        (
            honeydew(data.path(), &["schedule", "rm", "ghost"], ""),
            1,
            "honeydew: no schedule named or with id \"ghost\"",
        ),
    ];
    for (output, code, message) in cases {
        assert_eq!(output.status.code(), Some(code), "{}", stderr(&output));
        assert!(
            stderr(&output).starts_with(message),
            "{:?} should start with {message:?}",
            stderr(&output)
        );
    }

    let output = honeydew(data.path(), &["schedule", "ls", "--json"], "");
    let listed: Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|schedule| schedule["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nightly"]);
}
