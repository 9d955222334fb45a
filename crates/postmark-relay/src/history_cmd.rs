//! `postmark-relay history`: "did my mail go out, and what did Postmark
//! say?" for messages that have left the queue, read from the delivery
//! history of the embedded or shared queue.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::SystemTime;

use relay_queue::{format_time, pattern_matches, FinalState, HistoryEntry, HistoryQuery};

use crate::cli::HistoryArgs;
use crate::queue_cmd::Store;

/// Prints the matching messages; exit 1 when the queue cannot be read.
pub fn run(config: &relay_config::Config, args: &HistoryArgs) -> ExitCode {
    let query = HistoryQuery {
        to: args.to.clone(),
        from: args.from.clone(),
        id: args.id.clone(),
        since: args.since.map(|d| {
            SystemTime::now()
                .checked_sub(d)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        }),
        state: args.state.as_deref().and_then(|s| s.parse().ok()),
        limit: args.limit,
    };
    let found = Store::open(config).and_then(|store| {
        store
            .history(&query)
            .map_err(|e| format!("reading the history: {e}"))
    });
    let entries = match found {
        Ok(entries) => entries,
        Err(e) => {
            eprintln!("postmark-relay history: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&entries) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("postmark-relay history: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else if entries.is_empty() {
        let kept = config.queue.history;
        let days = kept.as_secs() / 86_400;
        let window = if kept.is_zero() {
            "The history is off (queue.history = \"0s\"): nothing is kept once a message leaves the queue.".to_owned()
        } else if days > 0 && kept.as_secs().is_multiple_of(86_400) {
            format!(
                "It keeps messages that left the queue in the last {days} day(s) (queue.history)."
            )
        } else {
            format!(
                "It keeps messages that left the queue in the last {} (queue.history).",
                humantime::format_duration(kept)
            )
        };
        eprintln!(
            "No message in the history matches. {window} Waiting and failed ones are in `postmark-relay queue list`."
        );
    } else {
        print!("{}", lines(&entries, &query));
    }
    ExitCode::SUCCESS
}

/// One line per recipient that satisfies the recipient filters: finish
/// time, queue id, sender, recipient, final state, reply.
fn lines(entries: &[HistoryEntry], q: &HistoryQuery) -> String {
    let mut out = String::new();
    for e in entries {
        let sender = if e.sender.is_empty() { "<>" } else { &e.sender };
        for r in &e.recipients {
            let wanted =
                q.to.as_deref()
                    .is_none_or(|p| pattern_matches(p, &r.address))
                    && q.state.is_none_or(|s| s == r.state);
            if !wanted {
                continue;
            }
            let state = match r.state {
                FinalState::Delivered => "delivered",
                FinalState::Failed => "failed   ",
            };
            let _ = writeln!(
                out,
                "{}  {}  {} -> {}  {}  {}",
                format_time(e.finished_at),
                e.id,
                sender,
                r.address,
                state,
                r.reply.as_deref().unwrap_or("-")
            );
        }
    }
    out
}
