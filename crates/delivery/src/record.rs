//! Recording what an attempt did: per-recipient outcomes into the queue
//! (durably, retrying while the store refuses), and the same facts into
//! the log and the metrics, whose labels come from [`FailureReason`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use relay_queue::{Claimed, Finished, Outcome, Queue, QueueError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::attempt::Attempt;
use crate::metrics::{self, upstream as upstream_label, Metrics};
use crate::outcome::FailureReason;
use crate::Upstream;

/// How long a worker keeps trying to record an outcome the store refuses;
/// well inside the lease, so the message is not handed out meanwhile.
pub(crate) const RECORD_FOR: Duration = Duration::from_secs(300);

/// Records attempts for one upstream's worker; cheap to clone, so each
/// recording can run as a task of its own while the worker goes on.
#[derive(Clone)]
pub(crate) struct Recorder<Q> {
    pub upstream: Arc<Upstream>,
    pub queue: Q,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
}

impl<Q: Queue> Recorder<Q> {
    /// Records a tried message's attempt; recipients the upstream never
    /// answered (a broken connection) are deferred with the reason.
    pub async fn attempt(&self, message: &Claimed, attempt: Attempt) {
        let (mut answers, broken) = match attempt {
            Attempt::Answered(answers) => (answers, None),
            Attempt::Broken {
                answers, reason, ..
            } => (answers, Some(format!("connection lost: {reason}"))),
            Attempt::Untried => return self.release(std::slice::from_ref(message)).await,
        };
        if let Some(reason) = &broken {
            let answered: Vec<i64> = answers.outcomes.iter().map(|(idx, _)| *idx).collect();
            let unanswered = message
                .recipients
                .iter()
                .filter(|r| !answered.contains(&r.idx))
                .map(|r| (r.idx, Outcome::Deferred(reason.clone())));
            answers.outcomes.extend(unanswered.collect::<Vec<_>>());
        }
        self.outcomes(message, answers.outcomes, broken, answers.reply)
            .await;
    }

    /// Defers every recipient of `message` with `reason` (the upstream
    /// could not be reached).
    pub async fn unreachable(&self, message: &Claimed, reason: &str) {
        let outcomes = message
            .recipients
            .iter()
            .map(|r| (r.idx, Outcome::Deferred(reason.to_string())))
            .collect();
        self.outcomes(message, outcomes, Some(reason.to_string()), None)
            .await;
    }

    /// Gives messages back to the queue without counting an attempt.
    pub async fn release(&self, messages: &[Claimed]) {
        for message in messages {
            if let Err(e) = self.queue.release(&message.id).await {
                tracing::error!(queue_id = %message.id, error = %e, "Could not release a message.");
            }
        }
    }

    async fn outcomes(
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
        let refusal = outcomes.iter().find_map(|(_, o)| match o {
            Outcome::Failed(r) => Some(FailureReason::of_refusal(r)),
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
            Ok(Finished::Failed) => self.failed(id, refusal.unwrap_or(FailureReason::Rejected)),
            Ok(Finished::Expired) => self.failed(id, FailureReason::Expired),
            Ok(Finished::Delivered) => {}
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "Could not record a delivery outcome; the message will be retried.")
            }
        }
    }

    /// Counts and logs a message that ended failed.
    fn failed(&self, id: &str, reason: FailureReason) {
        let up = &self.upstream.name;
        self.metrics
            .failed
            .get_or_create(&metrics::failed(up, reason))
            .inc();
        tracing::warn!(queue_id = %id, upstream = %up, reason = reason.label(), "Message failed; kept in the queue for inspection.");
    }

    /// Records an attempt's outcome, retrying while the store refuses (e.g.
    /// a full disk) for up to [`RECORD_FOR`]: a delivery Postmark took but we
    /// could not record would otherwise be sent again when its lease ends.
    async fn finish_durably(
        &self,
        id: &str,
        outcomes: Vec<(i64, Outcome)>,
        error: Option<String>,
    ) -> Result<Finished, QueueError> {
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
