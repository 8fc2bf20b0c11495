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
//! and is looked at again then.
//!
//! Concurrency limits (see [`honeydew_core::concurrency`]) work the same way again: a
//! job that reaches the front while one of its scopes (plugin, command, key) has no
//! free slot waits aside in that scope's own heap, in its order, and the release of a
//! slot puts the best one back in line. Jobs with a concurrency key line up per key:
//! only the key's best job is in the main line, where it stands by
//! [`rejoin_order`](honeydew_core::concurrency::rejoin_order) (its age, or the start of
//! the key's previous job if that came later), so keys take turns. The queue counts
//! what it handed out until [`PriorityQueue::release`] says the attempt ended. The clock
//! is always a parameter; this module does no I/O and no locking (the
//! [`super::JobQueue`] wraps it in a mutex and a wake-up signal).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use honeydew_core::concurrency::{ConcurrencyLimits, Scope, plugin_of, rejoin_order};

use crate::job::JobId;
pub use crate::job::QueuedJob;

/// Dispatch order: `Greater` runs first.
fn dispatch_cmp(a: &QueuedJob, b: &QueuedJob) -> Ordering {
    a.priority
        .cmp(&b.priority)
        .then_with(|| b.created_at.cmp(&a.created_at))
        .then_with(|| b.id.cmp(&a.id))
}

/// A heap entry ordered for dispatch (max-heap: the best job on top): by priority,
/// then by `order` (its age, or where its key rejoined the line), then by id.
struct Ready {
    job: QueuedJob,
    generation: u64,
    order: DateTime<Utc>,
}

impl Ready {
    /// An entry standing in line by its own age.
    fn by_age(job: QueuedJob, generation: u64) -> Self {
        let order = job.created_at;
        Self {
            job,
            generation,
            order,
        }
    }
}

impl PartialEq for Ready {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ready {}

impl Ord for Ready {
    fn cmp(&self, other: &Self) -> Ordering {
        self.job
            .priority
            .cmp(&other.job.priority)
            .then_with(|| other.order.cmp(&self.order))
            .then_with(|| dispatch_cmp(&self.job, &other.job))
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

/// The line of one concurrency key: its best eligible job stands in the main line (or
/// waits aside for a slot); the rest wait here.
#[derive(Default)]
struct KeyLine {
    /// The job (and entry generation) that represents the key in the main line.
    head: Option<(JobId, u64)>,
    /// The key's other eligible jobs, in dispatch order.
    waiting: BinaryHeap<Ready>,
    /// When the key's latest job started.
    last_started: Option<DateTime<Utc>>,
}

/// How many jobs the queue handed out and were not released yet, by plugin, command
/// and key: counted whatever the limits, so a limit set later counts what runs.
#[derive(Default)]
struct Running {
    plugins: HashMap<Box<str>, u32>,
    commands: HashMap<Arc<str>, u32>,
    keys: HashMap<Box<str>, HashMap<Arc<str>, u32>>,
}

impl Running {
    fn of(&self, scope: &Scope) -> u32 {
        match scope {
            Scope::Plugin(plugin) => self.plugins.get(plugin.as_str()),
            Scope::Command(command) => self.commands.get(command.as_str()),
            Scope::Key { plugin, key } => self
                .keys
                .get(plugin.as_str())
                .and_then(|keys| keys.get(key.as_str())),
        }
        .copied()
        .unwrap_or(0)
    }

    fn started(&mut self, job: &QueuedJob) {
        let plugin = plugin_of(&job.command);
        // Looked up by `&str` first: a dispatch allocates a key only for a new plugin.
        match self.plugins.get_mut(plugin) {
            Some(count) => *count += 1,
            None => {
                self.plugins.insert(plugin.into(), 1);
            }
        }
        *self.commands.entry(Arc::clone(&job.command)).or_default() += 1;
        if let Some(key) = &job.concurrency_key {
            if !self.keys.contains_key(plugin) {
                self.keys.insert(plugin.into(), HashMap::new());
            }
            if let Some(keys) = self.keys.get_mut(plugin) {
                *keys.entry(Arc::clone(key)).or_default() += 1;
            }
        }
    }

    fn ended(&mut self, job: &QueuedJob) {
        fn down<K: std::borrow::Borrow<str> + Eq + std::hash::Hash>(
            counts: &mut HashMap<K, u32>,
            name: &str,
        ) {
            if let Some(count) = counts.get_mut(name) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(name);
                }
            }
        }
        let plugin = plugin_of(&job.command);
        down(&mut self.plugins, plugin);
        down(&mut self.commands, &job.command);
        if let (Some(key), Some(keys)) = (&job.concurrency_key, self.keys.get_mut(plugin)) {
            down(keys, key);
            if keys.is_empty() {
                self.keys.remove(plugin);
            }
        }
    }
}

/// Pending jobs in dispatch order, with future jobs held back until due.
#[derive(Default)]
pub struct PriorityQueue {
    ready: BinaryHeap<Ready>,
    delayed: BinaryHeap<Reverse<Delayed>>,
    /// Live members and the generation of their current heap entry; an entry whose
    /// generation differs (or whose id is absent) is stale. Jobs waiting in a key's
    /// line or for a slot are members too.
    members: HashMap<JobId, (QueuedJob, u64)>,
    next_generation: u64,
    /// The plugins and commands paused.
    paused: HashSet<Box<str>>,
    /// Jobs a pause took out of line, until it ends.
    held: HashMap<JobId, QueuedJob>,
    /// The plugins a rate limit holds, until when.
    rate_limited: HashMap<Box<str>, DateTime<Utc>>,
    /// The concurrency limits in force.
    limits: ConcurrencyLimits,
    /// What was handed out and not released.
    running: Running,
    /// Jobs that reached the front while this scope had no free slot.
    blocked: HashMap<Scope, BinaryHeap<Ready>>,
    /// The lines of concurrency keys, by plugin, then key.
    lines: HashMap<Box<str>, HashMap<Arc<str>, KeyLine>>,
}

impl PriorityQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `job`, replacing an earlier entry for the same id.
    pub fn enqueue(&mut self, job: QueuedJob, now: DateTime<Utc>) {
        self.held.remove(&job.id);
        let generation = self.generation();
        let (id, run_at) = (job.id, job.run_at);
        self.members.insert(id, (job.clone(), generation));
        if run_at > now {
            self.delayed.push(Reverse(Delayed(run_at, id, generation)));
        } else {
            self.line_up(job, generation);
        }
    }

    fn generation(&mut self) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        generation
    }

    /// Puts an eligible member in line: the main line, or its key's.
    fn line_up(&mut self, job: QueuedJob, generation: u64) {
        let Some(key) = job.concurrency_key.clone() else {
            self.ready.push(Ready::by_age(job, generation));
            return;
        };
        let line = self
            .lines
            .entry(plugin_of(&job.command).into())
            .or_default()
            .entry(key)
            .or_default();
        let head = line.head.and_then(|(id, head_generation)| {
            self.members
                .get(&id)
                .filter(|(_, live)| *live == head_generation)
                .map(|(head, _)| head.clone())
        });
        match head {
            Some(head) if dispatch_cmp(&job, &head) != Ordering::Greater => {
                line.waiting.push(Ready::by_age(job, generation));
            }
            demoted => {
                if let Some(head) = demoted {
                    // A better job of the key came: it heads the key's line, and the
                    // former head's entry (in line or aside) goes stale.
                    let fresh = self.next_generation;
                    self.next_generation += 1;
                    if let Some(member) = self.members.get_mut(&head.id) {
                        member.1 = fresh;
                    }
                    line.waiting.push(Ready::by_age(head, fresh));
                }
                line.head = Some((job.id, generation));
                let order = rejoin_order(job.created_at, line.last_started);
                self.ready.push(Ready {
                    job,
                    generation,
                    order,
                });
            }
        }
    }

    /// Gives the key of `job` its next head, after `job` left the front of the line.
    fn advance_line(&mut self, job: &QueuedJob) {
        let Some(key) = &job.concurrency_key else {
            return;
        };
        let plugin = plugin_of(&job.command);
        let Some(lines) = self.lines.get_mut(plugin) else {
            return;
        };
        let Some(line) = lines.get_mut(key) else {
            return;
        };
        if line.head.is_some_and(|(id, _)| id != job.id) {
            return;
        }
        line.head = None;
        while let Some(next) = line.waiting.pop() {
            if self
                .members
                .get(&next.job.id)
                .is_some_and(|(_, live)| *live == next.generation)
            {
                line.head = Some((next.job.id, next.generation));
                let order = rejoin_order(next.job.created_at, line.last_started);
                self.ready.push(Ready { order, ..next });
                return;
            }
        }
        // A key with a job running keeps its line: when it started matters to the next.
        if self.running.of(&key_scope(plugin, key)) == 0 {
            lines.remove(key);
            if lines.is_empty() {
                self.lines.remove(plugin);
            }
        }
    }

    /// Takes the best eligible job at `now` that no pause, rate limit or concurrency
    /// limit holds, if any, and counts it as running until [`PriorityQueue::release`].
    pub fn dequeue(&mut self, now: DateTime<Utc>) -> Option<QueuedJob> {
        let job = self.peek(now)?;
        self.ready.pop();
        self.members.remove(&job.id);
        self.running.started(&job);
        if let Some(key) = &job.concurrency_key
            && let Some(line) = self
                .lines
                .get_mut(plugin_of(&job.command))
                .and_then(|lines| lines.get_mut(key))
        {
            line.last_started = Some(line.last_started.map_or(now, |last| last.max(now)));
        }
        self.advance_line(&job);
        Some(job)
    }

    /// The attempt of `job`, handed out by [`PriorityQueue::dequeue`], ended: its slots
    /// are free again. Whether a job waiting for one of them went back in line.
    pub fn release(&mut self, job: &QueuedJob) -> bool {
        self.running.ended(job);
        let mut released = false;
        // Nothing waits aside (the usual case without limits): no scope to look at.
        let scopes = if self.blocked.is_empty() {
            Vec::new()
        } else {
            ConcurrencyLimits::scopes_of(&job.command, job.concurrency_key.as_deref())
        };
        for scope in scopes {
            if self.has_free_slot(&scope) {
                released |= self.unblock_one(&scope);
            }
        }
        if let Some(key) = &job.concurrency_key {
            let plugin = plugin_of(&job.command);
            let idle = self
                .lines
                .get(plugin)
                .and_then(|lines| lines.get(key))
                .is_some_and(|line| line.head.is_none() && line.waiting.is_empty());
            if idle
                && self.running.of(&key_scope(plugin, key)) == 0
                && let Some(lines) = self.lines.get_mut(plugin)
            {
                lines.remove(key);
                if lines.is_empty() {
                    self.lines.remove(plugin);
                }
            }
        }
        released
    }

    /// Replaces the concurrency limits; every job waiting for a slot goes back in line
    /// to be judged by the new ones.
    pub fn set_limits(&mut self, limits: ConcurrencyLimits) {
        if limits == self.limits {
            return;
        }
        self.limits = limits;
        for (_, waiting) in self.blocked.drain() {
            self.ready.extend(waiting);
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &ConcurrencyLimits {
        &self.limits
    }

    /// How many jobs the queue handed out and were not released, in `scope`.
    pub fn running_in(&self, scope: &Scope) -> u32 {
        self.running.of(scope)
    }

    fn has_free_slot(&self, scope: &Scope) -> bool {
        self.limits
            .limit(scope)
            .is_none_or(|limit| self.running.of(scope) < limit)
    }

    /// The first limited scope of `job` without a free slot.
    fn full_scope(&self, job: &QueuedJob) -> Option<Scope> {
        if self.limits.is_empty() && job.concurrency_key.is_none() {
            return None;
        }
        self.limits
            .limited(&job.command, job.concurrency_key.as_deref())
            .into_iter()
            .find(|(scope, limit)| self.running.of(scope) >= *limit)
            .map(|(scope, _)| scope)
    }

    /// Puts a job back in line from every scope that waits with a slot free; whether
    /// one went.
    fn unblock_free(&mut self) -> bool {
        let free: Vec<Scope> = self
            .blocked
            .keys()
            .filter(|scope| self.has_free_slot(scope))
            .cloned()
            .collect();
        let mut released = false;
        for scope in free {
            released |= self.unblock_one(&scope);
        }
        released
    }

    /// Puts the best live job waiting for a slot of `scope` back in line.
    fn unblock_one(&mut self, scope: &Scope) -> bool {
        let Some(waiting) = self.blocked.get_mut(scope) else {
            return false;
        };
        let mut released = false;
        while let Some(entry) = waiting.pop() {
            if self
                .members
                .get(&entry.job.id)
                .is_some_and(|(_, live)| *live == entry.generation)
            {
                self.ready.push(entry);
                released = true;
                break;
            }
        }
        if waiting.is_empty() {
            self.blocked.remove(scope);
        }
        released
    }

    /// The job `dequeue(now)` would return, left in place.
    pub fn peek(&mut self, now: DateTime<Utc>) -> Option<QueuedJob> {
        self.promote_due(now);
        loop {
            let Some(job) = self.peek_ready() else {
                // A job a release put back in line may have been cancelled since, its
                // slot still free: the line ran dry, so hand such slots on.
                if self.unblock_free() {
                    continue;
                }
                return None;
            };
            if self.is_paused(&job.command) {
                self.ready.pop();
                self.members.remove(&job.id);
                self.advance_line(&job);
                self.held.insert(job.id, job);
                continue;
            }
            if let Some(until) = self.rate_limited_until(&job.command, now) {
                // Out of line until the hold ends, under the same generation.
                if let Some(entry) = self.ready.pop() {
                    self.delayed
                        .push(Reverse(Delayed(until, entry.job.id, entry.generation)));
                }
                self.advance_line(&job);
                continue;
            }
            if let Some(scope) = self.full_scope(&job) {
                // Aside until a slot of `scope` frees; a key's job stays its key's
                // head meanwhile, so the key keeps its turn.
                if let Some(entry) = self.ready.pop() {
                    self.blocked.entry(scope.clone()).or_default().push(entry);
                }
                // It may have come back for a slot of another scope: pass that slot on.
                for other in
                    ConcurrencyLimits::scopes_of(&job.command, job.concurrency_key.as_deref())
                {
                    if other != scope && self.has_free_slot(&other) {
                        self.unblock_one(&other);
                    }
                }
                continue;
            }
            return Some(job);
        }
    }

    /// The scope whose lack of a free slot keeps `id` waiting aside, if one does.
    pub fn blocked_by(&self, id: JobId) -> Option<Scope> {
        let generation = self.members.get(&id)?.1;
        self.blocked.iter().find_map(|(scope, waiting)| {
            waiting
                .iter()
                .any(|entry| entry.job.id == id && entry.generation == generation)
                .then(|| scope.clone())
        })
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
        self.rate_limited.get(plugin_of(command)).copied()
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
        let member = self.members.remove(&id);
        if let Some((job, _)) = &member {
            self.advance_line(job);
        }
        member.is_some() | self.held.remove(&id).is_some()
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

    /// Whether some job is in line (eligible now or later), not counting jobs a pause
    /// holds or that wait for a slot (stale entries may count).
    pub fn has_waiting(&self) -> bool {
        !self.ready.is_empty() || !self.delayed.is_empty()
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
                let job = job.clone();
                self.line_up(job, generation);
            }
        }
    }

    fn peek_ready(&mut self) -> Option<QueuedJob> {
        while let Some(entry) = self.ready.peek() {
            if self.is_live(entry.job.id, entry.generation) {
                return Some(entry.job.clone());
            }
            self.ready.pop();
        }
        None
    }
}

/// The scope of `key` within `plugin`.
fn key_scope(plugin: &str, key: &str) -> Scope {
    Scope::Key {
        plugin: plugin.to_owned(),
        key: key.to_owned(),
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
            concurrency_key: None,
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

    fn keyed(command: &str, key: &str, created_ms: i64) -> QueuedJob {
        QueuedJob {
            concurrency_key: Some(key.into()),
            ..queued_for(command, 0, created_ms)
        }
    }

    fn limited(target: &str, limit: u32) -> ConcurrencyLimits {
        let mut limits = ConcurrencyLimits::default();
        limits.running.insert(target.into(), limit);
        limits
    }

    #[test]
    fn a_plugins_limit_holds_its_jobs_until_a_slot_frees_and_others_pass() {
        let mut queue = PriorityQueue::new();
        queue.set_limits(limited("github", 2));
        let jobs: Vec<QueuedJob> = (0..4).map(|n| queued_for("github.commits", 0, n)).collect();
        for job in &jobs {
            queue.enqueue(job.clone(), at(10));
        }
        let other = queued_for("echo.echo", 0, 9);
        queue.enqueue(other.clone(), at(10));
        assert_eq!(queue.dequeue(at(10)), Some(jobs[0].clone()));
        assert_eq!(queue.dequeue(at(10)), Some(jobs[1].clone()));
        assert_eq!(
            queue.dequeue(at(10)),
            Some(other),
            "another plugin's job passes"
        );
        assert_eq!(queue.dequeue(at(10)), None, "github runs 2, its limit");
        assert_eq!(queue.len(), 2, "the held jobs stay queued");
        assert!(queue.blocked_by(jobs[2].id).is_some());
        assert!(
            queue.release(&jobs[0]),
            "a slot freed: a job goes back in line"
        );
        assert_eq!(queue.dequeue(at(10)), Some(jobs[2].clone()), "in its order");
        assert_eq!(queue.dequeue(at(10)), None);
        queue.release(&jobs[1]);
        assert_eq!(queue.dequeue(at(10)), Some(jobs[3].clone()));
    }

    #[test]
    fn a_commands_limit_leaves_the_plugins_other_commands_alone() {
        let mut queue = PriorityQueue::new();
        queue.set_limits(limited("github.clone", 1));
        let clones = [
            queued_for("github.clone", 0, 1),
            queued_for("github.clone", 0, 2),
        ];
        let commits = queued_for("github.commits", 0, 3);
        for job in clones.iter().chain([&commits]) {
            queue.enqueue(job.clone(), at(10));
        }
        assert_eq!(queue.dequeue(at(10)), Some(clones[0].clone()));
        assert_eq!(queue.dequeue(at(10)), Some(commits));
        assert_eq!(queue.dequeue(at(10)), None);
        queue.release(&clones[0]);
        assert_eq!(queue.dequeue(at(10)), Some(clones[1].clone()));
    }

    #[test]
    fn one_job_of_a_key_runs_at_a_time_unless_the_plugin_allows_more() {
        let mut queue = PriorityQueue::new();
        let a: Vec<QueuedJob> = (0..3).map(|n| keyed("github.commits", "a", n)).collect();
        let b = keyed("github.commits", "b", 5);
        for job in a.iter().chain([&b]) {
            queue.enqueue(job.clone(), at(10));
        }
        assert_eq!(queue.dequeue(at(10)), Some(a[0].clone()));
        assert_eq!(
            queue.dequeue(at(10)),
            Some(b.clone()),
            "key a runs one already"
        );
        assert_eq!(queue.dequeue(at(10)), None);
        queue.release(&a[0]);
        assert_eq!(queue.dequeue(at(11)), Some(a[1].clone()));
        let mut limits = ConcurrencyLimits::default();
        limits.per_key.insert("github".into(), 2);
        queue.set_limits(limits);
        assert_eq!(queue.dequeue(at(12)), Some(a[2].clone()), "two per key now");
    }

    #[test]
    fn keys_take_turns_so_a_busy_key_cannot_starve_a_quiet_one() {
        let mut queue = PriorityQueue::new();
        queue.set_limits(limited("github", 1));
        // Key a has 50 jobs, all older than key b's 3 and the unkeyed one.
        let a: Vec<QueuedJob> = (0..50).map(|n| keyed("github.commits", "a", n)).collect();
        let b: Vec<QueuedJob> = (0..3)
            .map(|n| keyed("github.commits", "b", 100 + n))
            .collect();
        let unkeyed = queued_for("github.issues", 0, 101);
        for job in a.iter().chain(&b).chain([&unkeyed]) {
            queue.enqueue(job.clone(), at(200));
        }
        let mut order = Vec::new();
        let mut now = 200;
        while let Some(job) = queue.dequeue(at(now)) {
            order.push(job.clone());
            now += 1;
            queue.release(&job);
        }
        assert_eq!(order.len(), 54, "every job ran once");
        let position = |job: &QueuedJob| order.iter().position(|j| j.id == job.id).unwrap();
        assert_eq!(position(&a[0]), 0, "the oldest goes first");
        assert_eq!(
            position(&b[0]),
            1,
            "then b, whose first job waited longer than a's second"
        );
        assert_eq!(position(&unkeyed), 2);
        assert!(
            position(&b[2]) < 8,
            "b's jobs alternate with a's: {}",
            position(&b[2])
        );
        let a_order: Vec<usize> = a.iter().map(position).collect();
        assert!(
            a_order.windows(2).all(|w| w[0] < w[1]),
            "a key's jobs keep their order"
        );
    }

    #[test]
    fn a_better_job_of_a_key_heads_its_line_and_a_cancelled_head_passes_the_turn() {
        let mut queue = PriorityQueue::new();
        let low = keyed("github.commits", "a", 1);
        let mut high = keyed("github.commits", "a", 2);
        high.priority = 9;
        let last = keyed("github.commits", "a", 3);
        for job in [&low, &high, &last] {
            queue.enqueue(job.clone(), at(10));
        }
        assert!(queue.remove(high.id));
        assert_eq!(queue.dequeue(at(10)), Some(low.clone()));
        queue.release(&low);
        assert_eq!(
            queue.dequeue(at(10)),
            Some(last),
            "the cancelled head passed its turn on"
        );
        assert!(queue.is_empty());
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

    #[derive(Debug, Clone)]
    enum LimitOp {
        Enqueue {
            command: usize,
            key: Option<usize>,
            priority: i64,
            delay_ms: i64,
        },
        Dequeue,
        Release(usize),
        Remove(usize),
        Tick(i64),
        Limit(usize, Option<u32>),
    }

    const LIMIT_TARGETS: [&str; 3] = ["a", "a.x", "b"];

    fn limit_op() -> impl Strategy<Value = LimitOp> {
        prop_oneof![
            4 => (0..COMMANDS.len(), prop::option::of(0usize..3), -2i64..3, prop_oneof![Just(0i64), 1i64..20])
                .prop_map(|(command, key, priority, delay_ms)| LimitOp::Enqueue { command, key, priority, delay_ms }),
            4 => Just(LimitOp::Dequeue),
            2 => any::<usize>().prop_map(LimitOp::Release),
            1 => any::<usize>().prop_map(LimitOp::Remove),
            1 => (0i64..10).prop_map(LimitOp::Tick),
            1 => (0..LIMIT_TARGETS.len(), prop::option::of(1u32..3)).prop_map(|(t, l)| LimitOp::Limit(t, l)),
        ]
    }

    proptest! {
        /// Under any sequence of submits, dispatches, ends of attempts, cancels, clock
        /// ticks and limit changes: no limit is ever exceeded, no ineligible job is
        /// handed out, nothing runnable is left waiting (a key's best job is its
        /// candidate), and at the end every job comes out exactly once.
        #[test]
        fn concurrency_limits_hold_and_lose_nothing(ops in prop::collection::vec(limit_op(), 1..150)) {
            let mut queue = PriorityQueue::new();
            let mut limits = ConcurrencyLimits::default();
            let mut model: Vec<QueuedJob> = Vec::new();
            let mut running: Vec<QueuedJob> = Vec::new();
            let mut now = 0i64;
            let count = |running: &[QueuedJob], scope: &Scope| {
                running.iter().filter(|job| {
                    ConcurrencyLimits::scopes_of(&job.command, job.concurrency_key.as_deref()).contains(scope)
                }).count() as u32
            };
            for op in ops {
                match op {
                    LimitOp::Enqueue { command, key, priority, delay_ms } => {
                        let mut job = queued_for(COMMANDS[command], priority, now);
                        job.concurrency_key = key.map(|k| Arc::from(["k0", "k1", "k2"][k]));
                        job.run_at = at(now + delay_ms);
                        queue.enqueue(job.clone(), at(now));
                        model.push(job);
                    }
                    LimitOp::Dequeue => {
                        let got = queue.dequeue(at(now));
                        let free = |job: &QueuedJob| limits
                            .limited(&job.command, job.concurrency_key.as_deref())
                            .iter()
                            .all(|(scope, limit)| count(&running, scope) < *limit);
                        let eligible: Vec<&QueuedJob> = model.iter().filter(|j| j.run_at <= at(now)).collect();
                        let candidate = |job: &QueuedJob| match &job.concurrency_key {
                            None => true,
                            Some(key) => eligible
                                .iter()
                                .filter(|other| other.concurrency_key.as_ref() == Some(key)
                                    && plugin_of(&other.command) == plugin_of(&job.command))
                                .max_by(|x, y| dispatch_cmp(x, y))
                                .is_some_and(|best| best.id == job.id),
                        };
                        match got {
                            Some(job) => {
                                prop_assert!(job.run_at <= at(now), "an ineligible job");
                                prop_assert!(free(&job), "a limit would be exceeded by {:?}", job);
                                let index = model.iter().position(|j| j.id == job.id);
                                prop_assert!(index.is_some(), "a job not queued");
                                model.remove(index.unwrap());
                                running.push(job);
                            }
                            None => {
                                let runnable = eligible.iter().find(|job| candidate(job) && free(job));
                                prop_assert!(runnable.is_none(), "left waiting: {:?}", runnable);
                            }
                        }
                    }
                    LimitOp::Release(index) => {
                        if !running.is_empty() {
                            let job = running.remove(index % running.len());
                            queue.release(&job);
                        }
                    }
                    LimitOp::Remove(index) => {
                        if !model.is_empty() {
                            let job = model.remove(index % model.len());
                            prop_assert!(queue.remove(job.id));
                        }
                    }
                    LimitOp::Tick(ms) => now += ms,
                    LimitOp::Limit(target, limit) => {
                        match limit {
                            Some(limit) => limits.running.insert(LIMIT_TARGETS[target].into(), limit),
                            None => limits.running.remove(LIMIT_TARGETS[target]),
                        };
                        queue.set_limits(limits.clone());
                    }
                }
                prop_assert_eq!(queue.len(), model.len());
            }
            for job in running.drain(..) {
                queue.release(&job);
            }
            now += 1000;
            let mut drained = 0;
            while let Some(job) = queue.dequeue(at(now)) {
                prop_assert!(model.iter().any(|j| j.id == job.id));
                queue.release(&job);
                drained += 1;
            }
            prop_assert_eq!(drained, model.len());
            prop_assert!(queue.is_empty());
        }
    }
}
