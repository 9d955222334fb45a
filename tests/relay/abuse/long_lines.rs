//! A 64 MiB line without a newline, in command state and in DATA: the relay
//! answers `500`/`552`, the session goes on, and memory stays flat (the
//! line is never buffered whole).

use std::time::Duration;

use super::{peak_rss, reset_peak, rss, MB};
use crate::harness::*;

const LINE: usize = 64 * 1024 * 1024;

/// Writes `LINE` bytes of `byte` in 1 MiB pieces.
fn send_endless_line(c: &mut Client, byte: u8) {
    let piece = vec![byte; 1024 * 1024];
    for _ in 0..LINE / piece.len() {
        c.send_raw(&piece);
    }
}

#[test]
fn a_64_mib_line_is_refused_without_buffering_it() {
    let (t, b) = (fake(), fake());
    // 1 MB: the most a DATA body may legitimately hold, so any growth
    // beyond that would be the line itself.
    let relay = relay_for(&t, &b, "max_message_size = \"1MB\"");
    let pid = relay.pid();
    // Warm up every path once (session, store, delivery) before measuring.
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("warm-up"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(settle(&relay, &t, Duration::from_secs(20)).len(), 1);
    let before = rss(pid);
    reset_peak(pid);

    let (mut c, _) = Client::connect(relay.addr);
    assert!(c.cmd("EHLO hostile.client").starts_with("250"));
    send_endless_line(&mut c, b'A');
    let reply = c.read_reply();
    assert!(reply.starts_with("500 5.5.2"), "command line: {reply}");
    c.send_raw(b"\r\n");
    let noop = c.cmd("NOOP");
    assert!(noop.starts_with("250"), "after the long line: {noop}");

    assert!(c.cmd("MAIL FROM:<app@example.com>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<u@example.net>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    send_endless_line(&mut c, b'B');
    c.send_raw(b"\r\n.\r\n");
    let reply = c.read_reply();
    assert!(reply.starts_with("552 5.3.4"), "DATA line: {reply}");
    // The session is still usable: a normal message goes through.
    assert!(c.cmd("MAIL FROM:<app@example.com>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<u@example.net>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send_raw(&message("after-long-lines"));
    let reply = c.cmd(".");
    assert!(reply.starts_with("250"), "{reply}");
    c.cmd("QUIT");

    let (after, peak) = (rss(pid), peak_rss(pid));
    let growth = after.saturating_sub(before);
    let peak_growth = peak.saturating_sub(before);
    eprintln!(
        "64 MiB lines: RSS {} MB -> {} MB, peak {} MB",
        before / MB,
        after / MB,
        peak / MB
    );
    assert!(growth < 16 * MB, "RSS grew by {growth} bytes");
    assert!(
        peak_growth < 16 * MB,
        "peak RSS grew by {peak_growth} bytes"
    );
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_eq!(got.len(), 2, "only the two normal messages go upstream");
    assert!(!relay.logs().iter().any(|l| l.contains("panicked")));
}
