//! The command line: `postmark-relay [-c FILE] <command>`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A local SMTP relay for Postmark.
///
/// Applications send mail to localhost:25 without credentials; the relay
/// stores each message durably, picks Postmark's transactional or broadcast
/// stream, and relays it with the Server API Token, retrying until Postmark
/// takes it.
///
/// Quick start:  POSTMARK_SERVER_TOKEN=... postmark-relay serve
#[derive(Debug, Parser)]
#[command(name = "postmark-relay", version, after_help = ENV_HELP)]
pub struct Cli {
    /// Config file [default: $POSTMARK_RELAY_CONFIG, else
    /// /etc/postmark-relay/relay.toml if it exists, else built-in defaults]
    #[arg(short, long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay daemon: listen for SMTP, queue durably, deliver to Postmark.
    ///
    /// Without a Server API Token the daemon still accepts and queues mail,
    /// and says in its log that delivery is held until a token is set.
    /// SIGTERM or SIGINT: stop accepting, finish what is in flight, exit 0.
    /// SIGHUP: reload routing rules, token and retry policy, and re-read
    /// the inbound TLS certificate and key.
    Serve,
    /// Print the effective configuration (file + environment + defaults),
    /// with the token redacted.
    Config,
    /// Validate the config, then connect, STARTTLS and AUTH to every
    /// upstream; print a verdict per upstream with a fix for each failure.
    /// Exits 0 only if every upstream passes.
    Check(CheckArgs),
    /// Send one small test message through the real upstream (not the
    /// queue) and print Postmark's reply.
    SendTest(SendTestArgs),
    /// Inspect and manage the queue (works while `serve` runs).
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Messages that have left the queue (delivered, or failed and
    /// deleted), newest first: one line per recipient with its final state
    /// and Postmark's reply (which carries Postmark's message id). Kept
    /// for queue.history (default 7d); never the body.
    ///
    /// Address patterns are case-insensitive; `*` matches any run of
    /// characters and `?` one character, e.g. --to '*@example.com'.
    History(HistoryArgs),
    /// sendmail-compatible submission: read a message on stdin and hand it
    /// to the running relay over SMTP (also when invoked as `sendmail`).
    /// Takes sendmail(8)'s options: -t -i -oi -f FROM -F NAME [RCPT...];
    /// `sendmail --help` prints them.
    #[command(disable_help_flag = true)]
    Sendmail(SendmailArgs),
    /// Read one password from standard input (typed twice without echo on
    /// a terminal, else the first line) and print its argon2id PHC string,
    /// for a `[[clients]]` entry's password_hash.
    HashPassword,
    /// Exit 0 when the admin endpoint reports healthy (for container
    /// HEALTHCHECKs in images without curl).
    Health,
}

/// `send-test` options.
#[derive(Debug, Args)]
pub struct SendTestArgs {
    /// Recipient of the test message.
    #[arg(long, value_name = "ADDR")]
    pub to: String,
    /// Sender [default: postmark-relay@<server.hostname>]; must be on a
    /// verified domain or sender signature in Postmark.
    #[arg(long, value_name = "ADDR")]
    pub from: Option<String>,
    /// Set X-PM-Message-Stream; streams in routing.broadcast_streams go to
    /// the broadcast upstream.
    #[arg(long, value_name = "ID", conflicts_with = "broadcast")]
    pub stream: Option<String>,
    /// Same as --stream broadcast.
    #[arg(long)]
    pub broadcast: bool,
}

/// `check` options.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also ask each upstream whether it accepts ADDR as a sender (MAIL
    /// FROM, then RSET: nothing is sent), e.g. before an app's first
    /// message from a newly verified domain.
    #[arg(long, value_name = "ADDR")]
    pub from: Option<String>,
}

/// `history` filters and output.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only messages to a recipient matching ADDR.
    #[arg(long, value_name = "ADDR")]
    pub to: Option<String>,
    /// Only messages whose envelope sender or From: address matches ADDR.
    #[arg(long, value_name = "ADDR")]
    pub from: Option<String>,
    /// Only the message with this queue id (the id in the relay's 250
    /// reply and its log).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Only messages that finished within DURATION, e.g. 30m, 1h, 2d.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<std::time::Duration>,
    /// Only messages with a recipient that ended in this state (with
    /// --to: the matching recipient).
    #[arg(long, value_parser = ["delivered", "failed"])]
    pub state: Option<String>,
    /// At most N messages.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,
    /// One JSON array (schema in docs/REFERENCE.md) instead of lines.
    #[arg(long)]
    pub json: bool,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 30m, 1h, 2d)"))
}

/// `queue` subcommands.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List queued, deferred and failed messages.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// Only messages in this state.
        #[arg(long, value_parser = ["queued", "deferred", "failed"])]
        state: Option<String>,
    },
    /// Envelope, route, per-recipient state, attempts and errors of one message.
    Show {
        id: String,
        /// Print the raw message instead.
        #[arg(long)]
        raw: bool,
    },
    /// Make a message (or all) due now; failed recipients are tried again.
    Retry {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Drop a message from the queue.
    Delete { id: String },
    /// Counts by state and upstream, and the oldest message's age.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Copy this relay's embedded queue (queue.path) into a shared queue on
    /// PostgreSQL: every waiting and failed message, with the state of each
    /// recipient.
    ///
    /// Stop `serve` on the embedded queue first. Safe to run twice: a
    /// message already in the shared queue is not copied again. The
    /// embedded queue is only read; once the relays use the shared queue,
    /// remove it (a relay started on it would send its messages again).
    Migrate {
        /// The shared queue, postgres://USER:PASSWORD@HOST:PORT/DB[?sslmode=require]
        /// [default: queue.url, queue.url_file or POSTMARK_RELAY_QUEUE__URL,
        /// which keep the password out of the process list]
        #[arg(long, value_name = "URL")]
        to: Option<String>,
    },
}

/// `sendmail` options, as sendmail(8) takes them.
#[derive(Debug, Args)]
pub struct SendmailArgs {
    /// Every argument after `sendmail`, parsed sendmail-style.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

const ENV_HELP: &str = "\
Environment:
  POSTMARK_SERVER_TOKEN             the Server API Token (Postmark: Servers → your server → API Tokens)
  POSTMARK_RELAY_CONFIG             config file, when -c is not given
  POSTMARK_RELAY_<SECTION>__<KEY>   override any key, e.g. POSTMARK_RELAY_SERVER__LISTEN=127.0.0.1:2525
  RUST_LOG                          log filter; wins over log.level

Exit codes: 0 ok, 64 bad usage or configuration, 1 runtime failure
(sendmail: 75 relay unreachable or temporary failure, 69 rejected).
Reference for every key: docs/REFERENCE.md (and the commented config/relay.toml).";
