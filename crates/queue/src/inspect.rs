//! [`Inspector`]: reading and managing the queue from outside the delivery
//! path — the `queue` CLI in its own process, and the admin endpoint's
//! metrics inside `serve`.
//!
//! It opens its own connection next to the writer thread's (SQLite WAL:
//! readers never block the writer), reads in one snapshot per call, and
//! writes only in short `BEGIN IMMEDIATE` transactions that wait at most
//! [`BUSY_TIMEOUT`] for the writer. It keeps the crate's invariants: it never
//! touches `lease_until`, and never deletes a message under a live lease.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rusqlite::types::Type;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, Transaction};

use crate::history::{
    self, Dialect, FinalState, HistoryEntry, HistoryQuery, HistoryRecipient, Param,
};
use crate::info::{Deleted, MessageInfo, RecipientInfo, Stats};
use crate::schema::{self, DB_FILE};
use crate::sql::{self, from_millis, millis};
use crate::{Content, QueueError, State};

/// How long a write waits for the serving process's writer to finish its
/// commit before giving up. Its transactions are short; this is generous.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to an existing queue for listing, showing, retrying,
/// deleting and counting messages. Not `Sync`: one per thread (or behind a
/// mutex), and cheap enough to open per request.
pub struct Inspector {
    conn: Connection,
}

impl Inspector {
    /// Opens the queue in `folder` without creating anything: a folder
    /// holding no queue is an error of kind `NotFound` (as
    /// [`QueueError::Folder`]), so a typo in `queue.path` is reported, not
    /// answered with an empty list.
    ///
    /// It changes no modes: the `-wal` and `-shm` files SQLite may create
    /// for it take the database file's mode (and, run as root, its owner),
    /// so a queue `serve` made private stays private; `serve` tightens a
    /// loose one at its next start.
    pub fn open(folder: &Path) -> Result<Inspector, QueueError> {
        let path = folder.join(DB_FILE);
        if !path.is_file() {
            return Err(QueueError::Folder {
                path: folder.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no queue here ({DB_FILE} is missing)"),
                ),
            });
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Our own writes (retry, delete) are as durable as the writer's.
        conn.pragma_update(None, "synchronous", "FULL")?;
        schema::migrate(&conn)?;
        Ok(Inspector { conn })
    }

    /// Every message (or those in `state`), oldest first.
    pub fn list(&self, state: Option<State>) -> Result<Vec<MessageInfo>, QueueError> {
        let tx = self.conn.unchecked_transaction()?;
        let mut messages: Vec<MessageInfo> = tx
            .prepare_cached(
                "SELECT id, received_at, size, sender, upstream, stream, state, attempts,
                        next_attempt_at, last_error, lease_until, client
                 FROM messages WHERE (?1 IS NULL OR state = ?1) ORDER BY received_at, id",
            )?
            .query_map(params![state.map(State::as_str)], message_row)?
            .collect::<Result<_, _>>()?;
        for m in &mut messages {
            m.recipients = recipients(&tx, &m.id)?;
        }
        Ok(messages)
    }

    /// One message, if it is in the queue.
    pub fn show(&self, id: &str) -> Result<Option<MessageInfo>, QueueError> {
        let tx = self.conn.unchecked_transaction()?;
        let found = tx
            .prepare_cached(
                "SELECT id, received_at, size, sender, upstream, stream, state, attempts,
                        next_attempt_at, last_error, lease_until, client
                 FROM messages WHERE id = ?1",
            )?
            .query_row(params![id], message_row)
            .optional()?;
        let Some(mut info) = found else {
            return Ok(None);
        };
        info.recipients = recipients(&tx, id)?;
        Ok(Some(info))
    }

    /// Writes message `id`'s stored bytes to `out` a piece at a time (a
    /// large message is never held whole); `false` if there is no such
    /// message.
    pub fn write_raw(&self, id: &str, out: &mut dyn std::io::Write) -> Result<bool, QueueError> {
        let tx = self.conn.unchecked_transaction()?;
        let found: Option<(Vec<u8>, u32)> = tx
            .prepare_cached("SELECT head, chunks FROM messages WHERE id = ?1")?
            .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((head, chunks)) = found else {
            return Ok(false);
        };
        let io = |e: std::io::Error| QueueError::Read(format!("writing the message out: {e}"));
        out.write_all(&head).map_err(io)?;
        for seq in 0..chunks {
            out.write_all(&sql::chunk(&tx, id, seq)?).map_err(io)?;
        }
        let tail: Vec<u8> = tx
            .prepare_cached("SELECT data FROM messages WHERE id = ?1")?
            .query_row(params![id], |r| r.get(0))?;
        out.write_all(&tail).map_err(io)?;
        Ok(true)
    }

    /// Message `id`'s stored content (head, chunk count, tail), for
    /// copying it elsewhere with [`chunk`](Self::chunk); `None` if there
    /// is no such message.
    pub fn content(&self, id: &str) -> Result<Option<Content>, QueueError> {
        Ok(self
            .conn
            .prepare_cached("SELECT head, chunks, data, eight_bit FROM messages WHERE id = ?1")?
            .query_row(params![id], |r| {
                Ok(Content {
                    head: r.get(0)?,
                    chunks: r.get(1)?,
                    tail: r.get(2)?,
                    eight_bit: r.get(3)?,
                })
            })
            .optional()?)
    }

    /// Chunk `seq` of message `id`'s body (see [`Content`]).
    pub fn chunk(&self, id: &str, seq: u32) -> Result<Vec<u8>, QueueError> {
        sql::chunk(&self.conn, id, seq)
    }

    /// Makes message `id` due now and gives its failed recipients another
    /// try (their last reply is kept until the next attempt replaces it);
    /// a failed message becomes deferred. A delivery in flight keeps its
    /// lease. `false` if there is no such message. `serve` picks the change
    /// up within a second.
    pub fn retry(&self, id: &str) -> Result<bool, QueueError> {
        self.retry_where(Some(id)).map(|n| n > 0)
    }

    /// [`retry`](Self::retry) for every message; returns how many.
    pub fn retry_all(&self) -> Result<usize, QueueError> {
        self.retry_where(None)
    }

    fn retry_where(&self, id: Option<&str>) -> Result<usize, QueueError> {
        let now = millis(SystemTime::now());
        let tx = self.write()?;
        let changed = tx.execute(
            "UPDATE messages
             SET next_attempt_at = CASE WHEN lease_until > ?2 THEN next_attempt_at
                                        ELSE MIN(COALESCE(next_attempt_at, ?2), ?2) END,
                 state = CASE state WHEN 'failed' THEN 'deferred' ELSE state END
             WHERE ?1 IS NULL OR id = ?1",
            params![id, now],
        )?;
        tx.execute(
            "UPDATE recipients SET state = 'pending'
             WHERE state = 'failed' AND (?1 IS NULL OR message_id = ?1)",
            params![id],
        )?;
        tx.commit()?;
        Ok(changed)
    }

    /// Removes message `id` and its recipients, unless a delivery holds it
    /// right now ([`Deleted::Leased`]): pulling it from under the worker
    /// could not stop the upstream from receiving it anyway. With
    /// `keep_history` the message goes to the delivery history first.
    pub fn delete(&self, id: &str, keep_history: bool) -> Result<Deleted, QueueError> {
        let at = SystemTime::now();
        let now = millis(at);
        let tx = self.write()?;
        let found: Option<(Option<i64>, u32)> = tx
            .prepare_cached("SELECT lease_until, attempts FROM messages WHERE id = ?1")?
            .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let outcome = match found {
            None => Deleted::NotFound,
            Some((Some(until), _)) if until > now => Deleted::Leased(from_millis(until)),
            Some((_, attempts)) => {
                if keep_history {
                    sql::archive(&tx, id, attempts, at)?;
                }
                sql::delete(&tx, id)?;
                Deleted::Removed
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// Messages that left the queue matching `q`, newest first.
    pub fn history(&self, q: &HistoryQuery) -> Result<Vec<HistoryEntry>, QueueError> {
        let plan = history::plan(
            q,
            &Dialect {
                placeholder: |n| format!("?{n}"),
                // ASCII-case-insensitive by default; the NOCASE indexes
                // serve it.
                ci_like: |column, p| format!("{column} LIKE {p} ESCAPE '\\'"),
                // No reverse() in SQLite: `*@domain` scans the address
                // index (~0.15 s at 1.5 M recipients).
                ci_suffix: None,
            },
        );
        let tx = self.conn.unchecked_transaction()?;
        let mut entries = Vec::new();
        for sql in plan {
            let params: Vec<Box<dyn rusqlite::ToSql>> = sql
                .params
                .into_iter()
                .map(|p| -> Box<dyn rusqlite::ToSql> {
                    match p {
                        Param::Text(t) => Box::new(t),
                        Param::Int(i) => Box::new(i),
                    }
                })
                .collect();
            entries = tx
                .prepare(&sql.text)?
                .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                    Ok(HistoryEntry {
                        id: r.get(0)?,
                        received_at: from_millis(r.get(1)?),
                        finished_at: from_millis(r.get(2)?),
                        client: r.get(3)?,
                        sender: r.get(4)?,
                        from: r.get(5)?,
                        subject: r.get(6)?,
                        upstream: r.get(7)?,
                        stream: r.get(8)?,
                        attempts: r.get(9)?,
                        recipients: Vec::new(),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            if entries.len() >= q.limit {
                break;
            }
        }
        for e in &mut entries {
            e.recipients = tx
                .prepare_cached(
                    "SELECT address, state, reply FROM history_recipients
                     WHERE message_id = ?1 ORDER BY idx",
                )?
                .query_map(params![e.id], |r| {
                    Ok(HistoryRecipient {
                        address: r.get(0)?,
                        state: FinalState::parse(&r.get::<_, String>(1)?),
                        reply: r.get(2)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
        }
        Ok(entries)
    }

    /// Counts by state and upstream, and the oldest waiting message.
    pub fn stats(&self) -> Result<Stats, QueueError> {
        let tx = self.conn.unchecked_transaction()?;
        let mut stats = Stats::default();
        let rows: Vec<(String, State, i64)> = tx
            .prepare_cached(
                "SELECT upstream, state, COUNT(*) FROM messages GROUP BY upstream, state",
            )?
            .query_map([], |r| Ok((r.get(0)?, parsed(r, 1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        for (upstream, state, n) in rows {
            let n = n.max(0) as u64;
            stats.by_state.add(state, n);
            stats.by_upstream.entry(upstream).or_default().add(state, n);
        }
        let oldest: Option<i64> = tx
            .prepare_cached("SELECT MIN(received_at) FROM messages WHERE state != 'failed'")?
            .query_row([], |r| r.get(0))?;
        stats.oldest_received_at = oldest.map(from_millis);
        Ok(stats)
    }

    /// A write transaction that takes the write lock at once (waiting up to
    /// [`BUSY_TIMEOUT`]), so it cannot fail half-way on a lock upgrade.
    fn write(&self) -> Result<Transaction<'_>, QueueError> {
        Ok(Transaction::new_unchecked(
            &self.conn,
            rusqlite::TransactionBehavior::Immediate,
        )?)
    }
}

/// A `messages` row in the column order of [`Inspector::list`]'s query,
/// recipients not yet loaded.
fn message_row(r: &Row<'_>) -> rusqlite::Result<MessageInfo> {
    Ok(MessageInfo {
        id: r.get(0)?,
        received_at: from_millis(r.get(1)?),
        size: r.get::<_, i64>(2)?.max(0) as u64,
        sender: r.get(3)?,
        upstream: r.get(4)?,
        stream: r.get(5)?,
        state: parsed(r, 6)?,
        attempts: r.get(7)?,
        next_attempt_at: r.get::<_, Option<i64>>(8)?.map(from_millis),
        last_error: r.get(9)?,
        recipients: Vec::new(),
        leased_until: r.get::<_, Option<i64>>(10)?.map(from_millis),
        client: r.get(11)?,
    })
}

fn recipients(conn: &Connection, id: &str) -> Result<Vec<RecipientInfo>, QueueError> {
    Ok(conn
        .prepare_cached(
            "SELECT address, state, reply FROM recipients WHERE message_id = ?1 ORDER BY idx",
        )?
        .query_map(params![id], |r| {
            Ok(RecipientInfo {
                address: r.get(0)?,
                state: parsed(r, 1)?,
                reply: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?)
}

/// A text column parsed with `FromStr`; an unknown value is a conversion
/// error naming the column, not a panic.
fn parsed<T: std::str::FromStr<Err = String>>(r: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let text: String = r.get(idx)?;
    text.parse()
        .map_err(|e: String| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, e.into()))
}
