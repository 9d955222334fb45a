//! `queue list|show|retry|delete|stats|migrate`: inspect and manage the
//! queue of a running (or stopped) `serve`, embedded or shared, through its
//! own connection to the store ([`store`]). Rendering for people lives in
//! [`render`]; copying an embedded queue into a shared one in [`migrate`];
//! this file opens the queue, runs the command and maps outcomes onto
//! output and exit codes.

mod migrate;
mod render;
pub(crate) mod store;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use relay_queue::{format_time, Deleted, QueueError, State};

use crate::cli::QueueCommand;
pub(crate) use store::Store;

/// Runs one `queue` subcommand; exit 1 (with the reason on stderr) for an
/// unknown id, a missing queue or a store error.
pub fn run(config: &relay_config::Config, command: QueueCommand) -> ExitCode {
    if let QueueCommand::Migrate { to } = command {
        return migrate::run(config, to);
    }
    let store = match Store::open(config) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("postmark-relay queue: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let QueueCommand::Show { id, raw: true } = &command {
        return write_raw(&store, id);
    }
    match execute(&store, command) {
        Ok(out) => write_stdout(&out),
        Err(e) => {
            eprintln!("postmark-relay queue: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `queue show --raw`: the stored message to stdout a piece at a time.
fn write_raw(store: &Store, id: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    let written = store
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
fn execute(store: &Store, command: QueueCommand) -> anyhow::Result<Vec<u8>> {
    match command {
        QueueCommand::List { json, state } => {
            let state = state
                .map(|s| s.parse::<State>())
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let messages = store.list(state).context("reading the queue")?;
            if json {
                let mut out = serde_json::to_vec_pretty(&messages)?;
                out.push(b'\n');
                Ok(out)
            } else {
                Ok(render::table(&messages, state).into_bytes())
            }
        }
        QueueCommand::Show { id, .. } => {
            let Some(info) = store.show(&id).context("reading the queue")? else {
                bail!("no message {id} in the queue (see `postmark-relay queue list`)");
            };
            Ok(render::message(&info).into_bytes())
        }
        QueueCommand::Retry { all: true, .. } => {
            let n = store.retry_all().context("updating the queue")?;
            Ok(format!(
                "Made {n} message(s) due now; failed recipients will be tried again. \
                 The relay picks them up within a second.\n"
            )
            .into_bytes())
        }
        QueueCommand::Retry { id: Some(id), .. } => {
            if !store.retry(&id).context("updating the queue")? {
                bail!("no message {id} in the queue (see `postmark-relay queue list`)");
            }
            Ok(format!(
                "Message {id} is due now; failed recipients will be tried again. \
                 The relay picks it up within a second.\n"
            )
            .into_bytes())
        }
        QueueCommand::Retry { id: None, .. } => bail!("give a message id or --all"),
        QueueCommand::Delete { id } => match store.delete(&id).context("updating the queue")? {
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
        QueueCommand::Migrate { .. } => bail!("queue migrate runs on its own (see `run`)"),
        QueueCommand::Stats { json } => {
            let stats = store.stats().context("reading the queue")?;
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
