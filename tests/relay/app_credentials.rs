//! Many apps, one relay: inbound STARTTLS with the relay's own certificate
//! and per-app credentials (`[[clients]]`), driven by real clients (swaks,
//! Python's smtplib) and the real `hash-password` command.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use relay_testkit::ServerCert;

use crate::harness::*;

const BILLING_PW: &str = "billing correct horse";
const CRM_PW: &str = "crm-battery-staple";

/// `postmark-relay hash-password` with `input` on standard input.
fn hash_password(input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_postmark-relay"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

pub(crate) fn hash(password: &str) -> String {
    let out = hash_password(&format!("{password}\n"));
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    text.trim_end().to_owned()
}

/// The relay's certificate and its CA, as files.
struct Pki {
    dir: tempfile::TempDir,
    cert: ServerCert,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki {
            dir,
            cert: ServerCert::generate("postmark-relay inbound test CA"),
        };
        pki.write(&pki.cert);
        std::fs::write(pki.ca(), &pki.cert.ca_pem).unwrap();
        pki
    }

    fn write(&self, cert: &ServerCert) {
        std::fs::write(self.path("cert.pem"), &cert.cert_pem).unwrap();
        std::fs::write(self.path("key.pem"), &cert.key_pem).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// `[server]` lines offering STARTTLS with this certificate.
    fn server_keys(&self) -> String {
        format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            self.path("cert.pem").display(),
            self.path("key.pem").display()
        )
    }
}

/// `[server]` text (`server`), then two clients, billing and crm.
fn with_clients(server: &str, billing: &str, crm: &str) -> String {
    format!(
        "{server}##[[clients]]\nname = \"billing\"\npassword_hash = \"{billing}\"\n\n\
         [[clients]]\nname = \"crm\"\npassword_hash = \"{crm}\"\n"
    )
}

fn swaks(relay: &Relay, ca: &Path, auth: &[&str], subject: &str) -> Output {
    Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port"])
        .arg(relay.addr.port().to_string())
        .args(["--from", "app@example.com", "--to", "u@example.net"])
        .args(["--tls", "--tls-verify", "--tls-ca-path"])
        .arg(ca)
        .args(auth)
        .args(["--header", &format!("Subject: {subject}")])
        .args(["--body", "hello"])
        .output()
        .expect("swaks is installed (apt-get install swaks)")
}

fn python(script: &str) -> Output {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3 runs")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Neither a password nor a hash is ever logged.
fn assert_no_secrets(relay: &Relay, secrets: &[&str]) {
    for line in relay.logs() {
        for secret in secrets {
            assert!(!line.contains(secret), "secret in log: {line}");
        }
    }
}

#[test]
fn swaks_authenticates_over_starttls_with_plain_and_login() {
    let (t, b) = (fake(), fake());
    let pki = Pki::new();
    let (billing, crm) = (hash(BILLING_PW), hash(CRM_PW));
    assert!(billing.starts_with("$argon2id$"), "{billing}");
    let mut relay = relay_for(&t, &b, &with_clients(&pki.server_keys(), &billing, &crm));

    let out = swaks(
        &relay,
        &pki.ca(),
        &[
            "--auth",
            "PLAIN",
            "--auth-user",
            "billing",
            "--auth-password",
            BILLING_PW,
        ],
        "plain from billing",
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = swaks(
        &relay,
        &pki.ca(),
        &[
            "--auth",
            "LOGIN",
            "--auth-user",
            "crm",
            "--auth-password",
            CRM_PW,
        ],
        "login from crm",
    );
    assert!(out.status.success(), "{}", text(&out));
    let got = settle(&relay, &t, Duration::from_secs(10));
    assert_each_once(
        &got,
        &["plain from billing".into(), "login from crm".into()],
    );
    relay.wait_log("client=crm", Duration::from_secs(5));
    let queued: Vec<String> = relay
        .logs()
        .into_iter()
        .filter(|l| l.contains("Message queued."))
        .collect();
    assert!(
        queued.iter().any(|l| l.contains("client=billing")),
        "{queued:?}"
    );
    assert!(
        queued.iter().any(|l| l.contains("client=crm")),
        "{queued:?}"
    );

    // A wrong password and an unknown user: 535, nothing sent.
    for (user, pw) in [("billing", CRM_PW), ("nobody", BILLING_PW)] {
        let out = swaks(
            &relay,
            &pki.ca(),
            &[
                "--auth",
                "PLAIN",
                "--auth-user",
                user,
                "--auth-password",
                pw,
            ],
            "refused",
        );
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("535 5.7.8"), "{}", text(&out));
    }
    assert_eq!(t.messages().len(), 2);
    assert_no_secrets(&relay, &[BILLING_PW, CRM_PW, &billing, &crm]);
}

#[test]
fn python_smtplib_starttls_login_and_require_auth() {
    let (t, b) = (fake(), fake());
    let pki = Pki::new();
    let (billing, crm) = (hash(BILLING_PW), hash(CRM_PW));
    let server = format!("{}require_auth = true\n", pki.server_keys());
    let relay = relay_for(&t, &b, &with_clients(&server, &billing, &crm));
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(cafile={ca:?})
def session():
    s = smtplib.SMTP("127.0.0.1", {port}, local_hostname="app", timeout=10)
    s.starttls(context=ctx)
    return s
# Loopback included: no AUTH, no MAIL.
s = smtplib.SMTP("127.0.0.1", {port}, local_hostname="app", timeout=10)
try:
    s.sendmail("a@example.com", ["u@example.net"], "Subject: anonymous\r\n\r\nx\r\n")
    print("anonymous accepted")
except smtplib.SMTPSenderRefused as e:
    print("anonymous", e.smtp_code, e.smtp_error.decode())
s.quit()
s = session()
try:
    s.login("crm", "wrong")
except smtplib.SMTPAuthenticationError as e:
    print("bad", e.smtp_code, e.smtp_error.decode())
s.login("crm", {pw:?})
s.sendmail("a@example.com", ["u@example.net"], "Subject: from python\r\n\r\nhello\r\n")
print("sent")
s.quit()
"#,
        ca = pki.ca().display().to_string(),
        port = relay.addr.port(),
        pw = CRM_PW,
    );
    let out = python(&script);
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.contains("anonymous 530 5.7.0 Authentication required"),
        "{printed}"
    );
    assert!(
        printed.contains("bad 535 5.7.8 Authentication credentials invalid"),
        "{printed}"
    );
    assert!(printed.contains("sent"), "{printed}");
    let got = settle(&relay, &t, Duration::from_secs(10));
    assert_each_once(&got, &["from python".into()]);
    assert_no_secrets(&relay, &[CRM_PW, &billing, &crm]);
}

/// The certificate presented to a new Python client, as hex DER.
fn presented(relay: &Relay, cafiles: &[&Path]) -> String {
    let loads: String = cafiles
        .iter()
        .map(|p| {
            format!(
                "ctx.load_verify_locations(cafile={:?})\n",
                p.display().to_string()
            )
        })
        .collect();
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context()
{loads}
s = smtplib.SMTP("127.0.0.1", {port}, local_hostname="app", timeout=10)
s.starttls(context=ctx)
print(s.sock.getpeercert(binary_form=True).hex())
s.quit()
"#,
        port = relay.addr.port()
    );
    let out = python(&script);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn sighup_rereads_the_certificate_and_a_bad_one_keeps_the_running() {
    let (t, b) = (fake(), fake());
    let pki = Pki::new();
    let mut relay = relay_for(&t, &b, &pki.server_keys());
    let old_ca = pki.ca();
    assert_eq!(presented(&relay, &[&old_ca]), hex(pki.cert.cert_der()));

    let renewed = ServerCert::generate("postmark-relay renewed CA");
    let new_ca = pki.path("new-ca.pem");
    std::fs::write(&new_ca, &renewed.ca_pem).unwrap();
    pki.write(&renewed);
    relay.hup();
    relay.wait_log("Inbound TLS certificate re-read", Duration::from_secs(10));
    assert_eq!(
        presented(&relay, &[&old_ca, &new_ca]),
        hex(renewed.cert_der())
    );

    std::fs::write(pki.path("key.pem"), "not a key\n").unwrap();
    relay.hup();
    relay.wait_log("the running certificate stays", Duration::from_secs(10));
    assert_eq!(
        presented(&relay, &[&old_ca, &new_ca]),
        hex(renewed.cert_der())
    );
    // Still serving mail.
    assert!(send(
        relay.addr,
        "a@example.com",
        &["u@example.net"],
        &message("after reload")
    )
    .starts_with("250"));
}

/// Renewed in place (cert-manager, certbot) with no signal: the relay
/// sees the files change and new sessions get the new certificate.
#[test]
fn a_renewed_certificate_is_picked_up_without_a_signal() {
    let (t, b) = (fake(), fake());
    let pki = Pki::new();
    let mut relay = relay_for(&t, &b, &pki.server_keys());
    let old_ca = pki.ca();
    assert_eq!(presented(&relay, &[&old_ca]), hex(pki.cert.cert_der()));
    let renewed = ServerCert::generate("postmark-relay renewed in place CA");
    let new_ca = pki.path("renewed-ca.pem");
    std::fs::write(&new_ca, &renewed.ca_pem).unwrap();
    pki.write(&renewed);
    // The relay compares the files' times every 10 s.
    relay.wait_log(
        "the certificate or key file changed",
        Duration::from_secs(30),
    );
    assert_eq!(
        presented(&relay, &[&old_ca, &new_ca]),
        hex(renewed.cert_der())
    );
}

/// PHPMailer (Debian's libphp-phpmailer), as a PHP app configures it for
/// a relay on another host: STARTTLS verified against the relay's CA, then
/// AUTH with the app's name; a wrong password is refused.
#[test]
fn phpmailer_sends_with_starttls_and_auth() {
    let (t, b) = (fake(), fake());
    let pki = Pki::new();
    let (billing, crm) = (hash(BILLING_PW), hash(CRM_PW));
    let mut relay = relay_for(&t, &b, &with_clients(&pki.server_keys(), &billing, &crm));
    let port = relay.addr.port();
    let send = |password: &str, subject: &str| {
        let script = format!(
            r#"<?php
require '/usr/share/php/libphp-phpmailer/autoload.php';
$m = new PHPMailer\PHPMailer\PHPMailer(true);
$m->isSMTP();
$m->Host = '127.0.0.1';
$m->Port = {port};
$m->SMTPAuth = true;
$m->Username = 'billing';
$m->Password = {password:?};
$m->SMTPSecure = PHPMailer\PHPMailer\PHPMailer::ENCRYPTION_STARTTLS;
$m->SMTPOptions = ['ssl' => ['cafile' => {ca:?}, 'peer_name' => 'localhost']];
$m->setFrom('app@example.com');
$m->addAddress('u@example.net');
$m->Subject = {subject:?};
$m->Body = 'hello from PHPMailer';
try {{ $m->send(); echo "sent\n"; }} catch (Exception $e) {{ echo $m->ErrorInfo, "\n"; exit(1); }}
"#,
            ca = pki.ca().display().to_string(),
        );
        Command::new("php")
            .arg("-r")
            .arg(script.trim_start_matches("<?php"))
            .output()
            .expect("php runs (apt-get install php-cli libphp-phpmailer)")
    };
    let out = send(BILLING_PW, "from phpmailer");
    assert!(out.status.success(), "{}", text(&out));
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(&got, &["from phpmailer".into()]);
    assert!(got[0].tls, "the relay's own upstream leg is TLS too");
    relay.wait_log("client=billing", Duration::from_secs(5));
    let refused = send(CRM_PW, "wrong password");
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("authenticate"),
        "{}",
        text(&refused)
    );
    assert_no_secrets(&relay, &[BILLING_PW, CRM_PW, &billing, &crm]);
}

#[test]
fn hash_password_reads_one_line_and_refuses_an_empty_one() {
    let out = hash_password("pa ss\r\nsecond line ignored\n");
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.starts_with("$argon2id$v=19$") && printed.ends_with('\n'),
        "{printed}"
    );
    assert!(!printed.contains("pa ss"));

    for empty in ["", "\n"] {
        let out = hash_password(empty);
        assert_eq!(out.status.code(), Some(64), "{out:?}");
        assert!(out.stdout.is_empty());
        assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
    }
}

fn config_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("relay.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn credentials_config_errors_exit_64_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let good = hash("pw");
    let cases = [
        (
            "[[clients]]\nname = \"app\"\npassword_hash = \"$argon2id$nonsense\"\n".to_string(),
            "clients[0].password_hash",
        ),
        (
            format!("[server]\ntls_cert_file = \"{}\"\n", pki.path("cert.pem").display()),
            "server.tls_key_file is not",
        ),
        (
            format!(
                "[server]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                pki.path("missing.pem").display(),
                pki.path("key.pem").display()
            ),
            "server.tls_cert_file",
        ),
        ("[server]\nrequire_auth = true\n".to_string(), "server.require_auth"),
        (
            format!("[server]\naccept_auth = true\n\n[[clients]]\nname = \"app\"\npassword_hash = \"{good}\"\n"),
            "server.accept_auth",
        ),
        (
            format!("[[clients]]\nname = \"app\"\npassword_hash = \"{good}\"\nrate = \"3/week\"\n"),
            "clients[0].rate",
        ),
        (
            format!("[[clients]]\nname = \"app\"\npassword_hash = \"{good}\"\nsenders = [\"\"]\n"),
            "clients[0].senders[0]",
        ),
    ];
    for (toml, key) in cases {
        let path = config_file(dir.path(), &toml);
        for command in ["serve", "config"] {
            let out = run_cli(&[command], &path);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{toml}\n{err}");
            assert!(err.contains(key), "{key} not named:\n{err}");
            assert!(
                err.contains(&path.display().to_string()),
                "file not named:\n{err}"
            );
            assert!(!err.contains(&good));
        }
    }
}

#[test]
fn config_command_redacts_client_password_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let h = hash("pw");
    let path = config_file(
        dir.path(),
        &format!(
            "[server]\n{}require_tls = true\n\n[[clients]]\nname = \"app\"\npassword_hash = \"{h}\"\n",
            pki.server_keys()
        ),
    );
    let out = run_cli(&["config"], &path);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!printed.contains(&h), "{printed}");
    assert!(printed.contains("password_hash = \"***\""), "{printed}");
    assert!(printed.contains("name = \"app\""), "{printed}");
    assert!(printed.contains("require_tls = true"), "{printed}");
}

/// `senders`: an authenticated client may send only as its own addresses,
/// checked on the envelope sender at MAIL FROM and on the `From:` address
/// after DATA (`550 5.7.1`, nothing stored); the other client, without
/// `senders`, may use any. Driven by Python's smtplib over STARTTLS.
#[test]
fn senders_restrict_a_clients_envelope_sender_and_from_address() {
    let (t, b) = (fake(), fake());
    let pki = Pki::new();
    let (billing, crm) = (hash(BILLING_PW), hash(CRM_PW));
    let config = with_clients(&pki.server_keys(), &billing, &crm).replace(
        "name = \"billing\"\n",
        "name = \"billing\"\nsenders = [\"*@billing.example.com\"]\n",
    );
    let relay = relay_for(&t, &b, &config);
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(cafile={ca:?})
def session(user, pw):
    s = smtplib.SMTP("127.0.0.1", {port}, local_hostname="app", timeout=10)
    s.starttls(context=ctx)
    s.login(user, pw)
    return s
def attempt(label, s, sender, from_header):
    try:
        s.sendmail(sender, ["u@example.net"], "From: " + from_header + "\r\nSubject: " + label + "\r\n\r\nx\r\n")
        print(label, "accepted")
    except smtplib.SMTPSenderRefused as e:
        print(label, "sender", e.smtp_code, e.smtp_error.decode())
    except smtplib.SMTPDataError as e:
        print(label, "data", e.smtp_code, e.smtp_error.decode())
    s.rset()
s = session("billing", {billing_pw:?})
attempt("own", s, "invoices@Billing.Example.com", "Billing <invoices@billing.example.com>")
attempt("foreign-envelope", s, "ceo@crm.example.com", "invoices@billing.example.com")
attempt("foreign-from", s, "invoices@billing.example.com", "CEO <ceo@crm.example.com>")
s.quit()
s = session("crm", {crm_pw:?})
attempt("crm-any", s, "ceo@crm.example.com", "ceo@crm.example.com")
s.quit()
"#,
        ca = pki.ca().display().to_string(),
        port = relay.addr.port(),
        billing_pw = BILLING_PW,
        crm_pw = CRM_PW,
    );
    let out = python(&script);
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("own accepted"), "{printed}");
    assert!(
        printed.contains("foreign-envelope sender 550 5.7.1 Sender <ceo@crm.example.com>")
            && printed.contains("client billing"),
        "{printed}"
    );
    assert!(
        printed.contains("foreign-from data 550 5.7.1 From: <ceo@crm.example.com>"),
        "{printed}"
    );
    assert!(printed.contains("crm-any accepted"), "{printed}");
    let got = settle(&relay, &t, Duration::from_secs(10));
    assert_each_once(&got, &["own".into(), "crm-any".into()]);
}
