//! `serve`: wires inbound → routing → queue → delivery, plus the admin
//! endpoint and SIGHUP reloads, then waits for SIGTERM/SIGINT and shuts
//! down gracefully.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::metrics::counter::Counter;
use relay_config::{Config, Loaded};
use relay_queue::{Queue, RetryPolicy, SqliteQueue};
use relay_routing::{Router, SenderRewrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::Admin;
use crate::delivery::Delivery;
use crate::reload::Reloader;
use crate::store::RoutedStore;

/// How long sessions and deliveries in flight get to finish on SIGTERM.
const GRACE: Duration = Duration::from_secs(30);
/// How often the "delivery held" reminder repeats.
const HELD_REMINDER: Duration = Duration::from_secs(300);

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(loaded: Loaded) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(loaded))
}

async fn serve(loaded: Loaded) -> anyhow::Result<()> {
    let Loaded { config, file } = loaded;
    let source = file
        .as_ref()
        .map_or("built-in defaults and environment".to_string(), |f| {
            f.display().to_string()
        });
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %source, "postmark-relay starting.");

    let queue =
        SqliteQueue::open(&config.queue.path, retry_policy(&config)).with_context(|| {
            format!(
                "opening the queue in {} (queue.path)",
                config.queue.path.display()
            )
        })?;
    let router = Router::new(&config.routing).context("compiling routing rules")?;
    let listeners = relay_inbound::bind(&config.server.listen).await?;
    let admin_listener = match config.admin.listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("admin.listen = {addr}: cannot listen (set admin.listen = \"\" to disable)")
        })?),
        None => None,
    };

    let shutdown = CancellationToken::new();
    let sessions = TaskTracker::new();
    let deliveries = TaskTracker::new();
    let metrics = Arc::new(relay_delivery::Metrics::default());
    let received = Counter::default();

    let delivery = Arc::new(Delivery::start(
        &config,
        queue.clone(),
        metrics.clone(),
        shutdown.clone(),
        deliveries.clone(),
    )?);
    tokio::spawn(remind_held(
        delivery.clone(),
        queue.clone(),
        shutdown.clone(),
    ));

    let rewrite = SenderRewrite::new(&config.rewrite);
    let store = Arc::new(RoutedStore::new(
        router,
        rewrite,
        queue.clone(),
        received.clone(),
    ));
    if let Some(listener) = admin_listener {
        let address = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(address = %address, "Admin endpoint listening: /healthz /readyz /metrics.");
        let admin = Admin::new(
            received,
            &metrics,
            queue.clone(),
            config.queue.path.clone(),
            delivery.clone(),
            sessions.clone(),
        );
        tokio::spawn(crate::admin::serve(
            listener,
            Arc::new(admin),
            shutdown.clone(),
        ));
    }
    let reloader = Reloader {
        file,
        running: std::sync::Mutex::new(config.clone()),
        queue: queue.clone(),
        store: store.clone(),
        delivery: delivery.clone(),
    };
    tokio::spawn(reloader.watch(shutdown.clone()));

    let inbound = tokio::spawn(relay_inbound::serve(
        listeners,
        Arc::new(config.server.clone()),
        store,
        shutdown.clone(),
        sessions.clone(),
    ));

    wait_for_signal().await;
    tracing::info!(
        "Shutting down: no new connections; finishing sessions and deliveries in flight."
    );
    shutdown.cancel();
    let _ = inbound.await;
    sessions.close();
    deliveries.close();
    let finished = tokio::time::timeout(GRACE, async {
        sessions.wait().await;
        deliveries.wait().await;
    })
    .await;
    if finished.is_err() {
        tracing::warn!(grace_s = GRACE.as_secs(), "Grace period over; stopping what is still running (queued mail is safe and resumes on restart).");
    }
    tracing::info!("Stopped.");
    Ok(())
}

/// The queue's retry schedule from `[retry]`.
pub fn retry_policy(config: &Config) -> RetryPolicy {
    RetryPolicy {
        initial_delay: config.retry.initial_delay,
        max_delay: config.retry.max_delay,
        multiplier: config.retry.multiplier,
        give_up_after: config.retry.give_up_after,
    }
}

/// Says, at start and then periodically, that mail is being held for
/// upstreams without a token.
async fn remind_held(delivery: Arc<Delivery>, queue: SqliteQueue, shutdown: CancellationToken) {
    loop {
        let held = delivery.held();
        if !held.is_empty() {
            let waiting = queue.waiting().await.unwrap_or_default();
            let count: u64 = waiting
                .iter()
                .filter(|(u, _)| held.contains(u))
                .map(|(_, n)| n)
                .sum();
            tracing::warn!(
                upstreams = %held.join(","),
                queued = count,
                "Delivery held: no Server API Token is configured. Mail is accepted and queued; set POSTMARK_SERVER_TOKEN (or postmark.server_token / server_token_file) and restart or send SIGHUP to deliver it."
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(HELD_REMINDER) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "Cannot watch SIGTERM; stopping on Ctrl-C only.");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received."),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received."),
    }
}
