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
    /// The `[[clients]]` name the message came from; `None` without AUTH.
    pub client: Option<String>,
    /// The message; its chunks, if any, were appended before with
    /// [`crate::Queue::append`], and the enqueue commits them with it.
    pub content: Content,
}

/// A message's bytes as stored (CRLF, not dot-stuffed), in three parts so
/// that no part needs to hold a large message in memory: `head`, then
/// `chunks` body chunks (numbered from 0, read one at a time with
/// [`crate::Queue::chunk`]), then `tail`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Content {
    /// The header block as relayed (small; routing and rewriting read it).
    pub head: Vec<u8>,
    /// How many chunks lie between head and tail.
    pub chunks: u32,
    /// The end of the message (all of a small message's body).
    pub tail: Vec<u8>,
    /// Some byte is not 7-bit ASCII: relayed with `BODY=8BITMIME` where
    /// the upstream offers it (RFC 6152).
    pub eight_bit: bool,
}

impl Content {
    /// A message held whole in memory (tests, tools), stored as one tail.
    pub fn whole(message: Vec<u8>) -> Content {
        Content {
            head: Vec::new(),
            chunks: 0,
            eight_bit: !message.is_ascii(),
            tail: message,
        }
    }
}

/// What a claim took ([`crate::Queue::claim_due`]), and what it saw of
/// the messages it did not take.
#[derive(Debug)]
pub struct Claim {
    /// The messages now leased, oldest due first.
    pub messages: Vec<Claimed>,
    pub rest: Rest,
}

/// What a claim saw of the messages it did not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rest {
    /// It stopped at its limit (count or bytes): more may be due now.
    MoreDue,
    /// It took everything that was due (maybe nothing); the next waiting
    /// message becomes due at this time (`None`: none waits; a message in
    /// flight is due when its lease would run out). An idle delivery asks
    /// exactly that next; the claim answers it in the same round trip.
    NextDue(Option<SystemTime>),
}

/// How much one claim may take: at most `messages` messages and, beyond the
/// first, at most `bytes` of message data (so a worker holding a run of
/// large messages does not hold many megabytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimLimit {
    pub messages: usize,
    pub bytes: u64,
}

impl ClaimLimit {
    /// Whether a claim that found `found` due messages and took `taken` of
    /// them stopped at this limit, by count or by bytes, so that more may
    /// be due ([`Rest::MoreDue`]); otherwise it took everything due.
    pub fn stopped(&self, found: usize, taken: usize) -> bool {
        found >= self.messages || taken < found
    }
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
    pub content: Content,
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
