//! Errors the queue reports.

/// Why a queue operation did not happen. Any error means nothing was
/// changed by that operation.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The store could not be read or written (disk full, I/O error, ...).
    #[error("queue store error: {0}")]
    Store(#[from] rusqlite::Error),
    /// The queue folder could not be created or opened.
    #[error("queue folder {path}: {source}")]
    Folder {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The writer thread is gone (the queue is shutting down or crashed).
    #[error("queue writer has stopped")]
    WriterGone,
    /// The group commit holding this operation failed; nothing was stored.
    #[error("queue commit failed: {0}")]
    Commit(String),
    /// The queue was written by a newer postmark-relay.
    #[error("the queue's schema version {0} is newer than this postmark-relay understands; run the newer version")]
    NewerSchema(i64),
    /// A message's stored body is not whole (a chunk is missing).
    #[error("message {0}: body chunk {1} is missing")]
    MissingChunk(String, u32),
    /// A read on a blocking thread did not finish (it panicked).
    #[error("reading the queue: {0}")]
    Read(String),
    /// No message with that id.
    #[error("no message {0} in the queue")]
    NotFound(String),
    /// The shared queue's database cannot be reached (down, network,
    /// every pooled connection busy for too long).
    #[error("queue unreachable: {0}")]
    Unreachable(String),
    /// The shared queue's database refused a statement.
    #[error("queue database error: {0}")]
    Database(String),
    /// The shared queue's settings cannot be used (a bad URL, an unreadable
    /// `ca_file`). Never holds the URL itself: it may hold a password.
    #[error("queue settings: {0}")]
    Settings(String),
}

impl From<tokio_postgres::Error> for QueueError {
    /// The server refusing the relay itself (wrong password, no such
    /// database, no rights on it) is a settings error: only the operator
    /// can fix it. Another statement the server refused is a database
    /// error; no connection, a closed one, I/O, or the server ending the
    /// session (shutting down, `FATAL`) mean the database is unreachable.
    fn from(e: tokio_postgres::Error) -> QueueError {
        let session_ended = |db: &tokio_postgres::error::DbError| {
            let code = db.code().code();
            matches!(db.severity(), "FATAL" | "PANIC")
                || code.starts_with("08")
                || code.starts_with("57P")
        };
        // 28xxx: invalid authorization; 3D000: no such database;
        // 42501: insufficient privilege.
        let refuses_us = |db: &tokio_postgres::error::DbError| {
            let code = db.code().code();
            code.starts_with("28") || code == "3D000" || code == "42501"
        };
        match e.as_db_error() {
            Some(db) if refuses_us(db) => QueueError::Settings(format!(
                "the database refused the relay: {} (check queue.url: user, password, database and the user's rights)",
                db.message()
            )),
            Some(db) if !e.is_closed() && !session_ended(db) => {
                QueueError::Database(db.to_string())
            }
            _ => QueueError::Unreachable(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for QueueError {
    fn from(e: deadpool_postgres::PoolError) -> QueueError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => QueueError::Unreachable(other.to_string()),
        }
    }
}

impl QueueError {
    /// Whether the failure is about storage (disk full, I/O): the caller
    /// should answer `452 4.3.1` and try again later.
    pub fn is_storage(&self) -> bool {
        !matches!(self, QueueError::NotFound(_))
    }
}
