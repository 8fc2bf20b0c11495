//! Membership of a store several daemons share: this node's heartbeat, and the rescue
//! of the jobs of nodes that stopped heartbeating.
//!
//! Every third of the lease, a node renews its own lease and looks for nodes whose
//! heartbeat is older than the lease (by the database's clock): their running jobs go
//! back to pending, the lost attempt counted, so that the live nodes run them. A node
//! that was only frozen and wakes up finds its outcomes refused (they are fenced by
//! attempt) and changes nothing. The loop runs until the daemon has drained, so that a
//! daemon finishing its jobs during a shutdown is never taken for dead.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// The lease when the configuration names none.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Heartbeats and rescues until `stop` fires. Does nothing on a store only one daemon
/// opens.
pub async fn run(store: Store, lease: Duration, stop: CancellationToken) {
    let Some(shared) = store.shared() else {
        return;
    };
    let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    let period = (lease / 3).max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
        match shared.rescue_expired(lease_ms).await {
            Ok(rescued) if rescued.reset + rescued.failed > 0 => tracing::warn!(
                node_id = shared.node_id(),
                reset = rescued.reset,
                failed = rescued.failed,
                lease_ms,
                "rescued the running jobs of a node that stopped heartbeating"
            ),
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(node_id = shared.node_id(), error = %err, "cannot look for dead nodes' jobs")
            }
        }
    }
}
