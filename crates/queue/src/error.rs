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
    #[error("the queue's schema version {0} is newer than this postmark-relay understands (2); run the newer version")]
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
}

impl QueueError {
    /// Whether the failure is about storage (disk full, I/O): the caller
    /// should answer `452 4.3.1` and try again later.
    pub fn is_storage(&self) -> bool {
        !matches!(self, QueueError::NotFound(_))
    }
}
