//! The queue: the in-memory dispatch order and the manager that keeps it in step with
//! the store.
//!
//! [`PriorityQueue`] is the pure data structure; [`JobQueue`] makes it shareable and
//! lets workers wait for work without polling: a push wakes one waiting worker, and a
//! worker with nothing eligible sleeps exactly until the earliest delayed job is due.
//! [`Manager`] is the front door (submit, cancel, get, list, pause, explain) and the
//! workers' source of jobs.

mod explain;
mod manager;
mod priority;

use std::sync::Mutex;

use chrono::Utc;
use tokio::sync::Notify;

use crate::job::JobId;

pub use explain::{Explanation, Holdup};
pub use manager::{
    AnyCommand, CancelError, CancelOutcome, CommandCatalog, CommandDefaults, JobEvent,
    MAX_BATCH_JOBS, MAX_UNIQUE_KEY_BYTES, Manager, ManagerConfig, OnConflict, PauseError,
    SubmitError, SubmitRequest, Submitted, UniqueRequest,
};
pub use priority::{PriorityQueue, QueuedJob};

/// A [`PriorityQueue`] shared between the manager and the workers.
#[derive(Default)]
pub struct JobQueue {
    heap: Mutex<PriorityQueue>,
    work_arrived: Notify,
}

impl JobQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a job and wakes one waiting worker.
    pub fn push(&self, job: QueuedJob) {
        self.lock().enqueue(job, Utc::now());
        self.work_arrived.notify_one();
    }

    /// Drops a job; false when it was not queued.
    pub fn remove(&self, id: JobId) -> bool {
        self.lock().remove(id)
    }

    /// Queued jobs, eligible or not.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Holds back the jobs of `target` (a plugin or a command) from now on.
    pub fn pause(&self, target: &str) {
        self.lock().pause(target);
    }

    /// Ends the pause of `target` and wakes workers for the jobs it held.
    pub fn resume(&self, target: &str) {
        let released = self.lock().resume(target, Utc::now());
        if released > 0 {
            self.work_arrived.notify_one();
        }
    }

    /// Holds back the jobs of `plugin` until `until` (a rate limit of its API): they
    /// stay queued, and run once it ends.
    pub fn hold_until(&self, plugin: &str, until: chrono::DateTime<Utc>) {
        self.lock().hold_until(plugin, until);
    }

    /// The attempt of `job` (popped from here) ended: its concurrency slots are free,
    /// and a worker wakes for a job that waited for one.
    pub fn release(&self, job: &QueuedJob) {
        if self.lock().release(job) {
            self.work_arrived.notify_one();
        }
    }

    /// Puts `limits` in force from now on; jobs waiting for a slot are judged again.
    pub fn set_limits(&self, limits: honeydew_core::concurrency::ConcurrencyLimits) {
        self.lock().set_limits(limits);
        self.work_arrived.notify_one();
    }

    /// The scope whose lack of a free slot keeps `id` waiting, if one does.
    pub fn blocked_by(&self, id: JobId) -> Option<honeydew_core::concurrency::Scope> {
        self.lock().blocked_by(id)
    }

    /// Queued jobs a pause holds aside.
    pub fn held(&self) -> usize {
        self.lock().held()
    }

    /// Takes the best eligible job now, without waiting.
    pub fn try_pop(&self) -> Option<QueuedJob> {
        self.lock().dequeue(Utc::now())
    }

    /// The best eligible job, waiting for one to arrive or fall due.
    pub async fn pop(&self) -> QueuedJob {
        loop {
            let notified = self.work_arrived.notified();
            tokio::pin!(notified);
            // Register before looking, so a push between the look and the wait wakes us.
            notified.as_mut().enable();
            let (job, next_due) = {
                let mut heap = self.lock();
                let job = heap.dequeue(Utc::now());
                let next_due = if job.is_none() { heap.next_due() } else { None };
                (job, next_due)
            };
            if let Some(job) = job {
                if self.lock().has_waiting() {
                    // More may be eligible: pass the baton to another waiting worker.
                    self.work_arrived.notify_one();
                }
                return job;
            }
            match next_due {
                Some(due) => {
                    let wait = (due - Utc::now()).to_std().unwrap_or_default();
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PriorityQueue> {
        self.heap.lock().expect("job queue poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    use chrono::TimeDelta;

    fn queued(priority: i64) -> QueuedJob {
        let now = Utc::now();
        QueuedJob {
            id: JobId::new(),
            command: "echo.echo".into(),
            priority,
            created_at: now,
            run_at: now,
            concurrency_key: None,
        }
    }

    #[tokio::test]
    async fn concurrent_push_and_pop_lose_and_duplicate_nothing() {
        let queue = Arc::new(JobQueue::new());
        let pushers: Vec<_> = (0..8)
            .map(|task| {
                let queue = Arc::clone(&queue);
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for n in 0..250 {
                        let job = queued((task * n) % 7);
                        ids.push(job.id);
                        queue.push(job);
                        tokio::task::yield_now().await;
                    }
                    ids
                })
            })
            .collect();
        let poppers: Vec<_> = (0..4)
            .map(|_| {
                let queue = Arc::clone(&queue);
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for _ in 0..500 {
                        ids.push(queue.pop().await.id);
                    }
                    ids
                })
            })
            .collect();
        let mut pushed = HashSet::new();
        for pusher in pushers {
            pushed.extend(pusher.await.unwrap());
        }
        let mut popped = Vec::new();
        for popper in poppers {
            popped.extend(popper.await.unwrap());
        }
        let popped_set: HashSet<_> = popped.iter().copied().collect();
        assert_eq!(popped.len(), 2000);
        assert_eq!(popped_set, pushed);
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn waiting_worker_wakes_when_work_arrives() {
        let queue = Arc::new(JobQueue::new());
        let waiter = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { queue.pop().await }
        });
        tokio::task::yield_now().await;
        let job = queued(0);
        queue.push(job.clone());
        assert_eq!(waiter.await.unwrap(), job);
    }

    #[tokio::test]
    async fn delayed_job_is_released_when_due_not_before() {
        let queue = JobQueue::new();
        let mut job = queued(0);
        job.run_at = Utc::now() + TimeDelta::milliseconds(80);
        queue.push(job.clone());
        assert_eq!(queue.try_pop(), None, "not yet due");
        let popped = queue.pop().await;
        assert_eq!(popped, job);
        assert!(Utc::now() >= job.run_at);
    }
}
