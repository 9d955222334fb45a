//! `postmark-relay`: parses the command line, loads the config, sets up
//! logging and signals, and hands over to the command. The daemon itself is
//! `relay_daemon`; sendmail(8) is `relay_sendmail`.
#![forbid(unsafe_code)]

mod check;
mod cli;
mod hash_password;
mod health;
mod history_cmd;
mod logging;
mod queue_cmd;
mod send_test;
mod serve;

use std::process::ExitCode;

use clap::Parser;
use cli::Command;

/// sysexits' EX_USAGE: bad command line or configuration.
pub(crate) const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    // Installed as /usr/sbin/sendmail (a symlink), behave as sendmail(8).
    if relay_sendmail::invoked_as_sendmail() {
        return relay_sendmail::run(None, std::env::args().skip(1).collect());
    }
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version land here too, and exit 0.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EX_USAGE);
        }
    };
    if let Command::Sendmail(args) = cli.command {
        return relay_sendmail::run(cli.config, args.args);
    }
    if let Command::HashPassword = cli.command {
        return hash_password::run();
    }
    let loaded = match relay_config::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("postmark-relay: invalid configuration:\n{e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    match cli.command {
        Command::Config => {
            print!("{}", relay_config::to_redacted_toml(&loaded.config));
            ExitCode::SUCCESS
        }
        Command::Serve => {
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
        Command::Check(args) => check::run(&loaded, args.from.as_deref()),
        Command::SendTest(args) => send_test::run(&loaded.config, &args),
        Command::Queue(command) => queue_cmd::run(&loaded.config, command),
        Command::History(args) => history_cmd::run(&loaded.config, &args),
        Command::Health => health::run(&loaded.config),
        Command::Sendmail(_) | Command::HashPassword => {
            unreachable!("handled before loading the config")
        }
    }
}
