//! The SQL behind each queue operation. Every function runs inside the
//! writer's open transaction; none commits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use crate::{
    Claim, ClaimLimit, Claimed, Content, Finished, NewMessage, Outcome, PendingRecipient,
    QueueError, Rest, RetryPolicy,
};

/// Unix milliseconds, the time unit on disk.
pub fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The inverse of [`millis`].
pub fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

pub fn enqueue(conn: &Connection, m: &NewMessage) -> Result<(), QueueError> {
    let received = millis(m.received_at);
    let content = &m.content;
    let (from, subject) = crate::summary::of(content);
    if content.chunks > 0 {
        let stored: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM chunks WHERE message_id = ?1")?
            .query_row(params![m.id], |r| r.get(0))?;
        if stored != i64::from(content.chunks) {
            return Err(QueueError::MissingChunk(
                m.id.clone(),
                u32::try_from(stored).unwrap_or(u32::MAX),
            ));
        }
    }
    conn.prepare_cached(
        "INSERT INTO messages (id, received_at, sender, upstream, stream, size, head, chunks, data, state, next_attempt_at, eight_bit,
                               client, from_addr, subject)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'queued', ?2, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        m.id,
        received,
        m.sender,
        m.upstream,
        m.stream,
        m.size as i64,
        content.head,
        content.chunks,
        content.tail,
        content.eight_bit,
        m.client,
        from,
        subject
    ])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO recipients (message_id, idx, address, state) VALUES (?1, ?2, ?3, 'pending')",
    )?;
    for (idx, rcpt) in m.recipients.iter().enumerate() {
        insert.execute(params![m.id, idx as i64, rcpt])?;
    }
    Ok(())
}

pub fn claim(
    conn: &Connection,
    upstream: &str,
    batch: ClaimLimit,
    lease: Duration,
    now: SystemTime,
) -> Result<Claim, QueueError> {
    let now_ms = millis(now);
    let due: Vec<(String, i64)> = conn
        .prepare_cached(
            "SELECT id, length(head) + length(data) FROM messages
             WHERE upstream = ?1 AND state != 'failed' AND next_attempt_at <= ?2
               AND (lease_until IS NULL OR lease_until <= ?2)
             ORDER BY next_attempt_at LIMIT ?3",
        )?
        .query_map(params![upstream, now_ms, batch.messages as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    // The first due message always; more only while what they hold in
    // memory (head and tail; chunks are read as they are sent) fits
    // `batch.bytes`.
    let found = due.len();
    let mut bytes = 0u64;
    let ids: Vec<String> = due
        .into_iter()
        .enumerate()
        .take_while(|(i, (_, size))| {
            bytes = bytes.saturating_add((*size).max(0) as u64);
            *i == 0 || bytes <= batch.bytes
        })
        .map(|(_, (id, _))| id)
        .collect();
    let full = batch.stopped(found, ids.len());
    let lease_until = now_ms + lease.as_millis() as i64;
    let mut claimed = Vec::with_capacity(ids.len());
    for id in ids {
        // Due again exactly when the lease would run out: the due index
        // alone then skips the messages in flight (see the crate docs).
        // (`UPDATE … RETURNING` instead of the two statements measured
        // 23,000 more instructions per message: SQLite runs a RETURNING
        // clause through a temporary table.)
        conn.prepare_cached(
            "UPDATE messages SET lease_until = ?2, next_attempt_at = ?2 WHERE id = ?1",
        )?
        .execute(params![id, lease_until])?;
        claimed.push(load(conn, id)?);
    }
    let rest = if full {
        Rest::MoreDue
    } else {
        // After the leases above: those messages count as due when their
        // lease would run out.
        Rest::NextDue(next_due(conn, upstream)?)
    };
    Ok(Claim {
        messages: claimed,
        rest,
    })
}

/// Message `id` as a claim hands it out, with its pending recipients.
fn load(conn: &Connection, id: String) -> Result<Claimed, QueueError> {
    let mut claimed = conn
        .prepare_cached(
            "SELECT received_at, sender, upstream, stream, head, chunks, data, attempts, eight_bit FROM messages WHERE id = ?1",
        )?
        .query_row(params![id], |r| {
            Ok(Claimed {
                id: String::new(),
                received_at: from_millis(r.get(0)?),
                sender: r.get(1)?,
                recipients: Vec::new(),
                upstream: r.get(2)?,
                stream: r.get(3)?,
                content: Content {
                    head: r.get(4)?,
                    chunks: r.get(5)?,
                    tail: r.get(6)?,
                    eight_bit: r.get(8)?,
                },
                attempts: r.get(7)?,
            })
        })?;
    claimed.recipients = conn
        .prepare_cached(
            "SELECT idx, address FROM recipients WHERE message_id = ?1 AND state = 'pending' ORDER BY idx",
        )?
        .query_map(params![id], |r| {
            Ok(PendingRecipient {
                idx: r.get(0)?,
                address: r.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    claimed.id = id;
    Ok(claimed)
}

pub fn finish(
    conn: &Connection,
    id: &str,
    outcomes: &[(i64, Outcome)],
    error: Option<&str>,
    policy: &RetryPolicy,
    now: SystemTime,
) -> Result<Finished, QueueError> {
    let (received_at, attempts, chunks): (i64, u32, u32) = conn
        .prepare_cached("SELECT received_at, attempts, chunks FROM messages WHERE id = ?1")?
        .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?
        .ok_or_else(|| QueueError::NotFound(id.to_string()))?;
    let mut set_rcpt = conn.prepare_cached(
        "UPDATE recipients SET state = ?3, reply = ?4 WHERE message_id = ?1 AND idx = ?2 AND state = 'pending'",
    )?;
    for (idx, outcome) in outcomes {
        match outcome {
            Outcome::Delivered(reply) => set_rcpt.execute(params![id, idx, "delivered", reply])?,
            Outcome::Failed(reply) => set_rcpt.execute(params![id, idx, "failed", reply])?,
            Outcome::Deferred(reply) => conn
                .prepare_cached(
                    "UPDATE recipients SET reply = ?3 WHERE message_id = ?1 AND idx = ?2",
                )?
                .execute(params![id, idx, reply])?,
        };
    }
    let attempts = attempts + 1;
    let last_error = error
        .map(str::to_string)
        .or_else(|| first_problem(outcomes));
    let give_up_at = from_millis(received_at) + policy.give_up_after;
    let (mut pending, mut failed) = counts(conn, id)?;
    let expired = pending > 0 && now >= give_up_at;
    if expired {
        let reply = policy.gave_up(last_error.as_deref());
        conn.prepare_cached(
            "UPDATE recipients SET state = 'failed', reply = ?2 WHERE message_id = ?1 AND state = 'pending'",
        )?
        .execute(params![id, reply])?;
        (failed, pending) = (failed + pending, 0);
    }
    if pending > 0 {
        let next = now + policy.delay_after(attempts);
        conn.prepare_cached(
            "UPDATE messages SET state = 'deferred', attempts = ?2, next_attempt_at = ?3,
                 lease_until = NULL, last_error = ?4 WHERE id = ?1",
        )?
        .execute(params![id, attempts, millis(next), last_error])?;
        Ok(Finished::Deferred(next))
    } else if failed > 0 {
        conn.prepare_cached(
            "UPDATE messages SET state = 'failed', attempts = ?2, next_attempt_at = NULL,
                 lease_until = NULL, last_error = ?3 WHERE id = ?1",
        )?
        .execute(params![id, attempts, last_error])?;
        Ok(if expired {
            Finished::Expired
        } else {
            Finished::Failed
        })
    } else {
        if policy.keep_history {
            archive(conn, id, attempts, now)?;
        }
        remove(conn, id, chunks > 0)?;
        Ok(Finished::Delivered)
    }
}

/// Copies message `id` and its recipients into the history as it leaves
/// the queue, `attempts` made, at `now`. A recipient still pending (the
/// message is being deleted) is kept as failed, saying so.
pub fn archive(
    conn: &Connection,
    id: &str,
    attempts: u32,
    now: SystemTime,
) -> Result<(), QueueError> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO history (id, received_at, finished_at, client, sender, from_addr,
                                        subject, upstream, stream, attempts)
         SELECT id, received_at, ?2, client, sender, from_addr, subject, upstream, stream, ?3
         FROM messages WHERE id = ?1",
    )?
    .execute(params![id, millis(now), attempts])?;
    conn.prepare_cached(&format!(
        "INSERT OR IGNORE INTO history_recipients (message_id, idx, address, state, reply)
         SELECT message_id, idx, address,
                CASE state WHEN 'delivered' THEN 'delivered' ELSE 'failed' END,
                CASE state WHEN 'pending' THEN {NEVER_DELIVERED} ELSE reply END
         FROM recipients WHERE message_id = ?1"
    ))?
    .execute(params![id])?;
    Ok(())
}

/// Deletes up to `batch` history entries finished before `before`;
/// returns how many.
pub fn prune_history(
    conn: &Connection,
    before: SystemTime,
    batch: usize,
) -> Result<usize, QueueError> {
    let ids = "SELECT id FROM history WHERE finished_at < ?1 ORDER BY finished_at, id LIMIT ?2";
    let limit = i64::try_from(batch).unwrap_or(i64::MAX);
    conn.prepare_cached(&format!(
        "DELETE FROM history_recipients WHERE message_id IN ({ids})"
    ))?
    .execute(params![millis(before), limit])?;
    Ok(conn
        .prepare_cached(&format!("DELETE FROM history WHERE id IN ({ids})"))?
        .execute(params![millis(before), limit])?)
}

/// The history's reply for a recipient deleted while still pending (SQL,
/// the same in both backends).
pub(crate) const NEVER_DELIVERED: &str =
    "'deleted from the queue before delivery' || COALESCE(' (last reply: ' || reply || ')', '')";

/// The message's last error after an attempt: a deferred recipient's reply
/// (why it waits), else a failed one's.
pub(crate) fn first_problem(outcomes: &[(i64, Outcome)]) -> Option<String> {
    let deferred = outcomes.iter().find_map(|(_, o)| match o {
        Outcome::Deferred(r) => Some(r.clone()),
        _ => None,
    });
    deferred.or_else(|| {
        outcomes.iter().find_map(|(_, o)| match o {
            Outcome::Failed(r) => Some(r.clone()),
            _ => None,
        })
    })
}

/// How many of message `id`'s recipients are pending and failed.
fn counts(conn: &Connection, id: &str) -> Result<(i64, i64), QueueError> {
    Ok(conn
        .prepare_cached(
            "SELECT COUNT(*) FILTER (WHERE state = 'pending'), COUNT(*) FILTER (WHERE state = 'failed')
             FROM recipients WHERE message_id = ?1",
        )?
        .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

/// Removes message `id` with its recipients and body chunks.
pub fn delete(conn: &Connection, id: &str) -> Result<(), QueueError> {
    remove(conn, id, true)
}

/// Removes message `id` and its recipients, and its body chunks if it
/// has any (`chunked`: a message stored whole has none to look for).
fn remove(conn: &Connection, id: &str, chunked: bool) -> Result<(), QueueError> {
    conn.prepare_cached("DELETE FROM recipients WHERE message_id = ?1")?
        .execute(params![id])?;
    if chunked {
        discard(conn, id)?;
    }
    conn.prepare_cached("DELETE FROM messages WHERE id = ?1")?
        .execute(params![id])?;
    Ok(())
}

pub fn release(conn: &Connection, id: &str, now: SystemTime) -> Result<(), QueueError> {
    conn.prepare_cached(
        "UPDATE messages SET lease_until = NULL, next_attempt_at = ?2 WHERE id = ?1",
    )?
    .execute(params![id, millis(now)])?;
    Ok(())
}

/// Stores chunk `seq` of message `id`'s body, ahead of its enqueue.
pub fn append(conn: &Connection, id: &str, seq: u32, data: &[u8]) -> Result<(), QueueError> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO chunks (message_id, seq, data) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![id, seq, data])?;
    Ok(())
}

/// Drops message `id`'s body chunks.
pub fn discard(conn: &Connection, id: &str) -> Result<(), QueueError> {
    conn.prepare_cached("DELETE FROM chunks WHERE message_id = ?1")?
        .execute(params![id])?;
    Ok(())
}

/// Chunk `seq` of message `id`'s body.
pub fn chunk(conn: &Connection, id: &str, seq: u32) -> Result<Vec<u8>, QueueError> {
    conn.prepare_cached("SELECT data FROM chunks WHERE message_id = ?1 AND seq = ?2")?
        .query_row(params![id, seq], |r| r.get(0))
        .optional()?
        .ok_or_else(|| QueueError::MissingChunk(id.to_string(), seq))
}

/// Drops chunks no message owns: bodies of sessions that never finished
/// (the client left, or the process stopped mid-DATA). Called once at
/// start, when no session can be writing one.
pub fn drop_orphan_chunks(conn: &Connection) -> Result<usize, QueueError> {
    Ok(conn.execute(
        "DELETE FROM chunks WHERE message_id NOT IN (SELECT id FROM messages)",
        [],
    )?)
}

/// Clears every lease: called once at start, when no worker can hold one.
pub fn clear_leases(conn: &Connection) -> Result<usize, QueueError> {
    Ok(conn.execute(
        "UPDATE messages SET lease_until = NULL, next_attempt_at = ?1 WHERE lease_until IS NOT NULL",
        params![millis(SystemTime::now())],
    )?)
}

pub fn next_due(conn: &Connection, upstream: &str) -> Result<Option<SystemTime>, QueueError> {
    let due: Option<i64> = conn
        .prepare_cached(
            "SELECT next_attempt_at FROM messages
             WHERE upstream = ?1 AND next_attempt_at IS NOT NULL AND state != 'failed'
             ORDER BY next_attempt_at LIMIT 1",
        )?
        .query_row(params![upstream], |r| r.get(0))
        .optional()?;
    Ok(due.map(from_millis))
}

pub fn waiting(conn: &Connection) -> Result<Vec<(String, u64)>, QueueError> {
    Ok(conn
        .prepare_cached(
            "SELECT upstream, COUNT(*) FROM messages WHERE state != 'failed' GROUP BY upstream ORDER BY upstream",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
        .collect::<Result<_, _>>()?)
}

/// Takes the write lock without changing anything.
pub fn ping(conn: &Connection) -> Result<(), QueueError> {
    conn.execute("UPDATE messages SET id = id WHERE 0", [])?;
    Ok(())
}

/// id, sender, first bytes of the message, upstream, stream.
type RouteRow = (String, String, Vec<u8>, String, Option<String>);

/// Routes every waiting, unleased message again; returns how many changed.
/// Only the head (or, for a message stored whole, its first 64 KiB) is
/// read: routing looks at the header block alone.
pub fn reroute(
    conn: &Connection,
    route: &crate::writer::RouteFn,
    now: SystemTime,
) -> Result<usize, QueueError> {
    let now_ms = millis(now);
    let rows: Vec<RouteRow> = conn
        .prepare(
            "SELECT id, sender,
                    CASE WHEN length(head) > 0 THEN head ELSE substr(data, 1, 65536) END,
                    upstream, stream FROM messages
             WHERE state != 'failed' AND (lease_until IS NULL OR lease_until <= ?1)",
        )?
        .query_map(params![now_ms], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut update =
        conn.prepare_cached("UPDATE messages SET upstream = ?2, stream = ?3 WHERE id = ?1")?;
    let mut changed = 0;
    for (id, sender, head, upstream, stream) in rows {
        let (new_upstream, new_stream) = route(&sender, &head);
        if new_upstream != upstream || new_stream != stream {
            update.execute(params![id, new_upstream, new_stream])?;
            changed += 1;
        }
    }
    Ok(changed)
}
