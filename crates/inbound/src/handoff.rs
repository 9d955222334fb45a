//! The one thing inbound knows about what happens next: a place that
//! durably stores a received message, taking a large body in chunks while
//! it still arrives.

use std::future::Future;
use std::net::SocketAddr;

/// A message as received, with the relay's trace headers added. Its bytes
/// are `head`, then the `chunks` chunks already given to
/// [`Store::append`], then `tail`.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    /// The queue id, already in the `Received:` header and our `250`.
    pub id: String,
    pub client: SocketAddr,
    /// The `[[clients]]` name the session authenticated as, if any.
    pub client_name: Option<String>,
    /// Envelope sender without `<>`; empty for the null sender.
    pub sender: String,
    pub recipients: Vec<String>,
    /// Size as received (dot-unstuffed, before our headers): what the
    /// size limit applies to.
    pub size: u64,
    /// Our headers, then the client's header block (at most
    /// [`crate::HEAD_LIMIT`] of it; the rest travels as body), CRLF.
    pub head: Vec<u8>,
    /// How many chunks were appended before this.
    pub chunks: u32,
    /// The rest of the message after the chunks (all of a small body).
    pub tail: Vec<u8>,
    /// Some byte of the message is 8-bit: the upstream gets
    /// `BODY=8BITMIME` (RFC 6152), whether or not the client declared it.
    pub eight_bit: bool,
}

/// Why a MAIL was refused by policy, for the refusal counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over `server.rate` or the client's `rate` (`450 4.7.1`).
    Rate,
    /// Outside the client's `senders` (`550 5.7.1`).
    Sender,
}

impl Refusal {
    /// The `reason` label: `rate` or `sender`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Rate => "rate",
            Refusal::Sender => "sender",
        }
    }
}

/// Stores received messages durably. `Ok` from [`Store::store`] must mean
/// committed to disk: the session answers `250` only after it.
pub trait Store: Send + Sync + 'static {
    /// Why a store did not happen; the session logs it and answers
    /// `452 4.3.1`.
    type Error: std::error::Error + Send;

    /// Takes chunk `seq` (0, 1, ...) of message `id`'s body while the
    /// client is still sending it, so no session holds a large message.
    fn append(
        &self,
        id: &str,
        seq: u32,
        chunk: Vec<u8>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Forgets what was appended for message `id`: it will not be stored
    /// (the client left, it was too big, storing failed).
    fn discard(&self, id: &str) -> impl Future<Output = ()> + Send;

    /// Counts a message refused by policy from `client` (`None`: a
    /// session without AUTH); the session has logged it already.
    fn refused(&self, client: Option<&str>, reason: Refusal) {
        let _ = (client, reason);
    }

    /// Stores the message with its appended chunks; returns once it is
    /// durable.
    fn store(
        &self,
        message: ReceivedMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}
