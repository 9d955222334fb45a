//! The supervisor of delivery: the running set of workers, replaceable on reload: a SIGHUP
//! stops the current workers (each finishes the message in hand) and starts
//! new ones with the new tokens and upstream settings, which also ends any
//! credential pause at once.

use std::sync::{Arc, Mutex};

use relay_config::Config;
use relay_delivery::{Metrics, Pause};
use relay_queue::AnyQueue;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Owns the workers of every upstream.
pub struct Supervisor {
    queue: AnyQueue,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    current: Mutex<Workers>,
}

/// Upstream settings checked and ready to start.
pub struct Prepared {
    upstreams: Vec<relay_delivery::Upstream>,
    held: Vec<String>,
}

/// One generation of workers.
#[derive(Default)]
struct Workers {
    stop: CancellationToken,
    pauses: Vec<(String, Arc<Pause>)>,
    held: Vec<String>,
}

impl Supervisor {
    /// Starts workers for `config`'s upstreams.
    pub fn start(
        config: &Config,
        queue: AnyQueue,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<Supervisor, relay_delivery::UpstreamError> {
        let supervisor = Supervisor {
            queue,
            metrics,
            shutdown,
            tracker,
            current: Mutex::new(Workers::default()),
        };
        supervisor.install(Supervisor::prepare(config)?);
        Ok(supervisor)
    }

    /// Builds the upstream settings for `config` (loading every ca_file),
    /// without touching the running workers: a reload that fails here
    /// changes nothing.
    pub fn prepare(config: &Config) -> Result<Prepared, relay_delivery::UpstreamError> {
        let mut upstreams = Vec::new();
        let mut held = Vec::new();
        for (name, upstream) in relay_delivery::upstreams(config) {
            match upstream {
                Ok(upstream) => upstreams.push(upstream),
                Err(relay_delivery::UpstreamError::NoToken { .. }) => held.push(name),
                Err(e) => return Err(e),
            }
        }
        Ok(Prepared { upstreams, held })
    }

    /// Stops the current workers (each finishes the message in hand) and
    /// starts `prepared`'s.
    pub fn install(&self, prepared: Prepared) {
        let Prepared { upstreams, held } = prepared;
        let stop = self.shutdown.child_token();
        let mut pauses = Vec::new();
        for upstream in upstreams {
            tracing::info!(upstream = %upstream.name, host = %upstream.host, port = upstream.port, tls = ?upstream.tls, connections = upstream.connections, "Delivering to upstream.");
            let name = upstream.name.clone();
            self.metrics.start_upstream(&name);
            let pause = relay_delivery::spawn(
                upstream,
                self.queue.clone(),
                self.metrics.clone(),
                stop.clone(),
                &self.tracker,
            );
            pauses.push((name, pause));
        }
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.stop.cancel();
        *current = Workers { stop, pauses, held };
    }

    /// Upstreams without a token: their mail is held in the queue.
    pub fn held(&self) -> Vec<String> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .held
            .clone()
    }

    /// Upstreams paused because they refused our credentials.
    pub fn paused(&self) -> Vec<(String, bool)> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pauses
            .iter()
            .map(|(name, pause)| (name.clone(), pause.is_paused()))
            .collect()
    }
}
