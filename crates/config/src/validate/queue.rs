//! `[queue]`: the embedded store's folder, or the shared store's URL.

use std::path::{Path, PathBuf};

use super::positive_duration;
use super::token::{read_secret_file, secret};
use crate::raw::RawQueue;
use crate::report::Problems;
use crate::{Queue, QueueBackend, Secret};

/// PostgreSQL's limit on identifier length.
const MAX_SCHEMA_LEN: usize = 63;

pub(super) fn queue(raw: &RawQueue, p: &mut Problems) -> Option<Queue> {
    let backend = match raw.backend.trim().to_ascii_lowercase().as_str() {
        "sqlite" => Some(QueueBackend::Sqlite),
        "postgres" | "postgresql" => Some(QueueBackend::Postgres),
        _ => {
            p.add(
                "queue.backend",
                format!(
                    "`{}` is not a queue backend; use \"sqlite\" (one relay) or \"postgres\" (replicas sharing one queue)",
                    raw.backend
                ),
            );
            None
        }
    };
    let path = raw.path.trim();
    if path.is_empty() {
        p.add("queue.path", "must name the folder for the message store");
    }
    let url = url(raw, p);
    let ca_file = match raw.ca_file.trim() {
        "" => Some(None),
        file if Path::new(file).is_file() => Some(Some(PathBuf::from(file))),
        file => {
            p.add(
                "queue.ca_file",
                format!("{file} does not exist or is not a file"),
            );
            None
        }
    };
    let schema = schema(&raw.schema, p);
    let lease = positive_duration(&raw.lease, "queue.lease", p);
    let history = match crate::units::parse_duration(&raw.history) {
        Ok(d) => Some(d),
        Err(why) => {
            p.add(
                "queue.history",
                format!("{why}; \"0s\" turns the history off"),
            );
            None
        }
    };
    let url = url?;
    if backend == Some(QueueBackend::Postgres) && url.is_none() {
        p.add(
            "queue.backend",
            "\"postgres\" needs queue.url (or POSTMARK_RELAY_QUEUE__URL, or queue.url_file), e.g. \"postgres://relay:PASSWORD@db:5432/relay?sslmode=require\"",
        );
        return None;
    }
    if path.is_empty() {
        return None;
    }
    Some(Queue {
        backend: backend?,
        path: PathBuf::from(path),
        url,
        url_file: Some(raw.url_file.trim())
            .filter(|f| !f.is_empty())
            .map(PathBuf::from),
        ca_file: ca_file?,
        schema: schema?,
        lease: lease?,
        history: history?,
    })
}

/// `url`, else the contents of `url_file`; blank counts as unset. `None`
/// (with a problem) when what is set is not a PostgreSQL URL. The value
/// never appears in a problem: it holds the database password.
fn url(raw: &RawQueue, p: &mut Problems) -> Option<Option<Secret>> {
    let (url, key) = match secret(&raw.url) {
        Some(url) => (url, "queue.url"),
        None => match raw.url_file.trim() {
            "" => return Some(None),
            file => match read_secret_file(Path::new(file), "queue.url_file", p)? {
                Some(url) => (url, "queue.url_file"),
                None => return Some(None),
            },
        },
    };
    let text = url.expose();
    if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
        p.add(
            key,
            "is not a PostgreSQL URL: it must start with postgres:// (e.g. \"postgres://relay:PASSWORD@db:5432/relay?sslmode=require\"; the value is not shown because it may hold a password)",
        );
        return None;
    }
    Some(Some(url))
}

/// A plain lowercase SQL identifier, so it can be used unquoted and
/// safely inside statements.
fn schema(text: &str, p: &mut Problems) -> Option<String> {
    let name = text.trim();
    let valid = !name.is_empty()
        && name.len() <= MAX_SCHEMA_LEN
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Some(name.to_owned())
    } else {
        p.add(
            "queue.schema",
            format!(
                "`{name}` is not a schema name: use lowercase letters, digits and '_' (not first), at most {MAX_SCHEMA_LEN} characters"
            ),
        );
        None
    }
}
