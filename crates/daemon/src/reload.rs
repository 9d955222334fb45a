//! Reloads (SIGHUP in the binary): routing rules, tokens and the retry
//! policy from the same config file (and environment); waiting messages are
//! routed again; an invalid new configuration leaves the running one. The
//! inbound certificate and key are re-read from their files (a renewed
//! certificate), on their own: a bad file keeps the running certificate.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use relay_config::Config;
use relay_queue::AnyQueue;
use relay_routing::{Router, SenderRewrite};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use relay_inbound::InboundTls;

use crate::ingest::Ingest;
use crate::retry_policy;
use crate::supervisor::Supervisor;

/// What a reload touches.
pub struct Reloader {
    /// The file `serve` started from (`None`: defaults and environment).
    pub file: Option<PathBuf>,
    /// The configuration in force.
    pub running: Mutex<Config>,
    pub queue: AnyQueue,
    pub ingest: Arc<Ingest<AnyQueue>>,
    pub supervisor: Arc<Supervisor>,
    /// The inbound certificate, when STARTTLS is offered.
    pub tls: Option<Arc<InboundTls>>,
}

impl Reloader {
    /// Reloads each time `reload` is notified, until `shutdown`.
    pub async fn watch(self, reload: Arc<Notify>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = reload.notified() => self.reload().await,
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn reload(&self) {
        tracing::info!("Reloading the configuration.");
        if let Some(tls) = &self.tls {
            crate::tls_watch::reread(tls, "SIGHUP");
        }
        let new = match relay_config::load(self.file.as_deref()) {
            Ok(loaded) => loaded.config,
            Err(e) => {
                for problem in e.problems() {
                    tracing::error!(problem = %problem, "Invalid configuration.");
                }
                tracing::error!("Reload failed; the running configuration stays in force.");
                return;
            }
        };
        crate::warn_exposed_secrets(&new);
        let router = Arc::new(Router::new(&new.routing));
        let prepared = match Supervisor::prepare(&new) {
            Ok(prepared) => prepared,
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "Reload failed; the running configuration stays in force."
                );
                return;
            }
        };
        self.ingest
            .set_rules(router.clone(), SenderRewrite::new(&new.rewrite));
        if let Err(e) = self.queue.set_policy(retry_policy(&new)).await {
            tracing::error!(error = %e, "Could not apply the new retry policy.");
        }
        let rerouted = self
            .queue
            .reroute(move |sender, head| {
                let route = router.route(sender, head);
                (route.upstream, route.stream)
            })
            .await;
        // Only now the new workers start, so they see the new routes.
        self.supervisor.install(prepared);
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if new.server != running.server
            || new.queue != running.queue
            || new.admin != running.admin
            || new.log != running.log
        {
            tracing::warn!("Changes to [server], [queue], [admin] or [log] (e.g. listen addresses) take effect only after a restart.");
        }
        *running = new;
        match rerouted {
            Ok(changed) => tracing::info!(
                rerouted = changed,
                "Configuration reloaded: routing rules, tokens and retry policy are in force."
            ),
            Err(e) => {
                tracing::error!(error = %e, "Configuration reloaded, but waiting messages could not be routed again.")
            }
        }
    }
}
