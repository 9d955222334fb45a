//! The core promise: what a client hands over arrives upstream, exactly
//! once, with the right envelope, over STARTTLS + AUTH(token, token).

use std::time::Duration;

use crate::harness::*;

#[test]
fn a_message_arrives_byte_for_byte_over_starttls_with_the_token_as_user_and_password() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let body = b"From: App <app@example.com>\r\nTo: u@example.net\r\nSubject: hello\r\nDate: Fri, 27 Nov 2026 04:41:40 +0000\r\nMessage-ID: <m1@example.com>\r\n\r\nline one\r\n..dotted\r\n";
    let reply = send(relay.addr, "app@example.com", &["u@example.net"], body);
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let id = queue_id(&reply);

    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "delivered {} times", got.len());
    let m = &got[0];
    assert!(m.tls, "relayed without TLS");
    assert_eq!(m.auth_user.as_deref(), Some(TOKEN));
    assert_eq!(m.mail_from, "app@example.com");
    assert_eq!(m.rcpt_to, ["u@example.net"]);
    let text = String::from_utf8_lossy(&m.data);
    assert!(
        text.starts_with("Received: from test.client (127.0.0.1)"),
        "{text}"
    );
    assert!(text.contains(&format!("id {id}")));
    let expected_tail: &[u8] = b"From: App <app@example.com>\r\nTo: u@example.net\r\nSubject: hello\r\nDate: Fri, 27 Nov 2026 04:41:40 +0000\r\nMessage-ID: <m1@example.com>\r\n\r\nline one\r\n.dotted\r\n";
    assert_eq!(strip_added_headers(&m.data), expected_tail);
    assert!(b.messages().is_empty());
}

/// Regression: a Subject folded into a line that reads ` Date: ...` (or
/// ` Message-ID: ...`) is still one Subject; the message has neither
/// header, so the relay adds both, and the folded Subject arrives as sent.
#[test]
fn a_folded_line_that_looks_like_a_date_does_not_stop_the_relay_adding_one() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let body = b"From: App <app@example.com>\r\nTo: u@example.net\r\nSubject: hello\r\n Date: tomorrow\r\n Message-ID: <not@header>\r\n\r\nbody\r\n";
    let reply = send(relay.addr, "app@example.com", &["u@example.net"], body);
    assert!(reply.starts_with("250"), "{reply}");

    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    let m = &got[0];
    let dates = header_values(&m.data, "Date");
    assert_eq!(dates.len(), 1, "{:?}", String::from_utf8_lossy(&m.data));
    assert!(dates[0].ends_with(" +0000"), "relay-added Date: {dates:?}");
    let ids = header_values(&m.data, "Message-ID");
    assert_eq!(ids.len(), 1, "{:?}", String::from_utf8_lossy(&m.data));
    assert!(
        ids[0].starts_with(&format!("<{}.", queue_id(&reply))),
        "{ids:?}"
    );
    assert!(
        m.data.ends_with(body),
        "the client's message is kept as sent"
    );
}
