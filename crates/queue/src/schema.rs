//! Opening the database: pragmas and the schema (see the crate docs).

use std::path::Path;

use rusqlite::Connection;

use crate::QueueError;

/// File name of the database inside `queue.path`.
pub const DB_FILE: &str = "queue.sqlite3";

const SCHEMA: &str = "
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

/// Opens (creating if needed) the queue database in `folder`, in WAL mode
/// with `synchronous=FULL` so every commit is fsynced.
pub fn open(folder: &Path) -> Result<Connection, QueueError> {
    std::fs::create_dir_all(folder).map_err(|source| QueueError::Folder {
        path: folder.to_path_buf(),
        source,
    })?;
    let conn = Connection::open(folder.join(DB_FILE))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}
