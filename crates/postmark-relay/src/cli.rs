//! The command line: `postmark-relay [-c FILE] <command>`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    Serve,
    /// Print the effective configuration (file + environment + defaults),
    /// with the token redacted.
    Config,
}

const ENV_HELP: &str = "\
Environment:
  POSTMARK_SERVER_TOKEN             the Server API Token (Postmark: Servers → your server → API Tokens)
  POSTMARK_RELAY_CONFIG             config file, when -c is not given
  POSTMARK_RELAY_<SECTION>__<KEY>   override any key, e.g. POSTMARK_RELAY_SERVER__LISTEN=127.0.0.1:2525
  RUST_LOG                          log filter; wins over log.level

Exit codes: 0 ok, 64 bad usage or configuration, 1 runtime failure.
Reference for every key: config/relay.toml.";
