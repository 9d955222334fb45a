//! [`Store`]: the queue the `queue` commands read and change, embedded or
//! shared, behind one set of blocking calls (the commands run one at a
//! time; the shared queue's async client runs on a small runtime here).

use std::io::Write;
use std::time::SystemTime;

use relay_config::{Config, QueueBackend};
use relay_queue::{
    Deleted, HistoryEntry, HistoryQuery, Inspector, MessageInfo, PgInspector, PgSettings,
    QueueError, State, Stats,
};
use tokio::runtime::Runtime;

/// The queue the commands work on, and whether a deleted message goes to
/// the delivery history (`queue.history` is not zero).
pub struct Store {
    queue: Backend,
    keep_history: bool,
}

/// The embedded SQLite queue in `queue.path`, or the shared one at
/// `queue.url`.
pub enum Backend {
    Local(Inspector),
    Shared(PgInspector, Runtime),
}

/// Calls the same method on whichever queue this is, waiting for the
/// shared queue's answer on its runtime.
macro_rules! on_either {
    ($self:ident, $q:ident => $call:expr) => {
        match &$self.queue {
            Backend::Local($q) => $call,
            Backend::Shared($q, runtime) => runtime.block_on($call),
        }
    };
}

/// Why the queue could not be opened, in words for the user.
pub type OpenError = String;

impl Store {
    /// Opens the queue `config` points at, without creating a local one.
    pub fn open(config: &Config) -> Result<Store, OpenError> {
        Ok(Store {
            queue: Backend::open(config)?,
            keep_history: !config.queue.history.is_zero(),
        })
    }

    /// Every message (or those in `state`), oldest first.
    pub fn list(&self, state: Option<State>) -> Result<Vec<MessageInfo>, QueueError> {
        on_either!(self, q => q.list(state))
    }

    /// One message, if it is in the queue.
    pub fn show(&self, id: &str) -> Result<Option<MessageInfo>, QueueError> {
        on_either!(self, q => q.show(id))
    }

    /// The stored message to `out` a piece at a time; `false` if unknown.
    pub fn write_raw(&self, id: &str, out: &mut dyn Write) -> Result<bool, QueueError> {
        on_either!(self, q => q.write_raw(id, out))
    }

    /// Makes one message due now; `false` if unknown.
    pub fn retry(&self, id: &str) -> Result<bool, QueueError> {
        on_either!(self, q => q.retry(id))
    }

    /// Makes every message due now; how many.
    pub fn retry_all(&self) -> Result<usize, QueueError> {
        on_either!(self, q => q.retry_all())
    }

    /// Removes a message unless a delivery holds it (into the history
    /// when it is kept).
    pub fn delete(&self, id: &str) -> Result<Deleted, QueueError> {
        on_either!(self, q => q.delete(id, self.keep_history))
    }

    /// Messages that left the queue matching `q`, newest first.
    pub fn history(&self, q: &HistoryQuery) -> Result<Vec<HistoryEntry>, QueueError> {
        on_either!(self, s => s.history(q))
    }

    /// Counts by state and upstream, and the oldest waiting message.
    pub fn stats(&self) -> Result<Stats, QueueError> {
        on_either!(self, q => q.stats())
    }
}

impl Backend {
    /// Opens the queue `config` points at, without creating a local one.
    fn open(config: &Config) -> Result<Backend, OpenError> {
        let queue = &config.queue;
        match (queue.backend, &queue.url) {
            (QueueBackend::Postgres, Some(url)) => {
                let settings = PgSettings::new(url.expose(), queue);
                let (inspector, runtime) = open_shared(&settings).map_err(|e| {
                    format!(
                        "cannot open the shared queue (queue.url, schema {}): {e}",
                        queue.schema
                    )
                })?;
                Ok(Backend::Shared(inspector, runtime))
            }
            _ => Inspector::open(&queue.path)
                .map(Backend::Local)
                .map_err(|e| super::open_error(&queue.path, &e)),
        }
    }
}

/// Connects to the shared queue on a runtime of its own.
pub fn open_shared(settings: &PgSettings) -> Result<(PgInspector, Runtime), QueueError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| QueueError::Read(format!("starting the database client: {e}")))?;
    let inspector = runtime.block_on(PgInspector::open(settings))?;
    Ok((inspector, runtime))
}

/// Whether a delivery holds `message` right now.
pub fn leased(message: &MessageInfo) -> Option<SystemTime> {
    message
        .leased_until
        .filter(|until| *until > SystemTime::now())
}
