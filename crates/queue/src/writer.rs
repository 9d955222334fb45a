//! The single writer thread and its group commit.
//!
//! SQLite allows one writer at a time, and every commit costs an fsync.
//! So one thread owns the connection: it takes the first waiting request,
//! then everything else already waiting (up to [`MAX_BATCH`]), runs them all
//! in one transaction, commits once, and only then answers each request.
//! Many sessions' messages share one fsync. One failing request does not
//! undo the others: the batch then runs again with each request in its
//! own savepoint (see [`commit_batch`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusqlite::Connection;
use tokio::sync::{oneshot, Notify};

use crate::{sql, Claim, ClaimLimit, Finished, NewMessage, Outcome, QueueError, RetryPolicy};

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
        limit: ClaimLimit,
        lease: Duration,
        reply: Reply<Claim>,
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

/// What a request produced, held until the batch's commit is known.
enum Done {
    Nothing,
    Claimed(Claim),
    Finished(Finished),
    Due(Option<SystemTime>),
    Waiting(Vec<(String, u64)>),
    Count(usize),
}

impl Op {
    /// Runs the request inside the batch's transaction. Takes `&self` so
    /// that a batch can run twice (see [`commit_batch`]).
    fn run(
        &self,
        c: &Connection,
        policy: &RetryPolicy,
        now: SystemTime,
    ) -> Result<Done, QueueError> {
        let nothing = |_| Done::Nothing;
        match self {
            Op::Enqueue(m, _) => sql::enqueue(c, m).map(nothing),
            Op::Append { id, seq, data, .. } => sql::append(c, id, *seq, data).map(nothing),
            Op::Discard(id, _) => sql::discard(c, id).map(nothing),
            Op::Claim {
                upstream,
                limit,
                lease,
                ..
            } => sql::claim(c, upstream, *limit, *lease, now).map(Done::Claimed),
            Op::Finish {
                id,
                outcomes,
                error,
                ..
            } => sql::finish(c, id, outcomes, error.as_deref(), policy, now).map(Done::Finished),
            Op::Release(id, _) => sql::release(c, id, now).map(nothing),
            Op::NextDue(upstream, _) => sql::next_due(c, upstream).map(Done::Due),
            Op::Waiting(_) => sql::waiting(c).map(Done::Waiting),
            Op::Ping(_) => sql::ping(c).map(nothing),
            Op::Reroute(route, _) => sql::reroute(c, &**route, now).map(Done::Count),
            Op::SetPolicy(..) => Ok(Done::Nothing),
            Op::PruneHistory(before, batch, _) => {
                sql::prune_history(c, *before, *batch).map(Done::Count)
            }
        }
    }

    /// Sends what [`Op::run`] produced to whoever asked.
    fn answer(self, result: Result<Done, QueueError>) {
        fn send<T>(reply: Reply<T>, result: Result<Done, QueueError>, take: fn(Done) -> Option<T>) {
            let result = result.and_then(|done| {
                take(done)
                    .ok_or_else(|| QueueError::Commit("the writer mixed up two answers".into()))
            });
            let _ = reply.send(result);
        }
        fn nothing(done: Done) -> Option<()> {
            matches!(done, Done::Nothing).then_some(())
        }
        match self {
            Op::Enqueue(_, r) | Op::Discard(_, r) | Op::Release(_, r) => send(r, result, nothing),
            Op::Append { reply, .. } => send(reply, result, nothing),
            Op::Ping(r) | Op::SetPolicy(_, r) => send(r, result, nothing),
            Op::Claim { reply, .. } => send(reply, result, |d| match d {
                Done::Claimed(v) => Some(v),
                _ => None,
            }),
            Op::Finish { reply, .. } => send(reply, result, |d| match d {
                Done::Finished(f) => Some(f),
                _ => None,
            }),
            Op::NextDue(_, r) => send(r, result, |d| match d {
                Done::Due(t) => Some(t),
                _ => None,
            }),
            Op::Waiting(r) => send(r, result, |d| match d {
                Done::Waiting(w) => Some(w),
                _ => None,
            }),
            Op::Reroute(_, r) | Op::PruneHistory(_, _, r) => send(r, result, |d| match d {
                Done::Count(n) => Some(n),
                _ => None,
            }),
        }
    }
}

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
            match set_synchronous(&conn, sync) {
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
        let (results, committed) = commit_batch(&mut conn, &batch, &policy);
        let error = committed.err().map(|e| e.to_string());
        // Only a batch that writes data says whether data can be written.
        if writes_data {
            healthy.store(error.is_none(), Ordering::Relaxed);
        }
        if let Some(e) = &error {
            tracing::error!(error = %e, requests = batch.len(), "Queue commit failed; nothing in this batch was stored.");
        }
        for (op, result) in batch.into_iter().zip(results) {
            op.answer(match (result, &error) {
                (Ok(_), Some(e)) => Err(QueueError::Commit(e.clone())),
                (result, _) => result,
            });
        }
        if added && error.is_none() {
            crate::wake(&arrivals);
        }
    }
}

/// `PRAGMA synchronous`, from the statement cache (it changes with
/// almost every batch).
fn set_synchronous(conn: &Connection, mode: &str) -> rusqlite::Result<()> {
    let sql = if mode == "FULL" {
        "PRAGMA synchronous = FULL"
    } else {
        "PRAGMA synchronous = NORMAL"
    };
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs the batch in one transaction and commits it; one result per
/// request (in order), and whether the commit worked.
///
/// Requests almost never fail, so the batch first runs as one plain
/// transaction. Only if a request fails is that transaction rolled back
/// and the batch run again with each request in its own savepoint, so
/// the failing one is undone alone and the others still commit.
/// Savepoints are not free: every page a request touches is copied to
/// the savepoint's journal first, and they were a quarter of the
/// writer's instructions when every request had one.
fn commit_batch(
    conn: &mut Connection,
    batch: &[Op],
    policy: &RetryPolicy,
) -> (Vec<Result<Done, QueueError>>, Result<(), QueueError>) {
    let now = SystemTime::now();
    let all_fail = |e: rusqlite::Error| {
        let message = e.to_string();
        let results = batch
            .iter()
            .map(|_| Err(QueueError::Commit(message.clone())))
            .collect();
        (results, Err(QueueError::from(e)))
    };
    let mut isolate = false;
    loop {
        let mut tx = match conn.transaction() {
            Ok(tx) => tx,
            Err(e) => return all_fail(e),
        };
        let results = if isolate {
            batch
                .iter()
                .map(|op| isolated(&mut tx, |c| op.run(c, policy, now)))
                .collect()
        } else {
            let ran: Result<Vec<Done>, QueueError> =
                batch.iter().map(|op| op.run(&tx, policy, now)).collect();
            match ran {
                Ok(done) => done.into_iter().map(Ok).collect(),
                // Dropping the transaction rolls it back.
                Err(_) => {
                    isolate = true;
                    continue;
                }
            }
        };
        return (results, tx.commit().map_err(QueueError::from));
    }
}

/// Runs one request in its own savepoint: undone alone if it fails.
fn isolated(
    tx: &mut rusqlite::Transaction<'_>,
    f: impl FnOnce(&Connection) -> Result<Done, QueueError>,
) -> Result<Done, QueueError> {
    let mut sp = tx.savepoint()?;
    match f(&sp) {
        Ok(done) => sp.commit().map(|_| done).map_err(QueueError::from),
        Err(e) => {
            let _ = sp.rollback();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Content;

    fn message(id: &str) -> NewMessage {
        NewMessage {
            id: id.into(),
            received_at: SystemTime::now(),
            sender: "app@example.com".into(),
            recipients: vec!["a@example.net".into()],
            upstream: "transactional".into(),
            stream: None,
            size: 21,
            client: None,
            content: Content::whole(b"Subject: x\r\n\r\nhello\r\n".to_vec()),
        }
    }

    fn stored(conn: &Connection) -> Vec<String> {
        let mut ids: Vec<String> = conn
            .prepare("SELECT id FROM messages ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        ids.sort();
        ids
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_secs(60),
            max_delay: Duration::from_secs(3600),
            multiplier: 2.0,
            give_up_after: Duration::from_secs(86400),
            keep_history: true,
        }
    }

    /// One request of a batch fails after it wrote something (an enqueue
    /// whose message row went in but whose recipient row clashes with one
    /// left behind): it alone is undone, row included, and answered with
    /// its error; the others, before and after it, are committed and
    /// answered `Ok`.
    #[test]
    fn a_failing_request_is_undone_alone_and_the_rest_of_its_batch_commits() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::schema::open(dir.path()).unwrap();
        conn.execute(
            "INSERT INTO recipients (message_id, idx, address, state) VALUES ('B', 0, 'x@example.net', 'pending')",
            [],
        )
        .unwrap();
        let (replies, answers): (Vec<_>, Vec<_>) = (0..3).map(|_| oneshot::channel()).unzip();
        let batch: Vec<Op> = [message("A"), message("B"), message("C")]
            .into_iter()
            .zip(replies)
            .map(|(m, reply)| Op::Enqueue(m, reply))
            .collect();
        let (results, committed) = commit_batch(&mut conn, &batch, &policy());
        committed.unwrap();
        for (op, result) in batch.into_iter().zip(results) {
            op.answer(result);
        }
        let answers: Vec<Result<(), QueueError>> = answers
            .into_iter()
            .map(|mut rx| rx.try_recv().unwrap())
            .collect();
        assert!(answers[0].is_ok(), "{:?}", answers[0]);
        assert!(
            matches!(answers[1], Err(QueueError::Store(_))),
            "{:?}",
            answers[1]
        );
        assert!(answers[2].is_ok(), "{:?}", answers[2]);
        assert_eq!(stored(&conn), ["A", "C"]);
        let recipients: i64 = conn
            .query_row("SELECT COUNT(*) FROM recipients", [], |r| r.get(0))
            .unwrap();
        assert_eq!(recipients, 3, "A's, C's and the one left behind");
    }
}
