//! The end of a message body (DATA or the last BDAT chunk): size check,
//! trace headers, the durable store, and only then the `250`.

use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite};

use super::Session;
use crate::decoder::Decoder;
use crate::handoff::{ReceivedMessage, Store};
use crate::queue_id::new_queue_id;
use crate::reply;
use crate::trace::{add_headers, Trace};

impl<S, T> Session<S, T>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Store,
{
    /// The DATA terminator arrived.
    pub(crate) async fn end_of_data(&mut self, decoder: Decoder) {
        self.complete(decoder).await;
    }

    /// A BDAT chunk has been read in full.
    pub(crate) async fn end_of_chunk(&mut self, last: bool) {
        let Some(tx) = self.tx.as_mut() else {
            return self.reply(reply::MAIL_FIRST);
        };
        let Some(decoder) = tx.chunks.as_mut() else {
            return self.reply(reply::RCPT_FIRST);
        };
        if decoder.oversize() {
            self.tx = None;
            return self.reply(reply::MESSAGE_TOO_BIG);
        }
        if !last {
            return self.reply(reply::CHUNK_OK);
        }
        decoder.finish_chunks();
        if let Some(decoder) = self.tx.as_mut().and_then(|tx| tx.chunks.take()) {
            self.complete(decoder).await;
        }
    }

    async fn complete(&mut self, decoder: Decoder) {
        let Some(tx) = self.tx.take() else {
            return self.reply(reply::MAIL_FIRST);
        };
        if decoder.oversize() {
            tracing::info!(client = %self.client(), sender = %tx.sender, "Message refused: over max_message_size.");
            return self.reply(reply::MESSAGE_TOO_BIG);
        }
        let body = decoder.into_message();
        let size = body.len() as u64;
        let id = new_queue_id();
        let (helo, protocol) = self.helo.clone().unwrap_or_default();
        let data = add_headers(
            body,
            &Trace {
                id: &id,
                helo: &helo,
                client: self.client().ip(),
                hostname: &self.settings().hostname,
                protocol,
                recipients: &tx.recipients,
                at: SystemTime::now(),
            },
        );
        let rcpt_count = tx.recipients.len();
        let message = ReceivedMessage {
            id: id.clone(),
            client: self.client(),
            sender: tx.sender,
            recipients: tx.recipients,
            size,
            data,
        };
        match self.store().store(message).await {
            Ok(()) => {
                tracing::debug!(queue_id = %id, size, rcpt_count, "Message committed.");
                self.reply(reply::queued(&id));
            }
            Err(e) => {
                tracing::error!(client = %self.client(), error = %e, "Could not store a message; answered 452 4.3.1.");
                self.reply(reply::STORE_FAILED);
            }
        }
    }
}
