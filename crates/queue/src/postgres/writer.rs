//! Group commit for the shared queue: one task takes every enqueue that is
//! waiting, inserts them all in one transaction (each in its own
//! savepoint, so one bad message does not undo the others), commits once
//! with `synchronous_commit = on`, and only then answers each session.
//! The transaction also NOTIFYs the other replicas, which PostgreSQL
//! delivers at the commit.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Notify};

use super::sql;
use crate::writer::MAX_BATCH;
use crate::{NewMessage, QueueError};

/// One session's message and where its answer goes.
pub(crate) type Request = (NewMessage, oneshot::Sender<Result<(), QueueError>>);

/// Runs until every sender is dropped.
pub(crate) async fn run(
    pool: Pool,
    mut requests: mpsc::Receiver<Request>,
    channel: String,
    arrivals: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let results = commit(&pool, &batch, &channel).await;
        let stored = match results {
            Ok(results) => {
                let mut stored = false;
                for ((_, reply), result) in batch.drain(..).zip(results) {
                    stored |= result.is_ok();
                    let _ = reply.send(result);
                }
                stored
            }
            Err(e) => {
                tracing::error!(error = %e, requests = batch.len(), "Queue commit failed; nothing in this batch was stored.");
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(match &e {
                        QueueError::Unreachable(m) => QueueError::Unreachable(m.clone()),
                        other => QueueError::Commit(other.to_string()),
                    }));
                }
                false
            }
        };
        if stored {
            arrivals.notify_waiters();
        }
    }
}

/// One transaction for the whole batch: per message its own result, or
/// an error for all (nothing committed).
async fn commit(
    pool: &Pool,
    batch: &[Request],
    channel: &str,
) -> Result<Vec<Result<(), QueueError>>, QueueError> {
    let mut client = pool.get().await?;
    let mut tx = client.transaction().await?;
    let mut results = Vec::with_capacity(batch.len());
    for (message, _) in batch {
        let savepoint = tx.savepoint("message").await?;
        let result = sql::enqueue(&savepoint, message).await;
        match result {
            Ok(()) => savepoint.commit().await?,
            Err(_) => savepoint.rollback().await?,
        }
        results.push(result);
    }
    if results.iter().any(Result::is_ok) {
        tx.execute("SELECT pg_notify($1, '')", &[&channel]).await?;
    }
    tx.commit().await?;
    Ok(results)
}
