//! A `250` is a promise: mail accepted before a crash or a shutdown is
//! delivered after a restart, exactly once.

use std::time::Duration;

use crate::harness::*;

#[test]
fn thirty_messages_queued_before_kill_9_are_delivered_once_after_restart() {
    let (t, b) = (fake(), fake());
    t.set_down(true);
    let config = config_for(&t, &b, "");
    let relay = relay_with(config.clone());
    let subjects: Vec<String> = (0..30).map(|i| format!("crash-{i}")).collect();
    send_concurrently(relay.addr, &subjects, 5);
    let dir = relay.kill9();

    t.set_down(false);
    let relay = Relay::start(Start {
        config,
        token: Some(TOKEN),
        dir: Some(dir),
    });
    let got = settle(&relay, &t, Duration::from_secs(25));
    assert_each_once(&got, &subjects);
}

#[test]
fn sigterm_exits_0_and_mail_accepted_before_it_is_delivered_exactly_once_overall() {
    let (t, b) = (fake(), fake());
    let config = config_for(&t, &b, "");
    let relay = relay_with(config.clone());
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("term"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let dir = relay.dir.clone();
    let status = relay.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");

    let relay = Relay::start(Start {
        config,
        token: Some(TOKEN),
        dir: Some(dir),
    });
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(&got, &["term".to_string()]);
}

#[test]
fn sigterm_with_the_upstream_down_exits_0_and_the_queued_mail_goes_out_after_restart() {
    let (t, b) = (fake(), fake());
    t.set_down(true);
    let config = config_for(&t, &b, "");
    let mut relay = relay_with(config.clone());
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("waiting"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    relay.wait_log("Message deferred.", Duration::from_secs(20));
    let dir = relay.dir.clone();
    let started = std::time::Instant::now();
    let status = relay.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "slow shutdown: {:?}",
        started.elapsed()
    );

    t.set_down(false);
    let relay = Relay::start(Start {
        config,
        token: Some(TOKEN),
        dir: Some(dir),
    });
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(&got, &["waiting".to_string()]);
}
