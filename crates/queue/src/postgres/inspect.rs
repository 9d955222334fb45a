//! [`PgInspector`]: the `queue` commands and `queue migrate` on the shared
//! queue, from any host that can reach the database. The same semantics
//! as the embedded [`crate::Inspector`]: reads see one snapshot, writes
//! never touch a lease, and a message under a live lease is not deleted.
//!
//! It runs no background task (no group commit, no LISTEN, no renewal):
//! the replicas notice its changes at their next claim, within a second
//! (a retry sends a NOTIFY so idle ones look at once).

use std::collections::HashMap;
use std::time::SystemTime;

use deadpool_postgres::{Pool, Transaction};
use tokio_postgres::{IsolationLevel, Row};

use super::connect::Target;
use super::{schema, sql as pg_sql, PgSettings};
use crate::history::{
    self, Dialect, FinalState, HistoryEntry, HistoryQuery, HistoryRecipient, Param,
};
use crate::info::{Deleted, MessageInfo, RecipientInfo, Stats};
use crate::sql::{from_millis, millis};
use crate::{Content, QueueError, State};

/// The `messages` columns every listing reads, in [`message_row`]'s order.
const MESSAGE_COLUMNS: &str = "id, received_at, size, sender, upstream, stream, state, attempts,
     next_attempt_at, last_error, lease_until, client";

/// A connection pool to the shared queue for listing, showing, retrying,
/// deleting, counting and importing messages.
pub struct PgInspector {
    pool: Pool,
    /// The replicas' wake-up channel (see `listen`).
    channel: String,
}

/// What [`PgInspector::import`] did with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// The message is now in the shared queue.
    Copied,
    /// A message with this id was already there (an earlier run copied
    /// it); nothing was written.
    AlreadyThere,
}

impl PgInspector {
    /// Connects and brings the schema to this build's version (creating
    /// it if no relay has started yet, so `queue migrate` can run first).
    pub async fn open(settings: &PgSettings) -> Result<PgInspector, QueueError> {
        let pool = Target::new(settings)?.pool()?;
        schema::migrate(&pool, &settings.schema).await?;
        Ok(PgInspector {
            pool,
            channel: super::channel(&settings.schema),
        })
    }

    /// Every message (or those in `state`), oldest first.
    pub async fn list(&self, state: Option<State>) -> Result<Vec<MessageInfo>, QueueError> {
        let mut client = self.pool.get().await?;
        let tx = snapshot(&mut client).await?;
        let state = state.map(State::as_str);
        let mut messages = tx
            .query(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages
                     WHERE ($1::TEXT IS NULL OR state = $1) ORDER BY received_at, id"
                ),
                &[&state],
            )
            .await?
            .iter()
            .map(message_row)
            .collect::<Result<Vec<_>, _>>()?;
        let mut recipients: HashMap<String, Vec<RecipientInfo>> = HashMap::new();
        for row in tx
            .query(
                "SELECT r.message_id, r.address, r.state, r.reply
                 FROM recipients r JOIN messages m ON m.id = r.message_id
                 WHERE ($1::TEXT IS NULL OR m.state = $1) ORDER BY r.message_id, r.idx",
                &[&state],
            )
            .await?
        {
            recipients
                .entry(row.get(0))
                .or_default()
                .push(recipient_row(&row, 1)?);
        }
        for m in &mut messages {
            m.recipients = recipients.remove(&m.id).unwrap_or_default();
        }
        tx.commit().await?;
        Ok(messages)
    }

    /// One message, if it is in the queue.
    pub async fn show(&self, id: &str) -> Result<Option<MessageInfo>, QueueError> {
        let mut client = self.pool.get().await?;
        let tx = snapshot(&mut client).await?;
        let Some(row) = tx
            .query_opt(
                &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1"),
                &[&id],
            )
            .await?
        else {
            return Ok(None);
        };
        let mut info = message_row(&row)?;
        info.recipients = tx
            .query(
                "SELECT address, state, reply FROM recipients WHERE message_id = $1 ORDER BY idx",
                &[&id],
            )
            .await?
            .iter()
            .map(|r| recipient_row(r, 0))
            .collect::<Result<_, _>>()?;
        tx.commit().await?;
        Ok(Some(info))
    }

    /// Writes message `id`'s stored bytes to `out` a chunk at a time (a
    /// large message is never held whole); `false` if there is no such
    /// message.
    pub async fn write_raw(
        &self,
        id: &str,
        out: &mut dyn std::io::Write,
    ) -> Result<bool, QueueError> {
        let mut client = self.pool.get().await?;
        let tx = snapshot(&mut client).await?;
        let Some(row) = tx
            .query_opt(
                "SELECT head, chunks, data FROM messages WHERE id = $1",
                &[&id],
            )
            .await?
        else {
            return Ok(false);
        };
        let (head, chunks, tail): (Vec<u8>, i32, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
        let io = |e: std::io::Error| QueueError::Read(format!("writing the message out: {e}"));
        out.write_all(&head).map_err(io)?;
        for seq in 0..chunks.max(0) {
            let chunk: Vec<u8> = tx
                .query_opt(
                    "SELECT data FROM chunks WHERE message_id = $1 AND seq = $2",
                    &[&id, &seq],
                )
                .await?
                .ok_or_else(|| QueueError::MissingChunk(id.to_string(), seq as u32))?
                .get(0);
            out.write_all(&chunk).map_err(io)?;
        }
        out.write_all(&tail).map_err(io)?;
        tx.commit().await?;
        Ok(true)
    }

    /// Makes message `id` due now and gives its failed recipients another
    /// try; see [`crate::Inspector::retry`]. `false` if there is no such
    /// message.
    pub async fn retry(&self, id: &str) -> Result<bool, QueueError> {
        self.retry_where(Some(id)).await.map(|n| n > 0)
    }

    /// [`retry`](Self::retry) for every message; returns how many.
    pub async fn retry_all(&self) -> Result<usize, QueueError> {
        self.retry_where(None).await
    }

    async fn retry_where(&self, id: Option<&str>) -> Result<usize, QueueError> {
        let now = millis(SystemTime::now());
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let changed = tx
            .execute(
                "UPDATE messages
                 SET next_attempt_at = CASE WHEN lease_until > $2 THEN next_attempt_at
                                            ELSE LEAST(COALESCE(next_attempt_at, $2), $2) END,
                     state = CASE state WHEN 'failed' THEN 'deferred' ELSE state END
                 WHERE $1::TEXT IS NULL OR id = $1",
                &[&id, &now],
            )
            .await?;
        tx.execute(
            "UPDATE recipients SET state = 'pending'
             WHERE state = 'failed' AND ($1::TEXT IS NULL OR message_id = $1)",
            &[&id],
        )
        .await?;
        if changed > 0 {
            tx.execute("SELECT pg_notify($1, 'queue retry')", &[&self.channel])
                .await?;
        }
        tx.commit().await?;
        Ok(changed as usize)
    }

    /// Removes message `id` unless a delivery holds it right now; see
    /// [`crate::Inspector::delete`].
    pub async fn delete(&self, id: &str, keep_history: bool) -> Result<Deleted, QueueError> {
        let at = SystemTime::now();
        let now = millis(at);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let found = tx
            .query_opt(
                "SELECT lease_until, attempts FROM messages WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?
            .map(|row| (row.get::<_, Option<i64>>(0), row.get::<_, i32>(1)));
        let outcome = match found {
            None => Deleted::NotFound,
            Some((Some(until), _)) if until > now => Deleted::Leased(from_millis(until)),
            Some((_, attempts)) => {
                if keep_history {
                    pg_sql::archive(&tx, id, attempts, at).await?;
                }
                pg_sql::discard(&tx, id).await?;
                tx.execute("DELETE FROM messages WHERE id = $1", &[&id])
                    .await?;
                Deleted::Removed
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Messages that left the queue matching `q`, newest first; see
    /// [`crate::Inspector::history`].
    pub async fn history(&self, q: &HistoryQuery) -> Result<Vec<HistoryEntry>, QueueError> {
        let plan = history::plan(
            q,
            &Dialect {
                placeholder: |n| format!("${n}"),
                // The pattern is lowercase already; `lower()` matches the
                // `text_pattern_ops` indexes.
                ci_like: |column, p| format!("lower({column}) LIKE {p} ESCAPE '\\'"),
                // `history_recipients_reversed` serves it.
                ci_suffix: Some(|column, p| {
                    format!("reverse(lower({column})) LIKE {p} ESCAPE '\\'")
                }),
            },
        );
        let mut client = self.pool.get().await?;
        let tx = snapshot(&mut client).await?;
        let mut entries = Vec::new();
        for sql in plan {
            let params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = sql
                .params
                .into_iter()
                .map(|p| -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
                    match p {
                        Param::Text(t) => Box::new(t),
                        Param::Int(i) => Box::new(i),
                    }
                })
                .collect();
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            entries = tx
                .query(&sql.text, &refs)
                .await?
                .iter()
                .map(|r| HistoryEntry {
                    id: r.get(0),
                    received_at: from_millis(r.get(1)),
                    finished_at: from_millis(r.get(2)),
                    client: r.get(3),
                    sender: r.get(4),
                    from: r.get(5),
                    subject: r.get(6),
                    upstream: r.get(7),
                    stream: r.get(8),
                    attempts: r.get::<_, i32>(9).max(0) as u32,
                    recipients: Vec::new(),
                })
                .collect();
            if entries.len() >= q.limit {
                break;
            }
        }
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let rows = tx
            .query(
                "SELECT message_id, address, state, reply FROM history_recipients
                 WHERE message_id = ANY($1) ORDER BY message_id, idx",
                &[&ids],
            )
            .await?;
        let mut by_id: std::collections::HashMap<String, Vec<HistoryRecipient>> =
            std::collections::HashMap::new();
        for r in &rows {
            by_id.entry(r.get(0)).or_default().push(HistoryRecipient {
                address: r.get(1),
                state: FinalState::parse(r.get(2)),
                reply: r.get(3),
            });
        }
        for e in &mut entries {
            e.recipients = by_id.remove(&e.id).unwrap_or_default();
        }
        tx.commit().await?;
        Ok(entries)
    }

    /// Counts by state and upstream, and the oldest waiting message.
    pub async fn stats(&self) -> Result<Stats, QueueError> {
        let client = self.pool.get().await?;
        super::stats(&client).await
    }

    /// Copies one message of an embedded queue, with its per-recipient
    /// state, into the shared queue in one transaction: body chunks first
    /// (read one at a time through `chunk`), then the row and its
    /// recipients. A message whose id is already there is left alone, so
    /// running a migration twice copies nothing twice. The copy holds no
    /// lease: a replica may take it as soon as this commits.
    pub async fn import(
        &self,
        m: &MessageInfo,
        content: &Content,
        mut chunk: impl FnMut(u32) -> Result<Vec<u8>, QueueError>,
    ) -> Result<Imported, QueueError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Serialises concurrent imports of the same id (a second run
        // started by mistake) so neither writes half a message.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&m.id])
            .await?;
        if tx
            .query_opt("SELECT 1 FROM messages WHERE id = $1", &[&m.id])
            .await?
            .is_some()
        {
            return Ok(Imported::AlreadyThere);
        }
        pg_sql::discard(&tx, &m.id).await?;
        let created = millis(SystemTime::now());
        for seq in 0..content.chunks {
            let data = chunk(seq)?;
            tx.execute(
                "INSERT INTO chunks (message_id, seq, data, created_at) VALUES ($1, $2, $3, $4)",
                &[&m.id, &(seq as i32), &data, &created],
            )
            .await?;
        }
        let (from, subject) = crate::summary::of(content);
        tx.execute(
            "INSERT INTO messages (id, received_at, sender, upstream, stream, size, head, chunks,
                                   data, state, attempts, next_attempt_at, last_error, eight_bit,
                                   client, from_addr, subject)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
            &[
                &m.id,
                &millis(m.received_at),
                &m.sender,
                &m.upstream,
                &m.stream,
                &i64::try_from(m.size).unwrap_or(i64::MAX),
                &content.head,
                &i32::try_from(content.chunks).unwrap_or(i32::MAX),
                &content.tail,
                &m.state.as_str(),
                &i32::try_from(m.attempts).unwrap_or(i32::MAX),
                &m.next_attempt_at.map(millis),
                &m.last_error,
                &content.eight_bit,
                &m.client,
                &from,
                &subject,
            ],
        )
        .await?;
        for (idx, r) in m.recipients.iter().enumerate() {
            tx.execute(
                "INSERT INTO recipients (message_id, idx, address, state, reply)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &m.id,
                    &(idx as i64),
                    &r.address,
                    &r.state.as_str(),
                    &r.reply,
                ],
            )
            .await?;
        }
        tx.execute("SELECT pg_notify($1, 'queue migrate')", &[&self.channel])
            .await?;
        tx.commit().await?;
        Ok(Imported::Copied)
    }
}

/// A read-only transaction that sees one snapshot for all its statements.
async fn snapshot(client: &mut deadpool_postgres::Object) -> Result<Transaction<'_>, QueueError> {
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// A `messages` row in [`MESSAGE_COLUMNS`] order, recipients not loaded.
fn message_row(r: &Row) -> Result<MessageInfo, QueueError> {
    Ok(MessageInfo {
        id: r.get(0),
        received_at: from_millis(r.get(1)),
        size: r.get::<_, i64>(2).max(0) as u64,
        sender: r.get(3),
        upstream: r.get(4),
        stream: r.get(5),
        state: parsed(r.get(6))?,
        attempts: r.get::<_, i32>(7).max(0) as u32,
        next_attempt_at: r.get::<_, Option<i64>>(8).map(from_millis),
        last_error: r.get(9),
        recipients: Vec::new(),
        leased_until: r.get::<_, Option<i64>>(10).map(from_millis),
        client: r.get(11),
    })
}

/// Address, state and reply from columns `first..first + 3`.
fn recipient_row(r: &Row, first: usize) -> Result<RecipientInfo, QueueError> {
    Ok(RecipientInfo {
        address: r.get(first),
        state: parsed(r.get(first + 1))?,
        reply: r.get(first + 2),
    })
}

/// A stored state name; an unknown one is a database error, not a panic.
fn parsed<T: std::str::FromStr<Err = String>>(text: String) -> Result<T, QueueError> {
    text.parse().map_err(QueueError::Database)
}
