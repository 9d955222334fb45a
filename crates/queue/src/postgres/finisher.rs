//! Group commit for finished deliveries: every delivery that got all its
//! recipients accepted hands its outcome to this one task, which removes
//! all the waiting messages (and writes their history) in one statement,
//! one commit, then answers each. On PostgreSQL a commit costs a WAL flush
//! and a round trip; with many workers finishing at once this is one of
//! each instead of one per message. Anything else (a deferral, a failure)
//! is recorded message by message as before.

use tokio::sync::{mpsc, oneshot};

use deadpool_postgres::Pool;

use super::sql;
use crate::writer::MAX_BATCH;
use crate::QueueError;

/// One finished delivery: the message, its recipients' (index, reply), and
/// whether it goes to the history. The answer says whether the message
/// left the queue (`false`: some other recipient still waits or failed;
/// record it the slow way).
pub(crate) struct Request {
    pub id: String,
    pub delivered: Vec<(i64, String)>,
    pub keep_history: bool,
    pub reply: oneshot::Sender<Result<bool, QueueError>>,
}

/// Runs until every sender is dropped.
pub(crate) async fn run(pool: Pool, mut requests: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match remove(&pool, &batch).await {
            Ok(gone) => {
                for r in batch.drain(..) {
                    let left = gone.contains(&r.id);
                    let _ = r.reply.send(Ok(left));
                }
            }
            Err(e) => {
                for r in batch.drain(..) {
                    let _ = r.reply.send(Err(match &e {
                        QueueError::Unreachable(m) => QueueError::Unreachable(m.clone()),
                        other => QueueError::Commit(other.to_string()),
                    }));
                }
            }
        }
    }
}

/// The batch in one statement; the ids that left the queue.
async fn remove(pool: &Pool, batch: &[Request]) -> Result<Vec<String>, QueueError> {
    let client = pool.get().await?;
    // History or not is one flag per statement: a reload that changes it
    // between two requests of one batch splits the batch.
    let mut gone = Vec::with_capacity(batch.len());
    for keep in [true, false] {
        let part: Vec<&Request> = batch.iter().filter(|r| r.keep_history == keep).collect();
        if part.is_empty() {
            continue;
        }
        let mut ids = Vec::new();
        let mut idx = Vec::new();
        let mut replies = Vec::new();
        for r in &part {
            for (i, reply) in &r.delivered {
                ids.push(r.id.as_str());
                idx.push(*i);
                replies.push(reply.as_str());
            }
        }
        gone.extend(sql::finish_delivered(&client, &ids, &idx, &replies, keep).await?);
    }
    Ok(gone)
}
