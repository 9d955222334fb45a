//! `serve`: starts the async runtime, turns signals into the daemon's
//! [`Control`] (SIGTERM/SIGINT stop it, SIGHUP reloads), and runs
//! [`relay_daemon::run`].

use anyhow::Context;
use relay_config::Loaded;
use relay_daemon::Control;
use tokio::signal::unix::{signal, SignalKind};

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(loaded: Loaded) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
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
