//! The in-memory priority queue: which pending job runs next.
//!
//! [`PriorityQueue`] orders eligible jobs by priority (highest first), then by creation
//! time (oldest first), then by id. Jobs whose `run_at` lies in the future wait in a
//! second heap ordered by `run_at` and move over once due. Removal is lazy: a removed
//! job stays in its heap as a stale entry until it surfaces, so every operation is
//! O(log n). The clock is always a parameter; this module does no I/O and no locking
//! (the [`super::JobQueue`] wraps it in a mutex and a wake-up signal).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use chrono::{DateTime, Utc};

use crate::job::JobId;
pub use crate::job::QueuedJob;

/// Dispatch order: `Greater` runs first.
fn dispatch_cmp(a: &QueuedJob, b: &QueuedJob) -> Ordering {
    a.priority
        .cmp(&b.priority)
        .then_with(|| b.created_at.cmp(&a.created_at))
        .then_with(|| b.id.cmp(&a.id))
}

/// A heap entry ordered for dispatch (max-heap: the best job on top).
#[derive(PartialEq, Eq)]
struct Ready(QueuedJob, u64);

impl Ord for Ready {
    fn cmp(&self, other: &Self) -> Ordering {
        dispatch_cmp(&self.0, &other.0)
    }
}

impl PartialOrd for Ready {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A heap entry ordered by eligibility time (min-heap through `Reverse`).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Delayed(DateTime<Utc>, JobId, u64);

/// Pending jobs in dispatch order, with future jobs held back until due.
#[derive(Default)]
pub struct PriorityQueue {
    ready: BinaryHeap<Ready>,
    delayed: BinaryHeap<Reverse<Delayed>>,
    /// Live members and the generation of their current heap entry; an entry whose
    /// generation differs (or whose id is absent) is stale.
    members: HashMap<JobId, (QueuedJob, u64)>,
    next_generation: u64,
}

impl PriorityQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `job`, replacing an earlier entry for the same id.
    pub fn enqueue(&mut self, job: QueuedJob, now: DateTime<Utc>) {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.members.insert(job.id, (job, generation));
        if job.run_at > now {
            self.delayed
                .push(Reverse(Delayed(job.run_at, job.id, generation)));
        } else {
            self.ready.push(Ready(job, generation));
        }
    }

    /// Takes the best eligible job at `now`, if any.
    pub fn dequeue(&mut self, now: DateTime<Utc>) -> Option<QueuedJob> {
        self.promote_due(now);
        let job = self.peek_ready()?;
        self.ready.pop();
        self.members.remove(&job.id);
        Some(job)
    }

    /// The job `dequeue(now)` would return, left in place.
    pub fn peek(&mut self, now: DateTime<Utc>) -> Option<QueuedJob> {
        self.promote_due(now);
        self.peek_ready()
    }

    /// Drops `id` from the queue; false when it was not queued.
    pub fn remove(&mut self, id: JobId) -> bool {
        self.members.remove(&id).is_some()
    }

    /// Whether `id` is queued (eligible or not).
    pub fn contains(&self, id: JobId) -> bool {
        self.members.contains_key(&id)
    }

    /// Queued jobs, eligible or not.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// When the earliest held-back job becomes eligible, if any is held back.
    pub fn next_due(&mut self) -> Option<DateTime<Utc>> {
        while let Some(Reverse(Delayed(run_at, id, generation))) = self.delayed.peek() {
            if self.is_live(*id, *generation) {
                return Some(*run_at);
            }
            self.delayed.pop();
        }
        None
    }

    fn is_live(&self, id: JobId, generation: u64) -> bool {
        self.members
            .get(&id)
            .is_some_and(|(_, live)| *live == generation)
    }

    fn promote_due(&mut self, now: DateTime<Utc>) {
        while let Some(Reverse(Delayed(run_at, id, generation))) = self.delayed.peek() {
            if *run_at > now {
                break;
            }
            let (id, generation) = (*id, *generation);
            self.delayed.pop();
            if let Some((job, _)) = self.members.get(&id).filter(|(_, g)| *g == generation) {
                self.ready.push(Ready(*job, generation));
            }
        }
    }

    fn peek_ready(&mut self) -> Option<QueuedJob> {
        while let Some(Ready(job, generation)) = self.ready.peek() {
            if self.is_live(job.id, *generation) {
                return Some(*job);
            }
            self.ready.pop();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use proptest::prelude::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::milliseconds(ms)
    }

    fn queued(priority: i64, created_ms: i64) -> QueuedJob {
        QueuedJob {
            id: JobId::new(),
            priority,
            created_at: at(created_ms),
            run_at: at(created_ms),
        }
    }

    #[test]
    fn enqueue_adds_and_len_counts() {
        let mut queue = PriorityQueue::new();
        assert!(queue.is_empty());
        queue.enqueue(queued(0, 1), at(10));
        queue.enqueue(queued(0, 2), at(10));
        assert_eq!(queue.len(), 2);
    }

    #[test]
    fn dequeue_returns_highest_priority_first() {
        let mut queue = PriorityQueue::new();
        let low = queued(0, 1);
        let high = queued(100, 2);
        let mid = queued(5, 3);
        for job in [low, high, mid] {
            queue.enqueue(job, at(10));
        }
        assert_eq!(queue.dequeue(at(10)), Some(high));
        assert_eq!(queue.dequeue(at(10)), Some(mid));
        assert_eq!(queue.dequeue(at(10)), Some(low));
    }

    #[test]
    fn dequeue_returns_oldest_among_equal_priorities() {
        let mut queue = PriorityQueue::new();
        let newer = queued(1, 5);
        let older = queued(1, 2);
        queue.enqueue(newer, at(10));
        queue.enqueue(older, at(10));
        assert_eq!(queue.dequeue(at(10)), Some(older));
        assert_eq!(queue.dequeue(at(10)), Some(newer));
    }

    #[test]
    fn dequeue_on_empty_queue_returns_none() {
        assert_eq!(PriorityQueue::new().dequeue(at(0)), None);
    }

    #[test]
    fn remove_drops_a_specific_job() {
        let mut queue = PriorityQueue::new();
        let keep = queued(0, 1);
        let drop = queued(9, 2);
        queue.enqueue(keep, at(10));
        queue.enqueue(drop, at(10));
        assert!(queue.remove(drop.id));
        assert!(!queue.remove(drop.id));
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.peek(at(10)), Some(keep));
        assert_eq!(queue.dequeue(at(10)), Some(keep));
        assert_eq!(queue.dequeue(at(10)), None);
    }

    #[test]
    fn future_jobs_wait_until_due_whatever_their_priority() {
        let mut queue = PriorityQueue::new();
        let mut later = queued(100, 1);
        later.run_at = at(50);
        let now_job = queued(0, 2);
        queue.enqueue(later, at(10));
        queue.enqueue(now_job, at(10));
        assert_eq!(queue.next_due(), Some(at(50)));
        assert_eq!(queue.dequeue(at(10)), Some(now_job));
        assert_eq!(queue.dequeue(at(49)), None);
        assert_eq!(queue.dequeue(at(50)), Some(later));
        assert_eq!(queue.next_due(), None);
    }

    #[test]
    fn re_enqueue_replaces_the_earlier_entry() {
        let mut queue = PriorityQueue::new();
        let mut job = queued(0, 1);
        queue.enqueue(job, at(10));
        job.run_at = at(100);
        queue.enqueue(job, at(10));
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.dequeue(at(10)), None);
        assert_eq!(queue.dequeue(at(100)), Some(job));
        assert_eq!(queue.dequeue(at(100)), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue {
            priority: i64,
            created_ms: i64,
            delay_ms: i64,
        },
        Dequeue,
        Remove(usize),
        Tick(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (-3i64..4, 0i64..50, prop_oneof![Just(0i64), 1i64..30])
                .prop_map(|(priority, created_ms, delay_ms)| Op::Enqueue { priority, created_ms, delay_ms }),
            3 => Just(Op::Dequeue),
            1 => any::<usize>().prop_map(Op::Remove),
            1 => (0i64..20).prop_map(Op::Tick),
        ]
    }

    proptest! {
        /// Against a model (a plain list, searched exhaustively), any sequence of
        /// enqueue, dequeue, remove and clock ticks yields the same jobs in the same
        /// priority-then-age order, never an ineligible one.
        #[test]
        fn any_operation_sequence_preserves_dispatch_order(ops in prop::collection::vec(op(), 1..200)) {
            let mut queue = PriorityQueue::new();
            let mut model: Vec<QueuedJob> = Vec::new();
            let mut now = 0i64;
            for op in ops {
                match op {
                    Op::Enqueue { priority, created_ms, delay_ms } => {
                        let mut job = queued(priority, created_ms);
                        job.run_at = at(now + delay_ms);
                        queue.enqueue(job, at(now));
                        model.push(job);
                    }
                    Op::Dequeue => {
                        let expected = model
                            .iter()
                            .filter(|job| job.run_at <= at(now))
                            .max_by(|a, b| dispatch_cmp(a, b))
                            .copied();
                        if let Some(job) = expected {
                            model.retain(|other| other.id != job.id);
                        }
                        prop_assert_eq!(queue.dequeue(at(now)), expected);
                    }
                    Op::Remove(index) => {
                        if !model.is_empty() {
                            let job = model.remove(index % model.len());
                            prop_assert!(queue.remove(job.id));
                        }
                    }
                    Op::Tick(ms) => now += ms,
                }
                prop_assert_eq!(queue.len(), model.len());
            }
        }
    }
}
