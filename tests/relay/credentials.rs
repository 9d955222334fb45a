//! Token problems are not the message's fault: mail waits in the queue,
//! the log says what to fix, and nothing is lost or retried to death.

use std::time::Duration;

use crate::harness::*;

/// `id` is the queue's only message, still `queued` with no attempt made:
/// held, not tried.
fn assert_untouched(relay: &Relay, id: &str) {
    let listed = relay.queue_list();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let m = &listed[0];
    assert_eq!(m["id"], id, "{m}");
    assert_eq!(m["state"], "queued", "{m}");
    assert_eq!(m["attempts"], 0, "{m}");
    assert_eq!(m["last_error"], serde_json::Value::Null, "{m}");
}

#[test]
fn an_account_token_holds_mail_with_a_hint_and_the_right_token_after_restart_delivers_it_once() {
    let t = FakePostmark::start(FakeOptions {
        account_token: Some("acct".into()),
        ..FakeOptions::default()
    });
    let b = fake();
    let config = config_for(&t, &b, "");
    let mut relay = Relay::start(Start {
        config: config.clone(),
        token: Some("acct"),
        dir: None,
    });
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("held"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let id = queue_id(&reply);
    relay.wait_log("use the Server API Token", Duration::from_secs(20));
    assert!(t.auth_failures() >= 1);
    // Paused, not retried: the message waits as it came, with no attempt
    // counted against it, and it never failed or was deferred.
    assert_untouched(&relay, &id);
    assert_eq!(
        relay.count_log_for(&id, "Message deferred."),
        0,
        "{:#?}",
        relay.logs()
    );
    assert_eq!(relay.count_log_for(&id, "Message failed"), 0);

    let dir = relay.dir.clone();
    assert!(relay.terminate().success());
    let relay = Relay::start(Start {
        config,
        token: Some(TOKEN),
        dir: Some(dir),
    });
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(&got, &["held".to_string()]);
    assert_eq!(got[0].auth_user.as_deref(), Some(TOKEN));
    assert_eq!(relay.count_log_for(&id, "Message relayed."), 1);
}

#[test]
fn without_a_token_mail_is_accepted_and_held_and_nothing_goes_upstream() {
    let (t, b) = (fake(), fake());
    let mut relay = Relay::start(Start {
        config: config_for(&t, &b, ""),
        token: None,
        dir: None,
    });
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("no token"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    relay.wait_log("Delivery held", Duration::from_secs(20));
    assert_untouched(&relay, &queue_id(&reply));
    assert!(t.messages().is_empty() && b.messages().is_empty());
    assert_eq!(t.logins() + b.logins(), 0);
    assert_eq!(relay.count_log("Message relayed."), 0);
    assert_eq!(relay.count_log("Message deferred."), 0);
}
