//! A delivery worker: owns at most one upstream connection, claims due
//! messages for its upstream, relays them, and records the outcome.
//!
//! An upstream gets `connections` workers, so at most that many
//! connections (and logins) exist however much mail is queued; an idle
//! worker keeps its connection for reuse until it has been idle too long.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use relay_queue::{Batch, Claimed, Finished, Outcome, Queue};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::chain::{relay_chain, Job};
use crate::connection::Session;
use crate::connection::{connect, ConnectError, Connection};
use crate::metrics::{failure_class, upstream as upstream_label, Metrics};
use crate::pause::Pause;
use crate::transaction::{relay, Attempted, MAX_RCPT_PER_TRANSACTION};
use crate::Upstream;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite};

/// Most messages a worker takes at once; over a pipelining upstream they go
/// out as one chain (one round trip each; see `chain`).
const CHAIN: Batch = Batch {
    messages: 8,
    bytes: 256 * 1024,
};
/// How long a claimed message stays ours: longer than any attempt can take.
const LEASE: Duration = Duration::from_secs(600);
/// How long a worker keeps trying to record an outcome the store refuses;
/// well inside [`LEASE`], so the message is not handed out meanwhile.
const RECORD_FOR: Duration = Duration::from_secs(300);
/// Longest sleep while idle; bounds how late a retry made by another
/// process (`queue retry`) is noticed.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// An idle connection is closed after this long.
const IDLE_CLOSE: Duration = Duration::from_secs(30);
/// Wait before reconnecting after an upstream could not be reached.
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_LONGEST: Duration = Duration::from_secs(15);

pub(crate) struct Worker<Q> {
    pub upstream: Arc<Upstream>,
    pub queue: Q,
    pub pause: Arc<Pause>,
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
    pub id: usize,
}

/// An open connection and when it was last used; counted in the
/// `upstream_connections` gauge for as long as it exists.
struct Pooled {
    conn: Connection,
    used: Instant,
    _open: OpenGauge,
}

/// Decrements the open-connections gauge when the connection goes away,
/// whichever way it goes.
struct OpenGauge(Gauge);

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl<Q: Queue> Worker<Q> {
    pub async fn run(self) {
        let mut connection: Option<Pooled> = None;
        let mut reconnect_wait = RECONNECT_FIRST;
        let arrivals = self.queue.arrivals();
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            if let Some(until) = self.pause.until() {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = self.shutdown.cancelled() => break,
                }
                continue;
            }
            let notified = arrivals.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let claimed = match self.queue.claim(&self.upstream.name, CHAIN, LEASE).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::error!(upstream = %self.upstream.name, error = %e, "Cannot read the queue.");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                if connection
                    .as_ref()
                    .is_some_and(|p| p.used.elapsed() > IDLE_CLOSE)
                {
                    connection = None;
                }
                let wait = self.idle_wait().await;
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.shutdown.cancelled() => break,
                }
                continue;
            }
            match self.deliver(claimed, &mut connection).await {
                Ok(()) => reconnect_wait = RECONNECT_FIRST,
                Err(()) => {
                    // Jittered, so an upstream's workers do not reconnect in lockstep.
                    let jittered = reconnect_wait.mul_f64(0.5 + fastrand::f64() * 0.5);
                    tokio::select! {
                        _ = tokio::time::sleep(jittered) => {}
                        _ = self.shutdown.cancelled() => break,
                    }
                    reconnect_wait = (reconnect_wait * 2).min(RECONNECT_LONGEST);
                }
            }
        }
        if let Some(pooled) = connection {
            let _ = tokio::time::timeout(Duration::from_secs(2), pooled.conn.quit()).await;
        }
    }

    /// Until the next message is due, at most [`IDLE_POLL`].
    async fn idle_wait(&self) -> Duration {
        match self.queue.next_due(&self.upstream.name).await {
            Ok(Some(due)) => due
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::from_millis(10))
                .min(IDLE_POLL),
            _ => IDLE_POLL,
        }
    }

    /// Connects and authenticates; the connection counts in the
    /// open-connections gauge for as long as it lives.
    async fn open(&self) -> Result<Pooled, ConnectError> {
        let conn = connect(&self.upstream).await?;
        if self.pause.resume() {
            tracing::info!(upstream = %self.upstream.name, "Upstream accepted our credentials again; delivery resumed.");
        }
        tracing::debug!(upstream = %self.upstream.name, worker = self.id, "Connected and authenticated.");
        let gauge = self
            .metrics
            .connections
            .get_or_create_owned(&upstream_label(&self.upstream.name));
        gauge.inc();
        Ok(Pooled {
            conn,
            used: Instant::now(),
            _open: OpenGauge(gauge),
        })
    }

    /// Delivers a worker's claimed messages over its connection (opening
    /// one if needed). `Err` means the upstream could not be reached, and
    /// the worker should wait before trying again.
    async fn deliver(
        &self,
        messages: Vec<Claimed>,
        connection: &mut Option<Pooled>,
    ) -> Result<(), ()> {
        let bodies: Vec<Vec<u8>> = messages.iter().map(with_stream_header).collect();
        for try_number in 0..2 {
            let reused = connection.is_some();
            let conn = match connection {
                Some(pooled) => &mut pooled.conn,
                None => match self.open().await {
                    Ok(pooled) => &mut connection.insert(pooled).conn,
                    Err(ConnectError::Credentials(reason)) => {
                        self.credentials_refused(&reason);
                        self.release(&messages).await;
                        return Ok(());
                    }
                    Err(ConnectError::Transient(reason)) => {
                        tracing::warn!(upstream = %self.upstream.name, error = %reason, "Cannot reach the upstream.");
                        for message in &messages {
                            self.record(
                                message,
                                defer_all(message, &reason),
                                Some(reason.clone()),
                                None,
                            )
                            .await;
                        }
                        return Err(());
                    }
                },
            };
            let attempts = match conn {
                Connection::Tls(s) => relay_all(s.as_mut(), &messages, &bodies).await,
                Connection::Plain(s) => relay_all(s, &messages, &bodies).await,
            };
            if attempts.iter().any(|a| a.broken.is_some()) {
                *connection = None;
                let first = &attempts[0];
                if reused && first.broken.is_some() && !first.answered && try_number == 0 {
                    tracing::debug!(upstream = %self.upstream.name, "Pooled connection was stale; reconnecting.");
                    continue;
                }
            } else if let Some(pooled) = connection {
                pooled.used = Instant::now();
            }
            let mut untried = Vec::new();
            for (message, attempted) in messages.iter().zip(attempts) {
                if attempted.untried {
                    untried.push(message.clone());
                } else {
                    self.finish(message, attempted).await;
                }
            }
            self.release(&untried).await;
            return Ok(());
        }
        Ok(())
    }

    /// Gives messages back to the queue without counting an attempt.
    async fn release(&self, messages: &[Claimed]) {
        for message in messages {
            if let Err(e) = self.queue.release(&message.id).await {
                tracing::error!(queue_id = %message.id, error = %e, "Could not release a message.");
            }
        }
    }

    fn credentials_refused(&self, reason: &str) {
        if self.pause.credentials_refused() {
            tracing::error!(
                upstream = %self.upstream.name,
                error = %reason,
                "Delivery paused: the upstream refused our Server API Token. Messages stay queued without using up retries."
            );
        } else {
            tracing::warn!(upstream = %self.upstream.name, error = %reason, "Still refused; delivery stays paused.");
        }
    }

    async fn finish(&self, message: &Claimed, mut attempted: Attempted) {
        let mut outcomes = std::mem::take(&mut attempted.outcomes);
        if let Some(reason) = &attempted.broken {
            let answered: Vec<i64> = outcomes.iter().map(|(idx, _)| *idx).collect();
            outcomes.extend(
                message
                    .recipients
                    .iter()
                    .filter(|r| !answered.contains(&r.idx))
                    .map(|r| {
                        (
                            r.idx,
                            Outcome::Deferred(format!("connection lost: {reason}")),
                        )
                    }),
            );
        }
        let error = attempted.broken.map(|r| format!("connection lost: {r}"));
        self.record(message, outcomes, error, attempted.reply).await;
    }

    async fn record(
        &self,
        message: &Claimed,
        outcomes: Vec<(i64, Outcome)>,
        error: Option<String>,
        reply: Option<String>,
    ) {
        let delivered = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Delivered(_)))
            .count();
        let deferred = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Deferred(_)))
            .count();
        // Why the message waits: the connection failure, else a deferred
        // recipient's reply (a failed recipient is not why we retry).
        let wait_reason = error.clone().or_else(|| {
            outcomes.iter().find_map(|(_, o)| match o {
                Outcome::Deferred(r) => Some(r.clone()),
                _ => None,
            })
        });
        let first_failure = outcomes.iter().find_map(|(_, o)| match o {
            Outcome::Failed(r) => Some(r.clone()),
            _ => None,
        });
        let up = &self.upstream.name;
        let id = &message.id;
        let labels = upstream_label(up);
        if delivered > 0 {
            self.metrics.relayed.get_or_create(&labels).inc();
            let age = SystemTime::now()
                .duration_since(message.received_at)
                .unwrap_or_default();
            self.metrics.latency.observe(age.as_secs_f64());
            tracing::info!(queue_id = %id, upstream = %up, stream = message.stream.as_deref().unwrap_or(""), recipients = delivered, reply = reply.as_deref().unwrap_or(""), "Message relayed.");
        }
        for (idx, outcome) in &outcomes {
            if let Outcome::Failed(reply) = outcome {
                let recipient = message
                    .recipients
                    .iter()
                    .find(|r| r.idx == *idx)
                    .map_or("", |r| r.address.as_str());
                tracing::warn!(queue_id = %id, upstream = %up, recipient, reply = %reply, "Recipient failed permanently.");
            }
        }
        match self.finish_durably(id, outcomes, error).await {
            Ok(Finished::Deferred(next)) => {
                self.metrics.deferred.get_or_create(&labels).inc();
                let in_secs = next
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .as_secs();
                tracing::warn!(queue_id = %id, upstream = %up, recipients = deferred, reason = wait_reason.unwrap_or_default(), next_attempt_in_s = in_secs, "Message deferred.");
            }
            Ok(Finished::Failed) => {
                let class = failure_class(first_failure.as_deref().unwrap_or("gave up"));
                self.metrics
                    .failed
                    .get_or_create(&vec![
                        ("upstream", up.to_string()),
                        ("reason", class.to_string()),
                    ])
                    .inc();
                tracing::warn!(queue_id = %id, upstream = %up, "Message failed; kept in the queue for inspection.");
            }
            Ok(Finished::Delivered) => {}
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "Could not record a delivery outcome; the message will be retried.")
            }
        }
    }

    /// Records an attempt's outcome, retrying while the store refuses (e.g.
    /// a full disk) for up to [`RECORD_FOR`]: a delivery Postmark took but we
    /// could not record would otherwise be sent again when its lease ends.
    async fn finish_durably(
        &self,
        id: &str,
        outcomes: Vec<(i64, Outcome)>,
        error: Option<String>,
    ) -> Result<Finished, relay_queue::QueueError> {
        let started = Instant::now();
        loop {
            match self.queue.finish(id, outcomes.clone(), error.clone()).await {
                Ok(finished) => return Ok(finished),
                Err(e)
                    if e.is_storage()
                        && started.elapsed() < RECORD_FOR
                        && !self.shutdown.is_cancelled() =>
                {
                    tracing::warn!(queue_id = %id, error = %e, "Cannot record a delivery outcome yet; trying again in a second.");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = self.shutdown.cancelled() => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn defer_all(message: &Claimed, reason: &str) -> Vec<(i64, Outcome)> {
    message
        .recipients
        .iter()
        .map(|r| (r.idx, Outcome::Deferred(reason.to_string())))
        .collect()
}

/// The message as relayed: with `X-PM-Message-Stream` in front when the
/// route chose a stream the message does not already name.
fn with_stream_header(message: &Claimed) -> Vec<u8> {
    match &message.stream {
        Some(stream) if !relay_message::has(&message.data, "X-PM-Message-Stream") => {
            let mut out = format!("X-PM-Message-Stream: {stream}\r\n").into_bytes();
            out.extend_from_slice(&message.data);
            out
        }
        _ => message.data.clone(),
    }
}

/// Relays a worker's claimed messages over one session: as one pipelined
/// chain when the upstream pipelines and each fits one transaction, else one
/// by one. After a broken connection the rest are left untried.
async fn relay_all<T: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session<T>,
    messages: &[Claimed],
    bodies: &[Vec<u8>],
) -> Vec<Attempted> {
    let chainable = messages
        .iter()
        .all(|m| m.recipients.len() <= MAX_RCPT_PER_TRANSACTION);
    if session.pipelining && chainable {
        let jobs: Vec<Job<'_>> = messages
            .iter()
            .zip(bodies)
            .map(|(m, body)| Job {
                sender: &m.sender,
                recipients: &m.recipients,
                body,
            })
            .collect();
        return relay_chain(session, &jobs).await;
    }
    let mut attempts = Vec::with_capacity(messages.len());
    for (message, body) in messages.iter().zip(bodies) {
        if attempts.iter().any(|a: &Attempted| a.broken.is_some()) {
            attempts.push(Attempted {
                untried: true,
                ..Attempted::default()
            });
            continue;
        }
        attempts.push(relay(session, &message.sender, &message.recipients, body).await);
    }
    attempts
}
