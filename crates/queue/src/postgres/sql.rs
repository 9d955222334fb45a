//! The SQL behind each operation on the shared queue, the same semantics
//! as the embedded store's (`crate::sql`): every function runs inside the
//! caller's transaction and none commits. Times are Unix milliseconds from
//! the relay's clock (replicas' clocks must agree within seconds: NTP).

use std::time::{Duration, SystemTime};

use deadpool_postgres::Transaction;

use crate::sql::{first_problem, from_millis, millis};
use crate::{
    ClaimLimit, Claimed, Content, Finished, NewMessage, Outcome, PendingRecipient, QueueError,
    RetryPolicy,
};

pub async fn enqueue(tx: &Transaction<'_>, m: &NewMessage) -> Result<(), QueueError> {
    let content = &m.content;
    let chunks = i32::try_from(content.chunks).unwrap_or(i32::MAX);
    if chunks > 0 {
        let stored: i64 = tx
            .query_one(
                &tx.prepare_cached("SELECT COUNT(*) FROM chunks WHERE message_id = $1")
                    .await?,
                &[&m.id],
            )
            .await?
            .get(0);
        if stored != i64::from(chunks) {
            return Err(QueueError::MissingChunk(
                m.id.clone(),
                u32::try_from(stored).unwrap_or(u32::MAX),
            ));
        }
    }
    let received = millis(m.received_at);
    let insert = tx
        .prepare_cached(
            "INSERT INTO messages (id, received_at, sender, upstream, stream, size, head, chunks, data, state, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', $2)",
        )
        .await?;
    tx.execute(
        &insert,
        &[
            &m.id,
            &received,
            &m.sender,
            &m.upstream,
            &m.stream,
            &i64::try_from(m.size).unwrap_or(i64::MAX),
            &content.head,
            &chunks,
            &content.tail,
        ],
    )
    .await?;
    let idx: Vec<i64> = (0..m.recipients.len() as i64).collect();
    let rcpts = tx
        .prepare_cached(
            "INSERT INTO recipients (message_id, idx, address, state)
             SELECT $1, idx, address, 'pending' FROM unnest($2::BIGINT[], $3::TEXT[]) AS r (idx, address)",
        )
        .await?;
    tx.execute(&rcpts, &[&m.id, &idx, &m.recipients]).await?;
    Ok(())
}

/// Leases up to `batch` due messages whose lease is free or expired;
/// rows another replica is claiming right now are skipped, not waited for.
pub async fn claim(
    tx: &Transaction<'_>,
    upstream: &str,
    batch: ClaimLimit,
    lease: Duration,
    owner: &str,
    now: SystemTime,
) -> Result<Vec<Claimed>, QueueError> {
    let now_ms = millis(now);
    let due = tx
        .query(
            &tx.prepare_cached(
                "SELECT id, octet_length(head) + octet_length(data) FROM messages
                 WHERE upstream = $1 AND state <> 'failed' AND next_attempt_at <= $2
                   AND (lease_until IS NULL OR lease_until <= $2)
                 ORDER BY next_attempt_at LIMIT $3
                 FOR UPDATE SKIP LOCKED",
            )
            .await?,
            &[&upstream, &now_ms, &(batch.messages as i64)],
        )
        .await?;
    // The first due message always; more only while what they hold in
    // memory (head and tail) fits `batch.bytes`.
    let mut bytes = 0u64;
    let ids: Vec<String> = due
        .iter()
        .enumerate()
        .take_while(|(i, row)| {
            bytes = bytes.saturating_add(row.get::<_, i32>(1).max(0) as u64);
            *i == 0 || bytes <= batch.bytes
        })
        .map(|(_, row)| row.get(0))
        .collect();
    let lease_until = now_ms + lease.as_millis() as i64;
    let take = tx
        .prepare_cached("UPDATE messages SET lease_until = $2, lease_owner = $3 WHERE id = $1")
        .await?;
    let mut claimed = Vec::with_capacity(ids.len());
    for id in ids {
        tx.execute(&take, &[&id, &lease_until, &owner]).await?;
        claimed.push(load(tx, &id).await?);
    }
    Ok(claimed)
}

async fn load(tx: &Transaction<'_>, id: &str) -> Result<Claimed, QueueError> {
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "SELECT received_at, sender, upstream, stream, head, chunks, data, attempts FROM messages WHERE id = $1",
            )
            .await?,
            &[&id],
        )
        .await?;
    let recipients = tx
        .query(
            &tx.prepare_cached(
                "SELECT idx, address FROM recipients WHERE message_id = $1 AND state = 'pending' ORDER BY idx",
            )
            .await?,
            &[&id],
        )
        .await?
        .iter()
        .map(|r| PendingRecipient {
            idx: r.get(0),
            address: r.get(1),
        })
        .collect();
    Ok(Claimed {
        id: id.to_string(),
        received_at: from_millis(row.get(0)),
        sender: row.get(1),
        recipients,
        upstream: row.get(2),
        stream: row.get(3),
        content: Content {
            head: row.get(4),
            chunks: row.get::<_, i32>(5).max(0) as u32,
            tail: row.get(6),
        },
        attempts: row.get::<_, i32>(7).max(0) as u32,
    })
}

pub async fn finish(
    tx: &Transaction<'_>,
    id: &str,
    outcomes: &[(i64, Outcome)],
    error: Option<&str>,
    policy: &RetryPolicy,
    now: SystemTime,
) -> Result<Finished, QueueError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT received_at, attempts FROM messages WHERE id = $1 FOR UPDATE",
            )
            .await?,
            &[&id],
        )
        .await?
        .ok_or_else(|| QueueError::NotFound(id.to_string()))?;
    let (received_at, attempts): (i64, i32) = (row.get(0), row.get(1));
    let set_rcpt = tx
        .prepare_cached(
            "UPDATE recipients SET state = $3, reply = $4 WHERE message_id = $1 AND idx = $2 AND state = 'pending'",
        )
        .await?;
    let set_reply = tx
        .prepare_cached("UPDATE recipients SET reply = $3 WHERE message_id = $1 AND idx = $2")
        .await?;
    for (idx, outcome) in outcomes {
        match outcome {
            Outcome::Delivered(reply) => {
                tx.execute(&set_rcpt, &[&id, idx, &"delivered", reply])
                    .await?
            }
            Outcome::Failed(reply) => tx.execute(&set_rcpt, &[&id, idx, &"failed", reply]).await?,
            Outcome::Deferred(reply) => tx.execute(&set_reply, &[&id, idx, reply]).await?,
        };
    }
    let attempts = attempts.saturating_add(1);
    let last_error = error
        .map(str::to_string)
        .or_else(|| first_problem(outcomes));
    let give_up_at = from_millis(received_at) + policy.give_up_after;
    let expired = count(tx, id, "pending").await? > 0 && now >= give_up_at;
    if expired {
        let reply = policy.gave_up(last_error.as_deref());
        tx.execute(
            &tx.prepare_cached(
                "UPDATE recipients SET state = 'failed', reply = $2 WHERE message_id = $1 AND state = 'pending'",
            )
            .await?,
            &[&id, &reply],
        )
        .await?;
    }
    if count(tx, id, "pending").await? > 0 {
        let next = now + policy.delay_after(attempts.max(0) as u32);
        tx.execute(
            &tx.prepare_cached(
                "UPDATE messages SET state = 'deferred', attempts = $2, next_attempt_at = $3,
                     lease_until = NULL, lease_owner = NULL, last_error = $4 WHERE id = $1",
            )
            .await?,
            &[&id, &attempts, &millis(next), &last_error],
        )
        .await?;
        Ok(Finished::Deferred(next))
    } else if count(tx, id, "failed").await? > 0 {
        tx.execute(
            &tx.prepare_cached(
                "UPDATE messages SET state = 'failed', attempts = $2, next_attempt_at = NULL,
                     lease_until = NULL, lease_owner = NULL, last_error = $3 WHERE id = $1",
            )
            .await?,
            &[&id, &attempts, &last_error],
        )
        .await?;
        Ok(if expired {
            Finished::Expired
        } else {
            Finished::Failed
        })
    } else {
        discard(tx, id).await?;
        // Recipients go with it (ON DELETE CASCADE).
        tx.execute(
            &tx.prepare_cached("DELETE FROM messages WHERE id = $1")
                .await?,
            &[&id],
        )
        .await?;
        Ok(Finished::Delivered)
    }
}

async fn count(tx: &Transaction<'_>, id: &str, state: &str) -> Result<i64, QueueError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached(
                "SELECT COUNT(*) FROM recipients WHERE message_id = $1 AND state = $2",
            )
            .await?,
            &[&id, &state],
        )
        .await?
        .get(0))
}

/// Drops message `id`'s body chunks.
pub async fn discard(tx: &Transaction<'_>, id: &str) -> Result<(), QueueError> {
    tx.execute(
        &tx.prepare_cached("DELETE FROM chunks WHERE message_id = $1")
            .await?,
        &[&id],
    )
    .await?;
    Ok(())
}

/// Decides (upstream, stream) from a message's sender and leading bytes;
/// `Sync` because it is held across awaits.
pub type SharedRouteFn = dyn Fn(&str, &[u8]) -> (String, Option<String>) + Send + Sync;

/// id, sender, first bytes of the message, upstream, stream.
type RouteRow = (String, String, Vec<u8>, String, Option<String>);

/// Routes every waiting, unleased message again; returns how many changed.
pub async fn reroute(
    tx: &Transaction<'_>,
    route: &SharedRouteFn,
    now: SystemTime,
) -> Result<usize, QueueError> {
    let rows: Vec<RouteRow> = tx
        .query(
            "SELECT id, sender,
                    CASE WHEN octet_length(head) > 0 THEN head ELSE substring(data FROM 1 FOR 65536) END,
                    upstream, stream FROM messages
             WHERE state <> 'failed' AND (lease_until IS NULL OR lease_until <= $1)
             FOR UPDATE SKIP LOCKED",
            &[&millis(now)],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let update = tx
        .prepare_cached("UPDATE messages SET upstream = $2, stream = $3 WHERE id = $1")
        .await?;
    let mut changed = 0;
    for (id, sender, head, upstream, stream) in rows {
        let (new_upstream, new_stream) = route(&sender, &head);
        if new_upstream != upstream || new_stream != stream {
            tx.execute(&update, &[&id, &new_upstream, &new_stream])
                .await?;
            changed += 1;
        }
    }
    Ok(changed)
}
