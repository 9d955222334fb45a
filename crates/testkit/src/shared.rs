//! State shared between the test thread and the connection threads: what was
//! received, counters, and the faults still waiting to be injected.

use crate::{FakeOptions, Received};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// One fake's shared state.
pub(crate) struct Shared {
    pub(crate) opts: FakeOptions,
    /// Completed transactions, in the order their `250` was sent.
    pub(crate) messages: Mutex<Vec<Received>>,
    /// Signalled whenever `messages` grows, for `wait_for`.
    pub(crate) received: Condvar,
    pub(crate) logins: AtomicUsize,
    pub(crate) auth_failures: AtomicUsize,
    pub(crate) faults: Mutex<Faults>,
}

impl Shared {
    pub(crate) fn new(opts: FakeOptions) -> Shared {
        Shared {
            opts,
            messages: Mutex::new(Vec::new()),
            received: Condvar::new(),
            logins: AtomicUsize::new(0),
            auth_failures: AtomicUsize::new(0),
            faults: Mutex::new(Faults::default()),
        }
    }
}

/// Faults requested by the test; each queued reply is used up once.
#[derive(Default)]
pub(crate) struct Faults {
    /// Replies for the next ends of DATA, instead of `250`.
    pub(crate) data_end: VecDeque<Reply>,
    /// Replies for the next MAIL FROM commands.
    pub(crate) mail_from: VecDeque<Reply>,
    /// Replies for every RCPT TO of these addresses (keys lowercased).
    pub(crate) recipients: HashMap<String, Reply>,
    /// Replies for the next RCPT TO commands, whatever the address.
    pub(crate) rcpt_next: VecDeque<Reply>,
    /// Delays before the greeting of the next connections.
    pub(crate) greeting_delays: VecDeque<Duration>,
    /// How many coming STARTTLS get `220` and then garbage instead of a
    /// TLS handshake.
    pub(crate) broken_starttls: usize,
    /// How many coming DATA bodies are cut: the connection is closed
    /// (reset, with the body unread) at the first body line.
    pub(crate) reset_in_data: usize,
    /// How many coming transactions are recorded at the final `.` and then
    /// closed without a reply (the sender cannot know it was taken).
    pub(crate) vanish_after_data: usize,
    /// Every end of DATA waits this long before its reply.
    pub(crate) data_reply_delay: Option<Duration>,
}

/// An SMTP reply chosen by a test: code and the text after it.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) code: u16,
    pub(crate) text: String,
}

impl Reply {
    pub(crate) fn new(code: u16, text: &str) -> Reply {
        Reply {
            code,
            text: text.to_owned(),
        }
    }

    pub(crate) fn response(&self) -> mailin::Response {
        mailin::Response::custom(self.code, self.text.clone())
    }
}

/// Locks a mutex, ignoring poisoning: a panicking test thread must not turn
/// every later assertion into a second, misleading panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
