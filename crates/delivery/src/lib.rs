//! Delivery: takes due messages from the queue and relays them to
//! Postmark over pooled, authenticated STARTTLS connections.
//!
//! Owns: upstream connections (TLS trust, AUTH with the Server API Token
//! as both username and password), the SMTP transaction, per-recipient
//! outcomes, the credential pause, and short reconnect backoff. The long
//! retry schedule belongs to the queue.
//!
//! Must not know: how messages arrived, or how the queue stores them
//! (only the [`relay_queue::Queue`] trait).
#![forbid(unsafe_code)]

mod attempt;
mod body;
mod connection;
pub mod metrics;
pub mod outcome;
mod pause;
mod pool;
pub mod probe;
mod record;
mod relay;
mod transaction;
mod upstream;
mod worker;

pub use body::dot_stuff;
pub use connection::{connect, ConnectError, Connection};
pub use metrics::Metrics;
pub use pause::Pause;
pub use relay_config::TlsSetupError;
pub use transaction::MAX_RCPT_PER_TRANSACTION;
pub use upstream::{upstreams, Upstream, UpstreamError};

use std::sync::Arc;

use relay_queue::Queue;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Starts `upstream.connections` workers for one upstream on `tracker`;
/// they stop, after the message in hand, when `shutdown` is cancelled.
/// Returns the upstream's pause state (readiness reads it).
pub fn spawn<Q: Queue>(
    upstream: Upstream,
    queue: Q,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Arc<Pause> {
    let pause = Arc::new(Pause::default());
    let upstream = Arc::new(upstream);
    for id in 0..upstream.connections {
        let worker = worker::Worker {
            upstream: upstream.clone(),
            queue: queue.clone(),
            pause: pause.clone(),
            shutdown: shutdown.clone(),
            metrics: metrics.clone(),
            id,
        };
        tracker.spawn(worker.run());
    }
    pause
}
