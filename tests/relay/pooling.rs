//! Delivery reuses a small pool of upstream sessions and respects
//! Postmark's 50-recipients-per-message limit.

use std::collections::HashMap;
use std::time::Duration;

use crate::harness::*;

#[test]
fn twenty_messages_on_separate_connections_reuse_at_most_two_upstream_sessions() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let subjects: Vec<String> = (0..20).map(|i| format!("pooled-{i}")).collect();
    send_concurrently(relay.addr, &subjects, 4);

    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(&got, &subjects);
    assert!(
        t.logins() <= 2,
        "{} logins for 20 messages with connections = 2",
        t.logins()
    );
    assert!(b.messages().is_empty());
}

#[test]
fn a_message_to_120_recipients_goes_up_in_batches_of_at_most_50() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let rcpts: Vec<String> = (0..120).map(|i| format!("r{i:03}@example.net")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let reply = send(relay.addr, "app@example.com", &refs, &message("many"));
    assert!(reply.starts_with("250"), "{reply}");

    let got = settle(&relay, &t, Duration::from_secs(20));
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for m in &got {
        assert!(
            m.rcpt_to.len() <= 50,
            "{} RCPTs in one transaction",
            m.rcpt_to.len()
        );
        assert_eq!(m.mail_from, "app@example.com");
        assert_eq!(subject(m), "many");
        for r in &m.rcpt_to {
            *seen.entry(r.as_str()).or_default() += 1;
        }
    }
    let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "delivered more than once: {dupes:?}");
    let mut delivered: Vec<&str> = seen.keys().copied().collect();
    delivered.sort_unstable();
    assert_eq!(delivered, refs, "recipients delivered");
}
