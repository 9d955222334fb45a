//! `check` and `send-test` against fake upstreams: a verdict per upstream
//! that names the failed step and its fix, the right exit code, a test
//! message that reaches the right upstream, and never the token in output.

use std::path::PathBuf;
use std::process::Output;

use crate::harness::*;

/// A token no default or message text contains, so a leak is unmistakable.
const SECRET: &str = "srv-tok-7c41e9d2";

/// A config whose upstreams are the fakes, with `token` in the file.
fn config_with_token(t: &FakePostmark, b: &FakePostmark, token: Option<&str>) -> String {
    let extra = match token {
        Some(token) => format!("##[postmark]\nserver_token = \"{token}\"\n"),
        None => String::new(),
    };
    config_for(t, b, &extra)
}

/// Fakes that accept [`SECRET`] (with `opts` otherwise).
fn fake_with(opts: FakeOptions) -> FakePostmark {
    FakePostmark::start(FakeOptions {
        server_token: SECRET.into(),
        ..opts
    })
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `config`; panics if any token shows in its output.
fn run(args: &[&str], config: &str, tokens: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("relay.toml");
    std::fs::write(&path, config).unwrap();
    let Output {
        status,
        stdout,
        stderr,
    } = run_cli(args, &path);
    let run = Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    for token in tokens {
        assert!(
            !run.stdout.contains(token) && !run.stderr.contains(token),
            "token {token:?} leaked:\n{}{}",
            run.stdout,
            run.stderr
        );
    }
    run
}

/// The verdict line for upstream `name`.
fn line<'a>(run: &'a Run, name: &str) -> &'a str {
    run.stdout
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no line for {name}:\n{}{}", run.stdout, run.stderr))
}

#[test]
fn check_passes_against_healthy_upstreams() {
    let (t, b) = (
        fake_with(FakeOptions::default()),
        fake_with(FakeOptions::default()),
    );
    let run = run(
        &["check"],
        &config_with_token(&t, &b, Some(SECRET)),
        &[SECRET],
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let tl = line(&run, "transactional");
    assert!(tl.contains(&format!("localhost:{}", t.port())), "{tl}");
    assert!(tl.contains("OK (STARTTLS, authenticated)"), "{tl}");
    assert!(line(&run, "broadcast").contains("OK (STARTTLS, authenticated)"));
    assert_eq!((t.logins(), b.logins()), (1, 1));
}

#[test]
fn check_says_an_account_token_is_the_wrong_kind() {
    let account = "acct-tok-93be11f0";
    let t = fake_with(FakeOptions {
        account_token: Some(account.into()),
        ..FakeOptions::default()
    });
    let b = fake_with(FakeOptions::default());
    let run = run(
        &["check"],
        &config_with_token(&t, &b, Some(account)),
        &[account, SECRET],
    );
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let tl = line(&run, "transactional");
    assert!(tl.contains("FAILED at AUTH"), "{tl}");
    assert!(tl.contains("ServerAPI key required"), "{tl}");
    assert!(
        tl.contains("use the Server API Token (Servers → your server → API Tokens), not an Account API Token"),
        "{tl}"
    );
}

#[test]
fn check_says_a_mismatched_token_must_be_both_username_and_password() {
    let (t, b) = (
        fake_with(FakeOptions::default()),
        fake_with(FakeOptions::default()),
    );
    let wrong = "wrong-tok-0d5a44c1";
    let run = run(
        &["check"],
        &config_with_token(&t, &b, Some(wrong)),
        &[wrong, SECRET],
    );
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    for name in ["transactional", "broadcast"] {
        let l = line(&run, name);
        assert!(l.contains("FAILED at AUTH") && l.contains("535"), "{l}");
        assert!(
            l.contains("the same Server API Token must be both username and password"),
            "{l}"
        );
    }
}

#[test]
fn check_names_a_refused_port() {
    let (t, b) = (
        fake_with(FakeOptions::default()),
        fake_with(FakeOptions::default()),
    );
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = config_with_token(&t, &b, Some(SECRET)).replace(
        &format!("port = {}\n", t.port()),
        &format!("port = {dead}\n"),
    );
    let run = run(&["check"], &config, &[SECRET]);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let tl = line(&run, "transactional");
    assert!(tl.contains("FAILED at TCP connect"), "{tl}");
    assert!(
        tl.contains(&format!("connection refused by localhost:{dead}")),
        "{tl}"
    );
    assert!(line(&run, "broadcast").contains("OK (STARTTLS, authenticated)"));
}

#[test]
fn check_names_an_untrusted_certificate_and_the_ca_file_fix() {
    let (t, b) = (
        fake_with(FakeOptions::default()),
        fake_with(FakeOptions::default()),
    );
    let config = config_with_token(&t, &b, Some(SECRET))
        .replace(&format!("ca_file = \"{}\"", t.ca_file().display()), "");
    let run = run(&["check"], &config, &[SECRET]);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let tl = line(&run, "transactional");
    assert!(tl.contains("FAILED at TLS handshake"), "{tl}");
    assert!(tl.contains("certificate of localhost not trusted"), "{tl}");
    assert!(tl.contains("UnknownIssuer"), "{tl}");
    assert!(
        tl.contains("add its CA with upstreams.transactional.ca_file"),
        "{tl}"
    );
    assert_eq!(t.logins(), 0);
    assert!(line(&run, "broadcast").contains("OK"));
}

#[test]
fn check_without_a_token_says_where_to_set_it_and_connects_nowhere() {
    let (t, b) = (
        fake_with(FakeOptions::default()),
        fake_with(FakeOptions::default()),
    );
    let run = run(&["check"], &config_with_token(&t, &b, None), &[SECRET]);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    for name in ["transactional", "broadcast"] {
        let l = line(&run, name);
        assert!(l.contains("no Server API Token configured"), "{l}");
        assert!(l.contains("set POSTMARK_SERVER_TOKEN"), "{l}");
    }
    assert_eq!(t.connections() + b.connections(), 0);
}

#[test]
fn send_test_delivers_to_the_transactional_upstream_and_prints_the_reply() {
    let (t, b) = (
        fake_with(FakeOptions::default()),
        fake_with(FakeOptions::default()),
    );
    let run = run(
        &["send-test", "--to", "x@example.net"],
        &config_with_token(&t, &b, Some(SECRET)),
        &[SECRET],
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("250"), "{}", run.stdout);
    let got = t.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "postmark-relay@relay.test");
    assert_eq!(got[0].rcpt_to, vec!["x@example.net".to_string()]);
    assert_eq!(subject(&got[0]), "postmark-relay test message");
    for header in ["Date", "Message-ID", "From", "To"] {
        assert_eq!(header_values(&got[0].data, header).len(), 1, "{header}");
    }
    assert!(header_values(&got[0].data, "X-PM-Message-Stream").is_empty());
    assert!(b.messages().is_empty());
}

#[test]
fn send_test_broadcast_goes_to_the_broadcast_upstream_with_its_stream() {
    let (t, b) = (
        fake_with(FakeOptions::default()),
        fake_with(FakeOptions::default()),
    );
    let config = config_with_token(&t, &b, Some(SECRET));
    let run1 = run(
        &["send-test", "--to", "x@example.net", "--broadcast"],
        &config,
        &[SECRET],
    );
    assert_eq!(run1.code, Some(0), "{}{}", run1.stdout, run1.stderr);
    let run2 = run(
        &[
            "send-test",
            "--to",
            "y@example.net",
            "--stream",
            "Broadcasts",
        ],
        &config,
        &[SECRET],
    );
    assert_eq!(run2.code, Some(0), "{}{}", run2.stdout, run2.stderr);
    let got = b.messages();
    assert_eq!(got.len(), 2);
    assert_eq!(
        header_values(&got[0].data, "X-PM-Message-Stream"),
        vec!["broadcast".to_string()]
    );
    assert_eq!(
        header_values(&got[1].data, "X-PM-Message-Stream"),
        vec!["Broadcasts".to_string()]
    );

    // Any other stream is a transactional one.
    let run3 = run(
        &["send-test", "--to", "z@example.net", "--stream", "outbound"],
        &config,
        &[SECRET],
    );
    assert_eq!(run3.code, Some(0), "{}{}", run3.stdout, run3.stderr);
    let got = t.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(
        header_values(&got[0].data, "X-PM-Message-Stream"),
        vec!["outbound".to_string()]
    );
}

#[test]
fn send_test_from_an_unverified_domain_fails_with_the_sender_signatures_hint() {
    let t = fake_with(FakeOptions {
        unverified_domains: vec!["unverified.test".into()],
        ..FakeOptions::default()
    });
    let b = fake_with(FakeOptions::default());
    let run = run(
        &[
            "send-test",
            "--to",
            "x@example.net",
            "--from",
            "someone@unverified.test",
        ],
        &config_with_token(&t, &b, Some(SECRET)),
        &[SECRET],
    );
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("not found in your domains"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Sender Signatures"), "{}", run.stderr);
    assert!(t.messages().is_empty());
}

/// `check --from ADDR` asks every upstream whether Postmark takes ADDR as
/// a sender (MAIL FROM, then RSET) without sending anything: an unverified
/// domain fails with its fix on the upstream that refuses it (whatever the
/// reply code), a verified one passes everywhere.
#[test]
fn check_from_asks_each_upstream_about_the_sender_and_sends_nothing() {
    let t = fake_with(FakeOptions {
        unverified_domains: vec!["unverified.test".into()],
        unverified_code: 422,
        ..FakeOptions::default()
    });
    let b = fake_with(FakeOptions::default());
    let config = config_with_token(&t, &b, Some(SECRET));

    let refused = run(
        &["check", "--from", "app@unverified.test"],
        &config,
        &[SECRET],
    );
    assert_eq!(
        refused.code,
        Some(1),
        "{}{}",
        refused.stdout,
        refused.stderr
    );
    let line = |out: &str, name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{out}"))
            .to_string()
    };
    let transactional = line(&refused.stdout, "transactional");
    assert!(
        transactional.contains("FAILED at MAIL FROM")
            && transactional.contains("refuses app@unverified.test")
            && transactional.contains("Sender Signatures"),
        "{transactional}"
    );
    let broadcast = line(&refused.stdout, "broadcast");
    assert!(
        broadcast.contains("sender app@unverified.test accepted"),
        "{broadcast}"
    );

    let accepted = run(&["check", "--from", "app@example.com"], &config, &[SECRET]);
    assert_eq!(
        accepted.code,
        Some(0),
        "{}{}",
        accepted.stdout,
        accepted.stderr
    );
    assert!(
        line(&accepted.stdout, "transactional").contains("sender app@example.com accepted"),
        "{}",
        accepted.stdout
    );
    assert!(t.messages().is_empty() && b.messages().is_empty());

    let injected = run(
        &[
            "check",
            "--from",
            "a@example.com>\r\nRCPT TO:<x@example.net",
        ],
        &config,
        &[SECRET],
    );
    assert_eq!(
        injected.code,
        Some(64),
        "{}{}",
        injected.stdout,
        injected.stderr
    );
    assert!(injected.stderr.contains("--from"), "{}", injected.stderr);
}
