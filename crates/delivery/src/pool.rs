//! A worker's pooled connection: opened (and authenticated) on demand,
//! reused while it stays clean, closed when idle too long, counted in the
//! `upstream_connections` gauge for as long as it exists, and reopened
//! with jittered backoff when the upstream cannot be reached.

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

use crate::connection::{connect, ConnectError, Connection};
use crate::metrics::{upstream as upstream_label, Metrics};
use crate::pause::Pause;
use crate::Upstream;

/// An idle connection is closed after this long.
const IDLE_CLOSE: Duration = Duration::from_secs(30);
/// Wait before reconnecting after an upstream could not be reached,
/// doubling up to the longest.
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_LONGEST: Duration = Duration::from_secs(15);

/// An open connection and when it was last used.
pub(crate) struct Pooled {
    pub conn: Connection,
    used: Instant,
    _open: OpenGauge,
}

impl Pooled {
    /// Marks the connection as just used (it stays open).
    pub fn touch(&mut self) {
        self.used = Instant::now();
    }
}

/// Decrements the open-connections gauge when the connection goes away,
/// whichever way it goes.
struct OpenGauge(Gauge);

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Connects and authenticates; a success ends a credential pause.
pub(crate) async fn open(
    upstream: &Upstream,
    pause: &Pause,
    metrics: &Metrics,
    worker: usize,
) -> Result<Pooled, ConnectError> {
    let conn = connect(upstream).await?;
    if pause.resume() {
        tracing::info!(upstream = %upstream.name, "Upstream accepted our credentials again; delivery resumed.");
    }
    tracing::debug!(upstream = %upstream.name, worker, "Connected and authenticated.");
    let gauge = metrics
        .connections
        .get_or_create_owned(&upstream_label(&upstream.name));
    gauge.inc();
    Ok(Pooled {
        conn,
        used: Instant::now(),
        _open: OpenGauge(gauge),
    })
}

/// Closes `slot`'s connection if it has been idle too long.
pub(crate) fn close_if_idle(slot: &mut Option<Pooled>) {
    if slot.as_ref().is_some_and(|p| p.used.elapsed() > IDLE_CLOSE) {
        *slot = None;
    }
}

/// Says QUIT on the way out (bounded: a stuck upstream cannot hold up a
/// shutdown).
pub(crate) async fn close(slot: Option<Pooled>) {
    if let Some(pooled) = slot {
        let _ = tokio::time::timeout(Duration::from_secs(2), pooled.conn.quit()).await;
    }
}

/// The wait between attempts to reach an upstream that could not be
/// reached: doubling, jittered so an upstream's workers do not reconnect in
/// lockstep.
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: RECONNECT_FIRST,
        }
    }
}

impl Backoff {
    /// The upstream answered: the next failure starts from the shortest wait.
    pub fn reset(&mut self) {
        self.next = RECONNECT_FIRST;
    }

    /// How long to wait now; the next wait doubles.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next.mul_f64(0.5 + fastrand::f64() * 0.5);
        self.next = (self.next * 2).min(RECONNECT_LONGEST);
        wait
    }
}
