//! The open-relay guard end to end: `serve` refuses to listen beyond
//! loopback with every network allowed (exit 64, naming the key), unless
//! `server.allow_open_relay = true` says something else guards the port.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use super::{relay_command, wait_output};
use crate::harness::*;

fn open_config(t: &FakePostmark, b: &FakePostmark, extra: &str) -> String {
    let config = config_for(
        t,
        b,
        &format!("allowed_networks = [\"0.0.0.0/0\", \"::/0\"]\n{extra}"),
    );
    let listen = "listen = [\"127.0.0.1:0\"]";
    assert!(config.contains(listen));
    config.replace(listen, "listen = [\"0.0.0.0:0\"]")
}

#[test]
fn serve_refuses_an_open_relay_with_exit_64() {
    let (t, b) = (fake(), fake());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, open_config(&t, &b, "")).unwrap();
    let child = relay_command()
        .arg("serve")
        .arg("-c")
        .arg(&path)
        .env("POSTMARK_RELAY_QUEUE__PATH", dir.path().join("queue"))
        .env("POSTMARK_SERVER_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr:\n{stderr}");
    assert!(stderr.contains("server.allowed_networks"), "{stderr}");
    assert!(stderr.contains("open relay"), "{stderr}");
    assert!(
        stderr.contains("allow_open_relay"),
        "says how to override: {stderr}"
    );
    assert!(!stderr.contains("   "), "one readable sentence: {stderr}");
    assert!(!stderr.contains("Listening for SMTP."), "{stderr}");
}

#[test]
fn serve_starts_an_open_relay_when_allowed_explicitly() {
    let (t, b) = (fake(), fake());
    let relay = Relay::start(Start {
        config: open_config(&t, &b, "allow_open_relay = true"),
        token: Some(TOKEN),
        dir: None,
    });
    assert!(relay.addr.ip().is_unspecified(), "{}", relay.addr);
    let local = SocketAddr::from(([127, 0, 0, 1], relay.addr.port()));
    let (mut c, greeting) = Client::connect(local);
    assert!(greeting.starts_with("220"), "{greeting}");
    assert!(c.cmd("QUIT").starts_with("221"));
}
