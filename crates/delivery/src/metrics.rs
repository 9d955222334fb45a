//! What delivery counts, for `/metrics`. The binary creates one
//! [`Metrics`], registers it, and hands it to every upstream's workers; no
//! global registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::outcome::FailureReason;

/// Label set: `upstream="..."` (and `reason` for failures).
pub type Labels = Vec<(&'static str, String)>;

/// Delivery counters, gauges and the latency histogram.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Messages whose delivery attempt got at least one recipient accepted.
    pub relayed: Family<Labels, Counter>,
    /// Attempts that left recipients pending for a retry.
    pub deferred: Family<Labels, Counter>,
    /// Messages that ended failed, by reason class.
    pub failed: Family<Labels, Counter>,
    /// Seconds from receipt to Postmark's acceptance.
    pub latency: Histogram,
    /// Upstream connections currently open.
    pub connections: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            relayed: Family::default(),
            deferred: Family::default(),
            failed: Family::default(),
            // 5 ms .. ~11 h, doubling.
            latency: Histogram::new(exponential_buckets(0.005, 2.0, 24)),
            connections: Family::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric under the `postmark_relay_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "postmark_relay_messages_relayed",
            "Messages relayed to an upstream (at least one recipient accepted)",
            self.relayed.clone(),
        );
        registry.register(
            "postmark_relay_messages_deferred",
            "Delivery attempts that left recipients for a retry",
            self.deferred.clone(),
        );
        registry.register(
            "postmark_relay_messages_failed",
            "Messages that failed permanently, by reason class",
            self.failed.clone(),
        );
        registry.register(
            "postmark_relay_delivery_latency_seconds",
            "Time from receipt to the upstream's acceptance",
            self.latency.clone(),
        );
        registry.register(
            "postmark_relay_upstream_connections",
            "Upstream connections open",
            self.connections.clone(),
        );
    }

    /// Creates `name`'s relayed, deferred and failed counters at 0, so
    /// they are scraped before anything happens: Prometheus's `rate` and
    /// `increase` cannot see a series' first value, and an alert on
    /// failures would miss the first one if the series were born at 1.
    pub fn start_upstream(&self, name: &str) {
        // Created is enough: the handles (clones) are dropped at once.
        self.relayed.get_or_create_owned(&upstream(name));
        self.deferred.get_or_create_owned(&upstream(name));
        for reason in FailureReason::ALL {
            self.failed.get_or_create_owned(&failed(name, reason));
        }
    }
}

/// `upstream="name"`.
pub fn upstream(name: &str) -> Labels {
    vec![("upstream", name.to_string())]
}

/// `upstream="name", reason="..."`, for `failed`.
pub fn failed(name: &str, reason: FailureReason) -> Labels {
    vec![
        ("upstream", name.to_string()),
        ("reason", reason.label().to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_upstream_is_scraped_at_zero_before_any_delivery() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.start_upstream("transactional");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"postmark_relay_messages_relayed_total{upstream="transactional"} 0"#,
            r#"postmark_relay_messages_deferred_total{upstream="transactional"} 0"#,
            r#"postmark_relay_messages_failed_total{upstream="transactional",reason="rejected"} 0"#,
            r#"postmark_relay_messages_failed_total{upstream="transactional",reason="unverified_sender"} 0"#,
            r#"postmark_relay_messages_failed_total{upstream="transactional",reason="expired"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in:\n{text}");
        }
    }
}
