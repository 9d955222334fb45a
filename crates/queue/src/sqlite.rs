//! [`SqliteQueue`]: the handle sessions and delivery workers share.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{oneshot, Notify};

use crate::writer::{self, Op};
use crate::{
    schema, sql, Claim, ClaimLimit, Finished, NewMessage, Outcome, Queue, QueueError, RetryPolicy,
};

/// The SQLite-backed queue. Cheap to clone; every clone talks to the same
/// writer thread, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteQueue {
    ops: Sender<Op>,
    arrivals: Arc<Notify>,
    /// Whether the writer's last commit succeeded (false after e.g. a full
    /// disk, until a commit works again).
    healthy: Arc<AtomicBool>,
    /// Read-only connections for body chunks, so reading a large message
    /// for delivery never waits behind (or holds up) the writer.
    readers: Arc<Readers>,
}

/// A small pool of read connections, used on blocking threads.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

impl Readers {
    /// Runs `read` on a pooled connection (opening one if none is idle).
    fn with<T>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = rusqlite::Connection::open_with_flags(
                    &self.path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(Duration::from_secs(5))?;
                conn
            }
        };
        let result = read(&conn);
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        result
    }
}

impl SqliteQueue {
    /// Opens the queue in `folder` (creating it), clears leases left by a
    /// previous process, and starts the writer thread.
    pub fn open(folder: &Path, policy: RetryPolicy) -> Result<SqliteQueue, QueueError> {
        let conn = schema::open(folder)?;
        let cleared = sql::clear_leases(&conn)?;
        if cleared > 0 {
            tracing::info!(
                messages = cleared,
                "Resuming deliveries interrupted by the last stop."
            );
        }
        let orphans = sql::drop_orphan_chunks(&conn)?;
        if orphans > 0 {
            tracing::info!(
                chunks = orphans,
                "Dropped the body chunks of messages still being received at the last stop (none was acknowledged)."
            );
        }
        let (ops, rx) = mpsc::channel();
        let arrivals = Arc::new(Notify::new());
        let notify = arrivals.clone();
        let healthy = Arc::new(AtomicBool::new(true));
        let writer_healthy = healthy.clone();
        std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || writer::run(conn, rx, policy, notify, writer_healthy))
            .map_err(|source| QueueError::Folder {
                path: folder.to_path_buf(),
                source,
            })?;
        Ok(SqliteQueue {
            ops,
            arrivals,
            healthy,
            readers: Arc::new(Readers {
                path: folder.join(schema::DB_FILE),
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Whether the queue can take new messages now: the writer answers, can
    /// take the write lock, and its last commit did not fail.
    pub async fn check_writable(&self) -> Result<(), QueueError> {
        self.ask(Op::Ping).await?;
        if self.healthy.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(QueueError::Commit(
                "the last commit failed (disk full or I/O error?)".into(),
            ))
        }
    }

    /// Replaces the retry policy (on config reload); applies to every
    /// attempt recorded from now on.
    pub async fn set_policy(&self, policy: RetryPolicy) -> Result<(), QueueError> {
        self.ask(|r| Op::SetPolicy(policy, r)).await
    }

    /// Routes every waiting message again with `route(sender, head)` (on
    /// config reload); returns how many changed upstream or stream.
    pub async fn reroute(
        &self,
        route: impl Fn(&str, &[u8]) -> (String, Option<String>) + Send + 'static,
    ) -> Result<usize, QueueError> {
        self.ask(|r| Op::Reroute(Box::new(route), r)).await
    }

    /// Drops up to `batch` history entries finished before `before`;
    /// returns how many.
    pub async fn prune_history(
        &self,
        before: SystemTime,
        batch: usize,
    ) -> Result<usize, QueueError> {
        self.ask(|r| Op::PruneHistory(before, batch, r)).await
    }

    async fn ask<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, QueueError>>) -> Op,
    ) -> Result<T, QueueError> {
        let (tx, rx) = oneshot::channel();
        self.ops.send(op(tx)).map_err(|_| QueueError::WriterGone)?;
        rx.await.map_err(|_| QueueError::WriterGone)?
    }
}

impl Queue for SqliteQueue {
    async fn enqueue(&self, message: NewMessage) -> Result<(), QueueError> {
        self.ask(|r| Op::Enqueue(message, r)).await
    }

    async fn append(&self, id: &str, seq: u32, chunk: Vec<u8>) -> Result<(), QueueError> {
        let id = id.to_string();
        self.ask(|reply| Op::Append {
            id,
            seq,
            data: chunk,
            reply,
        })
        .await
    }

    async fn discard(&self, id: &str) -> Result<(), QueueError> {
        let id = id.to_string();
        self.ask(|r| Op::Discard(id, r)).await
    }

    async fn chunk(&self, id: &str, seq: u32) -> Result<Vec<u8>, QueueError> {
        let (readers, id) = (self.readers.clone(), id.to_string());
        tokio::task::spawn_blocking(move || readers.with(|conn| sql::chunk(conn, &id, seq)))
            .await
            .map_err(|e| QueueError::Read(e.to_string()))?
    }

    async fn claim_due(
        &self,
        upstream: &str,
        limit: ClaimLimit,
        lease: Duration,
    ) -> Result<Claim, QueueError> {
        let upstream = upstream.to_string();
        self.ask(|reply| Op::Claim {
            upstream,
            limit,
            lease,
            reply,
        })
        .await
    }

    async fn finish(
        &self,
        id: &str,
        outcomes: Vec<(i64, Outcome)>,
        error: Option<String>,
    ) -> Result<Finished, QueueError> {
        let id = id.to_string();
        self.ask(|reply| Op::Finish {
            id,
            outcomes,
            error,
            reply,
        })
        .await
    }

    async fn release(&self, id: &str) -> Result<(), QueueError> {
        let id = id.to_string();
        self.ask(|r| Op::Release(id, r)).await
    }

    async fn next_due(&self, upstream: &str) -> Result<Option<SystemTime>, QueueError> {
        let upstream = upstream.to_string();
        self.ask(|r| Op::NextDue(upstream, r)).await
    }

    async fn waiting(&self) -> Result<Vec<(String, u64)>, QueueError> {
        self.ask(Op::Waiting).await
    }

    fn arrivals(&self) -> Arc<Notify> {
        self.arrivals.clone()
    }
}
