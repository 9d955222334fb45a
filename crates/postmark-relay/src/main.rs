//! `postmark-relay`: parses the command line, loads the config, and hands
//! over to the command. No protocol logic lives here.
#![forbid(unsafe_code)]

mod cli;
mod logging;
mod serve;
mod store;

use std::process::ExitCode;

use clap::Parser;

/// sysexits' EX_USAGE: bad command line or configuration.
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version land here too, and exit 0.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EX_USAGE);
        }
    };
    let loaded = match relay_config::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("postmark-relay: invalid configuration:\n{e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    match cli.command {
        cli::Command::Config => {
            print!("{}", relay_config::to_redacted_toml(&loaded.config));
            ExitCode::SUCCESS
        }
        cli::Command::Serve => {
            logging::init(&loaded.config.log);
            match serve::run(loaded) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("postmark-relay: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
