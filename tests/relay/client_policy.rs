//! Many apps, one relay: each `[[clients]]` entry's own routing
//! (`upstream`, `stream`), its rate across all its sessions, the per-IP
//! rate of sessions without AUTH, and where the client shows (queue
//! commands, `/metrics`). Driven by Python's smtplib (a real client) and
//! our own line client where exact replies matter.

use std::process::Output;
use std::time::Duration;

use relay_testkit::{FakeOptions, FakePostmark};

use crate::admin::{admin_addr, get, metric, with_admin};
use crate::app_credentials::hash;
use crate::harness::*;

const NEWS_PW: &str = "news-password";
const BILLING_PW: &str = "billing-password";

/// `[[clients]]` text for `name` with `password`, plus `extra` keys.
pub(crate) fn client(name: &str, password: &str, extra: &str) -> String {
    format!(
        "[[clients]]\nname = \"{name}\"\npassword_hash = \"{}\"\n{extra}\n",
        hash(password)
    )
}

/// Python smtplib: one session that logs in (over plain text: loopback)
/// and sends each subject in turn; prints each message's outcome as
/// `ok` or the SMTP code, one per line.
pub(crate) fn smtplib_session(
    relay: &Relay,
    user: &str,
    password: &str,
    subjects: &[&str],
) -> Vec<String> {
    let script = format!(
        r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", {port}, timeout=20)
s.ehlo("app.test")
s.login({user:?}, {password:?})
for subject in {subjects:?}:
    msg = "From: app@example.com\r\nTo: u@example.net\r\nSubject: %s\r\n\r\nhello\r\n" % subject
    try:
        s.sendmail("app@example.com", ["u@example.net"], msg)
        print("ok")
    except smtplib.SMTPSenderRefused as e:
        print(e.smtp_code, e.smtp_error.decode())
s.quit()
"#,
        port = relay.addr.port(),
    );
    let out: Output = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A client's `stream` is added to its messages that have none (and picks
/// the broadcast upstream as the header would); a message's own header
/// wins; a client's `upstream` beats the routing rules.
#[test]
fn client_upstream_and_stream_override_rules() {
    let (t, b) = (fake(), fake());
    let extra = format!(
        "##{}{}[[routing.rules]]\nname = \"everything\"\nsender = \"*\"\nupstream = \"transactional\"\n",
        client("news", NEWS_PW, "stream = \"broadcasts\""),
        client("pinned", BILLING_PW, "upstream = \"broadcast\""),
    );
    let mut relay = relay_for(&t, &b, &extra);
    assert_eq!(
        smtplib_session(&relay, "news", NEWS_PW, &["news default stream"]),
        ["ok"]
    );
    assert_eq!(
        smtplib_session(&relay, "pinned", BILLING_PW, &["pinned"]),
        ["ok"]
    );
    // The message's own header keeps its stream (and so its upstream).
    let own = "From: app@example.com\r\nX-PM-Message-Stream: outbound\r\nSubject: own header\r\n\r\nhi\r\n";
    let script = format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {port}, timeout=20)\ns.login('news', {NEWS_PW:?})\n\
         s.sendmail('app@example.com', ['u@example.net'], {own:?})\ns.quit()\n",
        port = relay.addr.port()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let broadcast = settle(&relay, &b, Duration::from_secs(20));
    assert_each_once(&broadcast, &["news default stream".into(), "pinned".into()]);
    for m in &broadcast {
        let streams = header_values(&m.data, "X-PM-Message-Stream");
        match subject(m).as_str() {
            "news default stream" => assert_eq!(streams, ["broadcasts"]),
            _ => assert!(streams.is_empty(), "pinned adds no stream: {streams:?}"),
        }
    }
    let transactional = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(&transactional, &["own header".into()]);
    assert_eq!(
        header_values(&transactional[0].data, "X-PM-Message-Stream"),
        ["outbound"]
    );
    let line = relay.wait_log("rule=\"clients.news\"", Duration::from_secs(5));
    assert!(
        line.contains("client=news") && line.contains("upstream=broadcast"),
        "{line}"
    );
}

/// `rate = "3/h"` counts across the client's sessions: the 4th message
/// gets `450 4.7.1` (smtplib sees it as a refused sender), another client
/// is not affected, and the refusal is logged with the client and
/// counted in `/metrics`.
#[test]
fn client_rate_spans_sessions_and_is_counted() {
    let (t, b) = (fake(), fake());
    let extra = format!(
        "##{}{}",
        client("news", NEWS_PW, "rate = \"3/h\""),
        client("billing", BILLING_PW, ""),
    );
    let mut relay = relay_with(with_admin(config_for(&t, &b, &extra)));
    let admin = admin_addr(&mut relay);
    assert_eq!(
        smtplib_session(&relay, "news", NEWS_PW, &["n1", "n2"]),
        ["ok", "ok"]
    );
    let second = smtplib_session(&relay, "news", NEWS_PW, &["n3", "n4"]);
    assert_eq!(second[0], "ok");
    assert!(
        second[1].starts_with("450 4.7.1")
            && second[1].contains("3/h")
            && second[1].contains("news"),
        "{second:?}"
    );
    assert_eq!(
        smtplib_session(&relay, "billing", BILLING_PW, &["b1", "b2", "b3", "b4"]),
        ["ok", "ok", "ok", "ok"]
    );
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(
        &got,
        &["n1", "n2", "n3", "b1", "b2", "b3", "b4"].map(String::from),
    );
    let refused = relay.wait_log("Refused a command.", Duration::from_secs(5));
    assert!(
        refused.contains("client=news") && refused.contains("450"),
        "{refused}"
    );

    let (_, body) = get(admin, "/metrics");
    let count = |series: &str| metric(&body, series);
    assert_eq!(
        count("postmark_relay_client_refused_total{client=\"news\",reason=\"rate\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        count("postmark_relay_client_messages_received_total{client=\"news\"}"),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        count("postmark_relay_client_messages_received_total{client=\"billing\"}"),
        Some(4.0),
        "{body}"
    );
    assert_eq!(
        count("postmark_relay_messages_received_total"),
        Some(7.0),
        "{body}"
    );
}

/// `server.rate` limits each IP's sessions without AUTH: the 3rd MAIL in a
/// minute gets `450 4.7.1` naming the address, counted as `anonymous`.
#[test]
fn anonymous_rate_per_ip() {
    let (t, b) = (fake(), fake());
    let mut relay = relay_with(with_admin(config_for(&t, &b, "rate = \"2/m\"\n")));
    let admin = admin_addr(&mut relay);
    for tag in ["a1", "a2"] {
        let reply = send(
            relay.addr,
            "app@example.com",
            &["u@example.net"],
            &message(tag),
        );
        assert!(reply.starts_with("250"), "{reply}");
    }
    let (mut c, _) = Client::connect(relay.addr);
    assert!(c.cmd("EHLO app.test").starts_with("250"));
    let reply = c.cmd("MAIL FROM:<app@example.com>");
    assert!(
        reply.starts_with("450 4.7.1") && reply.contains("127.0.0.1") && reply.contains("2/m"),
        "{reply}"
    );
    // The session goes on: the app may try again later.
    assert!(c.cmd("NOOP").starts_with("250"));
    let (_, body) = get(admin, "/metrics");
    assert_eq!(
        metric(
            &body,
            "postmark_relay_client_refused_total{client=\"anonymous\",reason=\"rate\"}"
        ),
        Some(1.0),
        "{body}"
    );
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(&got, &["a1".into(), "a2".into()]);
}

/// The client a message came from shows in `queue list --json` and
/// `queue show` (here a message Postmark refused for good stays failed);
/// a sender-policy refusal is counted with reason `sender`.
#[test]
fn queue_commands_and_metrics_name_the_client() {
    let t = FakePostmark::start(FakeOptions {
        unverified_domains: vec!["unverified.example".into()],
        ..FakeOptions::default()
    });
    let b = fake();
    let extra = format!(
        "##{}",
        client(
            "billing",
            BILLING_PW,
            "senders = [\"*@unverified.example\"]"
        )
    );
    let mut relay = relay_with(with_admin(config_for(&t, &b, &extra)));
    let admin = admin_addr(&mut relay);
    let script = format!(
        r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {port}, timeout=20)
s.login("billing", {BILLING_PW:?})
print(s.mail("app@example.com")[0])
s.rset()
s.mail("app@unverified.example")
s.rcpt("u@example.net")
print(s.data("From: app@unverified.example\r\nSubject: refused upstream\r\n\r\nhi\r\n")[1].decode())
s.quit()
"#,
        port = relay.addr.port()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("550"), "{stdout}");
    let id = queue_id(&format!("250 {}", lines.next().unwrap_or_default()));
    relay.wait_log("Message failed; kept in the queue", Duration::from_secs(20));

    let listed = relay.queue_list();
    let entry = listed
        .iter()
        .find(|m| m["id"] == id.as_str())
        .expect("listed");
    assert_eq!(entry["client"], "billing", "{entry}");
    let shown = relay.queue_cli(&["show", &id]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("Client") && l.ends_with("billing")),
        "{shown}"
    );
    let (_, body) = get(admin, "/metrics");
    assert_eq!(
        metric(
            &body,
            "postmark_relay_client_refused_total{client=\"billing\",reason=\"sender\"}"
        ),
        Some(1.0),
        "{body}"
    );
}
