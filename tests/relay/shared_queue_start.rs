//! Starting a relay on the shared queue: a database that is down at start
//! is waited for (the relay serves `452` and says it is not ready), while
//! one that refuses the relay (wrong password), or whose certificate the
//! relay does not trust, stops `serve` with the reason, since waiting
//! would not fix it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use relay_testkit::{TestPostgres, PG_PASSWORD};

use crate::admin::{admin_addr, get, wait_until, with_admin};
use crate::harness::*;

/// Runs `serve` on `config` until it exits (panics if it still runs after
/// 30 s); returns its exit status and its log.
fn serve_until_it_stops(config: &str) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_postmark-relay"))
        .args(["serve", "-c"])
        .arg(&path)
        .env("POSTMARK_RELAY_QUEUE__PATH", dir.path().join("queue"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve kept running for 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

/// `config_for`'s config with the shared queue at `url`.
fn config_on(t: &FakePostmark, b: &FakePostmark, url: &str) -> String {
    config_for(
        t,
        b,
        &format!("##\n[queue]\nbackend = \"postgres\"\nurl = \"{url}\"\n"),
    )
}

#[test]
fn a_relay_started_while_the_database_is_down_serves_452_until_it_is_back() {
    let pg = TestPostgres::start();
    pg.stop();
    let (t, b) = (fake(), fake());
    let mut relay = relay_with(with_admin(config_on(&t, &b, &pg.url())));
    let admin = admin_addr(&mut relay);
    let (status, body) = get(admin, "/readyz");
    assert!(
        status == 503 && body.contains("queue unreachable"),
        "{status} {body}"
    );
    let reply = try_send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("while-down"),
    )
    .unwrap();
    assert!(reply.starts_with("452 4.3.1"), "{reply}");

    pg.start_again();
    wait_until("/readyz 200", Duration::from_secs(30), || {
        get(admin, "/readyz").0 == 200
    });
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("after"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    quiesce(&QueueDir::shared(&pg.url()), &[&t], Duration::from_secs(30)).unwrap();
    assert_each_once(&t.messages(), &["after".to_string()]);
    assert!(relay.logs().iter().all(|l| !l.contains(PG_PASSWORD)));
}

#[test]
fn a_database_that_refuses_the_relays_password_stops_serve_with_the_reason() {
    let pg = TestPostgres::start();
    let (t, b) = (fake(), fake());
    let wrong = "not-the-pa55word";
    let url = pg.url().replace(PG_PASSWORD, wrong);
    let (status, stderr) = serve_until_it_stops(&config_on(&t, &b, &url));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refused the relay") && stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("queue.url"),
        "names the key to fix: {stderr}"
    );
    assert!(!stderr.contains(wrong), "the password leaked: {stderr}");
}

/// `sslmode=require` to a database whose certificate no trusted CA
/// signed: `serve` stops and says to set `queue.ca_file` (waiting would
/// not fix it); with the CA as `queue.ca_file` it serves.
#[test]
fn a_database_certificate_no_trusted_ca_signed_stops_serve_naming_queue_ca_file() {
    let pg = TestPostgres::start_tls();
    let (t, b) = (fake(), fake());
    let (status, stderr) = serve_until_it_stops(&config_on(&t, &b, &pg.tls_url()));
    println!("serve without queue.ca_file:\n{stderr}");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("certificate") && stderr.contains("queue.ca_file"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(PG_PASSWORD),
        "the password leaked: {stderr}"
    );

    let trusting = config_on(&t, &b, &pg.tls_url()).replace(
        "[queue]\n",
        &format!(
            "[queue]\nca_file = {:?}\n",
            pg.ca_file().display().to_string()
        ),
    );
    let relay = relay_with(trusting);
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("over-tls"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let got = t.wait_for(1, Duration::from_secs(30));
    assert_each_once(&got, &["over-tls".to_string()]);
    assert!(relay.logs().iter().all(|l| !l.contains(PG_PASSWORD)));
}
