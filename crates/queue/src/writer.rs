//! The single writer thread and its group commit.
//!
//! SQLite allows one writer at a time, and every commit costs an fsync.
//! So one thread owns the connection: it takes the first waiting request,
//! then everything else already waiting (up to [`MAX_BATCH`]), runs them all
//! in one transaction — each in its own savepoint, so one failing request
//! does not undo the others — commits once, and only then answers each
//! request. Many sessions' messages share one fsync.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusqlite::Connection;
use tokio::sync::{oneshot, Notify};

use crate::{sql, ClaimLimit, Claimed, Finished, NewMessage, Outcome, QueueError, RetryPolicy};

/// Most requests committed together.
pub const MAX_BATCH: usize = 256;

type Reply<T> = oneshot::Sender<Result<T, QueueError>>;

/// A request to the writer thread.
pub(crate) enum Op {
    Enqueue(NewMessage, Reply<()>),
    /// A body chunk ahead of its message's enqueue.
    Append {
        id: String,
        seq: u32,
        data: Vec<u8>,
        reply: Reply<()>,
    },
    /// Drops the chunks of a message that will not be enqueued.
    Discard(String, Reply<()>),
    Claim {
        upstream: String,
        batch: ClaimLimit,
        lease: Duration,
        reply: Reply<Vec<Claimed>>,
    },
    Finish {
        id: String,
        outcomes: Vec<(i64, Outcome)>,
        error: Option<String>,
        reply: Reply<Finished>,
    },
    Release(String, Reply<()>),
    NextDue(String, Reply<Option<SystemTime>>),
    Waiting(Reply<Vec<(String, u64)>>),
    /// Takes a write lock and commits: proves the store is writable.
    Ping(Reply<()>),
    /// Replaces the retry policy (config reload).
    SetPolicy(RetryPolicy, Reply<()>),
    /// Routes every waiting message again (config reload).
    Reroute(Box<RouteFn>, Reply<usize>),
    /// Drops up to this many history entries finished before this time.
    PruneHistory(SystemTime, usize, Reply<usize>),
}

impl Op {
    /// Whether the batch holding this request must be on disk when its
    /// commit returns. An enqueue is acknowledged with a `250` and a finish
    /// records what the upstream took (lost, it would be sent again), a
    /// reroute is an operator's change. The rest need no fsync of their
    /// own: chunks count only once the enqueue that owns them commits, and
    /// that commit's fsync covers the whole write-ahead log, chunks
    /// included; leases (claim, release) are cleared at every start
    /// anyway; reads write nothing. In WAL mode a commit without fsync
    /// still survives the process being killed, only not a power loss.
    fn needs_fsync(&self) -> bool {
        matches!(
            self,
            Op::Enqueue(..) | Op::Finish { .. } | Op::Reroute(..) | Op::PruneHistory(..)
        )
    }
}

/// Decides (upstream, stream) from a message's sender and leading bytes.
pub type RouteFn = dyn Fn(&str, &[u8]) -> (String, Option<String>) + Send;

/// An answer held back until the batch's commit is known.
type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

/// Runs until every sender is dropped.
pub(crate) fn run(
    mut conn: Connection,
    ops: Receiver<Op>,
    mut policy: RetryPolicy,
    arrivals: Arc<Notify>,
    healthy: Arc<AtomicBool>,
) {
    // The connection starts with FULL (see `schema::open`).
    let mut synchronous = "FULL";
    while let Ok(first) = ops.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let added = batch.iter().any(|op| matches!(op, Op::Enqueue(..)));
        let sync = if batch.iter().any(Op::needs_fsync) {
            "FULL"
        } else {
            "NORMAL"
        };
        if sync != synchronous {
            match conn.pragma_update(None, "synchronous", sync) {
                Ok(()) => synchronous = sync,
                Err(e) => {
                    tracing::error!(error = %e, "Cannot change the queue's synchronous mode.")
                }
            }
        }
        let writes_data = batch
            .iter()
            .any(|op| matches!(op, Op::Enqueue(..) | Op::Append { .. } | Op::Finish { .. }));
        // A policy change applies to this batch and every later one.
        for op in &batch {
            if let Op::SetPolicy(new, _) = op {
                policy = new.clone();
            }
        }
        let (answers, committed) = commit_batch(&mut conn, batch, &policy);
        let error = committed.err().map(|e| e.to_string());
        // Only a batch that writes data says whether data can be written.
        if writes_data {
            healthy.store(error.is_none(), Ordering::Relaxed);
        }
        if let Some(e) = &error {
            tracing::error!(error = %e, requests = answers.len(), "Queue commit failed; nothing in this batch was stored.");
        }
        for answer in answers {
            answer(error.as_deref());
        }
        if added && error.is_none() {
            crate::wake(&arrivals);
        }
    }
}

fn commit_batch(
    conn: &mut Connection,
    batch: Vec<Op>,
    policy: &RetryPolicy,
) -> (Vec<Answer>, Result<(), QueueError>) {
    let mut tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => {
            let message = e.to_string();
            let answers = batch.into_iter().map(|op| reject(op, &message)).collect();
            return (answers, Err(e.into()));
        }
    };
    let now = SystemTime::now();
    let mut answers = Vec::with_capacity(batch.len());
    for op in batch {
        answers.push(match op {
            Op::Enqueue(m, reply) => apply(&mut tx, reply, |c| sql::enqueue(c, &m)),
            Op::Append {
                id,
                seq,
                data,
                reply,
            } => apply(&mut tx, reply, |c| sql::append(c, &id, seq, &data)),
            Op::Discard(id, reply) => apply(&mut tx, reply, |c| sql::discard(c, &id)),
            Op::Claim {
                upstream,
                batch,
                lease,
                reply,
            } => apply(&mut tx, reply, |c| {
                sql::claim(c, &upstream, batch, lease, now)
            }),
            Op::Finish {
                id,
                outcomes,
                error,
                reply,
            } => apply(&mut tx, reply, |c| {
                sql::finish(c, &id, &outcomes, error.as_deref(), policy, now)
            }),
            Op::Release(id, reply) => apply(&mut tx, reply, |c| sql::release(c, &id)),
            Op::NextDue(upstream, reply) => apply(&mut tx, reply, |c| sql::next_due(c, &upstream)),
            Op::Waiting(reply) => apply(&mut tx, reply, sql::waiting),
            Op::Ping(reply) => apply(&mut tx, reply, sql::ping),
            Op::Reroute(route, reply) => apply(&mut tx, reply, |c| sql::reroute(c, &*route, now)),
            Op::SetPolicy(_, reply) => apply(&mut tx, reply, |_| Ok(())),
            Op::PruneHistory(before, batch, reply) => {
                apply(&mut tx, reply, |c| sql::prune_history(c, before, batch))
            }
        });
    }
    let committed = tx.commit().map_err(QueueError::from);
    (answers, committed)
}

/// Runs one request in its own savepoint and holds its answer until the
/// whole batch has committed.
fn apply<T: Send + 'static>(
    tx: &mut rusqlite::Transaction<'_>,
    reply: Reply<T>,
    f: impl FnOnce(&Connection) -> Result<T, QueueError>,
) -> Answer {
    let result = match tx.savepoint() {
        Ok(mut sp) => match f(&sp) {
            Ok(v) => sp.commit().map(|_| v).map_err(QueueError::from),
            Err(e) => {
                let _ = sp.rollback();
                Err(e)
            }
        },
        Err(e) => Err(e.into()),
    };
    Box::new(move |commit_error: Option<&str>| {
        let result = match (result, commit_error) {
            (Ok(_), Some(e)) => Err(QueueError::Commit(e.to_string())),
            (result, _) => result,
        };
        let _ = reply.send(result);
    })
}

fn reject(op: Op, message: &str) -> Answer {
    fn fail<T: Send + 'static>(reply: Reply<T>, message: &str) -> Answer {
        let message = message.to_string();
        Box::new(move |_| {
            let _ = reply.send(Err(QueueError::Commit(message)));
        })
    }
    match op {
        Op::Enqueue(_, r) | Op::Release(_, r) | Op::Discard(_, r) => fail(r, message),
        Op::Append { reply, .. } => fail(reply, message),
        Op::Claim { reply, .. } => fail(reply, message),
        Op::Finish { reply, .. } => fail(reply, message),
        Op::NextDue(_, r) => fail(r, message),
        Op::Waiting(r) => fail(r, message),
        Op::Ping(r) | Op::SetPolicy(_, r) => fail(r, message),
        Op::Reroute(_, r) | Op::PruneHistory(_, _, r) => fail(r, message),
    }
}
