//! Ingest, the seam between inbound and the queue: each received message is routed
//! here, its sender rewritten if `[rewrite]` says so, then committed to the
//! queue with its route.

use std::sync::{Arc, RwLock};

use prometheus_client::metrics::counter::Counter;
use relay_inbound::{ReceivedMessage, Store};
use relay_queue::{Content, NewMessage, Queue, QueueError};
use relay_routing::{Router, SenderRewrite};

/// Routes each message, rewrites its sender when needed, and stores it in
/// the queue.
pub struct Ingest<Q> {
    /// Replaced on reload; sessions pick up the new rules at once.
    rules: RwLock<Arc<Rules>>,
    queue: Q,
    received: Counter,
}

/// The router and the sender rewrite, swapped together on reload so no
/// message sees new routing with an old rewrite or the other way round.
struct Rules {
    router: Arc<Router>,
    /// `None`: rewriting off.
    rewrite: Option<SenderRewrite>,
}

impl<Q> Ingest<Q> {
    /// A store routing with `router` and rewriting with `rewrite` (`None`:
    /// off) into `queue`, counting in `received`.
    pub fn new(
        router: Router,
        rewrite: Option<SenderRewrite>,
        queue: Q,
        received: Counter,
    ) -> Self {
        Ingest {
            rules: RwLock::new(Arc::new(Rules {
                router: Arc::new(router),
                rewrite,
            })),
            queue,
            received,
        }
    }

    /// Uses `router` and `rewrite` for every message from now on.
    pub fn set_rules(&self, router: Arc<Router>, rewrite: Option<SenderRewrite>) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(Rules { router, rewrite });
    }

    fn rules(&self) -> Arc<Rules> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl<Q: Queue> Store for Ingest<Q> {
    type Error = QueueError;

    async fn append(&self, id: &str, seq: u32, chunk: Vec<u8>) -> Result<(), QueueError> {
        self.queue.append(id, seq, chunk).await
    }

    async fn discard(&self, id: &str) {
        if let Err(e) = self.queue.discard(id).await {
            tracing::warn!(queue_id = %id, error = %e, "Could not drop the body of a message not stored; it goes at the next start.");
        }
    }

    async fn store(&self, mut m: ReceivedMessage) -> Result<(), QueueError> {
        let rules = self.rules();
        // Route on the original sender and headers, then rewrite: rules are
        // written against what the app sends, not against the one verified
        // sender every rewritten message ends up with.
        let route = rules.router.route(&m.sender, &m.head);
        let (id, peer, size, rcpt_count) = (m.id.clone(), m.client, m.size, m.recipients.len());
        let client = m.client_name.clone().unwrap_or_default();
        if let Some(rewritten) = rules
            .rewrite
            .as_ref()
            .and_then(|r| r.apply(&m.sender, &m.head))
        {
            tracing::info!(
                queue_id = %id,
                original_sender = %rewritten.original_sender,
                sender = %rewritten.sender,
                original_from = rewritten.original_from.as_deref().unwrap_or(""),
                "Sender rewritten."
            );
            m.sender = rewritten.sender;
            m.head = rewritten.message;
        }
        let sender = m.sender.clone();
        self.queue
            .enqueue(NewMessage {
                id: m.id,
                received_at: std::time::SystemTime::now(),
                sender: m.sender,
                recipients: m.recipients,
                upstream: route.upstream.clone(),
                stream: route.stream.clone(),
                size: m.size,
                content: Content {
                    head: m.head,
                    chunks: m.chunks,
                    tail: m.tail,
                    eight_bit: m.eight_bit,
                },
            })
            .await?;
        self.received.inc();
        tracing::info!(
            queue_id = %id,
            %peer,
            client = %client,
            sender = %sender,
            recipients = rcpt_count,
            size,
            upstream = %route.upstream,
            stream = route.stream.as_deref().unwrap_or(""),
            rule = route.rule.as_deref().unwrap_or(""),
            "Message queued."
        );
        Ok(())
    }
}
