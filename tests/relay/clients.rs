//! Real SMTP clients nobody here wrote get their mail through.

use std::process::Command;
use std::time::Duration;

use crate::harness::*;

#[test]
fn lettre_sends_a_message_that_arrives_upstream() {
    use lettre::{Message, SmtpTransport, Transport};
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let email = Message::builder()
        .from("App <app@example.com>".parse().unwrap())
        .to("User <u@example.net>".parse().unwrap())
        .subject("from lettre")
        .body(String::from("Hello from lettre.\n.leading dot\n"))
        .unwrap();
    let mailer = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(relay.addr.port())
        .timeout(Some(Duration::from_secs(20)))
        .build();
    let response = mailer.send(&email).unwrap();
    assert!(response.is_positive());

    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(&got, &["from lettre".to_string()]);
    assert_eq!(got[0].mail_from, "app@example.com");
    assert_eq!(got[0].rcpt_to, ["u@example.net"]);
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(
        text.contains("Hello from lettre.\r\n.leading dot\r\n"),
        "{text}"
    );
}

#[test]
fn python_smtplib_sends_a_message_that_arrives_upstream() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let script = "import smtplib, sys\n\
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=20)\n\
s.sendmail('py@example.com', ['u@example.net'], 'Subject: from python\\r\\n\\r\\nhello\\r\\n')\n\
s.quit()\n";
    let out = Command::new("python3")
        .args(["-c", script, &relay.addr.port().to_string()])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(&got, &["from python".to_string()]);
    assert_eq!(got[0].mail_from, "py@example.com");
    assert_eq!(got[0].rcpt_to, ["u@example.net"]);
}

/// Needs the `swaks` package (CI installs it): a missing swaks fails the
/// test rather than skipping it.
#[test]
fn swaks_sends_a_message_that_arrives_upstream() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let out = Command::new("swaks")
        .args([
            "--server",
            &relay.addr.to_string(),
            "--from",
            "swaks@example.com",
            "--to",
            "u@example.net",
            "--header",
            "Subject: from swaks",
            "--timeout",
            "20",
        ])
        .output()
        .expect("swaks is installed (apt-get install swaks)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(&got, &["from swaks".to_string()]);
    assert_eq!(got[0].mail_from, "swaks@example.com");
    assert_eq!(got[0].rcpt_to, ["u@example.net"]);
}

/// PHP's `mail()` as `php.ini` users configure it (`sendmail_path =
/// "sendmail -t -i"`, here our binary's sendmail mode with the relay's
/// config): the message reaches the upstream. Needs `php-cli` (installed
/// by scripts/test); a missing php fails the test.
#[test]
fn php_mail_through_sendmail_arrives_upstream() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let cfg = relay.dir.path().join("app.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"{}\"]\nhostname = \"relay.test\"\n",
            relay.addr
        ),
    )
    .unwrap();
    let sendmail_path = format!(
        "{} sendmail -t -i -c {}",
        env!("CARGO_BIN_EXE_postmark-relay"),
        cfg.display()
    );
    let script = "$ok = mail('u@example.net', 'from php', \"hello from PHP\\n.dot line\\n\", \"From: PHP App <php@example.com>\"); exit($ok ? 0 : 1);";
    let out = Command::new("php")
        .args([
            "-n",
            "-d",
            &format!("sendmail_path={sendmail_path}"),
            "-r",
            script,
        ])
        .env_remove("POSTMARK_RELAY_CONFIG")
        .output()
        .expect("php is installed (apt-get install php-cli)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(&got, &["from php".to_string()]);
    assert_eq!(got[0].mail_from, "php@example.com");
    assert_eq!(got[0].rcpt_to, ["u@example.net"]);
    let body = String::from_utf8_lossy(strip_added_headers(&got[0].data)).into_owned();
    assert!(body.contains("\r\n.dot line\r\n"), "{body}");
}

/// msmtp, the sendmail replacement many containers use, pointed at the
/// relay (no TLS, no auth, as on localhost). Needs `msmtp` (installed by
/// scripts/test).
#[test]
fn msmtp_sends_a_message_that_arrives_upstream() {
    use std::io::Write;
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let mut child = Command::new("msmtp")
        .args([
            "--host=127.0.0.1",
            &format!("--port={}", relay.addr.port()),
            "--auth=off",
            "--tls=off",
            "--from=msmtp@example.com",
            "--timeout=20",
            "-t",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("msmtp is installed (apt-get install msmtp)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"To: u@example.net\nSubject: from msmtp\n\nhello\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(&got, &["from msmtp".to_string()]);
    assert_eq!(got[0].mail_from, "msmtp@example.com");
    assert_eq!(got[0].rcpt_to, ["u@example.net"]);
}
