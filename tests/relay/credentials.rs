//! Token problems are not the message's fault: mail waits in the queue,
//! the log says what to fix, and nothing is lost or retried to death.

use std::time::Duration;

use crate::harness::*;

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
    std::thread::sleep(Duration::from_millis(1000));
    assert!(t.messages().is_empty());
    assert!(t.auth_failures() >= 1);
    // Paused, not retried: the message itself never failed or was deferred.
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
    let got = settle(&t, 1, Duration::from_secs(20));
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
    std::thread::sleep(Duration::from_millis(1000));
    assert!(t.messages().is_empty() && b.messages().is_empty());
    assert_eq!(t.logins() + b.logins(), 0);
    assert_eq!(relay.count_log("Message relayed."), 0);
    assert_eq!(relay.count_log("Message deferred."), 0);
}
