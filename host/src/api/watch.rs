//! `WatchJob`: the job's state now, then each change, ending after the terminal state.
//!
//! The watcher subscribes to the manager's events *before* reading the job, so no change
//! can fall between the read and the subscription. Events older than what was already
//! sent (they were queued before the read) are dropped by comparing [`Progress`]. When
//! the broadcast channel lags, the job is read again instead. A terminal event is
//! answered with the job read back from the store, so the last update carries the
//! result. At daemon shutdown open watches end with UNAVAILABLE. On a store several
//! daemons share, the watch is registered in the database first (only watched jobs'
//! changes are announced), the manager republishes every change the database
//! announces, wherever it happened, and the watcher reads the job again every few
//! seconds in case an announcement was lost.
//!
//! With `output`, the watch also sends the job's log so far and then whatever the
//! workers store of it (lines and progress, read back from the store, which is the one
//! record on every backend), woken by this daemon's flushes and, on a shared store, by
//! the `honeydew_output` announcements of every node. The terminal update comes after
//! the last output, which the worker stores before the outcome.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::ApiState;
use super::convert;
use super::pb;
use super::queue::{job_with_attempt, latest_progress};
use crate::job::{Job, JobId, JobStatus};
use crate::queue::JobEvent;
use crate::store::{ClusterSignal, Store};
use honeydew_core::output::{JobProgress, LogQuery};

/// How far a job has got: later states compare greater. An attempt's `running` comes
/// before the `pending` it may fall back to (a retry or a shutdown), which comes
/// before the next attempt's `running`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Progress {
    attempt: u32,
    stage: u8,
}

impl Progress {
    fn of(status: JobStatus, attempt: u32) -> Self {
        let stage = match status {
            JobStatus::Running => 1,
            JobStatus::Pending => 2,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled => 3,
        };
        Self { attempt, stage }
    }
}

type Updates = mpsc::Sender<Result<pb::JobUpdate, Status>>;

/// On a shared store, how often a watch reads its job again in case an announcement of
/// another node's change was lost.
const SHARED_REREAD: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts watching `id`; NOT_FOUND when there is no such job.
pub async fn watch(
    state: Arc<ApiState>,
    id: JobId,
    output: bool,
) -> Result<ReceiverStream<Result<pb::JobUpdate, Status>>, Status> {
    let events = state.manager.subscribe();
    // Subscribed before the first read too, so no output falls in between.
    let output = output.then(|| OutputFollower::new(&state, id));
    let registered = Registered::watch(state.manager.store(), id).await;
    let (job, attempt) = job_with_attempt(&state, id).await?;
    let (updates, stream) = mpsc::channel(16);
    tokio::spawn(follow(
        state, id, events, output, job, attempt, updates, registered,
    ));
    Ok(ReceiverStream::new(stream))
}

/// The most log lines one update carries (each at most 2 KiB, so an update stays well
/// within a gRPC message).
const LINES_PER_UPDATE: usize = 500;

/// What a watch with output has sent of the job's output, and what wakes it when there
/// is more: this daemon's flushes, and on a shared store every node's announcements.
struct OutputFollower {
    after: Option<(u32, u64)>,
    progress: Option<JobProgress>,
    local: broadcast::Receiver<JobId>,
    shared: Option<broadcast::Receiver<ClusterSignal>>,
}

impl OutputFollower {
    fn new(state: &ApiState, _id: JobId) -> Self {
        Self {
            after: None,
            progress: None,
            local: state.manager.subscribe_output(),
            shared: state
                .manager
                .store()
                .shared()
                .map(|shared| shared.signals()),
        }
    }

    /// Waits until output of `id` may have been stored (a lag counts: look anyway).
    async fn written(&mut self, id: JobId) {
        let Self { local, shared, .. } = self;
        loop {
            let shared = async {
                match shared.as_mut() {
                    Some(signals) => match signals.recv().await {
                        Ok(ClusterSignal::OutputWritten { id: written }) => written == id,
                        Ok(ClusterSignal::Resynced)
                        | Err(broadcast::error::RecvError::Lagged(_)) => true,
                        Ok(_) => false,
                        Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                    },
                    None => std::future::pending().await,
                }
            };
            let woken = tokio::select! {
                local = local.recv() => match local {
                    Ok(written) => written == id,
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                },
                woken = shared => woken,
            };
            if woken {
                return;
            }
        }
    }

    /// Sends what is new of `id`'s output as updates in its `status`; false when the
    /// watcher is gone.
    async fn send_new(
        &mut self,
        state: &ApiState,
        id: JobId,
        status: (JobStatus, u32, u32),
        updates: &Updates,
    ) -> bool {
        loop {
            let query = LogQuery {
                after: self.after,
                limit: LINES_PER_UPDATE,
                ..LogQuery::default()
            };
            let output = match state.manager.store().job_output(id, query).await {
                Ok(output) => output,
                Err(err) => {
                    tracing::debug!(job_id = %id, error = %err, "cannot read a watched job's output");
                    return true;
                }
            };
            let full = output.lines.len() == LINES_PER_UPDATE;
            if let Some(last) = output.lines.last() {
                self.after = Some((last.attempt, last.seq));
            }
            let progress = match output.progress {
                Some(progress) if self.progress.as_ref() != Some(&progress) => {
                    self.progress = Some(progress.clone());
                    Some(convert::progress_to_pb(progress))
                }
                _ => None,
            };
            if output.lines.is_empty() && progress.is_none() {
                return true;
            }
            let (job_status, attempt, retry_count) = status;
            let update = pb::JobUpdate {
                job_id: id.to_string(),
                status: convert::status_to_pb(job_status).into(),
                attempt,
                retry_count,
                error: None,
                at: Some(convert::timestamp(chrono::Utc::now())),
                job: None,
                progress,
                log_lines: output
                    .lines
                    .into_iter()
                    .map(convert::log_line_to_pb)
                    .collect(),
            };
            if updates.send(Ok(update)).await.is_err() {
                return false;
            }
            if !full {
                return true;
            }
        }
    }
}

/// A watch registered on a shared store, so that other nodes' changes of the job are
/// announced here; dropping it ends the registration.
struct Registered {
    store: Store,
    id: JobId,
}

impl Registered {
    /// Registers a watch of `id` on a shared store. When the database cannot take it,
    /// the watch still works, on its periodic reads alone.
    async fn watch(store: &Store, id: JobId) -> Option<Self> {
        let shared = store.shared()?;
        match shared.watch(&[id]).await {
            Ok(()) => Some(Self {
                store: store.clone(),
                id,
            }),
            Err(err) => {
                tracing::warn!(job_id = %id, error = %err, "cannot register a watch; following the job by reading it every few seconds");
                None
            }
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let (store, id) = (self.store.clone(), self.id);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Some(shared) = store.shared()
                && let Err(err) = shared.unwatch(&[id]).await
            {
                tracing::debug!(job_id = %id, error = %err, "cannot end a watch's registration; it ends with this node");
            }
        });
    }
}

/// Brings the watch up to the job's stored state just before its output is read,
/// sending that state first when it is further along than what was sent; false when
/// the watcher is gone. A job's state changes are stored before the output of the
/// attempt they begin, so the output then goes out in the state it was written in:
/// read after a snapshot taken while the job was still `pending` (its `running` event
/// not yet taken), the attempt's lines would otherwise go out as `pending`. A terminal
/// state is left to the terminal update, which follows the last output.
async fn catch_up(
    state: &ApiState,
    id: JobId,
    sent: &mut Progress,
    current: &mut (JobStatus, u32, u32),
    updates: &Updates,
) -> bool {
    let Ok((job, attempt)) = state.manager.store().get_job_with_attempt(id).await else {
        return true;
    };
    let progress = Progress::of(job.status, attempt);
    if job.status.is_terminal() || progress <= *sent {
        return true;
    }
    *sent = progress;
    *current = (job.status, attempt, job.retry_count);
    updates
        .send(Ok(snapshot_of(state, job, attempt).await))
        .await
        .is_ok()
}

#[allow(clippy::too_many_arguments)]
async fn follow(
    state: Arc<ApiState>,
    id: JobId,
    mut events: broadcast::Receiver<JobEvent>,
    mut output: Option<OutputFollower>,
    job: Job,
    attempt: u32,
    updates: Updates,
    _registered: Option<Registered>,
) {
    let mut sent = Progress::of(job.status, attempt);
    let terminal = job.status.is_terminal();
    let mut current = (job.status, attempt, job.retry_count);
    if terminal {
        // The output of a finished job comes before the update that ends the watch.
        if let Some(output) = output.as_mut()
            && !output.send_new(&state, id, current, &updates).await
        {
            return;
        }
        let _ = updates
            .send(Ok(snapshot_of(&state, job, attempt).await))
            .await;
        return;
    }
    if updates
        .send(Ok(snapshot_of(&state, job, attempt).await))
        .await
        .is_err()
    {
        return;
    }
    if let Some(output) = output.as_mut()
        && !(catch_up(&state, id, &mut sent, &mut current, &updates).await
            && output.send_new(&state, id, current, &updates).await)
    {
        return;
    }
    // On a shared store another node's changes come as announcements, which a lost
    // connection can drop: read the job again now and then.
    let mut reread = state.manager.store().shared().map(|_| {
        let mut ticks = tokio::time::interval(SHARED_REREAD);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.reset();
        ticks
    });
    loop {
        let reread_due = async {
            match reread.as_mut() {
                Some(ticks) => {
                    ticks.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        let event = {
            let output_written = async {
                match output.as_mut() {
                    Some(output) => output.written(id).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = output_written => None,
                () = reread_due => Some(Err(broadcast::error::RecvError::Lagged(0))),
                () = state.closing.cancelled() => {
                    let status = Status::unavailable(
                        "the daemon is shutting down: watch the job again once it is back",
                    );
                    let _ = updates.send(Err(status)).await;
                    return;
                }
                () = updates.closed() => return,
                event = events.recv() => Some(event),
            }
        };
        let Some(event) = event else {
            // New output: send it, in the state it was written in.
            if let Some(output) = output.as_mut()
                && !(catch_up(&state, id, &mut sent, &mut current, &updates).await
                    && output.send_new(&state, id, current, &updates).await)
            {
                return;
            }
            continue;
        };
        match event {
            Ok(event) if event.id != id => continue,
            Ok(event) if !event.status.is_terminal() => {
                let progress = Progress::of(event.status, event.attempt);
                if progress > sent {
                    sent = progress;
                    current = (event.status, event.attempt, event.retry_count);
                    if updates.send(Ok(from_event(event))).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            // Terminal: read the job back so that the last update carries the result.
            // Lagged: events were missed, and the store knows where the job is now.
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => {
                let status = Status::unavailable("the daemon stopped publishing job events");
                let _ = updates.send(Err(status)).await;
                return;
            }
        }
        let (job, attempt) = match job_with_attempt(&state, id).await {
            Ok(found) => found,
            Err(status) => {
                let _ = updates.send(Err(status)).await;
                return;
            }
        };
        let progress = Progress::of(job.status, attempt);
        let terminal = job.status.is_terminal();
        // The worker stores an attempt's last output before its outcome: read it
        // before the terminal update, so the watcher has the whole log when it ends.
        if terminal
            && let Some(output) = output.as_mut()
            && !output.send_new(&state, id, current, &updates).await
        {
            return;
        }
        if progress > sent {
            sent = progress;
            current = (job.status, attempt, job.retry_count);
            if updates
                .send(Ok(snapshot_of(&state, job, attempt).await))
                .await
                .is_err()
            {
                return;
            }
        }
        if terminal {
            return;
        }
    }
}

/// [`snapshot`] with the job's latest progress, as `GetJobStatus` shows it.
async fn snapshot_of(state: &ApiState, job: Job, attempt: u32) -> pb::JobUpdate {
    let id = job.id;
    let mut update = snapshot(job, attempt);
    if let Some(job) = update.job.as_mut() {
        job.progress = latest_progress(state, id).await;
    }
    update
}

fn snapshot(job: Job, attempt: u32) -> pb::JobUpdate {
    pb::JobUpdate {
        job_id: job.id.to_string(),
        status: convert::status_to_pb(job.status).into(),
        attempt,
        retry_count: job.retry_count,
        error: job.error.clone(),
        at: Some(convert::timestamp(changed_at(&job))),
        job: Some(convert::job_to_pb(job, attempt, true)),
        progress: None,
        log_lines: Vec::new(),
    }
}

/// When the job reached its current state, as far as its row tells; for a pending job
/// (submitted, or back from a retry) the time it was read.
fn changed_at(job: &Job) -> chrono::DateTime<chrono::Utc> {
    match job.status {
        JobStatus::Pending => chrono::Utc::now(),
        JobStatus::Running => job.started_at.unwrap_or(job.created_at),
        _ => job.completed_at.unwrap_or(job.created_at),
    }
}

fn from_event(event: JobEvent) -> pb::JobUpdate {
    pb::JobUpdate {
        job_id: event.id.to_string(),
        status: convert::status_to_pb(event.status).into(),
        attempt: event.attempt,
        retry_count: event.retry_count,
        error: event.error,
        at: Some(convert::timestamp(event.at)),
        job: None,
        progress: None,
        log_lines: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;

    #[test]
    fn progress_orders_a_life_with_retries_and_a_restart() {
        let life = [
            (Pending, 0),
            (Running, 1),
            (Pending, 1), // retry
            (Running, 2),
            (Pending, 2), // interrupted by shutdown
            (Running, 3),
            (Completed, 3),
        ];
        let progress: Vec<Progress> = life.iter().map(|&(s, a)| Progress::of(s, a)).collect();
        assert!(
            progress.windows(2).all(|pair| pair[0] < pair[1]),
            "{progress:?}"
        );
    }

    #[test]
    fn a_replayed_older_event_is_not_newer_than_the_snapshot() {
        let snapshot = Progress::of(Running, 2);
        assert!(Progress::of(Pending, 1) < snapshot);
        assert!(Progress::of(Running, 1) < snapshot);
        assert!(Progress::of(Pending, 0) < snapshot);
        assert_eq!(Progress::of(Running, 2), snapshot);
    }
}
