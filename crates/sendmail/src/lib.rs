//! `sendmail`: sendmail(8)-compatible submission, for PHP's `mail()`, cron
//! and every tool that pipes a message into `/usr/sbin/sendmail`. Reads the
//! message from stdin and hands it over SMTP (mail-send's client) to the
//! running relay at the first `server.listen` address; the daemon does the
//! queueing and delivery, so this needs no access to the queue.
//!
//! Exit codes (sysexits): 0 sent, 64 usage, 69 rejected for good, 74 stdin
//! unreadable, 75 relay unreachable or temporary failure (callers retry).

#![forbid(unsafe_code)]

mod args;
mod message;
mod session;
mod submit;

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use args::{ArgsError, Options, USAGE};
use message::{read_message, Message};
use relay_config::{Sendmail, Unqualified};
use relay_message::{mailbox, to_crlf};
pub use submit::dial_address;
use submit::{submit, Envelope, SubmitError, Timeouts};

/// sysexits' EX_USAGE: bad command line or configuration.
const EX_USAGE: u8 = 64;
/// sysexits' EX_NOUSER: a recipient has no address.
const EX_NOUSER: u8 = 67;
/// sysexits' EX_UNAVAILABLE: the relay refused the message for good.
const EX_UNAVAILABLE: u8 = 69;
/// sysexits' EX_IOERR: the message could not be read.
const EX_IOERR: u8 = 74;
/// sysexits' EX_TEMPFAIL: try again later (relay down, or a `4xx`).
pub(crate) const EX_TEMPFAIL: u8 = 75;

/// Whether the binary was started under the name `sendmail` (e.g. through
/// a `/usr/sbin/sendmail` symlink), so `main` behaves as sendmail(8)
/// instead of parsing our own command line.
pub fn invoked_as_sendmail() -> bool {
    std::env::args_os()
        .next()
        .is_some_and(|arg0| Path::new(&arg0).file_name() == Some("sendmail".as_ref()))
}

/// Runs sendmail with its raw arguments; `config` is the global `-c` of
/// `postmark-relay -c FILE sendmail ...` (a `-c` among `args` wins).
pub fn run(config: Option<PathBuf>, args: Vec<String>) -> ExitCode {
    let opts = match args::parse(&args) {
        Ok(opts) => opts,
        Err(ArgsError::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(ArgsError::Usage(problem)) => {
            eprintln!("sendmail: {problem}\n{USAGE}");
            return ExitCode::from(EX_USAGE);
        }
        Err(ArgsError::Unsupported(what)) => {
            eprintln!("sendmail: not supported by postmark-relay: {what}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if opts.recipients.is_empty() && !opts.recipients_from_headers && !opts.smtp_session {
        eprintln!("sendmail: no recipients: give them as arguments, or use -t to take them from To:, Cc: and Bcc:\n{USAGE}");
        return ExitCode::from(EX_USAGE);
    }
    let relay = match relay_config::load_submission(opts.config.as_deref().or(config.as_deref())) {
        Ok(relay) => relay,
        Err(e) => {
            eprintln!("sendmail: cannot find the relay's address in the postmark-relay configuration:\n{e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if opts.smtp_session {
        return session::proxy(dial_address(relay.listen), &relay.listen_from);
    }
    let raw = match read_message(&mut io::stdin().lock(), opts.ignore_dots) {
        Ok(raw) => raw,
        Err(e) => {
            eprintln!("sendmail: cannot read the message from standard input: {e}");
            return ExitCode::from(EX_IOERR);
        }
    };
    let local_user = format!("{}@{}", login_name(), relay.hostname);
    let Some(mut prepared) = prepare(&opts, &raw, &local_user) else {
        eprintln!("sendmail: no recipients: the message has no To:, Cc: or Bcc: addresses and none were given");
        return ExitCode::from(EX_USAGE);
    };
    prepared.recipients = match qualify(&relay.sendmail, &prepared.recipients) {
        Ok(recipients) => recipients,
        Err(Unqualified(name)) => {
            eprintln!(
                "sendmail: recipient `{name}` is a bare local name, and Postmark delivers only to full addresses: \
                 map it in [sendmail] aliases ({name} = \"you@example.com\") or set sendmail.domain ({})",
                relay.sendmail_from
            );
            return ExitCode::from(EX_NOUSER);
        }
    };
    let envelope = Envelope {
        sender: &prepared.sender,
        recipients: &prepared.recipients,
        data: &prepared.data,
    };
    let addr = dial_address(relay.listen);
    // One connection, one message: a current-thread runtime is enough.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            // Out of file descriptors or memory: worth a retry later.
            eprintln!("sendmail: cannot start the async runtime: {e}");
            return ExitCode::from(EX_TEMPFAIL);
        }
    };
    match runtime.block_on(submit(addr, "localhost", &envelope, Timeouts::default())) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "sendmail: {e}");
            if matches!(e, SubmitError::Unreachable(_)) {
                let _ = writeln!(io::stderr(), "{}", where_from(addr, &relay.listen_from));
            }
            ExitCode::from(match e {
                SubmitError::Unreachable(_) | SubmitError::Temporary(_) => EX_TEMPFAIL,
                SubmitError::Permanent(_) => EX_UNAVAILABLE,
            })
        }
    }
}

/// The envelope and bytes to submit.
#[derive(Debug, PartialEq, Eq)]
struct Prepared {
    sender: String,
    recipients: Vec<String>,
    data: Vec<u8>,
}

/// Applies the sendmail rules to the message read from stdin: recipients
/// (arguments, plus To/Cc/Bcc with `-t`, Bcc then removed), the envelope
/// sender (`-f`, else the From: address with `-t`, else `local_user`), and
/// a `From:` header when there is none. `None` when nobody would get it.
fn prepare(opts: &Options, raw: &[u8], local_user: &str) -> Option<Prepared> {
    let mut message = Message::parse(&to_crlf(raw));
    let mut recipients = opts.recipients.clone();
    if opts.recipients_from_headers {
        recipients.extend(message.addresses(&["To", "Cc", "Bcc"]));
        message.remove("Bcc");
    }
    let mut seen = HashSet::new();
    recipients.retain(|r| !r.is_empty() && seen.insert(r.to_ascii_lowercase()));
    if recipients.is_empty() {
        return None;
    }
    let header_from = message.addresses(&["From"]).into_iter().next();
    let sender = match (&opts.sender, header_from) {
        (Some(sender), _) => sender.clone(),
        (None, Some(from)) if opts.recipients_from_headers && !from.is_empty() => from,
        _ => local_user.to_string(),
    };
    if !message.has("From") {
        let address = if sender.is_empty() {
            local_user
        } else {
            &sender
        };
        message.prepend("From", &mailbox(opts.full_name.as_deref(), address));
    }
    Some(Prepared {
        sender,
        recipients,
        data: message.to_bytes(),
    })
}

/// The line that follows "cannot reach the relay": where its address came
/// from, so the operator knows what to check.
pub(crate) fn where_from(addr: std::net::SocketAddr, listen_from: &str) -> String {
    format!(
        "sendmail: the relay's address {addr} comes from {listen_from}; is `postmark-relay serve` running there?"
    )
}

/// Every recipient as full addresses (aliases expanded, bare names
/// qualified), each once; the first bare name that has no address.
fn qualify(sendmail: &Sendmail, recipients: &[String]) -> Result<Vec<String>, Unqualified> {
    let mut seen = HashSet::new();
    let mut qualified = Vec::with_capacity(recipients.len());
    for recipient in recipients {
        for address in sendmail.qualify(recipient)? {
            if seen.insert(address.to_ascii_lowercase()) {
                qualified.push(address);
            }
        }
    }
    Ok(qualified)
}

/// The invoking user, as sendmail finds it: `$USER`, `$LOGNAME`, else root.
fn login_name() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "root".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(line: &str) -> Options {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        args::parse(&args).unwrap()
    }

    const LOCAL: &str = "www-data@relay.test";

    #[test]
    fn t_takes_to_cc_bcc_and_drops_bcc() {
        let raw = b"From: Shop <shop@x.com>\nTo: Ann <ann@y.com>, bob@z.com\nCc: carl@y.com\nBcc: eve@y.com,\n  Ann@Y.com\nSubject: s\n\nhi\n";
        let p = prepare(&opts("-t -i"), raw, LOCAL).unwrap();
        assert_eq!(
            p.recipients,
            ["ann@y.com", "bob@z.com", "carl@y.com", "eve@y.com"]
        );
        assert_eq!(p.sender, "shop@x.com");
        assert_eq!(
            p.data,
            b"From: Shop <shop@x.com>\r\nTo: Ann <ann@y.com>, bob@z.com\r\nCc: carl@y.com\r\nSubject: s\r\n\r\nhi\r\n"
        );
    }

    #[test]
    fn explicit_recipients_and_f_set_the_envelope() {
        let raw = b"From: shop@x.com\nTo: shown@y.com\nBcc: kept@y.com\n\nhi\n";
        let p = prepare(&opts("-f bounce@x.com a@b.com,c@d.com"), raw, LOCAL).unwrap();
        assert_eq!(p.sender, "bounce@x.com");
        assert_eq!(p.recipients, ["a@b.com", "c@d.com"]);
        // Without -t the headers are left alone.
        assert!(String::from_utf8(p.data)
            .unwrap()
            .contains("Bcc: kept@y.com"));
        // Without -f and -t the sender is the local user, not From:.
        let p = prepare(&opts("a@b.com"), raw, LOCAL).unwrap();
        assert_eq!(p.sender, LOCAL);
    }

    #[test]
    fn from_is_added_when_missing() {
        let raw = b"To: a@b.com\nSubject: s\n\nhi\n";
        let p = prepare(&opts("-t"), raw, LOCAL).unwrap();
        assert!(p
            .data
            .starts_with(format!("From: {LOCAL}\r\nTo:").as_bytes()));
        let p = prepare(&opts("-t -FShop"), raw, LOCAL).unwrap();
        assert!(p
            .data
            .starts_with(format!("From: Shop <{LOCAL}>\r\nTo:").as_bytes()));
        let args = ["-t", "-F", "Web Shop", "-f", "shop@x.com"].map(String::from);
        let p = prepare(&args::parse(&args).unwrap(), raw, LOCAL).unwrap();
        assert!(p
            .data
            .starts_with(b"From: Web Shop <shop@x.com>\r\nTo: a@b.com\r\n"));
        assert_eq!(p.sender, "shop@x.com");
        // The null sender does not make an empty From:.
        let p = prepare(&opts("-f <> a@b.com"), raw, LOCAL).unwrap();
        assert_eq!(p.sender, "");
        assert!(p.data.starts_with(format!("From: {LOCAL}\r\n").as_bytes()));
    }

    #[test]
    fn no_recipients_is_none() {
        let raw = b"To: undisclosed-recipients:;\nSubject: s\n\nhi\n";
        assert_eq!(prepare(&opts("-t"), raw, LOCAL), None);
    }

    #[test]
    fn lone_dot_ends_the_message_without_i() {
        let raw = read_message(&mut &b"To: a@b.com\n\nbefore\n.\nafter\n"[..], false).unwrap();
        let p = prepare(&opts("-t"), &raw, LOCAL).unwrap();
        assert!(p.data.ends_with(b"\r\nbefore\r\n"));
        let raw = read_message(&mut &b"To: a@b.com\n\nbefore\n.\nafter\n"[..], true).unwrap();
        let p = prepare(&opts("-t -i"), &raw, LOCAL).unwrap();
        assert!(p.data.ends_with(b"\r\nbefore\r\n.\r\nafter\r\n"));
    }
}
