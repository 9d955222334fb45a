//! `postmark-relay hash-password`: reads one password from standard input
//! and prints its argon2id PHC string, for `[[clients]] password_hash`.
//! On a terminal the password is typed twice without echo; otherwise the
//! first line of input is the password (scripts: `echo "$PW" | ...`).

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use argon2::{Argon2, PasswordHasher};
use rustix::termios::{self, LocalModes, OptionalActions};

use crate::EX_USAGE;

pub fn run() -> ExitCode {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        match typed_twice(&stdin) {
            Ok(Some(p)) => p,
            Ok(None) => {
                eprintln!("postmark-relay: the two passwords differ; nothing printed");
                return ExitCode::from(EX_USAGE);
            }
            Err(e) => {
                eprintln!("postmark-relay: cannot read the password: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        match read_line(&mut stdin.lock()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("postmark-relay: cannot read the password from standard input: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    if password.is_empty() {
        eprintln!("postmark-relay: the password is empty; give one on standard input");
        return ExitCode::from(EX_USAGE);
    }
    // argon2's defaults are argon2id with OWASP's recommended cost
    // (19 MiB, 2 passes): what `[[clients]] password_hash` expects.
    match Argon2::default().hash_password(password.as_bytes()) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("postmark-relay: cannot hash the password: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One line without its line ending.
fn read_line(input: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_owned())
}

/// Prompts twice on the terminal with echo off; `None` if they differ.
fn typed_twice(stdin: &std::io::Stdin) -> std::io::Result<Option<String>> {
    let _echo_off = EchoOff::new(stdin)?;
    let first = prompt(stdin, "Password: ")?;
    let second = prompt(stdin, "Again: ")?;
    Ok((first == second).then_some(first))
}

fn prompt(stdin: &std::io::Stdin, text: &str) -> std::io::Result<String> {
    let mut err = std::io::stderr();
    err.write_all(text.as_bytes())?;
    err.flush()?;
    read_line(&mut stdin.lock())
}

/// Turns terminal echo off until dropped.
struct EchoOff<'a> {
    stdin: &'a std::io::Stdin,
    saved: termios::Termios,
}

impl<'a> EchoOff<'a> {
    fn new(stdin: &'a std::io::Stdin) -> std::io::Result<Self> {
        let saved = termios::tcgetattr(stdin)?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        quiet.local_modes.insert(LocalModes::ECHONL);
        termios::tcsetattr(stdin, OptionalActions::Now, &quiet)?;
        Ok(EchoOff { stdin, saved })
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.stdin, OptionalActions::Now, &self.saved);
    }
}
