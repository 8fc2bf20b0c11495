//! The in-memory priority queue: which pending job runs next.
//!
//! [`PriorityQueue`] orders eligible jobs by priority (highest first), then by creation
//! time (oldest first), then by id. Jobs whose `run_at` lies in the future wait in a
//! second heap ordered by `run_at` and move over once due. Removal is lazy: a removed
//! job stays in its heap as a stale entry until it surfaces, so every operation is
//! O(log n). Jobs of a paused plugin or command are taken out of line as they surface
//! and held aside until the pause ends, when they go back where they belong; so a
//! pause costs nothing until its jobs reach the front. A rate-limit hold of a plugin
//! works the same way, but ends by itself: a job of a held plugin that reaches the
//! front moves to the delayed heap until the hold's end, its stored `run_at` untouched,
//! and is looked at again then. The clock is always a
//! parameter; this module does no I/O and no locking (the [`super::JobQueue`] wraps it
//! in a mutex and a wake-up signal).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};

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
    /// The plugins and commands paused.
    paused: HashSet<Box<str>>,
    /// Jobs a pause took out of line, until it ends.
    held: HashMap<JobId, QueuedJob>,
    /// The plugins a rate limit holds, until when.
    rate_limited: HashMap<Box<str>, DateTime<Utc>>,
}

impl PriorityQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `job`, replacing an earlier entry for the same id.
    pub fn enqueue(&mut self, job: QueuedJob, now: DateTime<Utc>) {
        self.held.remove(&job.id);
        let generation = self.next_generation;
        self.next_generation += 1;
        let (id, run_at) = (job.id, job.run_at);
        if run_at > now {
            self.delayed.push(Reverse(Delayed(run_at, id, generation)));
        } else {
            self.ready.push(Ready(job.clone(), generation));
        }
        self.members.insert(id, (job, generation));
    }

    /// Takes the best eligible job at `now` that no pause holds, if any.
    pub fn dequeue(&mut self, now: DateTime<Utc>) -> Option<QueuedJob> {
        let job = self.peek(now)?;
        self.ready.pop();
        self.members.remove(&job.id);
        Some(job)
    }

    /// The job `dequeue(now)` would return, left in place.
    pub fn peek(&mut self, now: DateTime<Utc>) -> Option<QueuedJob> {
        self.promote_due(now);
        loop {
            let job = self.peek_ready()?;
            if self.is_paused(&job.command) {
                self.ready.pop();
                self.members.remove(&job.id);
                self.held.insert(job.id, job);
                continue;
            }
            if let Some(until) = self.rate_limited_until(&job.command, now) {
                // Out of line until the hold ends, under the same generation.
                if let Some(Ready(job, generation)) = self.ready.pop() {
                    self.delayed
                        .push(Reverse(Delayed(until, job.id, generation)));
                }
                continue;
            }
            return Some(job);
        }
    }

    /// Holds back the jobs of `plugin` until `until` (a later end already known stays).
    pub fn hold_until(&mut self, plugin: &str, until: DateTime<Utc>) {
        let end = self.rate_limited.entry(plugin.into()).or_insert(until);
        *end = (*end).max(until);
    }

    /// The end of the rate-limit hold on `command`'s plugin, if it is live at `now`.
    fn rate_limited_until(&mut self, command: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.rate_limited.is_empty() {
            return None;
        }
        self.rate_limited.retain(|_, until| *until > now);
        let plugin = command
            .split_once('.')
            .map_or(command, |(plugin, _)| plugin);
        self.rate_limited.get(plugin).copied()
    }

    /// Holds back the jobs of `target`, a plugin or a command, from now on.
    pub fn pause(&mut self, target: &str) {
        self.paused.insert(target.into());
    }

    /// Ends the pause of `target`: the jobs it held that no other pause holds go back in
    /// line. How many did.
    pub fn resume(&mut self, target: &str, now: DateTime<Utc>) -> usize {
        if !self.paused.remove(target) {
            return 0;
        }
        let released: Vec<JobId> = self
            .held
            .values()
            .filter(|job| !self.is_paused(&job.command))
            .map(|job| job.id)
            .collect();
        for id in &released {
            if let Some(job) = self.held.remove(id) {
                self.enqueue(job, now);
            }
        }
        released.len()
    }

    /// Whether a pause holds jobs of `command` (it names the command or its plugin).
    pub fn is_paused(&self, command: &str) -> bool {
        !self.paused.is_empty()
            && (self.paused.contains(command)
                || command
                    .split_once('.')
                    .is_some_and(|(plugin, _)| self.paused.contains(plugin)))
    }

    /// Drops `id` from the queue; false when it was not queued.
    pub fn remove(&mut self, id: JobId) -> bool {
        self.members.remove(&id).is_some() | self.held.remove(&id).is_some()
    }

    /// Whether `id` is queued (eligible or not, held by a pause or not).
    pub fn contains(&self, id: JobId) -> bool {
        self.members.contains_key(&id) || self.held.contains_key(&id)
    }

    /// Queued jobs, eligible or not, held by a pause or not.
    pub fn len(&self) -> usize {
        self.members.len() + self.held.len()
    }

    /// Of those, how many a pause holds aside.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.held.is_empty()
    }

    /// Whether some job is in line (eligible now or later), not counting held ones.
    pub fn has_waiting(&self) -> bool {
        !self.members.is_empty()
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
                self.ready.push(Ready(job.clone(), generation));
            }
        }
    }

    fn peek_ready(&mut self) -> Option<QueuedJob> {
        while let Some(Ready(job, generation)) = self.ready.peek() {
            if self.is_live(job.id, *generation) {
                return Some(job.clone());
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
        queued_for("echo.echo", priority, created_ms)
    }

    fn queued_for(command: &str, priority: i64, created_ms: i64) -> QueuedJob {
        QueuedJob {
            id: JobId::new(),
            command: command.into(),
            priority,
            created_at: at(created_ms),
            run_at: at(created_ms),
        }
    }

    #[test]
    fn a_rate_limit_holds_its_plugins_jobs_until_it_ends_and_others_pass() {
        let mut queue = PriorityQueue::new();
        let held = queued_for("github.commits", 9, 1);
        let other = queued_for("echo.echo", 0, 2);
        queue.enqueue(held.clone(), at(10));
        queue.enqueue(other.clone(), at(10));
        queue.hold_until("github", at(100));
        queue.hold_until("github", at(50));
        assert_eq!(
            queue.dequeue(at(20)),
            Some(other),
            "the held plugin's job waits"
        );
        assert_eq!(queue.dequeue(at(99)), None);
        assert_eq!(
            queue.next_due(),
            Some(at(100)),
            "workers sleep until the end"
        );
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.dequeue(at(100)), Some(held));
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
        for job in [&low, &high, &mid] {
            queue.enqueue(job.clone(), at(10));
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
        queue.enqueue(newer.clone(), at(10));
        queue.enqueue(older.clone(), at(10));
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
        queue.enqueue(keep.clone(), at(10));
        queue.enqueue(drop.clone(), at(10));
        assert!(queue.remove(drop.id));
        assert!(!queue.remove(drop.id));
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.peek(at(10)), Some(keep.clone()));
        assert_eq!(queue.dequeue(at(10)), Some(keep));
        assert_eq!(queue.dequeue(at(10)), None);
    }

    #[test]
    fn future_jobs_wait_until_due_whatever_their_priority() {
        let mut queue = PriorityQueue::new();
        let mut later = queued(100, 1);
        later.run_at = at(50);
        let now_job = queued(0, 2);
        queue.enqueue(later.clone(), at(10));
        queue.enqueue(now_job.clone(), at(10));
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
        queue.enqueue(job.clone(), at(10));
        job.run_at = at(100);
        queue.enqueue(job.clone(), at(10));
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.dequeue(at(10)), None);
        assert_eq!(queue.dequeue(at(100)), Some(job));
        assert_eq!(queue.dequeue(at(100)), None);
    }

    #[test]
    fn a_paused_commands_jobs_are_held_and_come_back_in_order_on_resume() {
        let mut queue = PriorityQueue::new();
        let paused_old = queued_for("github.commits", 5, 1);
        let paused_new = queued_for("github.issues", 5, 3);
        let other = queued_for("echo.echo", 0, 2);
        for job in [&paused_old, &paused_new, &other] {
            queue.enqueue(job.clone(), at(10));
        }
        queue.pause("github");
        assert_eq!(queue.dequeue(at(10)), Some(other.clone()));
        assert_eq!(queue.dequeue(at(10)), None, "both held");
        assert_eq!((queue.len(), queue.held()), (2, 2));
        assert!(queue.contains(paused_new.id));
        // A command pause outlives the end of its plugin's pause.
        queue.pause("github.issues");
        assert_eq!(queue.resume("github", at(10)), 1);
        assert_eq!(queue.dequeue(at(10)), Some(paused_old));
        assert_eq!(queue.dequeue(at(10)), None);
        // A held job can be removed (cancelled) while held.
        assert!(queue.remove(paused_new.id));
        assert_eq!(queue.resume("github.issues", at(10)), 0);
        assert!(queue.is_empty());
        assert_eq!(queue.resume("never-paused", at(10)), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue {
            priority: i64,
            created_ms: i64,
            delay_ms: i64,
            command: usize,
        },
        Dequeue,
        Remove(usize),
        Tick(i64),
        Pause(usize),
        Resume(usize),
    }

    const COMMANDS: [&str; 3] = ["a.x", "a.y", "b.x"];
    const TARGETS: [&str; 3] = ["a", "a.x", "b"];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (-3i64..4, 0i64..50, prop_oneof![Just(0i64), 1i64..30], 0..COMMANDS.len())
                .prop_map(|(priority, created_ms, delay_ms, command)| Op::Enqueue { priority, created_ms, delay_ms, command }),
            3 => Just(Op::Dequeue),
            1 => any::<usize>().prop_map(Op::Remove),
            1 => (0i64..20).prop_map(Op::Tick),
            1 => (0..TARGETS.len()).prop_map(Op::Pause),
            1 => (0..TARGETS.len()).prop_map(Op::Resume),
        ]
    }

    proptest! {
        /// Against a model (a plain list, searched exhaustively), any sequence of
        /// enqueue, dequeue, remove, clock ticks, pauses and resumes yields the same
        /// jobs in the same priority-then-age order, never an ineligible or a paused one.
        #[test]
        fn any_operation_sequence_preserves_dispatch_order(ops in prop::collection::vec(op(), 1..200)) {
            let mut queue = PriorityQueue::new();
            let mut model: Vec<QueuedJob> = Vec::new();
            let mut paused: HashSet<&str> = HashSet::new();
            let mut now = 0i64;
            for op in ops {
                match op {
                    Op::Enqueue { priority, created_ms, delay_ms, command } => {
                        let mut job = queued_for(COMMANDS[command], priority, created_ms);
                        job.run_at = at(now + delay_ms);
                        queue.enqueue(job.clone(), at(now));
                        model.push(job);
                    }
                    Op::Pause(target) => {
                        queue.pause(TARGETS[target]);
                        paused.insert(TARGETS[target]);
                    }
                    Op::Resume(target) => {
                        queue.resume(TARGETS[target], at(now));
                        paused.remove(TARGETS[target]);
                    }
                    Op::Dequeue => {
                        let expected = model
                            .iter()
                            .filter(|job| job.run_at <= at(now))
                            .filter(|job| {
                                !paused.iter().any(|target| {
                                    honeydew_core::pause::covers(target, &job.command)
                                })
                            })
                            .max_by(|a, b| dispatch_cmp(a, b))
                            .cloned();
                        if let Some(job) = &expected {
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
