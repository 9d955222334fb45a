//! The routing decision for one message.

/// Where one message goes. Stored with the message at ingest, so `queue
/// list` can show it and delivery needs no routing knowledge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Name of the `[upstreams.<name>]` to deliver through.
    pub upstream: String,
    /// The Postmark message stream: the message's own
    /// `X-PM-Message-Stream` (when `rule` is `None`), or the matching rule's
    /// `stream`, which the relay adds as that header. `None`: Postmark's
    /// default stream, no header added.
    pub stream: Option<String>,
    /// Name of the rule that matched, for logs: a `[[routing.rules]]` name,
    /// or `clients.<name>` when a client's own `upstream`/`stream` decided;
    /// `None` when the message's header or the default decided.
    pub rule: Option<String>,
}
