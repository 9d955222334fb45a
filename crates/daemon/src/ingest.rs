//! Ingest, the seam between inbound and the queue: each received message is routed
//! here, its sender rewritten if `[rewrite]` says so, then committed to the
//! queue with its route.

use std::sync::{Arc, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use relay_inbound::{ReceivedMessage, Refusal, Store};
use relay_queue::{Content, NewMessage, Queue, QueueError};
use relay_routing::{Router, SenderRewrite};

/// Routes each message, rewrites its sender when needed, and stores it in
/// the queue.
pub struct Ingest<Q> {
    /// Replaced on reload; sessions pick up the new rules at once.
    rules: RwLock<Arc<Rules>>,
    queue: Q,
    metrics: IngestMetrics,
}

/// `client="<name>"`, and `reason` for refusals.
type ClientLabels = Vec<(&'static str, String)>;

/// What ingest counts for `/metrics`: every message queued, and per
/// `[[clients]]` name the messages queued and the MAILs refused by policy.
#[derive(Debug, Clone, Default)]
pub struct IngestMetrics {
    /// Messages queued (each got a `250`).
    pub received: Counter,
    /// Messages queued per authenticated client.
    pub client_received: Family<ClientLabels, Counter>,
    /// MAIL commands refused by a rate limit or sender policy, per client
    /// (`anonymous` for sessions without AUTH) and reason.
    pub client_refused: Family<ClientLabels, Counter>,
}

impl IngestMetrics {
    /// Shows every configured client's counters at 0 from the start, so
    /// that Prometheus' `rate()` and `increase()` see its first message
    /// (a series that appears already at 1 shows no increase).
    pub fn start_at_zero(&self, clients: &[relay_config::Client]) {
        let names = clients
            .iter()
            .map(|c| c.name.clone())
            .chain([relay_config::ANONYMOUS_CLIENT.to_owned()]);
        for name in names {
            if name != relay_config::ANONYMOUS_CLIENT {
                let _ = self
                    .client_received
                    .get_or_create(&vec![("client", name.clone())]);
            }
            for reason in [Refusal::Rate, Refusal::Sender] {
                let _ = self.client_refused.get_or_create(&vec![
                    ("client", name.clone()),
                    ("reason", reason.as_str().to_owned()),
                ]);
            }
        }
    }

    /// Registers the three under the `postmark_relay_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "postmark_relay_messages_received",
            "Messages accepted and queued (each got a 250)",
            self.received.clone(),
        );
        registry.register(
            "postmark_relay_client_messages_received",
            "Messages accepted and queued, per authenticated [[clients]] name",
            self.client_received.clone(),
        );
        registry.register(
            "postmark_relay_client_refused",
            "MAIL commands refused by a rate limit (reason=rate) or sender policy (reason=sender), per client (anonymous: no AUTH)",
            self.client_refused.clone(),
        );
    }
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
    /// off) into `queue`, counting in `metrics`.
    pub fn new(
        router: Router,
        rewrite: Option<SenderRewrite>,
        queue: Q,
        metrics: IngestMetrics,
    ) -> Self {
        Ingest {
            rules: RwLock::new(Arc::new(Rules {
                router: Arc::new(router),
                rewrite,
            })),
            queue,
            metrics,
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

    fn refused(&self, client: Option<&str>, reason: Refusal) {
        let client = client.unwrap_or(relay_config::ANONYMOUS_CLIENT).to_owned();
        self.metrics
            .client_refused
            .get_or_create(&vec![
                ("client", client),
                ("reason", reason.as_str().to_owned()),
            ])
            .inc();
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
        let route = rules
            .router
            .route_client(m.client_name.as_deref(), &m.sender, &m.head);
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
                client: m.client_name,
                content: Content {
                    head: m.head,
                    chunks: m.chunks,
                    tail: m.tail,
                    eight_bit: m.eight_bit,
                },
            })
            .await?;
        self.metrics.received.inc();
        if !client.is_empty() {
            self.metrics
                .client_received
                .get_or_create(&vec![("client", client.clone())])
                .inc();
        }
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
