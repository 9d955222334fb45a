//! SIGHUP: reload routing rules, tokens and the retry policy from the same
//! config file (and environment), route waiting messages again, and keep
//! the running configuration if the new one is invalid.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use relay_config::Config;
use relay_queue::SqliteQueue;
use relay_routing::{Router, SenderRewrite};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::delivery::Delivery;
use crate::serve::retry_policy;
use crate::store::RoutedStore;

/// What a reload touches.
pub struct Reloader {
    /// The file `serve` started from (`None`: defaults and environment).
    pub file: Option<PathBuf>,
    /// The configuration in force.
    pub running: Mutex<Config>,
    pub queue: SqliteQueue,
    pub store: Arc<RoutedStore<SqliteQueue>>,
    pub delivery: Arc<Delivery>,
}

impl Reloader {
    /// Reloads on every SIGHUP until `shutdown`.
    pub async fn watch(self, shutdown: CancellationToken) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(hup) => hup,
            Err(e) => {
                tracing::error!(error = %e, "Cannot watch SIGHUP; reloads need a restart.");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hup.recv() => self.reload().await,
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn reload(&self) {
        tracing::info!("SIGHUP received: reloading the configuration.");
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
        let router = match Router::new(&new.routing) {
            Ok(router) => Arc::new(router),
            Err(e) => {
                tracing::error!(error = %e, "Reload failed; the running configuration stays in force.");
                return;
            }
        };
        let prepared = match Delivery::prepare(&new) {
            Ok(prepared) => prepared,
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "Reload failed; the running configuration stays in force."
                );
                return;
            }
        };
        self.store
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
        self.delivery.install(prepared);
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
