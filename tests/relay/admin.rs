//! The admin endpoint, `health`, and SIGHUP reloads, against a running
//! daemon and fake upstreams.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::harness::*;

/// A config like `config_for`'s, with the admin endpoint on a free port.
pub(crate) fn with_admin(config: String) -> String {
    config.replace("listen = \"\"", "listen = \"127.0.0.1:0\"")
}

pub(crate) fn admin_addr(relay: &mut Relay) -> SocketAddr {
    let line = relay.wait_log("Admin endpoint listening", Duration::from_secs(10));
    let addr = line
        .split("address=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap();
    addr.parse().unwrap()
}

/// GET `path`; returns (status, body).
pub(crate) fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = request(addr, "GET", path);
    (status, body)
}

/// `method` `path`; returns (status, head, body).
fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_string(), body.to_string())
}

/// The value of a metric line starting with `prefix` (name + labels).
pub(crate) fn metric(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub(crate) fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_count_a_relayed_message_and_never_show_the_token() {
    let (t, b) = (fake(), fake());
    let mut relay = relay_with(with_admin(config_for(&t, &b, "")));
    let admin = admin_addr(&mut relay);
    let (status, before) = get(admin, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(&before, "postmark_relay_messages_received_total"),
        Some(0.0),
        "{before}"
    );

    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("metrics"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(&got, &["metrics".to_string()]);
    relay.wait_log("Message relayed.", Duration::from_secs(10));

    let (_, after) = get(admin, "/metrics");
    assert_eq!(
        metric(&after, "postmark_relay_messages_received_total"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            "postmark_relay_messages_relayed_total{upstream=\"transactional\"}"
        ),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        metric(&after, "postmark_relay_delivery_latency_seconds_count"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        metric(&after, "postmark_relay_queue_messages{state=\"queued\"}"),
        Some(0.0),
        "{after}"
    );
    assert!(
        metric(
            &after,
            "postmark_relay_upstream_connections{upstream=\"transactional\"}"
        )
        .is_some(),
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            "postmark_relay_upstream_paused{upstream=\"transactional\"}"
        ),
        Some(0.0),
        "{after}"
    );
    assert!(!after.contains(TOKEN), "token in /metrics");
    assert!(
        relay.logs().iter().all(|l| !l.contains(TOKEN)),
        "token in the log"
    );
}

#[test]
fn healthz_and_the_health_command_say_healthy() {
    let (t, b) = (fake(), fake());
    let mut relay = relay_with(with_admin(config_for(&t, &b, "")));
    let admin = admin_addr(&mut relay);
    assert_eq!(get(admin, "/healthz").0, 200);
    assert_eq!(get(admin, "/readyz").0, 200);
    assert_eq!(get(admin, "/nope").0, 404);
    // HEAD: the same status and length, and no body.
    let (status, head, body) = request(admin, "HEAD", "/metrics");
    assert_eq!(status, 200);
    assert!(!head.contains("Content-Length: 0"), "{head}");
    assert!(body.is_empty(), "HEAD got a body: {body:?}");

    let cfg = relay.dir.path().join("health.toml");
    std::fs::write(&cfg, format!("[admin]\nlisten = \"{admin}\"\n")).unwrap();
    let out = run_cli(&["health"], &cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(relay);
    let out = run_cli(&["health"], &cfg);
    assert!(
        !out.status.success(),
        "health passed with the relay stopped"
    );
}

#[test]
fn readyz_is_503_with_an_account_token_and_200_after_a_reload_with_the_server_token() {
    let t = FakePostmark::start(FakeOptions {
        account_token: Some("acct-token".into()),
        ..FakeOptions::default()
    });
    let b = fake();
    let config = with_admin(config_for(&t, &b, ""));
    let config_with = |token: &str| format!("{config}\n[postmark]\nserver_token = \"{token}\"\n");
    let mut relay = Relay::start(Start {
        config: config_with("acct-token"),
        token: None,
        dir: None,
    });
    let admin = admin_addr(&mut relay);
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("held"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    relay.wait_log("use the Server API Token", Duration::from_secs(20));
    wait_until("/readyz to go 503", Duration::from_secs(10), || {
        get(admin, "/readyz").0 == 503
    });
    let (_, body) = get(admin, "/readyz");
    assert!(body.contains("transactional"), "{body}");
    let (_, metrics) = get(admin, "/metrics");
    assert_eq!(
        metric(&metrics, "postmark_relay_ready "),
        Some(0.0),
        "{metrics}"
    );

    std::fs::write(relay.dir.path().join("relay.toml"), config_with(TOKEN)).unwrap();
    relay.hup();
    relay.wait_log("Configuration reloaded", Duration::from_secs(10));
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "held message delivered {} times", got.len());
    wait_until("/readyz to go 200", Duration::from_secs(10), || {
        get(admin, "/readyz").0 == 200
    });
    let (_, metrics) = get(admin, "/metrics");
    assert_eq!(
        metric(&metrics, "postmark_relay_ready "),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        relay
            .logs()
            .iter()
            .all(|l| !l.contains("acct-token") && !l.contains(TOKEN)),
        "a token in the log"
    );
}

#[test]
fn a_reload_routes_waiting_messages_again_and_a_bad_reload_keeps_the_running_config() {
    let (t, b) = (fake(), fake());
    // No token yet: mail waits in the queue, routed by default to transactional.
    let base = config_for(&t, &b, "");
    let mut relay = Relay::start(Start {
        config: base.clone(),
        token: None,
        dir: None,
    });
    let reply = send(
        relay.addr,
        "news@news.example.com",
        &["u@example.net"],
        &message("reroute"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    relay.wait_log("Message queued.", Duration::from_secs(10));

    std::fs::write(
        relay.dir.path().join("relay.toml"),
        format!("{base}\n[server\nbroken"),
    )
    .unwrap();
    relay.hup();
    relay.wait_log("Reload failed", Duration::from_secs(10));

    let rule = "[[routing.rules]]\nname = \"news\"\nsender = \"*@news.example.com\"\nupstream = \"broadcast\"\nstream = \"newsletter\"\n";
    std::fs::write(
        relay.dir.path().join("relay.toml"),
        format!("{base}\n{rule}\n[postmark]\nserver_token = \"{TOKEN}\"\n"),
    )
    .unwrap();
    relay.hup();
    let line = relay.wait_log("Configuration reloaded", Duration::from_secs(10));
    assert!(line.contains("rerouted=1"), "{line}");
    let got = settle(&relay, &b, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "{:?}", relay.logs());
    assert_eq!(
        header_values(&got[0].data, "X-PM-Message-Stream"),
        ["newsletter"]
    );
    assert!(t.messages().is_empty());
}
