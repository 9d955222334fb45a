//! `send-test`: one small message straight to the upstream its stream
//! belongs to (not through the queue), so an operator sees Postmark's own
//! reply — or why it refused, with the fix — in one command.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use relay_config::Config;
use relay_delivery::probe::send_test;

use crate::cli::SendTestArgs;

/// sysexits' EX_USAGE: an address that cannot go into a header.
const EX_USAGE: u8 = 64;

/// Sends the test message; prints the final reply (stdout) or the failure
/// with its fix (stderr).
pub fn run(config: &Config, args: &SendTestArgs) -> ExitCode {
    let from = args
        .from
        .clone()
        .unwrap_or_else(|| format!("postmark-relay@{}", config.server.hostname));
    for (option, address) in [("--to", args.to.as_str()), ("--from", from.as_str())] {
        if !plain_address(address) {
            eprintln!("postmark-relay send-test: {option} {address:?} is not a plain address like user@example.com");
            return ExitCode::from(EX_USAGE);
        }
    }
    let stream = match (&args.stream, args.broadcast) {
        (Some(stream), _) => Some(stream.as_str()),
        (None, true) => Some("broadcast"),
        (None, false) => None,
    };
    let name = upstream_for(config, stream);
    let up = match relay_delivery::probe::target(config, &name) {
        Ok(up) => up,
        Err(failure) => {
            eprintln!("postmark-relay send-test: upstream {name}: {failure}");
            return ExitCode::FAILURE;
        }
    };
    let message = build_message(&Message {
        from: &from,
        to: &args.to,
        stream,
        hostname: &config.server.hostname,
        upstream: &format!("{name} ({}:{})", up.host, up.port),
        now: SystemTime::now(),
    });
    eprintln!(
        "Sending a test message from {from} to {} via {name} ({}:{}), stream {}.",
        args.to,
        up.host,
        up.port,
        stream.unwrap_or("(default)")
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("postmark-relay send-test: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(send_test(&up, &from, &args.to, &message)) {
        Ok(reply) => {
            println!("{reply}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("postmark-relay send-test: {failure}");
            ExitCode::FAILURE
        }
    }
}

/// The upstream a message with `X-PM-Message-Stream: stream` goes to, as
/// the relay routes it (an upstream's `streams`, then `broadcast_streams`,
/// else transactional); no stream: transactional.
fn upstream_for(config: &Config, stream: Option<&str>) -> String {
    match stream {
        Some(stream) => {
            let header = format!("X-PM-Message-Stream: {stream}\r\n\r\n");
            relay_routing::Router::new(&config.routing)
                .route("", header.as_bytes())
                .upstream
        }
        None => "transactional".to_string(),
    }
}

/// Something that can go into `MAIL FROM:<…>` and a header unchanged.
fn plain_address(address: &str) -> bool {
    address.contains('@')
        && !address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | '"'))
}

/// What the test message says.
struct Message<'a> {
    from: &'a str,
    to: &'a str,
    stream: Option<&'a str>,
    hostname: &'a str,
    /// Name and address of the upstream, for the body.
    upstream: &'a str,
    now: SystemTime,
}

/// The test message, CRLF line endings, not dot-stuffed.
fn build_message(m: &Message<'_>) -> Vec<u8> {
    let date = relay_message::rfc5322(m.now);
    let nanos = m
        .now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut text = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: postmark-relay test message\r\nDate: {date}\r\nMessage-ID: <test.{nanos}.{pid}@{host}>\r\n",
        from = m.from,
        to = m.to,
        pid = std::process::id(),
        host = m.hostname,
    );
    if let Some(stream) = m.stream {
        text.push_str(&format!("X-PM-Message-Stream: {stream}\r\n"));
    }
    text.push_str(&format!(
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         This is a test message sent by `postmark-relay send-test` on {host}\r\n\
         at {date}, directly to the {upstream} upstream.\r\n\
         If you can read it, the relay can deliver through Postmark.\r\n",
        host = m.hostname,
        upstream = m.upstream,
    ));
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_carries_its_stream_only_when_asked() {
        let m = Message {
            from: "a@b.test",
            to: "c@d.test",
            stream: Some("broadcast"),
            hostname: "relay.test",
            upstream: "broadcast (h:1)",
            now: UNIX_EPOCH,
        };
        let text = String::from_utf8(build_message(&m)).unwrap();
        assert!(text.contains("\r\nX-PM-Message-Stream: broadcast\r\n"));
        assert!(text.contains("Subject: postmark-relay test message\r\n"));
        assert_eq!(text.matches('\n').count(), text.matches("\r\n").count());
        let plain = build_message(&Message { stream: None, ..m });
        assert!(!String::from_utf8(plain)
            .unwrap()
            .contains("X-PM-Message-Stream"));
    }

    #[test]
    fn addresses_that_would_break_headers_are_refused() {
        assert!(plain_address("user@example.com"));
        assert!(!plain_address("user@example.com\r\nBcc: x@y"));
        assert!(!plain_address("<user@example.com>"));
        assert!(!plain_address("nobody"));
    }
}
