//! `queue migrate [--to URL]`: copies this relay's embedded queue into a
//! shared one, so a relay that grows into a service keeps the mail it
//! holds. Every message is copied with its per-recipient state (delivered
//! recipients stay delivered, failed ones stay failed), in one database
//! transaction each; a message already in the shared queue is skipped, so
//! a second run (after an interruption, or by mistake) copies nothing
//! twice. The embedded queue is only read.

use std::path::Path;
use std::process::ExitCode;

use relay_config::Config;
use relay_queue::{format_time, Imported, Inspector, PgSettings};

use super::store::{leased, open_shared};

/// Runs the migration; exit 1 with the reason on stderr if anything was
/// left uncopied.
pub fn run(config: &Config, to: Option<String>) -> ExitCode {
    match migrate(config, to) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("postmark-relay queue migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Copies every message; the summary to print, or why it stopped (the
/// messages copied before that stay copied; run it again).
fn migrate(config: &Config, to: Option<String>) -> Result<String, String> {
    let queue = &config.queue;
    let url = match (to, &queue.url) {
        (Some(url), _) => url,
        (None, Some(url)) => url.expose().to_string(),
        (None, None) => {
            return Err(
                "give the shared queue's URL: --to postgres://USER:PASSWORD@HOST/DB \
                 (or set queue.url, queue.url_file or POSTMARK_RELAY_QUEUE__URL)"
                    .into(),
            )
        }
    };
    let local = Inspector::open(&queue.path).map_err(|e| super::open_error(&queue.path, &e))?;
    let messages = local
        .list(None)
        .map_err(|e| format!("reading {}: {e}", queue.path.display()))?;
    if let Some((m, until)) = messages.iter().find_map(|m| leased(m).map(|u| (m, u))) {
        return Err(format!(
            "a relay is delivering from {} right now (message {} is leased until {}). \
             Stop `postmark-relay serve` on this queue first, then run this again.",
            queue.path.display(),
            m.id,
            format_time(until)
        ));
    }
    let settings = PgSettings::new(&url, queue);
    let (shared, runtime) = open_shared(&settings).map_err(|e| {
        format!(
            "cannot open the shared queue (schema {}): {e}",
            settings.schema
        )
    })?;
    let (mut copied, mut there) = (0usize, 0usize);
    for m in &messages {
        let failed = |e: relay_queue::QueueError| {
            format!(
                "message {}: {e}. {copied} message(s) were copied before it; run this again to copy the rest.",
                m.id
            )
        };
        let Some(content) = local.content(&m.id).map_err(failed)? else {
            continue; // deleted since the listing
        };
        match runtime
            .block_on(shared.import(m, &content, |seq| local.chunk(&m.id, seq)))
            .map_err(failed)?
        {
            Imported::Copied => copied += 1,
            Imported::AlreadyThere => there += 1,
        }
    }
    Ok(summary(&queue.path, &settings.schema, copied, there))
}

/// What happened and what to do next.
fn summary(path: &Path, schema: &str, copied: usize, there: usize) -> String {
    format!(
        "Copied {copied} message(s) from {} into the shared queue (schema {schema}); \
         {there} were already there.\n\
         The embedded queue is unchanged. Do not start a relay on it again (its messages \
         would be sent twice): point every relay at the shared queue (queue.backend = \"postgres\"), \
         and remove {} once they run.\n",
        path.display(),
        path.display()
    )
}
