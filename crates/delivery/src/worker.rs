//! A delivery worker: claims due messages for its upstream, relays them
//! over its pooled connection, and has the outcome recorded.
//!
//! An upstream gets `connections` workers, so at most that many
//! connections (and logins) exist however much mail is queued.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use relay_queue::{Claim, ClaimLimit, Claimed, Queue, QueueError, Rest};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::attempt::Attempt;
use crate::body::Body;
use crate::connection::{ConnectError, Connection, Session};
use crate::metrics::Metrics;
use crate::pause::Pause;
use crate::pool::{self, Backoff, Pooled};
use crate::record::{Recorder, RECORD_FOR};
use crate::relay::{Job, Pipeline};
use crate::Upstream;

/// Most messages a worker claims at once; over a pipelining upstream they,
/// and the ones claimed after them, go out back to back (one round trip
/// each; see `relay`).
const CHAIN: ClaimLimit = ClaimLimit {
    messages: 8,
    bytes: 256 * 1024,
};
/// Most messages a worker claims to follow the ones on the wire. Fewer
/// than [`CHAIN`]: the pipeline stays full whatever the size, and small
/// top-ups share the last messages of a burst evenly among the
/// connections instead of leaving one with a long tail.
const MORE: ClaimLimit = ClaimLimit {
    messages: 2,
    bytes: 256 * 1024,
};
/// How long a claimed message stays ours: longer than any attempt (and
/// the time to record it) can take.
const LEASE: Duration = Duration::from_secs(600);
const _: () = assert!(RECORD_FOR.as_secs() * 2 <= LEASE.as_secs());
/// Longest sleep while idle; bounds how late a retry made by another
/// process (`queue retry`) is noticed.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Wait after a claim found nothing though a message is due (another
/// delivery is taking it).
const RACE_POLL: Duration = Duration::from_millis(100);

pub(crate) struct Worker<Q> {
    pub upstream: Arc<Upstream>,
    pub queue: Q,
    pub pause: Arc<Pause>,
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
    pub id: usize,
}

/// Most attempts a worker has being recorded at once (each holds its
/// message, whose body is at most a chunk's worth in memory). Delivered but
/// not yet recorded, they are what a crash could send twice; a commit
/// takes about a millisecond, so one or two are the rule.
const RECORDING_AT_ONCE: usize = 8;

/// How a stream of messages over one connection ended.
enum Streamed {
    /// A reused connection answered nothing about the first message: it
    /// had gone stale; every message is back in `due`.
    Stale,
    /// Every message was sent and its attempt is being recorded; `rest`:
    /// what the last claim saw of the messages it did not take.
    Ended { reusable: bool, rest: Rest },
}

/// How a delivery round ended, for the worker's loop.
enum Round {
    /// Over, and the last claim's [`Rest`] says what next: `MoreDue`,
    /// claim again at once; `NextDue`, it took everything due, so wait for
    /// a wake-up (or the next due time it reported) before claiming again.
    Over(Rest),
    /// The upstream could not be reached: wait before the next attempt.
    Unreachable,
}

impl<Q: Queue> Worker<Q> {
    pub async fn run(self) {
        let mut slot: Option<Pooled> = None;
        let mut recording = JoinSet::new();
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
            let claim = match self.claim(CHAIN).await {
                Ok(claim) => {
                    if std::mem::take(&mut queue_down) {
                        backoff.reset();
                        tracing::info!(upstream = %self.upstream.name, "The queue can be read again; delivery resumes.");
                    }
                    claim
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
            // An empty claim took everything due: its rest is a next due time.
            let mut next_due = match claim.rest {
                Rest::MoreDue => None,
                Rest::NextDue(due) => due,
            };
            if !claim.messages.is_empty() {
                while recording.try_join_next().is_some() {}
                match self.deliver(claim, &mut slot, &mut recording).await {
                    Round::Over(Rest::MoreDue) => {
                        backoff.reset();
                        continue;
                    }
                    // Nothing more was due a moment ago: wait as when a
                    // claim finds nothing, instead of claiming again.
                    Round::Over(Rest::NextDue(due)) => {
                        backoff.reset();
                        next_due = due;
                    }
                    Round::Unreachable => {
                        tokio::select! {
                            _ = tokio::time::sleep(backoff.next_wait()) => {}
                            _ = self.shutdown.cancelled() => break,
                        }
                        continue;
                    }
                }
            }
            // Idle until a commit wakes us (none is missed: `notified` has
            // been registered since before the claim) or a retry is due.
            pool::close_if_idle(&mut slot);
            let wait = idle_wait(next_due);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(wait) => {}
                _ = self.shutdown.cancelled() => break,
            }
        }
        // Outcomes still being recorded are recorded before the worker
        // ends: a message delivered but not recorded would go again.
        while recording.join_next().await.is_some() {}
        pool::close(slot).await;
    }

    fn recorder(&self) -> Recorder<Q> {
        Recorder {
            upstream: self.upstream.clone(),
            queue: self.queue.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Delivers claimed messages, and whatever becomes due meanwhile, over
    /// the slot's connection (opening one if needed).
    async fn deliver(
        &self,
        claim: Claim,
        slot: &mut Option<Pooled>,
        recording: &mut JoinSet<()>,
    ) -> Round {
        let mut due: VecDeque<Claimed> = claim.messages.into();
        let recorder = self.recorder();
        // A pooled connection the upstream closed meanwhile answers
        // nothing: then the messages go once more over a fresh one.
        for _ in 0..2 {
            let reused = slot.is_some();
            let conn = match slot {
                Some(pooled) => &mut pooled.conn,
                None => match pool::open(&self.upstream, &self.pause, &self.metrics, self.id).await
                {
                    Ok(pooled) => &mut slot.insert(pooled).conn,
                    Err(ConnectError::Credentials(reason)) => {
                        self.credentials_refused(&reason);
                        recorder.release(due.make_contiguous()).await;
                        return Round::Over(Rest::MoreDue);
                    }
                    Err(ConnectError::Transient(reason)) => {
                        tracing::warn!(upstream = %self.upstream.name, error = %reason, "Cannot reach the upstream.");
                        for message in &due {
                            recorder.unreachable(message, &reason).await;
                        }
                        return Round::Unreachable;
                    }
                },
            };
            let streamed = match conn {
                Connection::Tls(s) => {
                    self.stream(s.as_mut(), &mut due, claim.rest, reused, recording)
                        .await
                }
                Connection::Plain(s) => {
                    self.stream(s, &mut due, claim.rest, reused, recording)
                        .await
                }
            };
            match streamed {
                Streamed::Stale => {
                    tracing::debug!(upstream = %self.upstream.name, "Pooled connection was stale; reconnecting.");
                    *slot = None;
                }
                Streamed::Ended { reusable, rest } => {
                    match slot.as_mut() {
                        Some(pooled) if reusable => pooled.touch(),
                        _ => *slot = None,
                    }
                    return Round::Over(rest);
                }
            }
        }
        // Unreachable: a fresh connection is never found stale.
        recorder.release(due.make_contiguous()).await;
        Round::Over(Rest::MoreDue)
    }

    /// Relays `due` over `session`. When the last of them goes out, the
    /// next due messages are claimed while it is on the wire and follow it
    /// in the same pipeline, so the connection carries one message per
    /// round trip for as long as mail is due; each attempt is recorded (a
    /// task in `recording`) as soon as the upstream's reply to it arrives.
    ///
    /// Only while claims stop at their limit (`rest` of the one that gave
    /// `due`): a claim that took everything that was due has nothing to
    /// follow, and what arrives later wakes an idle delivery anyway. Claiming for more
    /// after a short claim nearly always finds nothing, and costs a
    /// writer round trip (a statement on the shared queue) per chain.
    async fn stream<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        session: &mut Session<T>,
        due: &mut VecDeque<Claimed>,
        mut rest: Rest,
        reused: bool,
        recording: &mut JoinSet<()>,
    ) -> Streamed {
        let mut pipeline = Pipeline::new(session);
        // Pushed, attempt not back yet: attempts come back in this order.
        let mut sent: VecDeque<Claimed> = VecDeque::new();
        let mut first = true;
        while let Some(message) = due.pop_front() {
            let prefix = stream_header(&message);
            let job = Job {
                sender: &message.sender,
                recipients: &message.recipients,
                body: Body {
                    id: &message.id,
                    prefix: &prefix,
                    content: &message.content,
                },
            };
            let claim_more = rest == Rest::MoreDue
                && due.is_empty()
                && !pipeline.is_broken()
                && !self.shutdown.is_cancelled();
            let (done, more) = if claim_more {
                let (done, more) =
                    tokio::join!(pipeline.push((), &job, &self.queue), self.claim_more());
                rest = more.rest;
                (done, more.messages)
            } else {
                (pipeline.push((), &job, &self.queue).await, Vec::new())
            };
            sent.push_back(message);
            let stale = matches!(done.as_slice(), [(_, Attempt::Broken { silent: true, .. })]);
            if reused && std::mem::take(&mut first) && stale {
                // Nothing was said about it: it goes again, first.
                if let Some(message) = sent.pop_back() {
                    due.push_front(message);
                }
                due.extend(more);
                return Streamed::Stale;
            }
            first = false;
            for ((), attempt) in done {
                self.record(recording, sent.pop_front(), attempt).await;
            }
            due.extend(more);
        }
        for ((), attempt) in pipeline.finish().await {
            self.record(recording, sent.pop_front(), attempt).await;
        }
        Streamed::Ended {
            reusable: !pipeline.is_broken(),
            rest,
        }
    }

    /// Claims up to `limit` due messages for this upstream. A full claim:
    /// more may be due than one delivery takes (the queue wakes one
    /// delivery per commit), so another idle one is woken to look. A
    /// shorter one took everything that was due.
    async fn claim(&self, limit: ClaimLimit) -> Result<Claim, QueueError> {
        let claim = self
            .queue
            .claim_due(&self.upstream.name, limit, LEASE)
            .await?;
        if claim.rest == Rest::MoreDue {
            self.queue.arrivals().notify_one();
        }
        Ok(claim)
    }

    /// Claims the next due messages to follow the ones on the wire;
    /// nothing when the queue cannot be read (the worker's own claim, made
    /// next, says so).
    async fn claim_more(&self) -> Claim {
        self.claim(MORE).await.unwrap_or(Claim {
            messages: Vec::new(),
            rest: Rest::MoreDue,
        })
    }

    /// Records `attempt` as a task of its own, so the connection goes on
    /// with the next message meanwhile; at most [`RECORDING_AT_ONCE`] run.
    async fn record(
        &self,
        recording: &mut JoinSet<()>,
        message: Option<Claimed>,
        attempt: Attempt,
    ) {
        let Some(message) = message else {
            // Unreachable: every attempt is for a message pushed.
            tracing::error!(upstream = %self.upstream.name, "A delivery attempt came back for no message.");
            return;
        };
        while recording.len() >= RECORDING_AT_ONCE {
            recording.join_next().await;
        }
        let recorder = self.recorder();
        recording.spawn(async move { recorder.attempt(&message, attempt).await });
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

/// How long an idle delivery waits for a wake-up: until the next message
/// is due, at most [`IDLE_POLL`]. One due already is being claimed by
/// another delivery (ours just came back without it, and a commit since
/// would wake us), or fell due while ours was sending: look again in
/// [`RACE_POLL`], not at once, or every idle delivery would poll while a
/// busy one works.
fn idle_wait(next_due: Option<SystemTime>) -> Duration {
    match next_due {
        Some(due) => due
            .duration_since(SystemTime::now())
            .unwrap_or(RACE_POLL)
            .min(IDLE_POLL),
        None => IDLE_POLL,
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
