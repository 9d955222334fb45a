//! Opening the database: pragmas and the schema (see the crate docs).

use std::path::Path;

use rusqlite::Connection;

use crate::{private, QueueError};

/// File name of the database inside `queue.path`.
pub const DB_FILE: &str = "queue.sqlite3";

/// Version 1: the first release's tables (whole messages in `data`).
const V1: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id              TEXT PRIMARY KEY,
    received_at     INTEGER NOT NULL,
    sender          TEXT NOT NULL,
    upstream        TEXT NOT NULL,
    stream          TEXT,
    size            INTEGER NOT NULL,
    data            BLOB NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    lease_until     INTEGER,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS messages_due ON messages (upstream, next_attempt_at);
CREATE TABLE IF NOT EXISTS recipients (
    message_id TEXT NOT NULL,
    idx        INTEGER NOT NULL,
    address    TEXT NOT NULL,
    state      TEXT NOT NULL,
    reply      TEXT,
    PRIMARY KEY (message_id, idx)
) WITHOUT ROWID;
PRAGMA user_version = 1;
";

/// From version 1 (whole messages in `messages.data`): bodies may now come
/// in chunks. Old rows read as they are (empty head, no chunks, the whole
/// message as the tail), so nothing is rewritten.
const V1_TO_V2: &str = "
ALTER TABLE messages ADD COLUMN head BLOB NOT NULL DEFAULT x'';
ALTER TABLE messages ADD COLUMN chunks INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS chunks (
    message_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (message_id, seq)
);
PRAGMA user_version = 2;
";

/// From version 2: whether a message has 8-bit bytes (relayed with
/// `BODY=8BITMIME`). Older rows read as 7-bit, as they were relayed.
const V2_TO_V3: &str = "
ALTER TABLE messages ADD COLUMN eight_bit INTEGER NOT NULL DEFAULT 0;
PRAGMA user_version = 3;
";

/// From version 3: the `[[clients]]` name a message came from, its
/// `From:` address and `Subject:` (kept in the delivery history), and the
/// history itself: one row per message that left the queue, one per
/// recipient, never a body. Older rows read as "no client, no From:".
const V3_TO_V4: &str = "
ALTER TABLE messages ADD COLUMN client TEXT;
ALTER TABLE messages ADD COLUMN from_addr TEXT;
ALTER TABLE messages ADD COLUMN subject TEXT;
CREATE TABLE IF NOT EXISTS history (
    id          TEXT PRIMARY KEY,
    received_at INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    client      TEXT,
    sender      TEXT NOT NULL,
    from_addr   TEXT,
    subject     TEXT,
    upstream    TEXT NOT NULL,
    stream      TEXT,
    attempts    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS history_finished ON history (finished_at);
CREATE INDEX IF NOT EXISTS history_sender ON history (sender COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS history_from ON history (from_addr COLLATE NOCASE);
CREATE TABLE IF NOT EXISTS history_recipients (
    message_id TEXT NOT NULL,
    idx        INTEGER NOT NULL,
    address    TEXT NOT NULL,
    state      TEXT NOT NULL,
    reply      TEXT,
    PRIMARY KEY (message_id, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS history_recipients_address
    ON history_recipients (address COLLATE NOCASE);
PRAGMA user_version = 4;
";

/// From version 4: the failed recipients of the history in an index of
/// their own, so `history --state failed` reads those (few, as a rule)
/// instead of every recipient.
const V4_TO_V5: &str = "
CREATE INDEX IF NOT EXISTS history_recipients_failed
    ON history_recipients (message_id) WHERE state = 'failed';
PRAGMA user_version = 5;
";

/// The schema version this build writes.
pub const VERSION: i64 = 5;

/// Opens (creating if needed) the queue database in `folder`, in WAL mode
/// with `synchronous=FULL` so every commit is fsynced, and brings its
/// schema to [`VERSION`].
///
/// The folder and the database are private (see [`private`]): created
/// `0700`/`0600` before SQLite opens them, looser modes tightened where the
/// relay may (and logged either way), and checked once more after SQLite
/// made its `-wal` and `-shm` files.
pub fn open(folder: &Path) -> Result<Connection, QueueError> {
    let folder_error = |source| QueueError::Folder {
        path: folder.to_path_buf(),
        source,
    };
    private::create(folder).map_err(folder_error)?;
    let mut tightened = private::tighten(folder, &Default::default()).map_err(folder_error)?;
    let conn = Connection::open(folder.join(DB_FILE))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Savepoints (a batch with a failing request, see `writer`) and
    // statements that change many rows journal the pages they touch;
    // those journals would otherwise spill into temporary files: two
    // write calls per page.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    migrate(&conn)?;
    // SQLite made -wal and -shm with the database file's mode: loose if the
    // database is loose and not ours; they are ours, so they become private.
    let after = private::tighten(folder, &tightened).map_err(folder_error)?;
    tightened.absorb(after);
    tightened.log();
    Ok(conn)
}

/// Brings the schema to [`VERSION`] (creating it in an empty database), in
/// one transaction; a newer schema is an error.
pub fn migrate(conn: &Connection) -> Result<(), QueueError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    // Each step takes the schema one version further, in one transaction.
    let steps = match version {
        0 => &[V1, V1_TO_V2, V2_TO_V3, V3_TO_V4, V4_TO_V5][..],
        1 => &[V1_TO_V2, V2_TO_V3, V3_TO_V4, V4_TO_V5][..],
        2 => &[V2_TO_V3, V3_TO_V4, V4_TO_V5][..],
        3 => &[V3_TO_V4, V4_TO_V5][..],
        4 => &[V4_TO_V5][..],
        VERSION => return Ok(()),
        newer => return Err(QueueError::NewerSchema(newer)),
    };
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {} COMMIT;", steps.concat()))?;
    Ok(())
}
