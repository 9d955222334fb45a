//! The relay daemon as a library: [`run`] wires inbound → routing → queue →
//! delivery, the admin endpoint and configuration reloads, and returns once
//! a shutdown was asked for and everything in flight has finished.
//!
//! Owns: the seam from inbound to the queue ([`ingest`]), the set of
//! delivery workers that a reload replaces ([`supervisor`]), reloads, and
//! the admin endpoint.
//!
//! Must not know: the command line, signals, or how logging is set up; the
//! binary turns SIGTERM/SIGHUP into a [`Control`] and calls [`run`].
#![forbid(unsafe_code)]

mod admin;
mod held;
mod ingest;
mod prune;
mod reload;
mod supervisor;
mod tls_watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use relay_config::QueueBackend;
use relay_config::{Config, Loaded};
use relay_queue::{AnyQueue, PgQueue, PgSettings, RetryPolicy, SqliteQueue};
use relay_routing::{Router, SenderRewrite};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::Admin;
use crate::ingest::{Ingest, IngestMetrics};
use crate::reload::Reloader;
use crate::supervisor::Supervisor;

/// How long sessions and deliveries in flight get to finish after shutdown
/// was asked for.
const GRACE: Duration = Duration::from_secs(30);

/// How the embedding program steers a running daemon.
#[derive(Clone, Default)]
pub struct Control {
    /// Cancelled to stop: no new connections, then what is in flight
    /// finishes (bounded by a grace period).
    pub shutdown: CancellationToken,
    /// Notified to reload the configuration from the file it started with.
    pub reload: Arc<Notify>,
}

/// Why the daemon could not start. The cause is the error's `source`
/// (printed after the message with `{:#}`), not repeated in its text.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The queue folder cannot be opened or created.
    #[error("opening the queue in {} (queue.path)", path.display())]
    Queue {
        path: PathBuf,
        source: relay_queue::QueueError,
    },
    /// The shared queue cannot be reached or set up. Never names the URL:
    /// it holds the password.
    #[error("opening the shared queue (queue.url, schema {schema})")]
    SharedQueue {
        schema: String,
        source: relay_queue::QueueError,
    },
    /// No `server.listen` address could be bound.
    #[error(transparent)]
    Listen(#[from] relay_inbound::BindError),
    /// `admin.listen` cannot be bound.
    #[error("admin.listen = {address}: cannot listen (set admin.listen = \"\" to disable)")]
    Admin {
        address: SocketAddr,
        source: std::io::Error,
    },
    /// The inbound certificate or key became unreadable after validation.
    #[error("server.tls_cert_file / server.tls_key_file")]
    Tls {
        source: relay_config::ServerTlsError,
    },
    /// An upstream's settings cannot be used (an unreadable `ca_file`).
    #[error(transparent)]
    Upstream(#[from] relay_delivery::UpstreamError),
}

/// Runs the daemon until `control.shutdown` is cancelled, then lets
/// sessions and deliveries in flight finish (at most [`GRACE`]).
pub async fn run(loaded: Loaded, control: Control) -> Result<(), StartError> {
    let Loaded { config, file } = loaded;
    let source = file
        .as_ref()
        .map_or("built-in defaults and environment".to_string(), |f| {
            f.display().to_string()
        });
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %source, "postmark-relay starting.");
    warn_exposed_secrets(&config);

    let tls = match &config.server.tls {
        Some(files) => Some(Arc::new(
            relay_inbound::InboundTls::load(files).map_err(|source| StartError::Tls { source })?,
        )),
        None => None,
    };
    let queue = open_queue(&config).await?;
    let listeners = relay_inbound::bind(&config.server.listen).await?;
    let admin_listener = match config.admin.listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| StartError::Admin { address, source })?,
        ),
        None => None,
    };

    let Control { shutdown, reload } = control;
    let sessions = TaskTracker::new();
    let deliveries = TaskTracker::new();
    let metrics = Arc::new(relay_delivery::Metrics::default());
    let ingest_metrics = IngestMetrics::default();
    ingest_metrics.start_at_zero(&config.server.clients);

    let supervisor = Arc::new(Supervisor::start(
        &config,
        queue.clone(),
        metrics.clone(),
        shutdown.clone(),
        deliveries.clone(),
    )?);
    if let Some(tls) = &tls {
        tokio::spawn(tls_watch::run(tls.clone(), shutdown.clone()));
    }
    tokio::spawn(prune::run(
        queue.clone(),
        config.queue.history,
        shutdown.clone(),
    ));
    tokio::spawn(held::remind(
        supervisor.clone(),
        queue.clone(),
        shutdown.clone(),
    ));

    let ingest = Arc::new(Ingest::new(
        Router::new(&config.routing),
        SenderRewrite::new(&config.rewrite),
        queue.clone(),
        ingest_metrics.clone(),
    ));
    if let Some(listener) = admin_listener {
        let address = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(address = %address, "Admin endpoint listening: /healthz /readyz /metrics.");
        let admin = Admin::new(
            &ingest_metrics,
            &metrics,
            queue.clone(),
            config.queue.path.clone(),
            supervisor.clone(),
            sessions.clone(),
        );
        tokio::spawn(admin::serve(listener, Arc::new(admin), shutdown.clone()));
    }
    let reloader = Reloader {
        file,
        running: std::sync::Mutex::new(config.clone()),
        queue: queue.clone(),
        ingest: ingest.clone(),
        supervisor: supervisor.clone(),
        tls: tls.clone(),
    };
    tokio::spawn(reloader.watch(reload, shutdown.clone()));

    let inbound = tokio::spawn(relay_inbound::serve(
        listeners,
        Arc::new(config.server.clone()),
        tls,
        ingest,
        shutdown.clone(),
        sessions.clone(),
    ));

    shutdown.cancelled().await;
    tracing::info!(
        "Shutting down: no new connections; finishing sessions and deliveries in flight."
    );
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

/// The store `queue.backend` names.
async fn open_queue(config: &Config) -> Result<AnyQueue, StartError> {
    let policy = retry_policy(config);
    let queue = &config.queue;
    match (queue.backend, &queue.url) {
        (QueueBackend::Postgres, Some(url)) => {
            PgQueue::open(&PgSettings::new(url.expose(), queue), policy)
                .await
                .map(AnyQueue::Postgres)
                .map_err(|source| StartError::SharedQueue {
                    schema: queue.schema.clone(),
                    source,
                })
        }
        // Validation guarantees a url with "postgres".
        _ => SqliteQueue::open(&queue.path, policy)
            .map(AnyQueue::Sqlite)
            .map_err(|source| StartError::Queue {
                path: queue.path.clone(),
                source,
            }),
    }
}

/// Warns about each secret file every local user can read (it is still
/// used: who may read it is the operator's call).
fn warn_exposed_secrets(config: &Config) {
    for exposed in relay_config::world_readable_secrets(config) {
        tracing::warn!(
            key = %exposed.file.key,
            path = %exposed.file.path.display(),
            mode = %format!("{:04o}", exposed.mode),
            fix = %exposed.fix(),
            "A secret file is readable by every local user; it is still used, but run the command in `fix` to keep the secret to the relay."
        );
    }
}

/// The queue's retry schedule from `[retry]`.
fn retry_policy(config: &Config) -> RetryPolicy {
    RetryPolicy {
        initial_delay: config.retry.initial_delay,
        max_delay: config.retry.max_delay,
        multiplier: config.retry.multiplier,
        give_up_after: config.retry.give_up_after,
        keep_history: !config.queue.history.is_zero(),
    }
}
