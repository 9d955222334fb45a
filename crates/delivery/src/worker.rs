//! A delivery worker: claims due messages for its upstream, relays them
//! over its pooled connection, and has the outcome recorded.
//!
//! An upstream gets `connections` workers, so at most that many
//! connections (and logins) exist however much mail is queued.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use relay_queue::{ClaimLimit, Claimed, Queue};
use tokio_util::sync::CancellationToken;

use crate::attempt::Attempt;
use crate::body::Body;
use crate::connection::{ConnectError, Connection};
use crate::metrics::Metrics;
use crate::pause::Pause;
use crate::pool::{self, Backoff, Pooled};
use crate::record::{Recorder, RECORD_FOR};
use crate::relay::{relay, Job, Relayed};
use crate::Upstream;

/// Most messages a worker takes at once; over a pipelining upstream they go
/// out as one run (one round trip each; see `relay`).
const CHAIN: ClaimLimit = ClaimLimit {
    messages: 8,
    bytes: 256 * 1024,
};
/// How long a claimed message stays ours: longer than any attempt (and
/// the time to record it) can take.
const LEASE: Duration = Duration::from_secs(600);
const _: () = assert!(RECORD_FOR.as_secs() * 2 <= LEASE.as_secs());
/// Longest sleep while idle; bounds how late a retry made by another
/// process (`queue retry`) is noticed.
const IDLE_POLL: Duration = Duration::from_secs(1);

pub(crate) struct Worker<Q> {
    pub upstream: Arc<Upstream>,
    pub queue: Q,
    pub pause: Arc<Pause>,
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
    pub id: usize,
}

/// How a delivery round ended, for the worker's loop.
enum Round {
    /// Go on with the next claim.
    Done,
    /// The upstream could not be reached: wait before the next attempt.
    Unreachable,
}

impl<Q: Queue> Worker<Q> {
    pub async fn run(self) {
        let mut slot: Option<Pooled> = None;
        let mut backoff = Backoff::default();
        // The queue could not be read last time (e.g. the shared database
        // is down): said once, then retried with backoff, not every second.
        let mut queue_down = false;
        let arrivals = self.queue.arrivals();
        while !self.shutdown.is_cancelled() {
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
                Ok(claimed) => {
                    if std::mem::take(&mut queue_down) {
                        backoff.reset();
                        tracing::info!(upstream = %self.upstream.name, "The queue can be read again; delivery resumes.");
                    }
                    claimed
                }
                Err(e) => {
                    if !std::mem::replace(&mut queue_down, true) {
                        tracing::error!(upstream = %self.upstream.name, error = %e, "Cannot read the queue; delivery waits and tries again.");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                        _ = self.shutdown.cancelled() => break,
                    }
                    continue;
                }
            };
            // A full chain: more may be due than one delivery takes (the
            // queue wakes one delivery per commit), so wake another idle
            // one to look. A shorter chain took everything that was due.
            if claimed.len() >= CHAIN.messages {
                arrivals.notify_one();
            }
            if claimed.is_empty() {
                pool::close_if_idle(&mut slot);
                let wait = self.idle_wait().await;
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.shutdown.cancelled() => break,
                }
                continue;
            }
            match self.deliver(claimed, &mut slot).await {
                Round::Done => backoff.reset(),
                Round::Unreachable => {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                        _ = self.shutdown.cancelled() => break,
                    }
                }
            }
        }
        pool::close(slot).await;
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

    fn recorder(&self) -> Recorder<'_, Q> {
        Recorder {
            upstream: &self.upstream,
            queue: &self.queue,
            metrics: &self.metrics,
            shutdown: &self.shutdown,
        }
    }

    /// Delivers claimed messages over the slot's connection (opening one if
    /// needed) and records every outcome.
    async fn deliver(&self, messages: Vec<Claimed>, slot: &mut Option<Pooled>) -> Round {
        let prefixes: Vec<Vec<u8>> = messages.iter().map(stream_header).collect();
        let jobs: Vec<Job<'_>> = messages
            .iter()
            .zip(&prefixes)
            .map(|(m, prefix)| Job {
                sender: &m.sender,
                recipients: &m.recipients,
                body: Body {
                    id: &m.id,
                    prefix,
                    content: &m.content,
                },
            })
            .collect();
        let recorder = self.recorder();
        // A pooled connection the upstream closed meanwhile answers
        // nothing: then the run goes once more over a fresh one.
        let mut relayed = None;
        for _ in 0..2 {
            let reused = slot.is_some();
            let conn = match slot {
                Some(pooled) => &mut pooled.conn,
                None => match pool::open(&self.upstream, &self.pause, &self.metrics, self.id).await
                {
                    Ok(pooled) => &mut slot.insert(pooled).conn,
                    Err(ConnectError::Credentials(reason)) => {
                        self.credentials_refused(&reason);
                        recorder.release(&messages).await;
                        return Round::Done;
                    }
                    Err(ConnectError::Transient(reason)) => {
                        tracing::warn!(upstream = %self.upstream.name, error = %reason, "Cannot reach the upstream.");
                        for message in &messages {
                            recorder.unreachable(message, &reason).await;
                        }
                        return Round::Unreachable;
                    }
                },
            };
            let run = match conn {
                Connection::Tls(s) => relay(s.as_mut(), &jobs, &self.queue).await,
                Connection::Plain(s) => relay(s, &jobs, &self.queue).await,
            };
            if run.reusable {
                if let Some(pooled) = slot.as_mut() {
                    pooled.touch();
                }
            } else {
                *slot = None;
            }
            let stale = matches!(
                run.attempts.first(),
                Some(Attempt::Broken { silent: true, .. })
            );
            if reused && stale {
                tracing::debug!(upstream = %self.upstream.name, "Pooled connection was stale; reconnecting.");
                continue;
            }
            relayed = Some(run);
            break;
        }
        let Some(Relayed { attempts, .. }) = relayed else {
            // Unreachable: the second round never reuses a connection.
            recorder.release(&messages).await;
            return Round::Done;
        };
        for (message, attempt) in messages.iter().zip(attempts) {
            recorder.attempt(message, attempt).await;
        }
        Round::Done
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
}

/// What goes in front of the message: `X-PM-Message-Stream` when the
/// route chose a stream the message does not already name.
fn stream_header(message: &Claimed) -> Vec<u8> {
    let content = &message.content;
    // A message stored whole has its headers in the tail.
    let headers = if content.head.is_empty() {
        &content.tail
    } else {
        &content.head
    };
    match &message.stream {
        Some(stream) if !relay_message::has(headers, "X-PM-Message-Stream") => {
            format!("X-PM-Message-Stream: {stream}\r\n").into_bytes()
        }
        _ => Vec::new(),
    }
}
