//! Limits and protocol order over TCP, answered with the RFC codes of
//! docs/REFERENCE.md.

use std::time::{Duration, Instant};

use crate::harness::*;

fn hello(c: &mut Client) {
    let r = c.cmd("EHLO test.client");
    assert!(r.starts_with("250"), "{r}");
}

#[test]
fn max_message_size_refuses_a_declared_size_and_an_oversize_body_then_takes_a_good_one() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "max_message_size = 1000");
    let (mut c, _) = Client::connect(relay.addr);
    hello(&mut c);
    let r = c.cmd("MAIL FROM:<a@x.example> SIZE=5000");
    assert!(r.starts_with("552 5.3.4"), "SIZE=5000: {r}");

    let r = c.cmd("MAIL FROM:<a@x.example>");
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("RCPT TO:<u@example.net>");
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("DATA");
    assert!(r.starts_with("354"), "{r}");
    c.send_raw(b"Subject: big\r\n\r\n");
    for _ in 0..40 {
        c.send_raw(&[b'x'; 78]);
        c.send_raw(b"\r\n");
    }
    c.send_raw(b".\r\n");
    let r = c.read_reply();
    assert!(r.starts_with("552 5.3.4"), "oversize DATA: {r}");

    let r = c.cmd("MAIL FROM:<a@x.example>");
    assert!(r.starts_with("250"), "after a refused DATA: {r}");
    let r = c.cmd("RCPT TO:<u@example.net>");
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("DATA");
    assert!(r.starts_with("354"), "{r}");
    c.send_raw(b"Subject: small\r\n\r\nfits\r\n.\r\n");
    let r = c.read_reply();
    assert!(r.starts_with("250"), "good message: {r}");
    c.cmd("QUIT");

    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(&got, &["small".to_string()]);
}

#[test]
fn max_recipients_answers_452_to_one_too_many() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "max_recipients = 2");
    let (mut c, _) = Client::connect(relay.addr);
    hello(&mut c);
    assert!(c.cmd("MAIL FROM:<a@x.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<one@example.net>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<two@example.net>").starts_with("250"));
    let r = c.cmd("RCPT TO:<three@example.net>");
    assert!(r.starts_with("452 4.5.3"), "third RCPT: {r}");
}

#[test]
fn max_connections_answers_421_to_the_next_connection() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "max_connections = 2");
    let (_c1, g1) = Client::connect(relay.addr);
    let (_c2, g2) = Client::connect(relay.addr);
    assert!(g1.starts_with("220") && g2.starts_with("220"), "{g1}{g2}");
    let (mut c3, g3) = Client::connect(relay.addr);
    assert!(g3.starts_with("421"), "third connection: {g3}");
    assert!(c3.closed(), "connection left open after 421");
}

#[test]
fn a_client_outside_allowed_networks_gets_554_at_connect() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, r#"allowed_networks = ["10.0.0.0/8"]"#);
    let (_c, greeting) = Client::connect(relay.addr);
    assert!(greeting.starts_with("554"), "{greeting}");
}

#[test]
fn a_5000_byte_command_line_gets_500_and_the_session_goes_on() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let (mut c, _) = Client::connect(relay.addr);
    hello(&mut c);
    let line = format!("MAIL FROM:<{}@x.example>", "a".repeat(5000));
    let r = c.cmd(&line);
    assert!(r.starts_with("500"), "{r}");
    let r = c.cmd("NOOP");
    assert!(r.starts_with("250"), "after a long line: {r}");
}

#[test]
fn an_idle_client_gets_421_after_the_command_timeout() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, r#"command_timeout = "1s""#);
    let started = Instant::now();
    let (mut c, _) = Client::connect(relay.addr);
    let r = c.read_reply();
    let waited = started.elapsed();
    assert!(r.starts_with("421"), "{r}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(6),
        "421 after {waited:?}"
    );
    assert!(c.closed());
}

#[test]
fn commands_out_of_order_get_503() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let (mut c, _) = Client::connect(relay.addr);
    let r = c.cmd("MAIL FROM:<a@x.example>");
    assert!(r.starts_with("503"), "MAIL before EHLO: {r}");
    hello(&mut c);
    let r = c.cmd("RCPT TO:<u@example.net>");
    assert!(r.starts_with("503 5.5.1"), "RCPT before MAIL: {r}");
}

/// Every refused command is in the log at info with the client, the
/// command and the reply (a recipient refused at RCPT, a size refused at
/// MAIL FROM), and an AUTH argument never is.
#[test]
fn refused_commands_are_logged_with_client_command_and_reply() {
    let (t, b) = (fake(), fake());
    let mut relay = relay_for(&t, &b, "max_message_size = 1000");
    let (mut c, _) = Client::connect(relay.addr);
    hello(&mut c);
    let r = c.cmd("MAIL FROM:<a@x.example> SIZE=5000");
    assert!(r.starts_with("552"), "{r}");
    assert!(c.cmd("MAIL FROM:<a@x.example>").starts_with("250"));
    let r = c.cmd("RCPT TO:<root>");
    assert!(r.starts_with('5'), "{r}");
    let r = c.cmd("AUTH PLAIN AGFwcABzM2NyZXQtcGFzcw==");
    assert!(r.starts_with('5'), "{r}");
    c.cmd("QUIT");
    let size = relay.wait_log("SIZE=5000", Duration::from_secs(10));
    assert!(
        size.contains("Refused a command.") && size.contains("552") && size.contains("peer="),
        "{size}"
    );
    let rcpt = relay.wait_log("RCPT TO:<root>", Duration::from_secs(10));
    assert!(
        rcpt.contains("Refused a command.") && rcpt.contains("reply=5"),
        "{rcpt}"
    );
    relay.wait_log("command=AUTH PLAIN", Duration::from_secs(10));
    assert!(
        relay
            .logs()
            .iter()
            .all(|l| !l.contains("AGFwcABzM2NyZXQtcGFzcw")),
        "an AUTH argument was logged"
    );
}
