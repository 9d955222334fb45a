//! [`AnyQueue`]: the store `serve` was configured with, behind one type,
//! so the daemon is written once for both.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use crate::{
    Claim, ClaimLimit, Finished, NewMessage, Outcome, PgQueue, Queue, QueueError, RetryPolicy,
    SqliteQueue, Stats,
};

/// The embedded store or the shared one; every method delegates.
#[derive(Clone)]
pub enum AnyQueue {
    Sqlite(SqliteQueue),
    Postgres(PgQueue),
}

/// Calls the same method on whichever store this is.
macro_rules! delegate {
    ($self:ident, $q:ident => $call:expr) => {
        match $self {
            AnyQueue::Sqlite($q) => $call,
            AnyQueue::Postgres($q) => $call,
        }
    };
}

impl AnyQueue {
    /// See [`SqliteQueue::check_writable`] and [`PgQueue::check_writable`].
    pub async fn check_writable(&self) -> Result<(), QueueError> {
        delegate!(self, q => q.check_writable().await)
    }

    /// Drops up to `batch` history entries finished before `before`.
    pub async fn prune_history(
        &self,
        before: SystemTime,
        batch: usize,
    ) -> Result<usize, QueueError> {
        delegate!(self, q => q.prune_history(before, batch).await)
    }

    /// Replaces the retry policy (config reload).
    pub async fn set_policy(&self, policy: RetryPolicy) -> Result<(), QueueError> {
        delegate!(self, q => q.set_policy(policy).await)
    }

    /// Routes every waiting message again (config reload).
    pub async fn reroute(
        &self,
        route: impl Fn(&str, &[u8]) -> (String, Option<String>) + Send + Sync + 'static,
    ) -> Result<usize, QueueError> {
        delegate!(self, q => q.reroute(route).await)
    }

    /// Counts by state and the oldest waiting message, for `/metrics`;
    /// `None` for the embedded store, which the admin endpoint reads
    /// directly (see `Inspector`).
    pub async fn shared_stats(&self) -> Option<Result<Stats, QueueError>> {
        match self {
            AnyQueue::Sqlite(_) => None,
            AnyQueue::Postgres(q) => Some(q.stats().await),
        }
    }
}

impl Queue for AnyQueue {
    async fn enqueue(&self, message: NewMessage) -> Result<(), QueueError> {
        delegate!(self, q => q.enqueue(message).await)
    }

    async fn append(&self, id: &str, seq: u32, chunk: Vec<u8>) -> Result<(), QueueError> {
        delegate!(self, q => q.append(id, seq, chunk).await)
    }

    async fn discard(&self, id: &str) -> Result<(), QueueError> {
        delegate!(self, q => q.discard(id).await)
    }

    async fn chunk(&self, id: &str, seq: u32) -> Result<Vec<u8>, QueueError> {
        delegate!(self, q => q.chunk(id, seq).await)
    }

    async fn claim_due(
        &self,
        upstream: &str,
        limit: ClaimLimit,
        lease: Duration,
    ) -> Result<Claim, QueueError> {
        delegate!(self, q => q.claim_due(upstream, limit, lease).await)
    }

    async fn finish(
        &self,
        id: &str,
        outcomes: Vec<(i64, Outcome)>,
        error: Option<String>,
    ) -> Result<Finished, QueueError> {
        delegate!(self, q => q.finish(id, outcomes, error).await)
    }

    async fn release(&self, id: &str) -> Result<(), QueueError> {
        delegate!(self, q => q.release(id).await)
    }

    async fn next_due(&self, upstream: &str) -> Result<Option<SystemTime>, QueueError> {
        delegate!(self, q => q.next_due(upstream).await)
    }

    async fn waiting(&self) -> Result<Vec<(String, u64)>, QueueError> {
        delegate!(self, q => q.waiting().await)
    }

    fn arrivals(&self) -> Arc<Notify> {
        delegate!(self, q => q.arrivals())
    }
}
