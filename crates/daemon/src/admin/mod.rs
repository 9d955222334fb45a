//! The admin endpoint (`admin.listen`): `GET /healthz`, `/readyz` and
//! `/metrics` (Prometheus text via prometheus-client). It never opens
//! upstream connections itself.

mod http;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use relay_delivery::metrics::Labels;
use relay_queue::{AnyQueue, Inspector, QueueError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::supervisor::Supervisor;
use http::{read_request, write_response, Response};

/// Everything the endpoint reads.
pub struct Admin {
    registry: Registry,
    sessions_active: Gauge,
    queue_depth: Family<Labels, Gauge>,
    oldest_age: Gauge<f64, AtomicU64>,
    paused: Family<Labels, Gauge>,
    /// What `/readyz` would answer (1 for 200), so an alert can see it.
    ready: Gauge,
    queue: AnyQueue,
    queue_path: PathBuf,
    /// Opened on first use, reused after; a read-only view of the queue,
    /// only ever used on a blocking thread (its queries are SQLite calls).
    inspector: Arc<Mutex<Option<Inspector>>>,
    supervisor: Arc<Supervisor>,
    sessions: TaskTracker,
}

impl Admin {
    /// Builds the registry: what ingest counts, `delivery`'s
    /// own metrics, and the gauges filled in at scrape time.
    pub fn new(
        ingest_metrics: &crate::ingest::IngestMetrics,
        delivery_metrics: &relay_delivery::Metrics,
        queue: AnyQueue,
        queue_path: PathBuf,
        supervisor: Arc<Supervisor>,
        sessions: TaskTracker,
    ) -> Admin {
        let mut registry = Registry::default();
        ingest_metrics.register(&mut registry);
        delivery_metrics.register(&mut registry);
        let sessions_active = Gauge::default();
        let queue_depth = Family::default();
        let oldest_age = Gauge::default();
        let paused = Family::default();
        let ready = Gauge::default();
        registry.register(
            "postmark_relay_smtp_sessions_active",
            "Inbound SMTP sessions open",
            sessions_active.clone(),
        );
        registry.register(
            "postmark_relay_queue_messages",
            "Messages in the queue, by state",
            queue_depth.clone(),
        );
        registry.register(
            "postmark_relay_queue_oldest_message_age_seconds",
            "Age of the oldest message waiting for delivery (0 if none)",
            oldest_age.clone(),
        );
        registry.register(
            "postmark_relay_upstream_paused",
            "1 while an upstream is paused because it refused our credentials",
            paused.clone(),
        );
        registry.register(
            "postmark_relay_ready",
            "1 when /readyz answers 200, else 0",
            ready.clone(),
        );
        Admin {
            registry,
            sessions_active,
            queue_depth,
            oldest_age,
            paused,
            ready,
            queue,
            queue_path,
            inspector: Arc::new(Mutex::new(None)),
            supervisor,
            sessions,
        }
    }

    async fn respond(&self, method: &str, path: &str) -> Response {
        if method != "GET" && method != "HEAD" {
            return Response::text(405, "only GET\n");
        }
        match path {
            "/healthz" => Response::text(200, "ok\n"),
            "/readyz" => match self.unready_reason().await {
                None => Response::text(200, "ready\n"),
                Some(reason) => Response::text(503, format!("not ready: {reason}\n")),
            },
            "/metrics" => self.metrics().await,
            _ => Response::text(404, "endpoints: /healthz /readyz /metrics\n"),
        }
    }

    /// Why the relay should not get traffic, if it should not.
    async fn unready_reason(&self) -> Option<String> {
        match tokio::time::timeout(Duration::from_secs(2), self.queue.check_writable()).await {
            Err(_) => return Some("the queue did not answer within 2 s".into()),
            Ok(Err(e @ QueueError::Unreachable(_))) => return Some(e.to_string()),
            Ok(Err(e)) => return Some(format!("the queue is not writable: {e}")),
            Ok(Ok(())) => {}
        }
        let paused: Vec<String> = self
            .supervisor
            .paused()
            .into_iter()
            .filter(|(_, p)| *p)
            .map(|(n, _)| n)
            .collect();
        if !paused.is_empty() {
            return Some(format!(
                "upstream {} refused the Server API Token; delivery is paused (see the log for the fix)",
                paused.join(", ")
            ));
        }
        None
    }

    async fn metrics(&self) -> Response {
        self.sessions_active.set(self.sessions.len() as i64);
        for (name, paused) in self.supervisor.paused() {
            self.paused
                .get_or_create(&vec![("upstream", name)])
                .set(i64::from(paused));
        }
        self.ready
            .set(i64::from(self.unready_reason().await.is_none()));
        match self.queue_stats().await {
            Ok(stats) => {
                for (state, n) in [
                    ("queued", stats.by_state.queued),
                    ("deferred", stats.by_state.deferred),
                    ("failed", stats.by_state.failed),
                ] {
                    self.queue_depth
                        .get_or_create(&vec![("state", state.to_string())])
                        .set(n as i64);
                }
                let age = stats
                    .oldest_received_at
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .map_or(0.0, |d| d.as_secs_f64());
                self.oldest_age.set(age);
            }
            Err(e) => tracing::warn!(error = %e, "Cannot read queue statistics for /metrics."),
        }
        let mut body = String::new();
        if let Err(e) = encode(&mut body, &self.registry) {
            return Response::text(500, format!("encoding metrics failed: {e}\n"));
        }
        Response {
            status: 200,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        }
    }

    /// Counts by state and the oldest message: from the shared queue's
    /// database, or from the embedded store on a blocking thread so a slow
    /// disk never stalls the async runtime.
    /// The error is only logged, so it travels as its text.
    async fn queue_stats(&self) -> Result<relay_queue::Stats, String> {
        if let Some(shared) = self.queue.shared_stats().await {
            return shared.map_err(|e| e.to_string());
        }
        let inspector = self.inspector.clone();
        let path = self.queue_path.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut guard = inspector.lock().unwrap_or_else(|p| p.into_inner());
            let inspector = match guard.take() {
                Some(inspector) => inspector,
                None => Inspector::open(&path).map_err(|e| e.to_string())?,
            };
            let stats = inspector.stats().map_err(|e| e.to_string());
            *guard = Some(inspector);
            stats
        });
        match read.await {
            Ok(stats) => stats,
            Err(e) => Err(format!("the statistics task failed: {e}")),
        }
    }
}

/// Serves the endpoint until `shutdown`.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: CancellationToken) {
    loop {
        let (mut stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "Admin accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            if let Some((method, path)) = read_request(&mut stream).await {
                let response = admin.respond(&method, &path).await;
                write_response(&mut stream, response, method == "HEAD").await;
            }
        });
    }
}
