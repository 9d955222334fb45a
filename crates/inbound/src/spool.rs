//! A message body on its way to the store: the decoded bytes are split
//! into the header block, kept for the trace headers and routing, and the
//! body, handed to the store in chunks of [`CHUNK`] bytes as they arrive.
//! A session thus holds at most a header block and about one chunk,
//! whatever the message's size.

use crate::decoder::Decoder;
use crate::handoff::Store;

/// Largest header block kept in memory; past it, the rest of the headers
/// travel with the body (Postfix's `header_size_limit` is 100 kB).
pub const HEAD_LIMIT: usize = 64 * 1024;
/// The size of the body chunks handed to the store.
pub const CHUNK: usize = 64 * 1024;

/// One message being received: its decoder and what was decoded so far.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// The queue id, chosen at the start so chunks can be named by it.
    pub id: String,
    pub decoder: Decoder,
    /// The header block so far, up to and including its empty line.
    head: Vec<u8>,
    head_done: bool,
    /// Body bytes not yet handed over.
    body: Vec<u8>,
    chunks: u32,
    /// Some decoded byte is not 7-bit ASCII.
    eight_bit: bool,
    /// Why the store refused a chunk; the message then gets `452`.
    failed: Option<String>,
}

/// What was received, ready for the store.
pub(crate) struct Received {
    pub head: Vec<u8>,
    pub chunks: u32,
    pub tail: Vec<u8>,
    /// The message has 8-bit bytes (to be relayed with `BODY=8BITMIME`).
    pub eight_bit: bool,
}

impl Incoming {
    pub fn new(id: String, decoder: Decoder) -> Incoming {
        Incoming {
            id,
            decoder,
            head: Vec::new(),
            head_done: false,
            body: Vec::new(),
            chunks: 0,
            eight_bit: false,
            failed: None,
        }
    }

    /// Moves what the decoder produced on: into the header block until its
    /// end, then to the store a chunk at a time. Stops storing once the
    /// message is too big or the store failed (the rest is only decoded).
    pub async fn spool(&mut self, store: &impl Store) {
        let decoded = self.decoder.take_output();
        if self.decoder.oversize() || self.failed.is_some() {
            return;
        }
        self.eight_bit |= !decoded.is_ascii();
        let rest = self.fill_head(&decoded);
        self.body.extend_from_slice(rest);
        while self.body.len() >= CHUNK && self.failed.is_none() {
            let chunk: Vec<u8> = self.body.drain(..CHUNK).collect();
            match store.append(&self.id, self.chunks, chunk).await {
                Ok(()) => self.chunks += 1,
                Err(e) => self.failed = Some(e.to_string()),
            }
        }
    }

    /// Why the store refused a chunk, if it did.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Whether chunks were handed to the store (and must be discarded if
    /// the message is not stored).
    pub fn has_chunks(&self) -> bool {
        self.chunks > 0
    }

    /// The message once its end arrived (after a last [`Incoming::spool`]).
    pub fn finish(self) -> Received {
        Received {
            head: self.head,
            chunks: self.chunks,
            tail: self.body,
            eight_bit: self.eight_bit,
        }
    }

    /// Adds decoded bytes to the header block until it ends (an empty
    /// line) or reaches [`HEAD_LIMIT`], where it is cut after the last
    /// whole line; returns the bytes that belong to the body.
    fn fill_head<'a>(&mut self, decoded: &'a [u8]) -> &'a [u8] {
        if self.head_done {
            return decoded;
        }
        let before = self.head.len();
        let room = HEAD_LIMIT - before;
        let take = decoded.len().min(room);
        self.head.extend_from_slice(&decoded[..take]);
        // The header block ends at its first empty line: a CRLF at the
        // very start, or CRLF CRLF.
        let end = if self.head.starts_with(b"\r\n") {
            Some(2)
        } else {
            let from = before.saturating_sub(3);
            self.head[from..]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| from + i + 4)
        };
        let cut = match end {
            Some(end) => end,
            None if self.head.len() < HEAD_LIMIT => return &decoded[take..],
            // Too long: keep the whole lines, the rest is body.
            None => self
                .head
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(self.head.len(), |i| i + 1),
        };
        self.head_done = true;
        let spill = self.head.split_off(cut);
        // Bytes of this call past the cut: those that went into the head
        // and the ones that did not fit.
        self.body.extend_from_slice(&spill);
        &decoded[take..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Chunks(Mutex<Vec<(u32, Vec<u8>)>>);

    impl Store for Chunks {
        type Error = std::io::Error;

        async fn append(&self, _: &str, seq: u32, chunk: Vec<u8>) -> std::io::Result<()> {
            self.0.lock().expect("lock").push((seq, chunk));
            Ok(())
        }

        async fn discard(&self, _: &str) {}

        async fn store(&self, _: crate::ReceivedMessage) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Feeds `message` in reads of `step` bytes; returns the pieces.
    async fn spool(message: &[u8], step: usize) -> (Received, Vec<(u32, Vec<u8>)>) {
        let store = Chunks::default();
        let mut incoming = Incoming::new("ID".into(), Decoder::data(1 << 30));
        for read in message.chunks(step) {
            incoming.decoder.feed(read);
            incoming.spool(&store).await;
        }
        let chunks = store.0.into_inner().expect("lock");
        (incoming.finish(), chunks)
    }

    fn join(received: &Received, chunks: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut all = received.head.clone();
        for (_, chunk) in chunks {
            all.extend_from_slice(chunk);
        }
        all.extend_from_slice(&received.tail);
        all
    }

    #[tokio::test]
    async fn the_header_block_is_kept_and_the_body_goes_in_chunks() {
        let mut message = b"Subject: s\r\nFrom: a@b\r\n\r\n".to_vec();
        message.extend(std::iter::repeat_n(b'x', 3 * CHUNK + 10));
        message.extend_from_slice(b"\r\n");
        for step in [1, 7, 4096, 1 << 20] {
            let (received, chunks) = spool(&message, step).await;
            assert_eq!(received.head, b"Subject: s\r\nFrom: a@b\r\n\r\n");
            assert_eq!(received.chunks, 3);
            assert_eq!(chunks.len(), 3);
            assert!(chunks
                .iter()
                .enumerate()
                .all(|(i, (seq, c))| *seq == i as u32 && c.len() == CHUNK));
            assert_eq!(join(&received, &chunks), message, "step {step}");
        }
    }

    #[tokio::test]
    async fn a_message_without_headers_or_without_a_body() {
        let (received, chunks) = spool(b"\r\nbody only\r\n", 3).await;
        assert_eq!(received.head, b"\r\n");
        assert_eq!(received.tail, b"body only\r\n");
        assert!(chunks.is_empty());
        let (received, _) = spool(b"Subject: s\r\n", 5).await;
        assert_eq!(received.head, b"Subject: s\r\n");
        assert!(received.tail.is_empty());
    }

    /// A header block over the limit is cut after its last whole line;
    /// the rest of it travels as body, and nothing is lost.
    #[tokio::test]
    async fn an_oversized_header_block_is_cut_at_a_line() {
        let mut message = Vec::new();
        while message.len() < HEAD_LIMIT + 1000 {
            message.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        message.extend_from_slice(b"\r\nbody\r\n");
        let (received, chunks) = spool(&message, 1000).await;
        assert!(received.head.len() <= HEAD_LIMIT);
        assert!(received.head.ends_with(b"\r\n"));
        assert_eq!(join(&received, &chunks), message);
    }
}
