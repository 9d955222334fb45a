//! The one thing inbound knows about what happens next: a place that
//! durably stores a received message.

use std::future::Future;
use std::net::SocketAddr;

/// A message as received, with the relay's trace headers added.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    /// The queue id, already in the `Received:` header and our `250`.
    pub id: String,
    pub client: SocketAddr,
    /// Envelope sender without `<>`; empty for the null sender.
    pub sender: String,
    pub recipients: Vec<String>,
    /// Size as received (dot-unstuffed, before our headers): what the
    /// size limit applies to.
    pub size: u64,
    /// The full message, CRLF line endings, our headers first.
    pub data: Vec<u8>,
}

/// Stores a received message durably. `Ok` must mean committed to disk:
/// the session answers `250` only after it.
pub trait Store: Send + Sync + 'static {
    /// Why a store did not happen; the session logs it and answers
    /// `452 4.3.1`.
    type Error: std::error::Error + Send;

    /// Stores the message; returns once it is durable.
    fn store(
        &self,
        message: ReceivedMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}
