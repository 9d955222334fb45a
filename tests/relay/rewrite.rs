//! Sender rewriting (`[rewrite]`): an app sending as `root@localhost` gets
//! through a Postmark that rejects unverified senders, verified mail passes
//! untouched, rules route on what the app sent, and it is off by default.

use std::time::Duration;

use crate::harness::*;

const REWRITE: &str = "##
[rewrite]
verified_domains = [\"example.com\"]
sender = \"noreply@example.com\"
";

const CRON: &[u8] = b"From: Cron Daemon <root@localhost>\r\nTo: ops@example.net\r\nSubject: cron output\r\n\r\nall good\r\n";

/// A fake that rejects `localhost` senders, like Postmark without a Sender
/// Signature for it.
fn strict() -> FakePostmark {
    FakePostmark::start(FakeOptions {
        unverified_domains: vec!["localhost".into()],
        ..Default::default()
    })
}

#[test]
fn root_at_localhost_is_rewritten_and_delivered_with_the_original_kept() {
    let (t, b) = (strict(), fake());
    let mut relay = relay_for(&t, &b, REWRITE);
    let reply = send(relay.addr, "root@localhost", &["ops@example.net"], CRON);
    assert!(reply.starts_with("250"), "{reply}");
    let id = queue_id(&reply);

    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "{:#?}", relay.logs());
    let m = &got[0];
    assert_eq!(m.mail_from, "noreply@example.com");
    assert_eq!(m.rcpt_to, ["ops@example.net"]);
    assert_eq!(
        header_values(&m.data, "From"),
        ["Cron Daemon <noreply@example.com>"]
    );
    assert_eq!(
        header_values(&m.data, "Reply-To"),
        ["Cron Daemon <root@localhost>"]
    );
    assert_eq!(
        header_values(&m.data, "X-Original-From"),
        ["Cron Daemon <root@localhost>"]
    );
    assert_eq!(header_values(&m.data, "Subject"), ["cron output"]);
    assert!(m.data.ends_with(b"\r\n\r\nall good\r\n"), "body kept");

    let line = relay.wait_log("Sender rewritten.", Duration::from_secs(5));
    assert!(line.contains(&format!("queue_id={id}")), "{line}");
    assert!(line.contains("original_sender=root@localhost"), "{line}");
    assert!(line.contains("sender=noreply@example.com"), "{line}");
    assert_eq!(relay.count_log_for(&id, "Recipient failed permanently."), 0);
}

#[test]
fn a_verified_sender_arrives_byte_identical_to_a_run_without_rewriting() {
    let run = |extra: &str| {
        let (t, b) = (fake(), fake());
        let relay = relay_for(&t, &b, extra);
        let body = message("verified");
        let reply = send(relay.addr, "app@example.com", &["u@example.net"], &body);
        assert!(reply.starts_with("250"), "{reply}");
        let got = settle(&relay, &t, Duration::from_secs(20));
        assert_eq!(got.len(), 1);
        assert_eq!(relay.count_log("Sender rewritten."), 0);
        got.into_iter().next().unwrap()
    };
    let plain = run("");
    let rewriting = run(REWRITE);
    assert_eq!(rewriting.mail_from, "app@example.com");
    assert_eq!(rewriting.mail_from, plain.mail_from);
    assert_eq!(
        strip_added_headers(&rewriting.data),
        strip_added_headers(&plain.data)
    );
    assert_eq!(
        strip_added_headers(&rewriting.data),
        &message("verified")[..]
    );
    assert!(header_values(&rewriting.data, "X-Original-From").is_empty());
    assert!(header_values(&rewriting.data, "Reply-To").is_empty());
}

#[test]
fn rules_route_on_the_original_sender() {
    let (t, b) = (fake(), strict());
    let rule = format!(
        "{REWRITE}
[[routing.rules]]
name = \"cron\"
sender = \"root@localhost\"
upstream = \"broadcast\"
"
    );
    let relay = relay_for(&t, &b, &rule);
    let reply = send(relay.addr, "root@localhost", &["ops@example.net"], CRON);
    assert!(reply.starts_with("250"), "{reply}");
    let got = settle(&relay, &b, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "{:#?}", relay.logs());
    assert_eq!(got[0].mail_from, "noreply@example.com");
    assert!(t.messages().is_empty(), "went to transactional");
}

#[test]
fn rewriting_is_off_by_default_and_postmark_rejects_the_unverified_sender() {
    let (t, b) = (strict(), fake());
    let mut relay = relay_for(&t, &b, "");
    let reply = send(relay.addr, "root@localhost", &["ops@example.net"], CRON);
    assert!(reply.starts_with("250"), "{reply}");
    let id = queue_id(&reply);

    let line = relay.wait_log("Recipient failed permanently.", Duration::from_secs(20));
    assert!(line.contains(&format!("queue_id={id}")), "{line}");
    assert!(line.contains("Sender Signatures"), "{line}");
    assert!(t.messages().is_empty());
    assert_eq!(relay.count_log("Sender rewritten."), 0);
}
