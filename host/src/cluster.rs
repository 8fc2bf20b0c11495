//! Membership of a store several daemons share: this node's heartbeat, the rescue of
//! the jobs of nodes that stopped heartbeating, and what the other nodes tell this one.
//!
//! Every third of the lease, a node renews its own lease and looks for nodes whose
//! heartbeat is older than the lease (by the database's clock): their running jobs go
//! back to pending, the lost attempt counted, so that the live nodes run them. A node
//! that was only frozen and wakes up finds its outcomes refused (they are fenced by
//! attempt) and changes nothing. The loop runs until the daemon has drained, so that a
//! daemon finishing its jobs during a shutdown is never taken for dead.
//!
//! Beside it, a follower delivers what the database announces: cancels of jobs this
//! node runs (asked on any node) reach their sandboxes, and every change of a watched
//! job, wherever it happened, reaches this node's watchers. Announcements are best
//! effort, so the requests are also read back from the database at every beat and
//! after every reconnection: a cancel is never lost, only late by a beat at most.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::queue::Manager;
use crate::rate_limits::RateLimits;
use crate::store::{ClusterSignal, SharedQueue, Store};

/// The lease when the configuration names none.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Heartbeats and rescues until `stop` fires. Does nothing on a store only one daemon
/// opens. At each beat it also settles the jobs waiting on others, which a node that
/// died between an outcome and its settling, or a rescue that failed a job, left
/// waiting (the database is the queue: a released job needs no more than its row).
/// Started before recovery, so that no other node takes this one for dead while it
/// starts. It also tells `rate_limits` how many nodes are live, which share each
/// declared limit, and the holds the other nodes learned.
pub async fn run(
    store: Store,
    lease: Duration,
    rate_limits: Option<Arc<RateLimits>>,
    stop: CancellationToken,
) {
    let Some(shared) = store.shared() else {
        return;
    };
    let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    let mut ticks = beats(lease);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Err(err) = shared.heartbeat().await {
            tracing::warn!(node_id = shared.node_id(), error = %err, "cannot renew this node's lease");
            continue;
        }
        if let Some(limits) = &rate_limits {
            share_rate_limits(&store, shared, limits, lease_ms).await;
        }
        match shared.rescue_expired(lease_ms).await {
            Ok(rescued) if rescued.reset + rescued.failed + rescued.cancelled > 0 => {
                tracing::warn!(
                    node_id = shared.node_id(),
                    reset = rescued.reset,
                    failed = rescued.failed,
                    cancelled = rescued.cancelled,
                    lease_ms,
                    "rescued the running jobs of a node that stopped heartbeating"
                )
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(node_id = shared.node_id(), error = %err, "cannot look for dead nodes' jobs")
            }
        }
        if let Err(err) = store.settle_dependents(chrono::Utc::now()).await {
            tracing::warn!(node_id = shared.node_id(), error = %err, "cannot settle the jobs waiting on others");
        }
    }
}

/// Tells `limits` how many nodes are live, and the holds other nodes learned, so that
/// this node's requests in flight keep them too (its claims read them anyway).
async fn share_rate_limits(
    store: &Store,
    shared: &dyn SharedQueue,
    limits: &RateLimits,
    lease_ms: u64,
) {
    match shared.live_nodes(lease_ms).await {
        Ok(nodes) => limits.share_among(nodes),
        Err(err) => {
            tracing::warn!(node_id = shared.node_id(), error = %err, "cannot count the live nodes")
        }
    }
    match store.rate_limit_holds(chrono::Utc::now()).await {
        Ok(holds) => holds.iter().for_each(|hold| limits.restore(hold)),
        Err(err) => {
            tracing::warn!(node_id = shared.node_id(), error = %err, "cannot read the rate-limit holds")
        }
    }
}

/// Follows what the other nodes announce until `stop` fires: cancels asked of this
/// node, read back at every beat as well, and every change of a watched job, for the
/// watchers. Does nothing on a store only one daemon opens.
pub async fn follow(manager: Arc<Manager>, lease: Duration, stop: CancellationToken) {
    let store = manager.store().clone();
    let Some(shared) = store.shared() else {
        return;
    };
    tokio::join!(
        follow_changes(&manager, shared, &stop),
        follow_signals(&manager, shared, lease, &stop),
    );
}

/// The ticker of a beat: every third of the lease.
fn beats(lease: Duration) -> tokio::time::Interval {
    let period = (lease / 3).max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

/// Delivers every cancel the database holds for this node's running jobs.
async fn deliver_requested_cancels(manager: &Manager, shared: &dyn SharedQueue) {
    match shared.cancels_requested().await {
        Ok(requested) => {
            for (id, attempt) in requested {
                manager.cancel_requested(id, attempt);
            }
        }
        Err(err) => {
            tracing::warn!(node_id = shared.node_id(), error = %err, "cannot read the cancels asked of this node")
        }
    }
}

/// Republishes every change of a watched job the database announces to this node's
/// watchers.
async fn follow_changes(manager: &Manager, shared: &dyn SharedQueue, stop: &CancellationToken) {
    let mut changes = shared.job_changes();
    loop {
        let change = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            change = changes.recv() => change,
        };
        match change {
            Ok(change) => manager.republish(change),
            // Watchers read their job again now and then: a missed change only delays.
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(
                    missed,
                    "job change announcements came faster than they were republished"
                );
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Delivers cancels asked of this node; at every beat and after a reconnection, reads
/// them back from the database.
async fn follow_signals(
    manager: &Manager,
    shared: &dyn SharedQueue,
    lease: Duration,
    stop: &CancellationToken,
) {
    let mut signals = shared.signals();
    let mut ticks = beats(lease);
    loop {
        let signal = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            signal = signals.recv() => signal,
            _ = ticks.tick() => Ok(ClusterSignal::Resynced),
        };
        match signal {
            Ok(ClusterSignal::CancelRequested { id, attempt }) => {
                manager.cancel_requested(id, attempt);
            }
            Ok(ClusterSignal::Resynced) | Err(RecvError::Lagged(_)) => {
                deliver_requested_cancels(manager, shared).await;
            }
            // Schedules are the scheduler's, output the watchers'.
            Ok(ClusterSignal::SchedulesChanged | ClusterSignal::OutputWritten { .. }) => {}
            Err(RecvError::Closed) => return,
        }
    }
}
