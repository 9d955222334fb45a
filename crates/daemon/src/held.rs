//! The reminder that mail is being held: upstreams without a token accept
//! nothing, so their mail waits in the queue until a token is configured.

use std::sync::Arc;
use std::time::Duration;

use relay_queue::{AnyQueue, Queue};
use tokio_util::sync::CancellationToken;

use crate::supervisor::Supervisor;

/// How often the "delivery held" reminder repeats.
const REMINDER_EVERY: Duration = Duration::from_secs(300);

/// Says, at start and then every [`REMINDER_EVERY`], which upstreams hold
/// mail for want of a token and how much waits for them.
pub async fn remind(supervisor: Arc<Supervisor>, queue: AnyQueue, shutdown: CancellationToken) {
    loop {
        let held = supervisor.held();
        if !held.is_empty() {
            let waiting = queue.waiting().await.unwrap_or_default();
            let count: u64 = waiting
                .iter()
                .filter(|(u, _)| held.contains(u))
                .map(|(_, n)| n)
                .sum();
            tracing::warn!(
                upstreams = %held.join(","),
                queued = count,
                "Delivery held: no Server API Token is configured. Mail is accepted and queued; set POSTMARK_SERVER_TOKEN (or postmark.server_token / server_token_file) and restart or send SIGHUP to deliver it."
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(REMINDER_EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
