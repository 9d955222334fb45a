//! Binding the listen addresses and accepting connections: the checks
//! made before a session starts (allowed networks, connection cap).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use relay_config::Server;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::RateLimits;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handoff::Store;
use crate::reply;
use crate::session::Session;
use crate::tls::InboundTls;

/// No listen address could be bound.
#[derive(Debug, thiserror::Error)]
#[error("could not listen on any of server.listen: {reasons}{hint}")]
pub struct BindError {
    reasons: String,
    hint: &'static str,
}

/// Binds every address that can be bound; logs and skips the others (e.g.
/// `[::1]` on a host without IPv6). Fails only if none binds.
pub async fn bind(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, BindError> {
    let mut listeners = Vec::new();
    let mut reasons = Vec::new();
    let mut denied_low_port = false;
    for addr in addrs {
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                let local = listener.local_addr().unwrap_or(*addr);
                tracing::info!(address = %local, "Listening for SMTP.");
                listeners.push(listener);
            }
            Err(e) => {
                tracing::warn!(address = %addr, error = %e, "Cannot listen on this address; skipping it.");
                denied_low_port |=
                    e.kind() == io::ErrorKind::PermissionDenied && addr.port() < 1024;
                reasons.push(format!("{addr}: {e}"));
            }
        }
    }
    if listeners.is_empty() {
        let hint = if denied_low_port {
            ". Ports below 1024 need privileges: listen on e.g. 127.0.0.1:2525 instead, or grant CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE)"
        } else {
            ""
        };
        return Err(BindError {
            reasons: reasons.join("; "),
            hint,
        });
    }
    Ok(listeners)
}

/// What every accepted connection shares.
struct Shared<T> {
    settings: Arc<Server>,
    tls: Option<Arc<InboundTls>>,
    store: Arc<T>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    slots: Arc<Semaphore>,
    /// Password verifications running at once, across all sessions.
    verifications: Arc<Semaphore>,
    /// Rate-limit buckets, across all sessions.
    rates: Arc<RateLimits>,
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared {
            settings: self.settings.clone(),
            tls: self.tls.clone(),
            store: self.store.clone(),
            shutdown: self.shutdown.clone(),
            tracker: self.tracker.clone(),
            slots: self.slots.clone(),
            verifications: self.verifications.clone(),
            rates: self.rates.clone(),
        }
    }
}

/// Accepts on every listener until `shutdown`, running each session on
/// `tracker` so the caller can wait for them to finish. With `tls`,
/// sessions offer STARTTLS with that certificate.
pub async fn serve<T: Store>(
    listeners: Vec<TcpListener>,
    settings: Arc<Server>,
    tls: Option<Arc<InboundTls>>,
    store: Arc<T>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let shared = Shared {
        slots: Arc::new(Semaphore::new(settings.max_connections)),
        verifications: Arc::new(Semaphore::new(verification_limit())),
        rates: Arc::new(RateLimits::new(&settings)),
        settings,
        tls,
        store,
        shutdown,
        tracker,
    };
    let mut accepting = Vec::new();
    for listener in listeners {
        let shared = shared.clone();
        accepting.push(tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = shared.shutdown.cancelled() => return,
                };
                match accepted {
                    Ok((stream, client)) => admit(stream, client, &shared),
                    Err(e) => {
                        // Usually EMFILE: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "Accept failed.");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    for task in accepting {
        let _ = task.await;
    }
}

/// One argon2 verification per core, at most 4: each holds ~19 MiB
/// while it runs, so this bounds the memory a flood of AUTH attempts
/// can take (and leaves cores for mail).
fn verification_limit() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

fn admit<T: Store>(mut stream: TcpStream, client: SocketAddr, shared: &Shared<T>) {
    let _ = stream.set_nodelay(true);
    let allowed = shared
        .settings
        .allowed_networks
        .iter()
        .any(|net| net.contains(&client.ip()));
    let permit = shared.slots.clone().try_acquire_owned();
    let Shared {
        settings,
        tls,
        store,
        shutdown,
        tracker,
        verifications,
        rates,
        ..
    } = shared.clone();
    tracker.spawn(async move {
        if !allowed {
            tracing::warn!(%client, "Refused a client outside allowed_networks.");
            let _ = stream
                .write_all(reply::not_allowed(client.ip()).as_bytes())
                .await;
            return;
        }
        let Ok(_permit) = permit else {
            tracing::warn!(%client, "Refused a client: max_connections reached.");
            let _ = stream
                .write_all(reply::TOO_MANY_CONNECTIONS.as_bytes())
                .await;
            return;
        };
        tracing::debug!(%client, "Session started.");
        if let Err(e) = Session::new(stream, client, settings, store, shutdown)
            .with_tls(tls)
            .with_verification_limit(verifications)
            .with_rate_limits(rates)
            .run()
            .await
        {
            tracing::debug!(%client, error = %e, "Session ended with an I/O error.");
        }
    });
}
