//! `serve`: wires inbound → routing → queue → delivery, then waits for a
//! signal and shuts down gracefully.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use relay_config::{Config, Loaded};
use relay_queue::{Queue, RetryPolicy, SqliteQueue};
use relay_routing::Router;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::RoutedStore;

/// How long sessions and deliveries in flight get to finish on SIGTERM.
const GRACE: Duration = Duration::from_secs(30);
/// Timeout for connecting to and every command with an upstream.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
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
    let source = file.map_or("built-in defaults and environment".to_string(), |f| {
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

    let shutdown = CancellationToken::new();
    let sessions = TaskTracker::new();
    let deliveries = TaskTracker::new();

    let held = start_delivery(&config, &queue, &shutdown, &deliveries)?;
    if !held.is_empty() {
        tokio::spawn(remind_held(held, queue.clone(), shutdown.clone()));
    }

    let store = Arc::new(RoutedStore {
        router,
        queue: queue.clone(),
    });
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

fn retry_policy(config: &Config) -> RetryPolicy {
    RetryPolicy {
        initial_delay: config.retry.initial_delay,
        max_delay: config.retry.max_delay,
        multiplier: config.retry.multiplier,
        give_up_after: config.retry.give_up_after,
    }
}

/// Starts workers for every upstream with a token; returns the names of
/// those without one (their mail is held in the queue).
fn start_delivery(
    config: &Config,
    queue: &SqliteQueue,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<Vec<String>> {
    let mut held = Vec::new();
    for (name, upstream) in &config.upstreams {
        let Some(token) = upstream.token(&config.postmark) else {
            held.push(name.clone());
            continue;
        };
        let runtime = relay_delivery::Upstream::new(
            name,
            upstream,
            token.clone(),
            &config.server.hostname,
            UPSTREAM_TIMEOUT,
        )
        .with_context(|| format!("upstreams.{name}"))?;
        tracing::info!(upstream = %name, host = %upstream.host, port = upstream.port, tls = ?upstream.tls, connections = upstream.connections, "Delivering to upstream.");
        relay_delivery::spawn(runtime, queue.clone(), shutdown.clone(), tracker);
    }
    Ok(held)
}

/// Says, at start and then periodically, that mail is being held.
async fn remind_held(held: Vec<String>, queue: SqliteQueue, shutdown: CancellationToken) {
    loop {
        let waiting = queue.waiting().await.unwrap_or_default();
        let count: u64 = waiting
            .iter()
            .filter(|(u, _)| held.contains(u))
            .map(|(_, n)| n)
            .sum();
        tracing::warn!(
            upstreams = %held.join(","),
            queued = count,
            "Delivery held: no Server API Token is configured. Mail is accepted and queued; set POSTMARK_SERVER_TOKEN (or postmark.server_token / server_token_file) and restart to deliver it."
        );
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
