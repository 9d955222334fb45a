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
    /// database, no rights on it) or the relay refusing the server's
    /// certificate is a settings error: only the operator can fix it.
    /// Another statement the server refused is a database error; no
    /// connection, a closed one, I/O, or the server ending the session
    /// (shutting down, `FATAL`) mean the database is unreachable.
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
        if let Some(refused) = refused_certificate(&e) {
            return QueueError::Settings(refused);
        }
        match e.as_db_error() {
            Some(db) if refuses_us(db) => QueueError::Settings(format!(
                "the database refused the relay: {} (check queue.url: user, password, database and the user's rights)",
                db.message()
            )),
            Some(db) if !e.is_closed() && !session_ended(db) => {
                QueueError::Database(db.to_string())
            }
            _ => QueueError::Unreachable(with_causes(&e)),
        }
    }
}

/// tokio-postgres's text followed by its causes: its own names only the
/// step ("error connecting to server", "db error"), not what went wrong.
/// No cause holds the URL or the password.
fn with_causes(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Why rustls refused the database's certificate, and what to set, if
/// that is what ended the connection.
fn refused_certificate(e: &tokio_postgres::Error) -> Option<String> {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(rustls::Error::InvalidCertificate(bad)) = as_rustls(c) {
            let mut text = format!("the database's TLS certificate was refused: {bad:?}");
            if let Some(fix) = certificate_fix(bad) {
                text.push_str("; ");
                text.push_str(fix);
            }
            return Some(text);
        }
        cause = c.source();
    }
    None
}

/// `cause` as a rustls error: itself, or inside an `io::Error` (how TLS
/// errors reach tokio-postgres; its `source` skips the inner error).
fn as_rustls<'a>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    cause.downcast_ref::<rustls::Error>().or_else(|| {
        cause
            .downcast_ref::<std::io::Error>()?
            .get_ref()?
            .downcast_ref::<rustls::Error>()
    })
}

/// The setting that fixes a refused certificate, where there is one.
fn certificate_fix(bad: &rustls::CertificateError) -> Option<&'static str> {
    use rustls::CertificateError as Bad;
    match bad {
        Bad::UnknownIssuer => Some(
            "it is not signed by a trusted CA: set queue.ca_file to the PEM file of the CA that signed it",
        ),
        Bad::NotValidForName | Bad::NotValidForNameContext { .. } => {
            Some("it does not name the host in queue.url: connect by a name it holds")
        }
        _ => None,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
    use super::*;
    use rustls::CertificateError;

    #[test]
    fn a_refused_certificate_is_found_inside_an_io_error_and_says_what_to_set() {
        let refused = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert!(matches!(
            as_rustls(&refused),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        ));
        let other = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(as_rustls(&other).is_none());
        let fix = certificate_fix(&CertificateError::UnknownIssuer).unwrap();
        assert!(fix.contains("queue.ca_file"), "{fix}");
        let fix = certificate_fix(&CertificateError::NotValidForName).unwrap();
        assert!(fix.contains("queue.url"), "{fix}");
        assert_eq!(certificate_fix(&CertificateError::Expired), None);
    }
}
