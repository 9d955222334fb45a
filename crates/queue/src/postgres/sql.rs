//! The SQL behind each operation on the shared queue, the same semantics
//! as the embedded store's (`crate::sql`): every function runs inside the
//! caller's transaction and none commits. Times are Unix milliseconds from
//! the relay's clock (replicas' clocks must agree within seconds: NTP).

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Client, Transaction};

use crate::sql::{first_problem, from_millis, millis};
use crate::{
    Claim, ClaimLimit, Claimed, Content, Finished, NewMessage, Outcome, PendingRecipient,
    QueueError, Rest, RetryPolicy,
};

/// Inserts a whole batch of messages and their recipients in two
/// statements (one round trip each, however many messages): the fast path
/// of the group commit. Any error means the caller's transaction must be
/// rolled back and the messages stored one by one (a batch of one each, in
/// its own savepoint) to find out which one failed.
pub async fn enqueue_all(tx: &Transaction<'_>, batch: &[&NewMessage]) -> Result<(), QueueError> {
    let chunked: Vec<&str> = batch
        .iter()
        .filter(|m| m.content.chunks > 0)
        .map(|m| m.id.as_str())
        .collect();
    if !chunked.is_empty() {
        let stored: Vec<(String, i64)> = tx
            .query(
                &tx.prepare_cached(
                    "SELECT message_id, COUNT(*) FROM chunks WHERE message_id = ANY($1) GROUP BY message_id",
                )
                .await?,
                &[&chunked],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for m in batch.iter().filter(|m| m.content.chunks > 0) {
            let have = stored
                .iter()
                .find(|(id, _)| *id == m.id)
                .map_or(0, |(_, n)| *n);
            if have != i64::from(m.content.chunks) {
                return Err(QueueError::MissingChunk(
                    m.id.clone(),
                    u32::try_from(have).unwrap_or(u32::MAX),
                ));
            }
        }
    }
    let c = Columns::of(batch);
    tx.execute(
        &tx.prepare_cached(INSERT_MESSAGES).await?,
        &c.message_params(),
    )
    .await?;
    tx.execute(
        &tx.prepare_cached(&INSERT_RECIPIENTS).await?,
        &c.recipient_params(),
    )
    .await?;
    Ok(())
}

/// Inserts a batch of messages with no body chunks (whose chunks need no
/// check first), their recipients, and the NOTIFY that wakes the other
/// replicas, in one statement: its own transaction, committed (with
/// `synchronous_commit = on`) when it returns. One statement instead of
/// five (BEGIN, two inserts, NOTIFY, COMMIT): most of the database's work
/// per group commit is per statement. An error means nothing was stored.
pub async fn enqueue_and_notify(
    client: &Client,
    batch: &[&NewMessage],
    channel: &str,
    owner: &str,
) -> Result<(), QueueError> {
    let c = Columns::of(batch);
    let mut params = c.message_params();
    params.extend(c.recipient_params());
    params.push(&channel);
    params.push(&owner);
    client
        .execute(&client.prepare_cached(&ENQUEUE_AND_NOTIFY).await?, &params)
        .await?;
    Ok(())
}

/// Inserts the `messages` rows of a batch: `$1`..`$13`, an array per column.
const INSERT_MESSAGES: &str = "INSERT INTO messages (id, received_at, sender, upstream, stream, size, head, chunks, data, state,
                          next_attempt_at, eight_bit, client, from_addr, subject)
     SELECT id, received_at, sender, upstream, stream, size, head, chunks, data, 'queued', received_at, eight_bit,
            client, from_addr, subject
     FROM unnest($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::BIGINT[],
                 $7::BYTEA[], $8::INTEGER[], $9::BYTEA[], $10::BOOLEAN[], $11::TEXT[], $12::TEXT[], $13::TEXT[])
          AS m (id, received_at, sender, upstream, stream, size, head, chunks, data, eight_bit, client, from_addr, subject)";

/// Inserts the `recipients` rows of a batch, parameters numbered from `first`.
fn recipient_rows(first: usize) -> String {
    let (a, b, c) = (first, first + 1, first + 2);
    format!(
        "INSERT INTO recipients (message_id, idx, address, state)
         SELECT message_id, idx, address, 'pending'
         FROM unnest(${a}::TEXT[], ${b}::BIGINT[], ${c}::TEXT[]) AS r (message_id, idx, address)"
    )
}

/// The other statements of a group commit, written once.
static INSERT_RECIPIENTS: LazyLock<String> = LazyLock::new(|| recipient_rows(1));
static ENQUEUE_AND_NOTIFY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH m AS ({INSERT_MESSAGES}), r AS ({}) SELECT pg_notify($17, $18)",
        recipient_rows(14)
    )
});

/// A batch of new messages as one array per column, for the inserts
/// above (one row per element: however many messages, one statement).
struct Columns<'a> {
    ids: Vec<&'a str>,
    received: Vec<i64>,
    senders: Vec<&'a str>,
    upstreams: Vec<&'a str>,
    streams: Vec<Option<&'a str>>,
    sizes: Vec<i64>,
    heads: Vec<&'a [u8]>,
    chunks: Vec<i32>,
    tails: Vec<&'a [u8]>,
    eight_bit: Vec<bool>,
    clients: Vec<Option<&'a str>>,
    froms: Vec<Option<String>>,
    subjects: Vec<Option<String>>,
    rcpt_ids: Vec<&'a str>,
    rcpt_idx: Vec<i64>,
    rcpt_addresses: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    fn of(batch: &[&'a NewMessage]) -> Self {
        let (froms, subjects) = batch.iter().map(|m| crate::summary::of(&m.content)).unzip();
        let mut c = Columns {
            ids: batch.iter().map(|m| m.id.as_str()).collect(),
            received: batch.iter().map(|m| millis(m.received_at)).collect(),
            senders: batch.iter().map(|m| m.sender.as_str()).collect(),
            upstreams: batch.iter().map(|m| m.upstream.as_str()).collect(),
            streams: batch.iter().map(|m| m.stream.as_deref()).collect(),
            sizes: batch
                .iter()
                .map(|m| i64::try_from(m.size).unwrap_or(i64::MAX))
                .collect(),
            heads: batch.iter().map(|m| m.content.head.as_slice()).collect(),
            chunks: batch
                .iter()
                .map(|m| i32::try_from(m.content.chunks).unwrap_or(i32::MAX))
                .collect(),
            tails: batch.iter().map(|m| m.content.tail.as_slice()).collect(),
            eight_bit: batch.iter().map(|m| m.content.eight_bit).collect(),
            clients: batch.iter().map(|m| m.client.as_deref()).collect(),
            froms,
            subjects,
            rcpt_ids: Vec::new(),
            rcpt_idx: Vec::new(),
            rcpt_addresses: Vec::new(),
        };
        for m in batch {
            for (i, address) in m.recipients.iter().enumerate() {
                c.rcpt_ids.push(m.id.as_str());
                c.rcpt_idx.push(i as i64);
                c.rcpt_addresses.push(address.as_str());
            }
        }
        c
    }

    /// `$1`..`$13` of [`INSERT_MESSAGES`].
    fn message_params(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        vec![
            &self.ids,
            &self.received,
            &self.senders,
            &self.upstreams,
            &self.streams,
            &self.sizes,
            &self.heads,
            &self.chunks,
            &self.tails,
            &self.eight_bit,
            &self.clients,
            &self.froms,
            &self.subjects,
        ]
    }

    /// `$1`..`$3` of [`recipient_rows`]`(1)`.
    fn recipient_params(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        vec![&self.rcpt_ids, &self.rcpt_idx, &self.rcpt_addresses]
    }
}

/// Leases up to `batch` due messages whose lease is free or expired, with
/// their pending recipients, in one statement (its own transaction: an
/// empty claim, an idle delivery woken for messages another took, costs
/// one round trip and writes nothing). Rows another replica is claiming
/// right now are skipped, not waited for. The first due message always;
/// more only while what they hold in memory (head and tail) fits
/// `batch.bytes`. The same statement finds when the next message not
/// taken becomes due, for a claim that comes back short.
pub async fn claim(
    client: &Client,
    upstream: &str,
    batch: ClaimLimit,
    lease: Duration,
    owner: &str,
    now: SystemTime,
) -> Result<Claim, QueueError> {
    let now_ms = millis(now);
    let lease_until = now_ms + lease.as_millis() as i64;
    // `later` always gives one row, so the statement answers even when it
    // took nothing; each message taken is joined to it. Its snapshot is
    // the statement's: the rows taken still show their old due time, so
    // they are left out by id. The update finds its rows by `id = ANY`
    // of an array: written as a join with `chosen`, the generic plan of
    // this prepared statement hashed the whole table (a sequential scan
    // per claim: 32 ms with 100,000 messages waiting, against 0.9).
    let rows = client
        .query(
            &client
                .prepare_cached(
                    "WITH due AS (
                         SELECT id, next_attempt_at, octet_length(head) + octet_length(data) AS bytes
                         FROM messages
                         WHERE upstream = $1 AND state <> 'failed' AND next_attempt_at <= $2
                           AND (lease_until IS NULL OR lease_until <= $2)
                         ORDER BY next_attempt_at LIMIT $3
                         FOR UPDATE SKIP LOCKED),
                     chosen AS (
                         SELECT id, next_attempt_at FROM (
                             SELECT id, next_attempt_at, row_number() OVER w AS n, sum(bytes) OVER w AS total
                             FROM due WINDOW w AS (ORDER BY next_attempt_at, id)) ranked
                         WHERE n = 1 OR total <= $4),
                     taken AS (
                         UPDATE messages m SET lease_until = $5, lease_owner = $6, next_attempt_at = $5
                         WHERE m.id = ANY (ARRAY(SELECT id FROM chosen))
                         RETURNING m.id, m.received_at, m.sender, m.upstream, m.stream, m.head, m.chunks,
                                   m.data, m.attempts, m.eight_bit,
                                   ARRAY(SELECT idx FROM recipients r
                                         WHERE r.message_id = m.id AND r.state = 'pending' ORDER BY idx) AS idx,
                                   ARRAY(SELECT address FROM recipients r
                                         WHERE r.message_id = m.id AND r.state = 'pending' ORDER BY idx) AS addresses),
                     later AS (
                         SELECT (SELECT count(*) FROM due) AS found,
                                (SELECT count(*) FROM chosen) AS taking,
                                (SELECT next_attempt_at FROM messages
                                 WHERE upstream = $1 AND next_attempt_at IS NOT NULL AND state <> 'failed'
                                   AND id NOT IN (SELECT id FROM chosen)
                                 ORDER BY next_attempt_at LIMIT 1) AS next_due)
                     SELECT taken.id, taken.received_at, taken.sender, taken.upstream, taken.stream,
                            taken.head, taken.chunks, taken.data, taken.attempts, chosen.next_attempt_at,
                            taken.eight_bit, taken.idx, taken.addresses,
                            later.found, later.taking, later.next_due
                     FROM later LEFT JOIN (taken JOIN chosen ON chosen.id = taken.id) ON true",
                )
                .await?,
            &[
                &upstream,
                &now_ms,
                &i64::try_from(batch.messages).unwrap_or(i64::MAX),
                &i64::try_from(batch.bytes).unwrap_or(i64::MAX),
                &lease_until,
                &owner,
            ],
        )
        .await?;
    let Some(first) = rows.first() else {
        return Err(QueueError::Read("the claim returned no row".into()));
    };
    let found: i64 = first.get(13);
    let taking: i64 = first.get(14);
    let next_due: Option<i64> = first.get(15);
    let mut claimed: Vec<(i64, Claimed)> = rows
        .iter()
        .filter(|row| row.get::<_, Option<String>>(0).is_some())
        .map(|row| {
            let idx: Vec<i64> = row.get(11);
            let addresses: Vec<String> = row.get(12);
            let claimed = Claimed {
                id: row.get(0),
                received_at: from_millis(row.get(1)),
                sender: row.get(2),
                recipients: idx
                    .into_iter()
                    .zip(addresses)
                    .map(|(idx, address)| PendingRecipient { idx, address })
                    .collect(),
                upstream: row.get(3),
                stream: row.get(4),
                content: Content {
                    head: row.get(5),
                    chunks: row.get::<_, i32>(6).max(0) as u32,
                    tail: row.get(7),
                    eight_bit: row.get(10),
                },
                attempts: row.get::<_, i32>(8).max(0) as u32,
            };
            (row.get::<_, i64>(9), claimed)
        })
        .collect();
    // Oldest due first, as the queue promises (RETURNING keeps no order).
    claimed.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.id.cmp(&y.id)));
    let claimed = claimed.into_iter().map(|(_, c)| c).collect();
    // Rows another replica is claiming right now are not found: they are
    // its to take.
    let count = |n: i64| usize::try_from(n).unwrap_or(0);
    let rest = if batch.stopped(count(found), count(taking)) {
        Rest::MoreDue
    } else {
        Rest::NextDue(next_due.map(from_millis))
    };
    Ok(Claim {
        messages: claimed,
        rest,
    })
}

/// Removes every message of `ids` (parallel to `idx` and `replies`: one
/// entry per recipient delivered in this attempt) whose other recipients
/// are all delivered already, with its body, and with `keep_history` writes
/// each one's history (the replies of this attempt from the arrays, the
/// earlier ones from the table): one statement for a whole batch of
/// finished deliveries. Returns the ids removed; the others still have a
/// pending or failed recipient and are recorded by [`finish`].
///
/// The history rows come from the statement's snapshot: the deleted
/// messages and their recipients, whose cascade happens at its end.
pub async fn finish_delivered(
    client: &Client,
    ids: &[&str],
    idx: &[i64],
    replies: &[&str],
    keep_history: bool,
) -> Result<Vec<String>, QueueError> {
    let rows = client
        .query(
            &client
                .prepare_cached(
                    "WITH o AS (SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::TEXT[]) AS o (id, idx, reply)),
                     gone AS (
                         DELETE FROM messages m WHERE m.id IN (SELECT DISTINCT id FROM o) AND NOT EXISTS (
                             SELECT 1 FROM recipients r WHERE r.message_id = m.id
                               AND (r.state = 'failed' OR (r.state = 'pending' AND NOT EXISTS (
                                   SELECT 1 FROM o WHERE o.id = r.message_id AND o.idx = r.idx))))
                         RETURNING m.id, m.received_at, m.client, m.sender, m.from_addr, m.subject,
                                   m.upstream, m.stream, m.attempts),
                     body AS (DELETE FROM chunks WHERE message_id IN (SELECT id FROM gone)),
                     kept AS (
                         INSERT INTO history (id, received_at, finished_at, client, sender, from_addr,
                                              subject, upstream, stream, attempts)
                         SELECT id, received_at, $4, client, sender, from_addr, subject, upstream,
                                stream, attempts + 1
                         FROM gone WHERE $5
                         ON CONFLICT (id) DO NOTHING RETURNING id),
                     rcpts AS (
                         INSERT INTO history_recipients (message_id, idx, address, state, reply)
                         SELECT r.message_id, r.idx, r.address, 'delivered', COALESCE(o.reply, r.reply)
                         FROM recipients r
                         LEFT JOIN o ON o.id = r.message_id AND o.idx = r.idx
                         WHERE r.message_id IN (SELECT id FROM kept))
                     SELECT id FROM gone",
                )
                .await?,
            &[&ids, &idx, &replies, &millis(SystemTime::now()), &keep_history],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
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
    // Every outcome in one statement: delivered and failed settle a
    // pending recipient (state and reply); deferred only records the reply.
    let mut idx = Vec::with_capacity(outcomes.len());
    let mut states = Vec::with_capacity(outcomes.len());
    let mut replies = Vec::with_capacity(outcomes.len());
    for (i, outcome) in outcomes {
        let (state, reply) = match outcome {
            Outcome::Delivered(reply) => ("delivered", reply),
            Outcome::Failed(reply) => ("failed", reply),
            Outcome::Deferred(reply) => ("deferred", reply),
        };
        idx.push(*i);
        states.push(state);
        replies.push(reply.as_str());
    }
    tx.execute(
        &tx.prepare_cached(
            "UPDATE recipients r
             SET state = CASE WHEN o.state <> 'deferred' AND r.state = 'pending' THEN o.state ELSE r.state END,
                 reply = CASE WHEN o.state = 'deferred' OR r.state = 'pending' THEN o.reply ELSE r.reply END
             FROM unnest($2::BIGINT[], $3::TEXT[], $4::TEXT[]) AS o (idx, state, reply)
             WHERE r.message_id = $1 AND r.idx = o.idx",
        )
        .await?,
        &[&id, &idx, &states, &replies],
    )
    .await?;
    let attempts = attempts.saturating_add(1);
    let last_error = error
        .map(str::to_string)
        .or_else(|| first_problem(outcomes));
    let give_up_at = from_millis(received_at) + policy.give_up_after;
    let (mut pending, mut failed) = counts(tx, id).await?;
    let expired = pending > 0 && now >= give_up_at;
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
        (failed, pending) = (failed + pending, 0);
    }
    if pending > 0 {
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
    } else if failed > 0 {
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
        if policy.keep_history {
            archive(tx, id, attempts, now).await?;
        }
        // Its chunks and the message; recipients go with it (ON DELETE
        // CASCADE).
        tx.execute(
            &tx.prepare_cached(
                "WITH body AS (DELETE FROM chunks WHERE message_id = $1)
                 DELETE FROM messages WHERE id = $1",
            )
            .await?,
            &[&id],
        )
        .await?;
        Ok(Finished::Delivered)
    }
}

/// Copies message `id` and its recipients into the history as it leaves
/// the queue; see `crate::sql::archive`.
pub async fn archive(
    tx: &Transaction<'_>,
    id: &str,
    attempts: i32,
    now: SystemTime,
) -> Result<(), QueueError> {
    tx.execute(
        &tx.prepare_cached(&format!(
            "WITH kept AS (
                 INSERT INTO history (id, received_at, finished_at, client, sender, from_addr,
                                      subject, upstream, stream, attempts)
                 SELECT id, received_at, $2, client, sender, from_addr, subject, upstream, stream, $3
                 FROM messages WHERE id = $1
                 ON CONFLICT (id) DO NOTHING RETURNING id)
             INSERT INTO history_recipients (message_id, idx, address, state, reply)
             SELECT message_id, idx, address,
                    CASE state WHEN 'delivered' THEN 'delivered' ELSE 'failed' END,
                    CASE state WHEN 'pending' THEN {} ELSE reply END
             FROM recipients WHERE message_id IN (SELECT id FROM kept)",
            crate::sql::NEVER_DELIVERED
        ))
        .await?,
        &[&id, &millis(now), &attempts],
    )
    .await?;
    Ok(())
}

/// How many of message `id`'s recipients are pending and failed.
async fn counts(tx: &Transaction<'_>, id: &str) -> Result<(i64, i64), QueueError> {
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "SELECT COUNT(*) FILTER (WHERE state = 'pending'), COUNT(*) FILTER (WHERE state = 'failed')
                 FROM recipients WHERE message_id = $1",
            )
            .await?,
            &[&id],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
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
