//! A message body on its way upstream: read from the queue a piece at a
//! time (head, chunks, tail; see [`relay_queue::Content`]), dot-stuffed on
//! the way, ended with the `.` line. However large the message, a session
//! holds about one chunk of it.

use std::future::Future;

use relay_queue::{Content, Queue, QueueError};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Where the chunks of stored bodies come from: the queue, or nowhere for
/// a message held whole in memory (`send-test`).
pub trait Chunks: Sync {
    /// Chunk `seq` of message `id`'s body.
    fn chunk(&self, id: &str, seq: u32)
        -> impl Future<Output = Result<Vec<u8>, QueueError>> + Send;
}

impl<Q: Queue> Chunks for Q {
    fn chunk(
        &self,
        id: &str,
        seq: u32,
    ) -> impl Future<Output = Result<Vec<u8>, QueueError>> + Send {
        Queue::chunk(self, id, seq)
    }
}

/// For bodies that have no chunks (held whole in memory).
pub struct NoChunks;

impl Chunks for NoChunks {
    async fn chunk(&self, id: &str, seq: u32) -> Result<Vec<u8>, QueueError> {
        Err(QueueError::MissingChunk(id.to_string(), seq))
    }
}

/// One message's body as relayed.
pub struct Body<'a> {
    /// The queue id: names the chunks.
    pub id: &'a str,
    /// Lines the relay puts in front (an `X-PM-Message-Stream` header).
    pub prefix: &'a [u8],
    pub content: &'a Content,
}

/// Dot-stuffing (RFC 5321 §4.5.2) across piece boundaries: a `.` at the
/// start of a line gets another in front.
#[derive(Debug)]
pub struct Stuffer {
    line_start: bool,
    /// The last two bytes written, to know whether the body ended its
    /// last line.
    last: [u8; 2],
    written: bool,
}

impl Default for Stuffer {
    fn default() -> Self {
        Stuffer {
            line_start: true,
            last: [0, 0],
            written: false,
        }
    }
}

impl Stuffer {
    /// Appends `piece`, stuffed, to `out`.
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        out.reserve(piece.len() + piece.len() / 64 + 2);
        // Copied line by line (memchr finds each LF): only a line's first
        // byte can need a `.` in front.
        let mut rest = piece;
        while let Some(&first) = rest.first() {
            if self.line_start && first == b'.' {
                out.push(b'.');
            }
            let line = memchr::memchr(b'\n', rest).map_or(rest.len(), |lf| lf + 1);
            out.extend_from_slice(&rest[..line]);
            self.line_start = rest[line - 1] == b'\n';
            rest = &rest[line..];
        }
        if let [.., a, b] = piece {
            self.last = [*a, *b];
        } else if let [b] = piece {
            self.last = [self.last[1], *b];
        }
        self.written |= !piece.is_empty();
    }

    /// Ends the body: a last line without its CRLF gets one, then `.`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.written && self.last != *b"\r\n" {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// Dot-stuffs a CRLF message held whole and appends the end-of-data line.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut stuffer = Stuffer::default();
    let mut out = Vec::new();
    stuffer.push(body, &mut out);
    stuffer.finish(&mut out);
    out
}

/// Writes `body` to `stream`, dot-stuffed, all but its last piece; returns
/// that last piece with the end-of-data line, so it can share a write with
/// what follows (the next command group, or nothing). A chunk that cannot
/// be read fails the body: the caller must then drop the connection, since
/// the upstream already has part of the message and must not get a `.`.
pub async fn write_body<S: AsyncWrite + Unpin>(
    stream: &mut S,
    body: &Body<'_>,
    chunks: &impl Chunks,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, String> {
    let mut stuffer = Stuffer::default();
    let mut out = Vec::new();
    stuffer.push(body.prefix, &mut out);
    stuffer.push(&body.content.head, &mut out);
    for seq in 0..body.content.chunks {
        let chunk = chunks
            .chunk(body.id, seq)
            .await
            .map_err(|e| format!("cannot read the message from the queue: {e}"))?;
        if !out.is_empty() {
            tokio::time::timeout(timeout, stream.write_all(&out))
                .await
                .map_err(|_| mail_send::Error::Timeout.to_string())?
                .map_err(|e| mail_send::Error::Io(e).to_string())?;
            out.clear();
        }
        stuffer.push(&chunk, &mut out);
    }
    stuffer.push(&body.content.tail, &mut out);
    stuffer.finish(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffs_every_line_that_starts_with_a_dot() {
        assert_eq!(
            dot_stuff(b".a\r\nb\r\n..c\r\n.\r\n"),
            b"..a\r\nb\r\n...c\r\n..\r\n.\r\n"
        );
    }

    #[test]
    fn terminates_a_body_without_a_final_line_ending() {
        assert_eq!(dot_stuff(b"x"), b"x\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
        assert_eq!(dot_stuff(b"x\r"), b"x\r\r\n.\r\n");
    }

    /// Piece boundaries change nothing: a line start at the end of one
    /// piece still stuffs the `.` that begins the next.
    #[test]
    fn pieces_stuff_like_the_whole() {
        let whole = b"a\r\n.b\r\n..\r\nc\r\n.";
        for cut in 0..whole.len() {
            let mut stuffer = Stuffer::default();
            let mut out = Vec::new();
            stuffer.push(&whole[..cut], &mut out);
            stuffer.push(&whole[cut..], &mut out);
            stuffer.finish(&mut out);
            assert_eq!(out, dot_stuff(whole), "cut at {cut}");
        }
    }

    struct Three;

    impl Chunks for Three {
        async fn chunk(&self, _: &str, seq: u32) -> Result<Vec<u8>, QueueError> {
            Ok(format!(".chunk{seq}\r\n").into_bytes())
        }
    }

    /// Head, chunks and tail go out in order; the last piece comes back
    /// for the caller to write with what follows.
    #[tokio::test]
    async fn a_chunked_body_goes_out_in_order_and_the_end_is_held_back() {
        let content = Content {
            head: b"Subject: s\r\n\r\n".to_vec(),
            chunks: 3,
            tail: b"end".to_vec(),
            eight_bit: false,
        };
        let body = Body {
            id: "X",
            prefix: b"X-PM-Message-Stream: s\r\n",
            content: &content,
        };
        let mut written = Vec::new();
        let last = write_body(
            &mut written,
            &body,
            &Three,
            std::time::Duration::from_secs(5),
        )
        .await
        .expect("body");
        written.extend_from_slice(&last);
        assert_eq!(
            String::from_utf8_lossy(&written),
            "X-PM-Message-Stream: s\r\nSubject: s\r\n\r\n..chunk0\r\n..chunk1\r\n..chunk2\r\nend\r\n.\r\n"
        );
        assert_eq!(last, b"..chunk2\r\nend\r\n.\r\n");
    }
}
