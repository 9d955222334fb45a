//! The end of a message body (DATA or the last BDAT chunk): size check,
//! trace headers, the durable store, and only then the `250`.

use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite};

use super::Session;
use crate::handoff::{ReceivedMessage, Store};
use crate::reply;
use crate::spool::Incoming;
use crate::trace::{add_headers, Trace};

impl<S, T> Session<S, T>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Store,
{
    /// The DATA terminator arrived.
    pub(crate) async fn end_of_data(&mut self, incoming: Incoming) {
        self.complete(incoming).await;
    }

    /// A BDAT chunk has been read in full.
    pub(crate) async fn end_of_chunk(&mut self, last: bool) {
        let Some(tx) = self.tx.as_mut() else {
            return self.reply(reply::MAIL_FIRST);
        };
        let Some(incoming) = tx.chunks.as_mut() else {
            return self.reply(reply::RCPT_FIRST);
        };
        if incoming.decoder.oversize() {
            self.abandon_transaction().await;
            return self.reply(reply::MESSAGE_TOO_BIG);
        }
        if !last {
            return self.reply(reply::CHUNK_OK);
        }
        incoming.decoder.finish_chunks();
        if let Some(incoming) = self.tx.as_mut().and_then(|tx| tx.chunks.take()) {
            self.complete(incoming).await;
        }
    }

    async fn complete(&mut self, mut incoming: Incoming) {
        let Some(tx) = self.tx.take() else {
            self.discard(incoming).await;
            return self.reply(reply::MAIL_FIRST);
        };
        // What the decoder still holds (a BDAT body's last line).
        incoming.spool(&*self.store).await;
        if incoming.decoder.oversize() {
            tracing::info!(client = %self.client(), sender = %tx.sender, "Message refused: over max_message_size.");
            self.discard(incoming).await;
            return self.reply(reply::MESSAGE_TOO_BIG);
        }
        if let Some(e) = incoming.failed() {
            tracing::error!(client = %self.client(), error = %e, "Could not store a message; answered 452 4.3.1.");
            self.discard(incoming).await;
            return self.reply(reply::STORE_FAILED);
        }
        let size = incoming.decoder.size();
        let id = incoming.id.clone();
        let received = incoming.finish();
        let from = relay_message::find(&received.head, "From")
            .and_then(|value| relay_message::first_address(&value));
        if let Some(refused) = from.and_then(|from| self.refuse_sender("From:", &from)) {
            tracing::info!(client = %self.client(), sender = %tx.sender, "Message refused: From: not among the client's senders.");
            self.store()
                .refused(self.client_name.as_deref(), crate::Refusal::Sender);
            if received.chunks > 0 {
                self.store().discard(&id).await;
            }
            return self.reply(refused);
        }
        let (helo, protocol) = self.helo.clone().unwrap_or_default();
        let head = add_headers(
            received.head,
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
            client_name: self.client_name.clone(),
            sender: tx.sender,
            recipients: tx.recipients,
            size,
            head,
            chunks: received.chunks,
            tail: received.tail,
            eight_bit: received.eight_bit,
        };
        let chunks = message.chunks;
        match self.store().store(message).await {
            Ok(()) => {
                tracing::debug!(queue_id = %id, size, rcpt_count, "Message committed.");
                self.reply(reply::queued(&id));
            }
            Err(e) => {
                tracing::error!(client = %self.client(), error = %e, "Could not store a message; answered 452 4.3.1.");
                if chunks > 0 {
                    self.store().discard(&id).await;
                }
                self.reply(reply::STORE_FAILED);
            }
        }
    }
}
