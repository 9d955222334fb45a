//! Keeps the delivery history to `queue.history`: once a minute, entries
//! that finished earlier are deleted in bounded batches, so a prune never
//! holds the queue's write lock for long, whatever piled up.

use std::time::{Duration, SystemTime};

use relay_queue::{AnyQueue, PRUNE_BATCH};
use tokio_util::sync::CancellationToken;

/// How often the history is pruned.
const EVERY: Duration = Duration::from_secs(60);
/// Most batches in one round; the rest waits for the next round.
const MAX_BATCHES: usize = 100;

/// Prunes entries older than `keep` (all of them when `keep` is zero: the
/// history is off) until `shutdown`.
pub async fn run(queue: AnyQueue, keep: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let before = SystemTime::now()
            .checked_sub(keep)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut pruned = 0;
        for _ in 0..MAX_BATCHES {
            match queue.prune_history(before, PRUNE_BATCH).await {
                Ok(n) => {
                    pruned += n;
                    if n < PRUNE_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Could not prune the delivery history; trying again in a minute.");
                    break;
                }
            }
            // Let deliveries and sessions have the queue between batches.
            tokio::task::yield_now().await;
        }
        if pruned > 0 {
            tracing::debug!(entries = pruned, "Pruned the delivery history.");
        }
    }
}
