//! The cron scheduler over a real SQLite file and the real cron library: validation,
//! triggers, removal, persistence across restarts, and the misfire policies driven by
//! an explicit clock.

use std::sync::Arc;
use std::time::Duration;

use chrono::{SubsecRound, TimeDelta, Utc};
use honeydew::job::JobStatus;
use honeydew::queue::{AnyCommand, Manager, ManagerConfig};
use honeydew::scheduler::{MisfirePolicy, NewSchedule, Schedule, ScheduleError, Scheduler};
use honeydew::store::{JobFilter, SqliteConfig, SqliteStore, Store};
use tempfile::TempDir;
use uuid::Uuid;

fn manager(dir: &TempDir) -> Arc<Manager> {
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("honeydew.db")))
        .map(Store::new)
        .unwrap();
    Arc::new(Manager::new(
        store,
        Arc::new(AnyCommand),
        ManagerConfig::default(),
    ))
}

fn every_second(name: &str) -> NewSchedule {
    NewSchedule {
        name: name.into(),
        cron_expr: "* * * * * *".into(),
        command: "echo.echo".into(),
        payload: br#"{"from":"cron"}"#.to_vec(),
        priority: 7,
        ..NewSchedule::default()
    }
}

/// A stored schedule (bypassing the scheduler) whose next run was `missed_hours` ago.
fn overdue(name: &str, misfire: MisfirePolicy, missed_hours: i64) -> Schedule {
    let now = Utc::now().trunc_subsecs(0);
    let last_hour =
        now - TimeDelta::minutes(i64::from(
            now.format("%M").to_string().parse::<u8>().unwrap(),
        )) - TimeDelta::seconds(i64::from(
            now.format("%S").to_string().parse::<u8>().unwrap(),
        ));
    Schedule {
        id: Uuid::now_v7(),
        name: name.into(),
        cron_expr: "0 * * * *".into(),
        timezone: "UTC".into(),
        command: "echo.echo".into(),
        payload: b"{}".to_vec(),
        priority: 0,
        max_retries: None,
        misfire,
        enabled: true,
        created_at: now - TimeDelta::days(1),
        last_run_at: None,
        next_run_at: Some(last_hour - TimeDelta::hours(missed_hours - 1)),
        last_job_id: None,
        last_scheduled_for: None,
        last_error: None,
        last_error_at: None,
    }
}

async fn jobs(manager: &Manager) -> Vec<honeydew::job::Job> {
    let filter = JobFilter {
        with_bodies: true,
        ..JobFilter::default()
    };
    manager.list(filter).await.unwrap().jobs
}

/// Waits on submit events until `count` jobs exist (bounded failsafe).
async fn wait_for_jobs(manager: &Manager, count: usize) {
    let mut events = manager.subscribe();
    tokio::time::timeout(Duration::from_secs(10), async {
        while jobs(manager).await.len() < count {
            let _ = events.recv().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("fewer than {count} jobs were submitted"));
}

#[tokio::test]
async fn add_schedule_validates_with_precise_reasons() {
    let dir = TempDir::new().unwrap();
    let scheduler = Scheduler::new(manager(&dir)).await.unwrap();
    let cases = [
        (
            NewSchedule {
                cron_expr: "* * *".into(),
                ..every_second("a")
            },
            "invalid cron expression \"* * *\": it has 3 fields",
        ),
        (
            NewSchedule {
                cron_expr: "0 25 * * *".into(),
                ..every_second("a")
            },
            "invalid cron expression \"0 25 * * *\"",
        ),
        (
            NewSchedule {
                timezone: Some("Nowhere/Land".into()),
                ..every_second("a")
            },
            "unknown time zone \"Nowhere/Land\"",
        ),
        (
            NewSchedule {
                command: "echo".into(),
                ..every_second("a")
            },
            "expected PLUGIN.COMMAND",
        ),
        (every_second("no spaces allowed"), "invalid schedule name"),
    ];
    for (schedule, expected) in cases {
        let err = scheduler
            .add_schedule(schedule)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err}");
    }
    assert!(scheduler.list_schedules().await.unwrap().is_empty());
}

#[tokio::test]
async fn duplicate_names_are_refused() {
    let dir = TempDir::new().unwrap();
    let scheduler = Scheduler::new(manager(&dir)).await.unwrap();
    scheduler
        .add_schedule(every_second("nightly"))
        .await
        .unwrap();
    let err = scheduler
        .add_schedule(every_second("nightly"))
        .await
        .unwrap_err();
    assert!(matches!(err, ScheduleError::DuplicateName(ref name) if name == "nightly"));
    assert_eq!(
        err.to_string(),
        "a schedule named \"nightly\" already exists"
    );
}

#[tokio::test]
async fn every_second_schedule_submits_jobs_with_its_command_payload_and_priority() {
    let dir = TempDir::new().unwrap();
    let manager = manager(&dir);
    let scheduler = Scheduler::new(Arc::clone(&manager)).await.unwrap();
    let added = scheduler.add_schedule(every_second("tick")).await.unwrap();
    assert!(added.next_run_at.unwrap() > added.created_at);
    scheduler.start().await.unwrap();
    wait_for_jobs(&manager, 2).await;
    scheduler.stop().await;
    let jobs = jobs(&manager).await;
    for job in &jobs {
        assert_eq!(job.command, "echo.echo");
        assert_eq!(job.payload, br#"{"from":"cron"}"#);
        assert_eq!(job.priority, 7);
        assert_eq!(job.status, JobStatus::Pending);
    }
    let stored = &scheduler.list_schedules().await.unwrap()[0];
    assert!(stored.last_run_at.is_some());
    assert!(jobs.iter().any(|job| Some(job.id) == stored.last_job_id));
    assert!(stored.next_run_at.unwrap() > stored.last_scheduled_for.unwrap());
    assert!(
        stored.last_run_at.unwrap() >= stored.last_scheduled_for.unwrap(),
        "a job is never submitted before its instant"
    );
}

#[tokio::test]
async fn removed_schedule_submits_nothing_more() {
    let dir = TempDir::new().unwrap();
    let manager = manager(&dir);
    let scheduler = Scheduler::new(Arc::clone(&manager)).await.unwrap();
    scheduler.add_schedule(every_second("tick")).await.unwrap();
    scheduler.start().await.unwrap();
    wait_for_jobs(&manager, 1).await;
    let removed = scheduler.remove_schedule("tick").await.unwrap();
    assert_eq!(removed.name, "tick");
    let count = jobs(&manager).await.len();
    // Nothing can be awaited for "nothing happens": watch two whole periods.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(jobs(&manager).await.len(), count);
    assert!(scheduler.list_schedules().await.unwrap().is_empty());
    let err = scheduler.remove_schedule("tick").await.unwrap_err();
    assert_eq!(err.to_string(), "no schedule named or with id \"tick\"");
    scheduler.stop().await;
}

#[tokio::test]
async fn schedules_survive_a_restart_and_fire_again() {
    let dir = TempDir::new().unwrap();
    {
        let scheduler = Scheduler::new(manager(&dir)).await.unwrap();
        scheduler.add_schedule(every_second("tick")).await.unwrap();
    }
    let manager = manager(&dir);
    let scheduler = Scheduler::new(Arc::clone(&manager)).await.unwrap();
    let report = scheduler.start().await.unwrap();
    assert_eq!(report.loaded, 1);
    wait_for_jobs(&manager, 1).await;
    scheduler.stop().await;
}

#[tokio::test]
async fn one_instant_triggers_once_even_when_fired_twice() {
    let dir = TempDir::new().unwrap();
    let manager = manager(&dir);
    let scheduler = Scheduler::new(Arc::clone(&manager)).await.unwrap();
    let schedule = scheduler
        .add_schedule(NewSchedule {
            cron_expr: "0 0 1 1 *".into(),
            ..every_second("yearly")
        })
        .await
        .unwrap();
    let instant = Utc::now().trunc_subsecs(0);
    let first = scheduler.trigger(&schedule, instant, None).await.unwrap();
    let again = scheduler.trigger(&schedule, instant, None).await.unwrap();
    assert!(first.is_some());
    assert_eq!(again, None);
    assert_eq!(jobs(&manager).await.len(), 1);
}

#[tokio::test]
async fn skip_policy_runs_nothing_for_missed_instants() {
    let dir = TempDir::new().unwrap();
    let manager = manager(&dir);
    manager
        .store()
        .insert_schedule(overdue("skipper", MisfirePolicy::Skip, 3))
        .await
        .unwrap();
    let scheduler = Scheduler::new(Arc::clone(&manager)).await.unwrap();
    let now = Utc::now();
    let report = scheduler.load_schedules(now).await.unwrap();
    assert_eq!((report.loaded, report.skipped, report.caught_up), (1, 1, 0));
    assert!(jobs(&manager).await.is_empty());
    let stored = &scheduler.list_schedules().await.unwrap()[0];
    assert!(stored.next_run_at.unwrap() > now, "resumes after now");
}

#[tokio::test]
async fn run_once_policy_submits_one_job_for_all_missed_instants() {
    let dir = TempDir::new().unwrap();
    let manager = manager(&dir);
    manager
        .store()
        .insert_schedule(overdue("catcher", MisfirePolicy::RunOnce, 3))
        .await
        .unwrap();
    let scheduler = Scheduler::new(Arc::clone(&manager)).await.unwrap();
    let now = Utc::now();
    let report = scheduler.load_schedules(now).await.unwrap();
    assert_eq!((report.loaded, report.skipped, report.caught_up), (1, 0, 1));
    assert_eq!(jobs(&manager).await.len(), 1);
    // A second start at the same time finds the instant done: still one job.
    let restarted = Scheduler::new(Arc::clone(&manager)).await.unwrap();
    let report = restarted.load_schedules(now).await.unwrap();
    assert_eq!(report.caught_up, 0);
    assert_eq!(jobs(&manager).await.len(), 1);
}
