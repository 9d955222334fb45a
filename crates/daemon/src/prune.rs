//! Keeps the delivery history to `queue.history`: once a minute, entries
//! that finished earlier are deleted in bounded batches, so a prune never
//! holds the queue's write lock for long, whatever piled up.

use std::time::{Duration, SystemTime};

use relay_queue::{AnyQueue, PRUNE_BATCH};
use tokio_util::sync::CancellationToken;

/// How often the history is pruned.
const EVERY: Duration = Duration::from_secs(60);
/// Longest one round prunes; the rest waits for the next round. Batches
/// are quick (~10 ms), so a round removes far more than a busy relay adds
/// in a minute.
const ROUND: Duration = Duration::from_secs(10);

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
        let started = std::time::Instant::now();
        while started.elapsed() < ROUND {
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
