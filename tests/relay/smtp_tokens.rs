//! Postmark SMTP Tokens (a stream's Access Key and Secret Key) as upstream
//! credentials, and per-stream upstreams: each message goes to the upstream
//! that lists its stream and authenticates with that upstream's
//! credential; a wrong Secret Key pauses that upstream with an explanation
//! in the token's terms, and nothing fails.

use std::time::Duration;

use relay_testkit::FakeOptions;

use crate::admin::{admin_addr, get, wait_until, with_admin};
use crate::harness::*;

const ACCESS: &str = "acc-7f3e21";
const SECRET: &str = "sec-9b0d44";

/// A fake that takes the harness's Server API Token and one SMTP Token.
fn postmark_with_smtp_token(secret: &str) -> FakePostmark {
    FakePostmark::start(FakeOptions {
        server_token: TOKEN.into(),
        smtp_tokens: vec![(ACCESS.into(), secret.into())],
        ..FakeOptions::default()
    })
}

/// `config_for` plus an upstream `receipts` on the same fake, for stream
/// `receipts`, with the SMTP Token `ACCESS` / `secret`.
fn config(t: &FakePostmark, b: &FakePostmark, secret: &str) -> String {
    config_for(
        t,
        b,
        &format!(
            "##\n[upstreams.receipts]\nhost = \"localhost\"\nport = {}\nca_file = \"{}\"\nstreams = [\"receipts\"]\nsmtp_access_key = \"{ACCESS}\"\nsmtp_secret_key = \"{secret}\"\n",
            t.port(),
            t.ca_file().display()
        ),
    )
}

/// [`config`] with the token in the file, written for the one-off
/// commands (`check`, `send-test`), which get no token from the harness.
fn config_file_for_commands(
    t: &FakePostmark,
    b: &FakePostmark,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    let text = format!(
        "{}\n[postmark]\nserver_token = \"{TOKEN}\"\n",
        config(t, b, SECRET)
    );
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn with_stream(tag: &str, stream: &str) -> Vec<u8> {
    let mut m = format!("X-PM-Message-Stream: {stream}\r\n").into_bytes();
    m.extend_from_slice(&message(tag));
    m
}

#[test]
fn each_message_goes_to_its_streams_upstream_with_that_upstreams_credential() {
    let t = postmark_with_smtp_token(SECRET);
    let b = fake();
    let relay = relay_with(config(&t, &b, SECRET));
    for (tag, body) in [
        ("receipt", with_stream("receipt", "receipts")),
        ("plain", message("plain")),
    ] {
        let reply = send(relay.addr, "app@example.com", &["u@example.net"], &body);
        assert!(reply.starts_with("250"), "{tag}: {reply}");
    }
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(&got, &["plain".to_string(), "receipt".to_string()]);
    let login = |tag: &str| {
        got.iter()
            .find(|m| subject(m) == tag)
            .and_then(|m| m.auth_user.clone())
    };
    assert_eq!(login("receipt").as_deref(), Some(ACCESS));
    assert_eq!(login("plain").as_deref(), Some(TOKEN));
    let receipt = relay
        .logs()
        .into_iter()
        .find(|l| l.contains("Message relayed.") && l.contains("upstream=receipts"));
    assert!(receipt.is_some(), "{:#?}", relay.logs());
    for line in relay.logs() {
        assert!(!line.contains(SECRET), "the Secret Key leaked: {line}");
    }
}

#[test]
fn a_wrong_secret_key_pauses_its_upstream_with_the_tokens_explanation_and_fails_nothing() {
    let t = postmark_with_smtp_token("the-right-secret");
    let b = fake();
    let mut relay = relay_with(with_admin(config(&t, &b, SECRET)));
    let admin = admin_addr(&mut relay);
    let held = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &with_stream("held", "receipts"),
    );
    assert!(held.starts_with("250"), "{held}");
    let plain = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("plain"),
    );
    assert!(plain.starts_with("250"), "{plain}");
    let line = relay.wait_log(
        "must come from the same SMTP Token of this stream",
        Duration::from_secs(20),
    );
    assert!(
        line.contains("upstream=receipts") || line.contains("receipts"),
        "{line}"
    );
    wait_until(
        "/readyz 503 for the paused upstream",
        Duration::from_secs(20),
        || {
            let (status, body) = get(admin, "/readyz");
            status == 503 && body.contains("receipts")
        },
    );
    // The other upstream, on the Server API Token, delivers meanwhile.
    t.wait_for(1, Duration::from_secs(20));
    assert_eq!(subject(&t.messages()[0]), "plain");
    let id = queue_id(&held);
    let listed = relay.queue_list();
    let m = listed.iter().find(|m| m["id"] == id.as_str()).unwrap();
    assert_eq!(m["state"], "queued", "paused, not tried: {m}");
    assert_eq!(m["attempts"], 0, "{m}");
    assert_eq!(relay.count_log_for(&id, "Message failed"), 0);
    for line in relay.logs() {
        assert!(!line.contains(SECRET), "the Secret Key leaked: {line}");
    }
}

#[test]
fn check_explains_a_refused_smtp_token_in_its_own_terms() {
    let t = postmark_with_smtp_token("the-right-secret");
    let b = fake();
    let (_dir, path) = config_file_for_commands(&t, &b);
    let out = run_cli(&["check"], &path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let receipts = stdout
        .lines()
        .find(|l| l.starts_with("receipts"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        receipts.contains("FAILED at AUTH")
            && receipts.contains("same SMTP Token of this stream")
            && receipts.contains("upstreams.receipts.smtp_access_key"),
        "{receipts}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("transactional") && l.contains("OK")),
        "{stdout}"
    );
    assert!(!stdout.contains(SECRET) && !String::from_utf8_lossy(&out.stderr).contains(SECRET));
}

/// One half of an SMTP Token, or a stream on two upstreams, stops the
/// relay before it starts (exit 64), naming the keys; `config` shows
/// the token's keys redacted.
#[test]
fn token_config_errors_exit_64_naming_the_keys_and_secrets_are_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(
        &path,
        format!("[upstreams.receipts]\nhost = \"smtp.postmarkapp.com\"\nsmtp_access_key = \"{ACCESS}\"\n"),
    )
    .unwrap();
    let out = run_cli(&["serve"], &path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("upstreams.receipts.smtp_secret_key"), "{err}");
    assert!(!err.contains(ACCESS), "the Access Key is shown: {err}");

    std::fs::write(
        &path,
        "[upstreams.a]\nhost = \"smtp.postmarkapp.com\"\nstreams = [\"receipts\"]\n[upstreams.b]\nhost = \"smtp.postmarkapp.com\"\nstreams = [\"receipts\"]\n",
    )
    .unwrap();
    let out = run_cli(&["config"], &path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("upstreams.b.streams") && err.contains("upstreams.a.streams"),
        "{err}"
    );

    std::fs::write(
        &path,
        format!("[upstreams.receipts]\nhost = \"smtp.postmarkapp.com\"\nstreams = [\"receipts\"]\nsmtp_access_key = \"{ACCESS}\"\nsmtp_secret_key = \"{SECRET}\"\n"),
    )
    .unwrap();
    let out = run_cli(&["config"], &path);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(shown.contains("smtp_access_key = \"***\""), "{shown}");
    assert!(
        !shown.contains(ACCESS) && !shown.contains(SECRET),
        "{shown}"
    );
}

/// `send-test --stream receipts` goes where the relay would send such a
/// message, the stream's own upstream, logged in with its SMTP Token.
#[test]
fn send_test_to_a_stream_uses_its_upstream_and_token() {
    let t = postmark_with_smtp_token(SECRET);
    let b = fake();
    let (_dir, path) = config_file_for_commands(&t, &b);
    let out = run_cli(
        &[
            "send-test",
            "--to",
            "u@example.net",
            "--from",
            "app@example.com",
            "--stream",
            "receipts",
        ],
        &path,
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got = t.wait_for(1, Duration::from_secs(20));
    assert_eq!(got[0].auth_user.as_deref(), Some(ACCESS));
    assert_eq!(
        header_values(&got[0].data, "X-PM-Message-Stream"),
        ["receipts"]
    );
}
