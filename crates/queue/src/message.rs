//! The values that go in and out of the queue.

use std::time::SystemTime;

/// A message accepted by inbound and routed, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The queue id the client saw in our `250`.
    pub id: String,
    pub received_at: SystemTime,
    /// Envelope sender; empty for the null sender `<>`.
    pub sender: String,
    pub recipients: Vec<String>,
    /// Upstream name chosen by routing.
    pub upstream: String,
    /// `X-PM-Message-Stream` to relay with, if any.
    pub stream: Option<String>,
    /// Size as received (what the client's limits apply to).
    pub size: u64,
    /// Full message bytes, CRLF, not dot-stuffed.
    pub data: Vec<u8>,
}

/// How much one claim may take: at most `messages` messages and, beyond the
/// first, at most `bytes` of message data (so a worker holding a run of
/// large messages does not hold many megabytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimLimit {
    pub messages: usize,
    pub bytes: u64,
}

impl From<usize> for ClaimLimit {
    /// Up to `messages` messages of any size.
    fn from(messages: usize) -> ClaimLimit {
        ClaimLimit {
            messages,
            bytes: u64::MAX,
        }
    }
}

/// A recipient still waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRecipient {
    /// Position in the envelope; identifies the recipient in [`Outcome`]s.
    pub idx: i64,
    pub address: String,
}

/// A leased message handed to a delivery worker.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub received_at: SystemTime,
    pub sender: String,
    /// Only the recipients not yet delivered or failed.
    pub recipients: Vec<PendingRecipient>,
    pub upstream: String,
    pub stream: Option<String>,
    pub data: Vec<u8>,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What happened to one recipient in one attempt. The text is the
/// upstream's reply (or our description of the failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered(String),
    /// Try again later.
    Deferred(String),
    /// Permanent: never tried again.
    Failed(String),
}

/// Where a message stands after [`crate::Queue::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// Every recipient delivered; the message left the queue.
    Delivered,
    /// Some recipients still pending; next attempt at this time.
    Deferred(SystemTime),
    /// No recipient pending and at least one refused for good; kept for
    /// inspection.
    Failed,
    /// `give_up_after` passed with recipients still pending: they were
    /// failed; kept for inspection.
    Expired,
}

/// A message's state as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Queued,
    Deferred,
    Failed,
}

impl State {
    /// The name stored on disk and shown by `queue list`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Deferred => "deferred",
            State::Failed => "failed",
        }
    }
}
