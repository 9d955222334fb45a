//! `postmark-relay queue ...` run as its own process against the queue of a
//! `serve` that keeps running: what scripts see in `--json`, and that
//! `retry` and `delete` take effect while the daemon works.

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// `postmark-relay queue ARGS` against `relay`'s queue.
fn queue(relay: &Relay, args: &[&str]) -> Output {
    relay.queue_cli(args)
}

fn failure(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// `queue list --json [extra]`, parsed.
fn list(relay: &Relay, extra: &[&str]) -> Vec<Value> {
    let out = queue(relay, &[&["list", "--json"], extra].concat());
    match serde_json::from_str(&stdout(&out)).unwrap() {
        Value::Array(messages) => messages,
        other => panic!("not one JSON array: {other}"),
    }
}

/// Polls `queue list --json` until `done` holds; panics with the last list
/// after `timeout`.
fn wait_list(relay: &Relay, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let messages = list(relay, &[]);
        if done(&messages) {
            return messages;
        }
        assert!(
            Instant::now() < deadline,
            "queue never got there; last list: {messages:#?}\nlog:\n{}",
            relay.logs().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The message with `id` in `state`, once it is listed so.
fn wait_state(relay: &Relay, id: &str, state: &str) -> Value {
    let listed = wait_list(relay, Duration::from_secs(15), |l| {
        l.iter().any(|m| m["id"] == id && m["state"] == state)
    });
    listed.into_iter().find(|m| m["id"] == id).unwrap()
}

fn assert_rfc3339(v: &Value) {
    let text = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"));
}

/// Deletes `id`, waiting out a delivery attempt in flight.
fn delete(relay: &Relay, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = queue(relay, &["delete", id]);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !err.contains("being delivered") || Instant::now() > deadline {
            return stdout(&out);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_message_held_while_postmark_is_down_is_listed_shown_counted_and_deleted() {
    let (t, b) = (fake(), fake());
    t.set_down(true);
    let relay = relay_for(&t, &b, "");
    let body = message("held");
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u1@example.net", "u2@example.net"],
        &body,
    );
    assert!(reply.starts_with("250"), "{reply}");
    let id = queue_id(&reply);

    let m = wait_state(&relay, &id, "deferred");
    assert_eq!(m["sender"], "app@example.com");
    assert_eq!(m["upstream"], "transactional");
    assert_eq!(m["stream"], Value::Null);
    assert_eq!(m["size"], body.len());
    assert!(m["attempts"].as_u64().unwrap() >= 1, "{m}");
    assert!(m["last_error"].is_string(), "{m}");
    assert_rfc3339(&m["received_at"]);
    assert_rfc3339(&m["next_attempt_at"]);
    let recipients = m["recipients"].as_array().unwrap();
    assert_eq!(recipients.len(), 2);
    for (r, want) in recipients.iter().zip(["u1@example.net", "u2@example.net"]) {
        assert_eq!(r["address"], want);
        assert_eq!(r["state"], "pending");
    }
    assert!(list(&relay, &["--state", "failed"]).is_empty());
    assert_eq!(list(&relay, &["--state", "deferred"]).len(), 1);

    let table = stdout(&queue(&relay, &["list"]));
    assert!(table.starts_with("ID "), "{table}");
    let row = table.lines().find(|l| l.starts_with(&id)).unwrap();
    for want in ["app@example.com", "transactional", "deferred"] {
        assert!(row.contains(want), "{want} missing: {table}");
    }

    let shown = stdout(&queue(&relay, &["show", &id]));
    for want in [
        id.as_str(),
        "app@example.com",
        "transactional",
        "deferred",
        "u1@example.net",
        "u2@example.net",
        "pending",
    ] {
        assert!(shown.contains(want), "{want} missing:\n{shown}");
    }
    let raw = queue(&relay, &["show", &id, "--raw"]);
    assert_eq!(strip_added_headers(&stdout(&raw).into_bytes()), &body[..]);

    let stats: Value = serde_json::from_str(&stdout(&queue(&relay, &["stats", "--json"]))).unwrap();
    assert_eq!(stats["by_state"]["deferred"], 1, "{stats}");
    assert_eq!(stats["by_state"]["queued"], 0, "{stats}");
    assert_eq!(stats["by_state"]["failed"], 0, "{stats}");
    assert_eq!(stats["by_upstream"]["transactional"]["deferred"], 1);
    assert_rfc3339(&stats["oldest_received_at"]);
    let text = stdout(&queue(&relay, &["stats"]));
    assert!(text.contains("transactional"), "{text}");
    assert!(text.contains("Oldest waiting message"), "{text}");

    let said = delete(&relay, &id);
    assert!(said.contains(&id), "{said}");
    assert!(list(&relay, &[]).is_empty());
    // Back up: a message sent now is delivered, and it alone.
    t.set_down(false);
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("after-delete"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(&got, &["after-delete".to_string()]);
}

#[test]
fn a_recipient_rejected_for_good_fails_the_message_with_its_reply() {
    let (t, b) = (fake(), fake());
    t.reject_recipient("gone@example.net", (550, "5.1.1 no such user"));
    let relay = relay_for(&t, &b, "");
    let reply = send(
        relay.addr,
        "app@example.com",
        &["ok@example.net", "gone@example.net"],
        &message("half"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let id = queue_id(&reply);

    let m = wait_state(&relay, &id, "failed");
    assert_eq!(m["next_attempt_at"], Value::Null);
    assert_eq!(m["attempts"], 1);
    assert!(m["last_error"].as_str().unwrap().contains("5.1.1"), "{m}");
    let r = &m["recipients"];
    assert_eq!(r[0]["address"], "ok@example.net");
    assert_eq!(r[0]["state"], "delivered");
    assert_eq!(r[1]["address"], "gone@example.net");
    assert_eq!(r[1]["state"], "failed");
    let reply = r[1]["reply"].as_str().unwrap();
    assert!(
        reply.contains("550") && reply.contains("no such user"),
        "{m}"
    );
    assert_eq!(t.messages().len(), 1);
    assert_eq!(t.messages()[0].rcpt_to, ["ok@example.net"]);
    assert_eq!(list(&relay, &["--state", "failed"]).len(), 1);
    assert!(list(&relay, &["--state", "deferred"]).is_empty());

    let shown = stdout(&queue(&relay, &["show", &id]));
    assert!(shown.contains("no such user"), "{shown}");

    assert!(delete(&relay, &id).contains(&id));
    assert!(list(&relay, &[]).is_empty());
    for args in [
        &["show", id.as_str()][..],
        &["retry", id.as_str()],
        &["delete", id.as_str()],
    ] {
        let err = failure(&queue(&relay, args));
        assert!(err.contains(&id), "{args:?}: {err}");
    }
}

#[test]
fn queue_retry_delivers_a_failed_message_once_postmark_takes_it() {
    let (t, b) = (fake(), fake());
    t.fail_next_transactions(1, (550, "5.7.1 not today"));
    let relay = relay_for(&t, &b, "");
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("again"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let id = queue_id(&reply);
    let m = wait_state(&relay, &id, "failed");
    assert_eq!(m["recipients"][0]["state"], "failed");
    assert!(t.messages().is_empty());

    let said = stdout(&queue(&relay, &["retry", &id]));
    assert!(said.contains(&id), "{said}");
    let got = t.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "not delivered after queue retry");
    assert_eq!(subject(&got[0]), "again");
    wait_list(&relay, Duration::from_secs(10), |l| l.is_empty());
    assert!(stdout(&queue(&relay, &["list"])).contains("empty"));
    let said = stdout(&queue(&relay, &["retry", "--all"]));
    assert!(said.starts_with("Made 0 message(s) due now"), "{said}");
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(&got, &["again".to_string()]);
}

#[test]
fn a_queue_path_without_a_queue_is_reported_and_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-queue-here");
    let config = dir.path().join("cli.toml");
    let text = format!("[queue]\npath = {:?}\n", missing.display().to_string());
    std::fs::write(&config, text).unwrap();
    for args in [&["queue", "list"][..], &["queue", "stats", "--json"]] {
        let err = failure(&run_cli(args, &config));
        assert!(err.contains("queue.path"), "{err}");
        assert!(err.contains("no-queue-here"), "{err}");
    }
    assert!(!missing.exists());
}
