//! [`SqliteQueue`]: the handle sessions and delivery workers share.

use std::path::Path;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{oneshot, Notify};

use crate::writer::{self, Op};
use crate::{
    schema, store, Claimed, Finished, NewMessage, Outcome, Queue, QueueError, RetryPolicy,
};

/// The SQLite-backed queue. Cheap to clone; every clone talks to the same
/// writer thread, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteQueue {
    ops: Sender<Op>,
    arrivals: Arc<Notify>,
}

impl SqliteQueue {
    /// Opens the queue in `folder` (creating it), clears leases left by a
    /// previous process, and starts the writer thread.
    pub fn open(folder: &Path, policy: RetryPolicy) -> Result<SqliteQueue, QueueError> {
        let conn = schema::open(folder)?;
        let cleared = store::clear_leases(&conn)?;
        if cleared > 0 {
            tracing::info!(
                messages = cleared,
                "Resuming deliveries interrupted by the last stop."
            );
        }
        let (ops, rx) = mpsc::channel();
        let arrivals = Arc::new(Notify::new());
        let notify = arrivals.clone();
        std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || writer::run(conn, rx, policy, notify))
            .map_err(|source| QueueError::Folder {
                path: folder.to_path_buf(),
                source,
            })?;
        Ok(SqliteQueue { ops, arrivals })
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

    async fn claim(
        &self,
        upstream: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, QueueError> {
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
