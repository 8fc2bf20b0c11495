//! The cron scheduler: persisted schedules that submit jobs by themselves.
//!
//! [`Scheduler`] wraps `tokio-cron-scheduler` for the timing, while our own `schedules`
//! table (through [`crate::store`]) is the source of truth: schedules are loaded from it
//! at start, written to it on add, pause, resume and remove, and every trigger records
//! its instant there together with the job it submits, in one transaction, so an
//! instant fires at most once even across a restart. A paused schedule is disarmed and
//! fires nowhere until resumed. Instants missed while the daemon was down follow the
//! schedule's [`MisfirePolicy`]. The cron arithmetic lives in [`model`], free of I/O.

mod model;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use tokio_cron_scheduler::{Job as CronJob, JobScheduler};
use uuid::Uuid;

use crate::job::JobId;
use crate::queue::{Manager, SubmitRequest};
use crate::store::StoreError;
use crate::worker::BoxFuture;

pub use model::{
    CronSpec, Misfire, MisfirePolicy, Schedule, ScheduleError, misfire, validate_name,
};

/// A schedule to add.
#[derive(Clone, Debug, Default)]
pub struct NewSchedule {
    /// Unique name.
    pub name: String,
    /// 5 fields, or 6 with seconds first.
    pub cron_expr: String,
    /// IANA zone; UTC when `None`.
    pub timezone: Option<String>,
    /// `plugin.command` to submit.
    pub command: String,
    /// Payload of each job.
    pub payload: Vec<u8>,
    /// Priority of each job.
    pub priority: i64,
    /// Retries of each job.
    pub max_retries: Option<u32>,
    /// What to do about instants missed while down.
    pub misfire: MisfirePolicy,
}

/// What start-up did with the stored schedules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Schedules registered with the cron library.
    pub loaded: usize,
    /// Schedules whose missed instants were skipped.
    pub skipped: usize,
    /// Jobs submitted for missed instants (`run_once`).
    pub caught_up: usize,
    /// Schedules that could not be registered (logged with the reason).
    pub broken: usize,
    /// Missed instants that could not submit their job (recorded on the schedule).
    pub failed: usize,
}

/// Persisted cron schedules driving job submission.
pub struct Scheduler {
    manager: Arc<Manager>,
    cron: JobScheduler,
    /// Our schedule id -> the cron library's job id.
    entries: Mutex<HashMap<Uuid, Uuid>>,
    /// Held while the table and the armed schedules are brought in line (an add here,
    /// or a change announced from another node), so that neither arms twice.
    changing: tokio::sync::Mutex<()>,
    this: Weak<Scheduler>,
}

impl Scheduler {
    /// A scheduler submitting through `manager`; nothing fires until [`Scheduler::start`].
    pub async fn new(manager: Arc<Manager>) -> Result<Arc<Self>, ScheduleError> {
        let cron = JobScheduler::new().await.map_err(library)?;
        Ok(Arc::new_cyclic(|this| Self {
            manager,
            cron,
            entries: Mutex::new(HashMap::new()),
            changing: tokio::sync::Mutex::new(()),
            this: this.clone(),
        }))
    }

    /// Loads the stored schedules (applying misfire policies as of now) and starts
    /// firing.
    pub async fn start(&self) -> Result<LoadReport, ScheduleError> {
        let report = self.load_schedules(Utc::now()).await?;
        self.cron.start().await.map_err(library)?;
        if let Some(shared) = self.manager.store().shared() {
            tokio::spawn(follow_other_nodes(self.this.clone(), shared.signals()));
        }
        tracing::info!(
            loaded = report.loaded,
            skipped = report.skipped,
            caught_up = report.caught_up,
            broken = report.broken,
            failed = report.failed,
            "scheduler started"
        );
        Ok(report)
    }

    /// Stops firing. Stored schedules stay for the next start.
    pub async fn stop(&self) {
        let mut cron = self.cron.clone();
        if let Err(err) = cron.shutdown().await {
            tracing::warn!(error = %err, "cron scheduler did not shut down cleanly");
        }
    }

    /// Registers every stored, enabled schedule, first settling instants missed before
    /// `now` by each schedule's misfire policy.
    pub async fn load_schedules(&self, now: DateTime<Utc>) -> Result<LoadReport, ScheduleError> {
        let mut report = LoadReport::default();
        for schedule in self.manager.store().list_schedules().await? {
            if !schedule.enabled {
                continue;
            }
            let spec = match CronSpec::parse(&schedule.cron_expr, &schedule.timezone) {
                Ok(spec) => spec,
                Err(err) => {
                    tracing::error!(schedule_id = %schedule.id, schedule_name = %schedule.name, error = %err, "stored schedule is invalid; not loaded");
                    report.broken += 1;
                    continue;
                }
            };
            match misfire(&schedule, &spec, now) {
                Misfire::None => {}
                Misfire::Skip { missed, next } => {
                    tracing::warn!(schedule_id = %schedule.id, schedule_name = %schedule.name, missed, "schedule missed runs while the daemon was down; skipped (misfire policy skip)");
                    self.manager
                        .store()
                        .set_schedule_next_run(schedule.id, next)
                        .await?;
                    report.skipped += 1;
                }
                Misfire::RunOnce { missed, instant } => {
                    tracing::warn!(schedule_id = %schedule.id, schedule_name = %schedule.name, missed, "schedule missed runs while the daemon was down; running once (misfire policy run_once)");
                    let next = spec.next_after(now);
                    match self.trigger(&schedule, instant, next).await {
                        Ok(Some(_)) => report.caught_up += 1,
                        Ok(None) => {}
                        // Its command is not loaded now (a removed plugin, a missing
                        // secret, a lowered payload limit): recorded on the schedule,
                        // and the daemon goes on starting.
                        Err(err) => {
                            self.record_failure(&schedule, next, &err).await;
                            report.failed += 1;
                        }
                    }
                }
            }
            match self.register(&schedule, &spec).await {
                Ok(()) => report.loaded += 1,
                Err(err) => {
                    tracing::error!(schedule_id = %schedule.id, schedule_name = %schedule.name, error = %err, "cannot register schedule");
                    report.broken += 1;
                }
            }
        }
        Ok(report)
    }

    /// Validates, stores and registers a schedule.
    pub async fn add_schedule(&self, new: NewSchedule) -> Result<Schedule, ScheduleError> {
        validate_name(&new.name)?;
        let _changing = self.changing.lock().await;
        let timezone = new.timezone.unwrap_or_else(|| "UTC".to_owned());
        let spec = CronSpec::parse(&new.cron_expr, &timezone)?;
        // The same checks as a submit: well-formed, served command, payload size.
        self.manager.new_job(SubmitRequest {
            command: new.command.clone(),
            payload: new.payload.clone(),
            priority: new.priority,
            max_retries: new.max_retries,
            unique: None,
            after: Vec::new(),
            trace_parent: None,
            concurrency_key: None,
        })?;
        // The store keeps milliseconds: answer with what it keeps.
        let now = Utc::now().trunc_subsecs(3);
        let schedule = Schedule {
            id: Uuid::now_v7(),
            name: new.name,
            cron_expr: new.cron_expr,
            timezone,
            command: new.command,
            payload: new.payload,
            priority: new.priority,
            max_retries: new.max_retries,
            misfire: new.misfire,
            enabled: true,
            created_at: now,
            last_run_at: None,
            next_run_at: spec.next_after(now),
            last_job_id: None,
            last_scheduled_for: None,
            last_error: None,
            last_error_at: None,
        };
        self.manager
            .store()
            .insert_schedule(schedule.clone())
            .await
            .map_err(|err| match err {
                StoreError::DuplicateSchedule(name) => ScheduleError::DuplicateName(name),
                other => other.into(),
            })?;
        if let Err(err) = self.register(&schedule, &spec).await {
            // Keep the table the truth: a schedule that cannot fire is not kept.
            let _ = self
                .manager
                .store()
                .delete_schedule(schedule.id.to_string())
                .await;
            return Err(err);
        }
        tracing::info!(schedule_id = %schedule.id, schedule_name = %schedule.name, cron = %schedule.cron_expr, timezone = %schedule.timezone, command = %schedule.command, "schedule added");
        Ok(schedule)
    }

    /// Removes the schedule named `key` (or with id `key`); it fires no more.
    pub async fn remove_schedule(&self, key: &str) -> Result<Schedule, ScheduleError> {
        let schedule = self
            .manager
            .store()
            .delete_schedule(key.to_owned())
            .await
            .map_err(|err| match err {
                StoreError::ScheduleNotFound(key) => ScheduleError::NotFound(key),
                other => other.into(),
            })?;
        let entry = self.lock_entries().remove(&schedule.id);
        if let Some(entry) = entry {
            self.cron.remove(&entry).await.map_err(library)?;
        }
        tracing::info!(schedule_id = %schedule.id, schedule_name = %schedule.name, "schedule removed");
        Ok(schedule)
    }

    /// Pauses schedule `key` (its name or id) when `enabled` is false: it stays stored
    /// and fires no more, on any node, until resumed. Resuming arms its next instant
    /// after now; the instants that passed while it was paused are not made up. The
    /// schedule as it is now.
    pub async fn set_enabled(&self, key: &str, enabled: bool) -> Result<Schedule, ScheduleError> {
        let _changing = self.changing.lock().await;
        let store = self.manager.store();
        let mut schedule = store
            .set_schedule_enabled(key.to_owned(), enabled)
            .await
            .map_err(|err| match err {
                StoreError::ScheduleNotFound(key) => ScheduleError::NotFound(key),
                other => other.into(),
            })?;
        let armed = self.lock_entries().remove(&schedule.id);
        if let Some(entry) = armed {
            self.cron.remove(&entry).await.map_err(library)?;
        }
        let next = if enabled {
            let spec = CronSpec::parse(&schedule.cron_expr, &schedule.timezone)?;
            self.register(&schedule, &spec).await?;
            spec.next_after(Utc::now())
        } else {
            None
        };
        store.set_schedule_next_run(schedule.id, next).await?;
        schedule.next_run_at = next;
        let action = if enabled { "resumed" } else { "paused" };
        tracing::info!(schedule_id = %schedule.id, schedule_name = %schedule.name, "schedule {action}");
        Ok(schedule)
    }

    /// Brings the armed schedules in line with the table after another node changed
    /// it: arms the schedules added there, forgets the ones removed there. Each node
    /// arms every schedule; the instant's guard in the store lets one job through.
    pub async fn reconcile(&self) -> Result<(), ScheduleError> {
        let _changing = self.changing.lock().await;
        let stored = self.manager.store().list_schedules().await?;
        let armed: Vec<Uuid> = self.lock_entries().keys().copied().collect();
        for schedule in stored.iter().filter(|schedule| schedule.enabled) {
            if armed.contains(&schedule.id) {
                continue;
            }
            match CronSpec::parse(&schedule.cron_expr, &schedule.timezone) {
                Ok(spec) => match self.register(schedule, &spec).await {
                    Ok(()) => {
                        tracing::info!(schedule_id = %schedule.id, schedule_name = %schedule.name, "schedule added on another node; armed here too");
                    }
                    Err(err) => {
                        tracing::error!(schedule_id = %schedule.id, schedule_name = %schedule.name, error = %err, "cannot register schedule");
                    }
                },
                Err(err) => {
                    tracing::error!(schedule_id = %schedule.id, schedule_name = %schedule.name, error = %err, "stored schedule is invalid; not loaded");
                }
            }
        }
        for id in armed {
            if stored
                .iter()
                .any(|schedule| schedule.id == id && schedule.enabled)
            {
                continue;
            }
            let entry = self.lock_entries().remove(&id);
            if let Some(entry) = entry {
                self.cron.remove(&entry).await.map_err(library)?;
                tracing::info!(schedule_id = %id, "schedule removed on another node; disarmed here too");
            }
        }
        Ok(())
    }

    /// Every stored schedule, by name.
    pub async fn list_schedules(&self) -> Result<Vec<Schedule>, ScheduleError> {
        Ok(self.manager.store().list_schedules().await?)
    }

    /// Submits `schedule`'s job for `instant` unless that instant already fired, and
    /// moves `next_run_at` to `next`. Returns the new job's id, or `None` for a repeat.
    pub async fn trigger(
        &self,
        schedule: &Schedule,
        instant: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) -> Result<Option<JobId>, ScheduleError> {
        let job = self.manager.new_job(SubmitRequest {
            command: schedule.command.clone(),
            payload: schedule.payload.clone(),
            priority: schedule.priority,
            max_retries: schedule.max_retries,
            unique: None,
            after: Vec::new(),
            trace_parent: None,
            concurrency_key: None,
        })?;
        let fresh = self
            .manager
            .store()
            .trigger_schedule(schedule.id, instant, next, job.clone())
            .await?;
        if !fresh {
            tracing::debug!(schedule_id = %schedule.id, scheduled_for = %instant, "instant already triggered");
            return Ok(None);
        }
        self.manager.accept(&job);
        tracing::info!(schedule_id = %schedule.id, schedule_name = %schedule.name, job_id = %job.id, "schedule triggered");
        Ok(Some(job.id))
    }

    /// Called by the cron library when `instant` of a schedule comes: submits its job
    /// and arms the next instant.
    async fn fire(&self, schedule_id: Uuid, instant: DateTime<Utc>) {
        let schedule = match self.manager.store().get_schedule(schedule_id).await {
            // Paused on some node: it fires again once resumed, armed afresh then.
            Ok(schedule) if !schedule.enabled => return,
            Ok(schedule) => schedule,
            // Removed meanwhile: nothing to do, nothing to re-arm.
            Err(StoreError::ScheduleNotFound(_)) => return,
            Err(err) => {
                tracing::error!(schedule_id = %schedule_id, error = %err, "schedule trigger failed");
                return;
            }
        };
        let spec = match CronSpec::parse(&schedule.cron_expr, &schedule.timezone) {
            Ok(spec) => spec,
            Err(err) => {
                tracing::error!(schedule_id = %schedule.id, schedule_name = %schedule.name, error = %err, "schedule trigger failed");
                return;
            }
        };
        // Never arm an instant already past (a suspended machine, say): no catch-up storm.
        let next = spec.next_after(Utc::now().max(instant));
        if let Err(err) = self.trigger(&schedule, instant, next).await {
            self.record_failure(&schedule, next, &err).await;
        }
        if let Some(next) = next
            && let Err(err) = self.arm(schedule.id, next).await
        {
            tracing::error!(schedule_id = %schedule.id, schedule_name = %schedule.name, error = %err, "cannot arm the next run");
        }
    }

    /// Logs why an instant of `schedule` submitted no job and records it on the
    /// schedule (shown by `schedule ls`), moving its next run on to `next`.
    async fn record_failure(
        &self,
        schedule: &Schedule,
        next: Option<DateTime<Utc>>,
        err: &ScheduleError,
    ) {
        tracing::error!(schedule_id = %schedule.id, schedule_name = %schedule.name, error = %err, "schedule trigger failed; no job submitted for this instant");
        let recorded = self
            .manager
            .store()
            .record_schedule_error(schedule.id, err.to_string(), Utc::now(), next)
            .await;
        if let Err(store) = recorded {
            tracing::error!(schedule_id = %schedule.id, error = %store, "cannot record the schedule's error");
        }
    }

    /// Arms the schedule's next instant after now.
    async fn register(&self, schedule: &Schedule, spec: &CronSpec) -> Result<(), ScheduleError> {
        match spec.next_after(Utc::now()) {
            Some(next) => self.arm(schedule.id, next).await,
            None => Ok(()),
        }
    }

    /// Asks the cron library to call [`Scheduler::fire`] at `instant`. Each instant is
    /// armed on its own, computed here in the schedule's zone: the library's own cron
    /// jobs keep the UTC offset of the moment they were created, so across a daylight
    /// saving change they would fire an hour off until the daemon restarted.
    ///
    /// Boxed with an explicit `Send` bound: `fire` arms and the armed job fires, and
    /// the compiler cannot see through that cycle on its own.
    fn arm(
        &self,
        schedule_id: Uuid,
        instant: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<(), ScheduleError>> {
        Box::pin(async move {
            let this = self.this.clone();
            let delay = whole_seconds_until(instant, Utc::now());
            let job = CronJob::new_one_shot_async(delay, move |_, _| {
                let this = this.clone();
                Box::pin(async move {
                    if let Some(scheduler) = this.upgrade() {
                        scheduler.fire(schedule_id, instant).await;
                    }
                })
            })
            .map_err(library)?;
            let entry = self.cron.add(job).await.map_err(library)?;
            // The spent entry of the previous instant, if any, is simply replaced.
            self.lock_entries().insert(schedule_id, entry);
            Ok(())
        })
    }

    fn lock_entries(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Uuid>> {
        self.entries.lock().expect("schedule entries poisoned")
    }
}

/// On a store several daemons share: reconciles whenever another node announces a
/// change of the schedules, or the announcements may have been missed. Ends with the
/// scheduler.
async fn follow_other_nodes(
    scheduler: Weak<Scheduler>,
    mut signals: tokio::sync::broadcast::Receiver<crate::store::ClusterSignal>,
) {
    use crate::store::ClusterSignal;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match signals.recv().await {
            Ok(ClusterSignal::SchedulesChanged | ClusterSignal::Resynced)
            | Err(RecvError::Lagged(_)) => {}
            Ok(ClusterSignal::CancelRequested { .. } | ClusterSignal::OutputWritten { .. }) => {
                continue;
            }
            Err(RecvError::Closed) => return,
        }
        let Some(scheduler) = scheduler.upgrade() else {
            return;
        };
        if let Err(err) = scheduler.reconcile().await {
            tracing::error!(error = %err, "cannot follow the schedules another node changed");
        }
    }
}

/// The one-shot delay that makes the cron library fire at `instant` (a whole second),
/// never before it. The library adds whole seconds of delay to the current whole
/// second, so the delay is counted between the two whole seconds.
fn whole_seconds_until(instant: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    let seconds = instant.timestamp() - now.timestamp();
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

fn library(err: tokio_cron_scheduler::JobSchedulerError) -> ScheduleError {
    ScheduleError::Scheduler(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::whole_seconds_until;
    use chrono::{TimeZone, Utc};
    use std::time::Duration;

    #[test]
    fn one_shot_delay_counts_whole_seconds_so_it_never_fires_early() {
        let instant = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 5).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap()
            + chrono::TimeDelta::milliseconds(700);
        // The library fires at whole second (10:00:00) + 5 s = the instant itself.
        assert_eq!(whole_seconds_until(instant, now), Duration::from_secs(5));
        assert_eq!(whole_seconds_until(instant, instant), Duration::ZERO);
        assert_eq!(
            whole_seconds_until(instant, instant + chrono::TimeDelta::seconds(3)),
            Duration::ZERO
        );
    }
}
