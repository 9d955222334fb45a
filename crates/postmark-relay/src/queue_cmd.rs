//! `queue list|show|retry|delete|stats`: inspect and manage the queue of a
//! running (or stopped) `serve`, through its own connection to the store.
//! Rendering for people lives in [`render`]; this file opens the queue,
//! runs the command and maps outcomes onto output and exit codes.

mod render;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use relay_queue::{format_time, Deleted, Inspector, QueueError, State};

use crate::cli::QueueCommand;

/// Runs one `queue` subcommand; exit 1 (with the reason on stderr) for an
/// unknown id, a missing queue or a store error.
pub fn run(config: &relay_config::Config, command: QueueCommand) -> ExitCode {
    if config.queue.backend == relay_config::QueueBackend::Postgres {
        eprintln!(
            "postmark-relay queue: queue.backend = \"postgres\": the queue commands do not read the shared queue yet \
             (see docs/REFERENCE.md, \"Not yet implemented\"); /metrics on any relay counts its messages."
        );
        return ExitCode::FAILURE;
    }
    let path = &config.queue.path;
    let inspector = match Inspector::open(path) {
        Ok(inspector) => inspector,
        Err(e) => {
            eprintln!("postmark-relay queue: {}", open_error(path, &e));
            return ExitCode::FAILURE;
        }
    };
    if let QueueCommand::Show { id, raw: true } = &command {
        return write_raw(&inspector, id);
    }
    match execute(&inspector, command) {
        Ok(out) => write_stdout(&out),
        Err(e) => {
            eprintln!("postmark-relay queue: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `queue show --raw`: the stored message to stdout a piece at a time.
fn write_raw(inspector: &Inspector, id: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    let written = inspector
        .write_raw(id, &mut stdout)
        .map(|found| found && stdout.flush().is_ok());
    match written {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!(
                "postmark-relay queue: no message {id} in the queue (see `postmark-relay queue list`)"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("postmark-relay queue: reading the queue: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What to tell the user when the queue cannot be opened.
fn open_error(path: &Path, e: &QueueError) -> String {
    match e {
        QueueError::Folder { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            format!(
                "no queue at {} (queue.path): nothing was ever queued there. \
                 Point at the queue `serve` uses: the same config file (-c FILE) \
                 or POSTMARK_RELAY_QUEUE__PATH.",
                path.display()
            )
        }
        e => format!(
            "cannot open the queue at {} (queue.path): {e}",
            path.display()
        ),
    }
}

/// The command's standard output, or why it failed.
fn execute(inspector: &Inspector, command: QueueCommand) -> anyhow::Result<Vec<u8>> {
    match command {
        QueueCommand::List { json, state } => {
            let state = state
                .map(|s| s.parse::<State>())
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let messages = inspector.list(state).context("reading the queue")?;
            if json {
                let mut out = serde_json::to_vec_pretty(&messages)?;
                out.push(b'\n');
                Ok(out)
            } else {
                Ok(render::table(&messages, state).into_bytes())
            }
        }
        QueueCommand::Show { id, .. } => {
            let Some(info) = inspector.show(&id).context("reading the queue")? else {
                bail!("no message {id} in the queue (see `postmark-relay queue list`)");
            };
            Ok(render::message(&info).into_bytes())
        }
        QueueCommand::Retry { all: true, .. } => {
            let n = inspector.retry_all().context("updating the queue")?;
            Ok(format!(
                "Made {n} message(s) due now; failed recipients will be tried again. \
                 The relay picks them up within a second.\n"
            )
            .into_bytes())
        }
        QueueCommand::Retry { id: Some(id), .. } => {
            if !inspector.retry(&id).context("updating the queue")? {
                bail!("no message {id} in the queue (see `postmark-relay queue list`)");
            }
            Ok(format!(
                "Message {id} is due now; failed recipients will be tried again. \
                 The relay picks it up within a second.\n"
            )
            .into_bytes())
        }
        QueueCommand::Retry { id: None, .. } => bail!("give a message id or --all"),
        QueueCommand::Delete { id } => match inspector.delete(&id).context("updating the queue")? {
            Deleted::Removed => Ok(format!("Deleted message {id}.\n").into_bytes()),
            Deleted::NotFound => {
                bail!("no message {id} in the queue (see `postmark-relay queue list`)")
            }
            Deleted::Leased(until) => bail!(
                "message {id} is being delivered right now (lease until {}); \
                 it was not deleted. Try again in a moment.",
                format_time(until)
            ),
        },
        QueueCommand::Stats { json } => {
            let stats = inspector.stats().context("reading the queue")?;
            if json {
                let mut out = serde_json::to_vec_pretty(&stats)?;
                out.push(b'\n');
                Ok(out)
            } else {
                Ok(render::stats(&stats).into_bytes())
            }
        }
    }
}

/// Writes the output; a closed pipe (`queue list | head`) is not an error.
fn write_stdout(out: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postmark-relay queue: writing the output: {e}");
            ExitCode::FAILURE
        }
    }
}
