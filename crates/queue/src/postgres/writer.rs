//! Group commit for the shared queue: one task takes every enqueue that is
//! waiting, inserts them all in one transaction (each in its own
//! savepoint, so one bad message does not undo the others), commits once
//! with `synchronous_commit = on`, and only then answers each session.
//! The transaction also NOTIFYs the other replicas (naming the replica
//! that committed), which PostgreSQL delivers at the commit.

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
    owner: Arc<str>,
    arrivals: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let results = commit(&pool, &batch, &channel, &owner).await;
        let stored = match results {
            Ok(results) => {
                let mut stored = 0;
                for ((_, reply), result) in batch.drain(..).zip(results) {
                    stored += usize::from(result.is_ok());
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
                0
            }
        };
        if stored > 0 {
            crate::wake(&arrivals);
        }
    }
}

/// One transaction for the whole batch: per message its own result, or
/// an error for all (nothing committed). The batch goes in with one
/// multi-row insert (with the NOTIFY, one statement, when no message has
/// body chunks to check); only if that fails (a message whose chunks are
/// missing, a duplicate id) is it tried again message by message, each in
/// its own savepoint, so the bad one fails alone.
async fn commit(
    pool: &Pool,
    batch: &[Request],
    channel: &str,
    owner: &str,
) -> Result<Vec<Result<(), QueueError>>, QueueError> {
    let mut client = pool.get().await?;
    let messages: Vec<&NewMessage> = batch.iter().map(|(m, _)| m).collect();
    let all_stored = || Ok(messages.iter().map(|_| Ok(())).collect());
    if messages.iter().all(|m| m.content.chunks == 0) {
        // The common case, small messages: one statement, no transaction
        // to open and close.
        match sql::enqueue_and_notify(&client, &messages, channel, owner).await {
            Ok(()) => return all_stored(),
            Err(QueueError::Unreachable(e)) => return Err(QueueError::Unreachable(e)),
            Err(_) => {}
        }
    } else {
        let tx = client.transaction().await?;
        match sql::enqueue_all(&tx, &messages).await {
            Ok(()) => {
                notify(&tx, channel, owner, true).await?;
                tx.commit().await?;
                return all_stored();
            }
            Err(QueueError::Unreachable(e)) => return Err(QueueError::Unreachable(e)),
            Err(_) => tx.rollback().await?,
        }
    }
    let mut tx = client.transaction().await?;
    let mut results = Vec::with_capacity(batch.len());
    for message in &messages {
        let savepoint = tx.savepoint("message").await?;
        let result = sql::enqueue_all(&savepoint, &[*message]).await;
        match result {
            Ok(()) => savepoint.commit().await?,
            Err(_) => savepoint.rollback().await?,
        }
        results.push(result);
    }
    notify(&tx, channel, owner, results.iter().any(Result::is_ok)).await?;
    tx.commit().await?;
    Ok(results)
}

/// Tells every replica, at the commit, that messages arrived (if any
/// was `stored`), and which replica committed them.
async fn notify(
    tx: &deadpool_postgres::Transaction<'_>,
    channel: &str,
    owner: &str,
    stored: bool,
) -> Result<(), QueueError> {
    if stored {
        tx.execute("SELECT pg_notify($1, $2)", &[&channel, &owner])
            .await?;
    }
    Ok(())
}
