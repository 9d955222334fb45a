//! `serve`: starts the async runtime, turns signals into the daemon's
//! [`Control`] (SIGTERM/SIGINT stop it, SIGHUP reloads), and runs
//! [`relay_daemon::run`].

use anyhow::Context;
use relay_config::{Loaded, QueueBackend};
use relay_daemon::Control;
use tokio::signal::unix::{signal, SignalKind};

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(loaded: Loaded) -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chosen = std::env::var_os("TOKIO_WORKER_THREADS").is_some();
    if let Some(n) = worker_threads(&loaded.config.queue.backend, cpus, chosen) {
        builder.worker_threads(n);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let control = Control::default();
        tokio::spawn(forward_signals(control.clone()));
        relay_daemon::run(loaded, control).await?;
        Ok(())
    })
}

/// How many threads run the async tasks on `cpus` CPUs (`None`: tokio's
/// default, one per CPU). With the embedded queue, one fewer than the
/// CPUs, at least one: the queue's writer thread is busy whenever they
/// are, and a thread more than there are CPUs only adds context switches
/// (a fifth of the CPU per message with a connection per message:
/// docs/BENCHMARKS.md, "Lean"). The shared queue has no writer thread.
/// `TOKIO_WORKER_THREADS` in the environment (`chosen`) overrides both.
fn worker_threads(backend: &QueueBackend, cpus: usize, chosen: bool) -> Option<usize> {
    match backend {
        QueueBackend::Sqlite if !chosen => Some(cpus.saturating_sub(1).max(1)),
        _ => None,
    }
}

/// SIGHUP → reload; SIGTERM or SIGINT → shutdown (then stops listening).
async fn forward_signals(control: Control) {
    let mut hup = signal(SignalKind::hangup())
        .inspect_err(
            |e| tracing::error!(error = %e, "Cannot watch SIGHUP; reloads need a restart."),
        )
        .ok();
    let mut term = signal(SignalKind::terminate())
        .inspect_err(
            |e| tracing::error!(error = %e, "Cannot watch SIGTERM; stopping on Ctrl-C only."),
        )
        .ok();
    loop {
        tokio::select! {
            Some(()) = async { hup.as_mut()?.recv().await } => {
                tracing::info!("SIGHUP received.");
                control.reload.notify_one();
            }
            Some(()) = async { term.as_mut()?.recv().await } => {
                tracing::info!("SIGTERM received.");
                break;
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("SIGINT received.");
                break;
            }
        }
    }
    control.shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_queue_leaves_a_cpu_to_its_writer_thread() {
        assert_eq!(worker_threads(&QueueBackend::Sqlite, 8, false), Some(7));
        assert_eq!(worker_threads(&QueueBackend::Sqlite, 2, false), Some(1));
        assert_eq!(worker_threads(&QueueBackend::Sqlite, 1, false), Some(1));
        assert_eq!(worker_threads(&QueueBackend::Postgres, 8, false), None);
        assert_eq!(worker_threads(&QueueBackend::Sqlite, 8, true), None);
    }
}
