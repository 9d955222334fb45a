//! The seam between inbound and the queue: each received message is routed
//! here, then committed to the queue with its route.

use relay_inbound::{ReceivedMessage, Store, StoreError};
use relay_queue::{NewMessage, Queue};
use relay_routing::Router;

/// Routes each message and stores it in the queue.
pub struct RoutedStore<Q> {
    pub router: Router,
    pub queue: Q,
}

impl<Q: Queue> Store for RoutedStore<Q> {
    async fn store(&self, m: ReceivedMessage) -> Result<(), StoreError> {
        let route = self.router.route(&m.sender, &m.data);
        let (id, client, size, rcpt_count) = (m.id.clone(), m.client, m.size, m.recipients.len());
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
                data: m.data,
            })
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        tracing::info!(
            queue_id = %id,
            %client,
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
