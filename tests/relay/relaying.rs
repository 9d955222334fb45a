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

/// An 8-bit body (UTF-8 text sent without any transfer encoding, as many
/// apps do, declared or not) is relayed with `BODY=8BITMIME` (RFC 6152),
/// byte for byte; a 7-bit one without it.
#[test]
fn an_8bit_body_is_declared_upstream_with_body_8bitmime() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let eight =
        "From: app@example.com\r\nSubject: eight\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße, café ✓\r\n";
    let (mut c, _) = Client::connect(relay.addr);
    assert!(c.cmd("EHLO app.example").contains("8BITMIME"));
    assert!(c
        .cmd("MAIL FROM:<app@example.com> BODY=8BITMIME")
        .starts_with("250"));
    assert!(c.cmd("RCPT TO:<u@example.net>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send_raw(eight.as_bytes());
    c.send_raw(b".\r\n");
    assert!(c.read_reply().starts_with("250"));
    c.cmd("QUIT");
    // Undeclared by the client: still 8-bit, still declared upstream.
    let undeclared = eight.replace("Subject: eight", "Subject: undeclared");
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        undeclared.as_bytes(),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("seven"),
    );
    assert!(reply.starts_with("250"), "{reply}");

    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_eq!(got.len(), 3);
    for m in &got {
        let tag = subject(m);
        assert_eq!(m.body_8bit, tag != "seven", "{tag}: BODY=8BITMIME");
    }
    let first = got.iter().find(|m| subject(m) == "eight").unwrap();
    assert!(String::from_utf8_lossy(strip_added_headers(&first.data)).contains("Grüße, café ✓"));
}

/// Postmark's SMTP service does not offer SMTPUTF8: a non-ASCII address,
/// or SMTPUTF8 asked for, is refused at once with `553 5.6.7` and a reason,
/// instead of a `250` that could only fail later, out of the app's sight.
#[test]
fn non_ascii_addresses_are_refused_with_553_at_mail_and_rcpt() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let (mut c, _) = Client::connect(relay.addr);
    let ehlo = c.cmd("EHLO app.example");
    assert!(!ehlo.contains("SMTPUTF8"), "{ehlo}");
    let r = c.cmd("MAIL FROM:<jörg@example.com>");
    assert!(r.starts_with("553 5.6.7") && r.contains("SMTPUTF8"), "{r}");
    let r = c.cmd("MAIL FROM:<app@example.com> SMTPUTF8");
    assert!(r.starts_with("553 5.6.7"), "{r}");
    assert!(c.cmd("MAIL FROM:<app@example.com>").starts_with("250"));
    let r = c.cmd("RCPT TO:<用户@example.net>");
    assert!(r.starts_with("553 5.6.7"), "{r}");
    assert!(c.cmd("RCPT TO:<u@example.net>").starts_with("250"));
    c.cmd("QUIT");
}
