//! The four routing paths of docs/REFERENCE.md: stream header to broadcast, stream
//! header to transactional, a rule, and the default.

use std::time::Duration;

use crate::harness::*;

const NEWSLETTER_RULE: &str = r#"##
[[routing.rules]]
name = "newsletters"
sender = "*@news.example.com"
upstream = "broadcast"
stream = "newsletter"
"#;

fn with_stream(stream: &str) -> Vec<u8> {
    format!(
        "From: app@example.com\r\nTo: u@example.net\r\nSubject: s\r\nX-PM-Message-Stream: {stream}\r\n\r\nhi\r\n"
    )
    .into_bytes()
}

/// Sends `body` from `sender` and returns the one message each fake got
/// (`None` for the fake that got nothing).
fn route(sender: &str, body: &[u8]) -> (Option<Received>, Option<Received>) {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, NEWSLETTER_RULE);
    let reply = send(relay.addr, sender, &["u@example.net"], body);
    assert!(reply.starts_with("250"), "{reply}");
    settle_all(&relay, &[&t, &b], Duration::from_secs(20));
    let (tm, bm) = (t.messages(), b.messages());
    assert!(
        tm.len() + bm.len() == 1,
        "delivered {} + {} times",
        tm.len(),
        bm.len()
    );
    (tm.into_iter().next(), bm.into_iter().next())
}

#[test]
fn stream_header_broadcasts_goes_to_the_broadcast_upstream_with_the_header_kept_once() {
    let (t, b) = route("app@example.com", &with_stream("broadcasts"));
    assert!(t.is_none(), "went to transactional");
    let m = b.unwrap();
    assert_eq!(
        header_values(&m.data, "X-PM-Message-Stream"),
        ["broadcasts"]
    );
}

#[test]
fn the_stream_header_name_matches_case_insensitively() {
    let body =
        b"From: app@example.com\r\nSubject: s\r\nx-pm-message-stream: broadcast\r\n\r\nhi\r\n";
    let (t, b) = route("app@example.com", body);
    assert!(t.is_none(), "went to transactional");
    assert_eq!(
        header_values(&b.unwrap().data, "X-PM-Message-Stream"),
        ["broadcast"]
    );
}

#[test]
fn stream_header_outbound_goes_to_the_transactional_upstream() {
    let (t, b) = route("app@example.com", &with_stream("outbound"));
    assert!(b.is_none(), "went to broadcast");
    let m = t.unwrap();
    assert_eq!(header_values(&m.data, "X-PM-Message-Stream"), ["outbound"]);
}

#[test]
fn a_sender_rule_routes_to_broadcast_and_adds_its_stream_header_once() {
    let (t, b) = route("weekly@news.example.com", &message("news"));
    assert!(t.is_none(), "went to transactional");
    let m = b.unwrap();
    assert_eq!(m.mail_from, "weekly@news.example.com");
    assert_eq!(
        header_values(&m.data, "X-PM-Message-Stream"),
        ["newsletter"]
    );
}

#[test]
fn mail_without_header_or_matching_rule_goes_to_transactional_without_a_stream_header() {
    let (t, b) = route("app@example.com", &message("plain"));
    assert!(b.is_none(), "went to broadcast");
    let m = t.unwrap();
    assert!(
        header_values(&m.data, "X-PM-Message-Stream").is_empty(),
        "{}",
        String::from_utf8_lossy(&m.data)
    );
}
