//! What the relay does with upstream failures: transient ones are retried
//! until the message is delivered once; permanent ones are never retried.

use std::time::Duration;

use crate::harness::*;

#[test]
fn three_451s_at_end_of_data_then_delivered_exactly_once() {
    let (t, b) = (fake(), fake());
    t.fail_next_transactions(3, (451, "4.3.0 try later"));
    let relay = relay_for(&t, &b, "");
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("retry"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let id = queue_id(&reply);

    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(&got, &["retry".to_string()]);
    assert_eq!(
        relay.count_log_for(&id, "Message deferred."),
        3,
        "{:#?}",
        relay.logs()
    );
    assert_eq!(relay.count_log_for(&id, "Message relayed."), 1);
}

#[test]
fn ten_messages_accepted_while_the_upstream_is_down_are_delivered_once_when_it_is_back() {
    let (t, b) = (fake(), fake());
    let mut relay = relay_for(&t, &b, "");
    // One delivery first, so the pool holds sessions that going down cuts.
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("before"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    // Wait for the relay to have the upstream's 250, not just for the fake
    // to have recorded it: cutting the session in between would make the
    // relay send it again, which no SMTP client can avoid.
    relay.wait_log("Message relayed.", Duration::from_secs(20));
    t.set_down(true);
    let subjects: Vec<String> = (0..10).map(|i| format!("down-{i}")).collect();
    send_concurrently(relay.addr, &subjects, 2);
    relay.wait_log("Message deferred.", Duration::from_secs(20));
    assert_eq!(t.messages().len(), 1);

    t.set_down(false);
    let got = settle(&relay, &t, Duration::from_secs(25));
    let mut want = subjects;
    want.push("before".into());
    assert_each_once(&got, &want);
}

#[test]
fn a_connection_dropped_without_a_greeting_and_a_421_at_mail_from_are_retried() {
    let (t, b) = (fake(), fake());
    t.drop_next_connections(2);
    t.fail_mail_from(1, (421, "4.3.2 service not available"));
    let relay = relay_for(&t, &b, "");
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("bumpy"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let got = settle(&relay, &t, Duration::from_secs(25));
    assert_each_once(&got, &["bumpy".to_string()]);
}

#[test]
fn a_deferral_after_a_rejected_recipient_logs_the_transient_reply_as_its_reason() {
    let (t, b) = (fake(), fake());
    t.reject_recipient("bad@example.net", (550, "5.1.1 no such user"));
    t.fail_next_transactions(1, (451, "4.3.0 try later"));
    let mut relay = relay_for(&t, &b, "");
    let rcpts = ["bad@example.net", "a@example.net"];
    let reply = send(relay.addr, "app@example.com", &rcpts, &message("mixed"));
    assert!(reply.starts_with("250"), "{reply}");
    let id = queue_id(&reply);

    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_to, ["a@example.net"]);
    assert_eq!(relay.count_log_for(&id, "Recipient failed permanently."), 1);
    let line = relay.wait_log("Message deferred.", Duration::from_secs(5));
    assert!(
        line.contains("451 4.3.0 try later"),
        "the deferral names another recipient's permanent failure as its reason: {line}"
    );
}

#[test]
fn a_550_recipient_fails_alone_and_the_others_are_delivered_once_without_retries() {
    let (t, b) = (fake(), fake());
    t.reject_recipient("bad@example.net", (550, "5.1.1 no such user"));
    let mut relay = relay_for(&t, &b, "");
    let rcpts = ["a@example.net", "bad@example.net", "c@example.net"];
    let reply = send(relay.addr, "app@example.com", &rcpts, &message("partial"));
    assert!(reply.starts_with("250"), "{reply}");
    let id = queue_id(&reply);

    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_to, ["a@example.net", "c@example.net"]);
    let line = relay.wait_log("Recipient failed permanently.", Duration::from_secs(10));
    assert!(line.contains(&format!("queue_id={id}")), "{line}");
    assert!(
        line.contains("550") && line.contains("no such user"),
        "{line}"
    );

    // `settle` waited for the queue to hold nothing waiting (the message is
    // failed, for its one bad recipient) and for the upstream to stay idle:
    // the delivered recipients were not sent again.
    assert_eq!(relay.queue_list()[0]["state"], "failed");
    assert_eq!(
        relay.count_log_for(&id, "Message deferred."),
        0,
        "{:#?}",
        relay.logs()
    );
    assert_eq!(relay.count_log_for(&id, "Recipient failed permanently."), 1);
    assert_eq!(relay.count_log_for(&id, "Message relayed."), 1);
}

#[test]
fn a_554_at_end_of_data_fails_the_message_and_it_is_never_retried() {
    let (t, b) = (fake(), fake());
    t.fail_next_transactions(1, (554, "5.6.0 content rejected"));
    let mut relay = relay_for(&t, &b, "");
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("doomed"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let id = queue_id(&reply);

    let line = relay.wait_log("Message failed", Duration::from_secs(20));
    assert!(line.contains(&format!("queue_id={id}")), "{line}");
    let connections = t.connections();

    // Failed in the queue, so never due again; and nothing went upstream.
    let listed = relay.queue_list();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["state"], "failed", "{listed:?}");
    assert_eq!(listed[0]["next_attempt_at"], serde_json::Value::Null);
    assert!(
        settle(&relay, &t, Duration::from_secs(20)).is_empty(),
        "delivered after a 554"
    );
    assert_eq!(
        relay.count_log_for(&id, "Message failed"),
        1,
        "{:#?}",
        relay.logs()
    );
    assert_eq!(relay.count_log_for(&id, "Message deferred."), 0);
    assert_eq!(relay.count_log_for(&id, "Message relayed."), 0);
    assert_eq!(
        t.connections(),
        connections,
        "new upstream connections after failing"
    );
}

/// Postmark's setup guide shows an unverified sender refused with `422`.
/// Whatever the code, and whether it comes at MAIL FROM (the envelope
/// sender) or after DATA (the `From:` header), the message fails at once
/// with the fix, is not retried for days, and stays for `queue retry`.
#[test]
fn an_unverified_sender_refused_with_422_fails_at_once_with_the_fix() {
    let t = FakePostmark::start(FakeOptions {
        unverified_domains: vec!["unverified.test".into()],
        unverified_code: 422,
        ..Default::default()
    });
    let b = fake();
    let relay = relay_for(&t, &b, "");
    let at_mail = queue_id(&send(
        relay.addr,
        "app@unverified.test",
        &["u@example.net"],
        &message("envelope"),
    ));
    let header =
        b"From: App <app@unverified.test>\r\nTo: u@example.net\r\nSubject: header\r\n\r\nhi\r\n";
    let after_data = queue_id(&send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        header,
    ));
    settle(&relay, &t, Duration::from_secs(20));
    assert!(t.messages().is_empty());
    let list = relay.queue_list();
    for id in [&at_mail, &after_data] {
        let m = list
            .iter()
            .find(|m| m["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} not in {list:#?}"));
        assert_eq!(m["state"], "failed", "{m:#}");
        assert_eq!(m["attempts"], 1, "tried once, not retried: {m:#}");
        let reply = m["recipients"][0]["reply"].as_str().unwrap();
        assert!(
            reply.starts_with("422") && reply.contains("Sender Signatures"),
            "{reply}"
        );
        assert_eq!(relay.count_log_for(id, "Message deferred."), 0);
    }
}
