//! The durable queue: every accepted message lives here from its `250`
//! until Postmark has taken every recipient (or it has failed for good).
//!
//! Owns: the on-disk format, durability (fsync before an enqueue returns),
//! recovery after a crash, the retry schedule and delivery leases. Must not
//! know: SMTP, routing rules, or how delivery talks to Postmark.
//!
//! # On-disk format
//!
//! One SQLite database, `queue.sqlite3`, in the configured folder, in WAL mode
//! with `synchronous=FULL` (a commit is on disk when it returns).
//! `PRAGMA user_version` is the schema version (currently 5; an older
//! queue is upgraded in place when opened: its messages read as they are).
//!
//! - `messages(id, received_at, sender, upstream, stream, size, data, state,
//!   attempts, next_attempt_at, lease_until, last_error, head, chunks,
//!   eight_bit, client, from_addr, subject)`: one row per message; times
//!   are Unix milliseconds. The message (CRLF line endings, headers the
//!   relay added included, not dot-stuffed) is `head`, then `chunks` rows
//!   of `chunks`, then `data` (see [`Content`]); `eight_bit` says whether
//!   any of it is 8-bit.
//! - `recipients(message_id, idx, address, state, reply)`: one row per
//!   envelope recipient, in RCPT order.
//! - `chunks(message_id, seq, data)`: a large message's body in pieces of
//!   at most 64 KiB, written while the client is still sending it, so memory
//!   never holds a whole message.
//! - `history(id, received_at, finished_at, client, sender, from_addr,
//!   subject, upstream, stream, attempts)` and `history_recipients(
//!   message_id, idx, address, state, reply)`: the delivery history, a
//!   message's metadata and each recipient's final state once it left the
//!   queue, never its body (see [`HistoryEntry`]).
//!
//! The shared store ([`PgQueue`], `queue.backend = "postgres"`) keeps the
//! same tables in its own PostgreSQL schema, plus each lease's holder; see
//! its module docs for what sharing changes.
//!
//! The folder is `0700` and every database file `0600`, whatever the umask
//! ([`private`]): queued mail is readable by the relay's user only.
//!
//! # Invariants
//!
//! 1. A message row and all its recipient rows are written in one
//!    transaction; an enqueue is acknowledged only after that transaction's
//!    commit returned (so a `250` never precedes the fsync).
//! 2. `state` is `queued` (never tried), `deferred` (tried, has pending
//!    recipients) or `failed` (no pending recipient, at least one failed).
//!    A message whose recipients are all `delivered` is deleted.
//! 3. A recipient moves only `pending → delivered` or `pending → failed`;
//!    a delivered recipient is never handed out again.
//! 4. `lease_until` is set while a delivery worker holds the message, and
//!    `next_attempt_at` is set to the same time: a message in flight is due
//!    again exactly when its lease would run out, so claims and the next
//!    due time read the due index `(upstream, next_attempt_at)` alone and
//!    never step over the messages in flight. A lease that expires (the
//!    worker crashed) makes the message due again; a release makes it due
//!    now; [`SqliteQueue::open`] clears every lease and makes those
//!    messages due now, so a crash mid-delivery means a retry, never a
//!    loss. `queue retry` leaves a message in flight alone.
//! 5. Only one thread writes (see [`writer`]); it commits whatever requests
//!    are waiting in one transaction (group commit) and answers each request
//!    after that commit.
//! 6. A message's chunks `0..chunks` all exist before its row does: they are
//!    appended first (commits without their own fsync), and the enqueue
//!    checks their count in the transaction that inserts the row, whose
//!    fsync makes them durable with it. Chunks without a message row belong
//!    to a message never acknowledged; they are dropped when the message is
//!    abandoned and, after a crash, at the next [`SqliteQueue::open`].
//!    Deleting a message deletes its chunks.
#![forbid(unsafe_code)]

mod any;
mod backoff;
mod error;
mod history;
/// Values the [`Inspector`] reports, shaped like `queue list --json`.
mod info;
/// Listing, retrying, deleting and counting messages from another process
/// (the `queue` CLI) or from `serve` itself (admin metrics).
mod inspect;
mod message;
/// The shared queue on PostgreSQL (several replicas; see its docs).
mod postgres;
pub mod private;
mod schema;
mod sql;
mod sqlite;
mod summary;
pub mod writer;

pub use any::AnyQueue;
pub use backoff::RetryPolicy;
pub use error::QueueError;
pub use history::{
    pattern_matches, FinalState, HistoryEntry, HistoryQuery, HistoryRecipient, PRUNE_BATCH,
};
pub use info::{
    format_time, Deleted, MessageInfo, RecipientInfo, RecipientState, StateCounts, Stats,
};
pub use inspect::{Inspector, BUSY_TIMEOUT};
pub use message::{
    Claim, ClaimLimit, Claimed, Content, Finished, NewMessage, Outcome, PendingRecipient, Rest,
    State,
};
pub use postgres::{Imported, PgInspector, PgQueue, PgSettings};
pub use sqlite::SqliteQueue;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

/// Wakes one idle delivery waiting on `arrivals` after a commit that
/// added messages. Not every delivery: woken all at once, dozens would race
/// to claim the same few messages, each paying a claim (a database round
/// trip on the shared queue) to find nothing. The one woken claims a chain
/// and, if it was full, wakes the next (see the delivery worker), so about
/// as many deliveries wake as there is work for.
pub fn wake(arrivals: &Notify) {
    arrivals.notify_one();
}

/// What delivery needs from a queue: [`SqliteQueue`] (embedded, one
/// relay) and [`PgQueue`] (shared by several replicas) implement it, and
/// [`AnyQueue`] is whichever of them `serve` was configured with.
pub trait Queue: Clone + Send + Sync + 'static {
    /// Durably stores a new message, with the body chunks appended for it;
    /// returns only after it is committed.
    fn enqueue(&self, message: NewMessage) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Stores chunk `seq` (0, 1, ...) of the body of message `id`, which
    /// is not enqueued yet: bodies go to the store as they arrive, so no
    /// process holds a whole large message. Not durable by itself (the
    /// enqueue's commit makes it so); chunks of a message never enqueued
    /// are dropped with [`Queue::discard`] or at the next start.
    fn append(
        &self,
        id: &str,
        seq: u32,
        chunk: Vec<u8>,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Drops the chunks appended for a message that will not be enqueued
    /// (the client left, the message was too big, the store failed).
    fn discard(&self, id: &str) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Chunk `seq` of a stored message's body (see [`Content`]).
    fn chunk(&self, id: &str, seq: u32)
        -> impl Future<Output = Result<Vec<u8>, QueueError>> + Send;

    /// Leases up to `limit` messages for `upstream` that are due now, oldest
    /// due first. Each comes with only its still-pending recipients.
    /// `lease` bounds how long one process may hold them; a store shared by
    /// several processes uses its own configured lease instead and renews
    /// it while the holder lives ([`PgQueue`]). A claim that comes back
    /// short of `limit` says when the next message becomes due.
    fn claim_due(
        &self,
        upstream: &str,
        limit: ClaimLimit,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, QueueError>> + Send;

    /// [`Queue::claim_due`]'s messages alone.
    fn claim(
        &self,
        upstream: &str,
        limit: impl Into<ClaimLimit> + Send,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<Claimed>, QueueError>> + Send {
        let limit = limit.into();
        async move { Ok(self.claim_due(upstream, limit, lease).await?.messages) }
    }

    /// Records one delivery attempt's per-recipient outcomes and ends the
    /// lease: the message is removed, rescheduled, or failed.
    fn finish(
        &self,
        id: &str,
        outcomes: Vec<(i64, Outcome)>,
        error: Option<String>,
    ) -> impl Future<Output = Result<Finished, QueueError>> + Send;

    /// Ends a lease without counting an attempt (the failure was not the
    /// message's fault, e.g. the upstream rejected our credentials).
    fn release(&self, id: &str) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// When the next message for `upstream` becomes due, if any is waiting.
    fn next_due(
        &self,
        upstream: &str,
    ) -> impl Future<Output = Result<Option<SystemTime>, QueueError>> + Send;

    /// How many messages wait (not failed), per upstream name.
    fn waiting(&self) -> impl Future<Output = Result<Vec<(String, u64)>, QueueError>> + Send;

    /// Notified after every commit that adds messages ([`wake`]), so
    /// delivery starts at once instead of polling.
    fn arrivals(&self) -> Arc<Notify>;
}
