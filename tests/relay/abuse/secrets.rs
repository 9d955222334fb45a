//! The token never appears in anything the relay prints, at the most
//! verbose log level (`RUST_LOG=trace`: TLS, SMTP traces, every crate),
//! nor in `/metrics`, `config` or `check` output: not as itself, and not in
//! the base64 forms it takes on the wire (AUTH PLAIN `\0tok\0tok`, AUTH
//! LOGIN `tok`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{relay_command, wait_output};
use crate::harness::*;

const SERVER_TOKEN: &str = "srv-0f3c9a7e-5b1d-4c2a-9e8f-71d2c6a4b3e5";
const ACCOUNT_TOKEN: &str = "acct-8d2e4f6a-1b3c-4d5e-8f70-a1b2c3d4e5f6";

/// Every form in which `token` could leak.
fn forms(token: &str) -> Vec<String> {
    vec![
        token.to_owned(),
        base64(token.as_bytes()),
        base64(format!("\0{token}\0{token}").as_bytes()),
        base64(format!("{token}\0{token}\0{token}").as_bytes()),
    ]
}

fn assert_no_token(what: &str, text: &str) {
    for token in [SERVER_TOKEN, ACCOUNT_TOKEN] {
        for form in forms(token) {
            if let Some(line) = text.lines().find(|l| l.contains(&form)) {
                panic!("{what} shows the token (as {form:?}): {line}");
            }
        }
    }
}

/// A `serve` at trace level; stdout and stderr both collected.
struct TracedRelay {
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
    /// Read stdout and stderr until they close.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl TracedRelay {
    fn start(config: &str, token: &str, dir: &tempfile::TempDir) -> TracedRelay {
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = relay_command()
            .arg("serve")
            .arg("-c")
            .arg(&path)
            .env("RUST_LOG", "trace")
            .env("POSTMARK_SERVER_TOKEN", token)
            .env("POSTMARK_RELAY_QUEUE__PATH", dir.path().join("queue"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let stdout: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let stderr: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        let mut readers = Vec::new();
        for pipe in [stdout, stderr] {
            let sink = output.clone();
            readers.push(std::thread::spawn(move || {
                // Lossy: a trace line may carry raw bytes.
                let mut reader = BufReader::new(pipe);
                let mut line = Vec::new();
                while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                    sink.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&line).into_owned());
                    line.clear();
                }
            }));
        }
        TracedRelay {
            child,
            output,
            readers,
        }
    }

    /// The `address=` of the first line containing `needle`.
    fn address(&mut self, needle: &str) -> SocketAddr {
        let line = self.wait_for(needle);
        let text = line.split("address=").nth(1).unwrap();
        let end = text
            .find(|c: char| c.is_whitespace() || c == '\u{1b}')
            .unwrap_or(text.len());
        text[..end].parse().unwrap()
    }

    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self.text().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline && self.child.try_wait().unwrap().is_none(),
                "no {needle:?} in the output:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn text(&self) -> String {
        self.output.lock().unwrap().concat()
    }

    /// Stops it and returns everything it printed (read to the end).
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.text()
    }
}

/// One HTTP/1.0 GET; the whole response.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: relay\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// `config_for` with the admin endpoint on and `extra` appended.
fn traced_config(t: &FakePostmark, b: &FakePostmark, extra: &str) -> String {
    let config = config_for(t, b, &format!("##{extra}"));
    let off = "[admin]\nlisten = \"\"";
    assert!(config.contains(off));
    config.replace(off, "[admin]\nlisten = \"127.0.0.1:0\"")
}

#[test]
fn the_token_appears_nowhere_at_trace_level() {
    assert_eq!(base64(b"\0a\0a"), "AGEAYQ==");
    let fake_with = |server: &str| {
        FakePostmark::start(FakeOptions {
            server_token: server.to_owned(),
            account_token: Some(ACCOUNT_TOKEN.to_owned()),
            ..FakeOptions::default()
        })
    };
    let mut seen = Vec::new();

    // 1. A successful relay, with /metrics, /readyz and /healthz read.
    let (t, b) = (fake_with(SERVER_TOKEN), fake_with(SERVER_TOKEN));
    let dir = tempfile::tempdir().unwrap();
    let mut relay = TracedRelay::start(&traced_config(&t, &b, ""), SERVER_TOKEN, &dir);
    let smtp = relay.address("Listening for SMTP.");
    let admin = relay.address("Admin endpoint listening");
    let reply = send(
        smtp,
        "app@example.com",
        &["u@example.net"],
        &message("traced"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let queue = QueueDir::new(dir.path().join("queue"));
    quiesce(&queue, &[&t], Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}; output:\n{}", relay.text()));
    let got = t.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].auth_user.as_deref(),
        Some(SERVER_TOKEN),
        "it did AUTH"
    );
    relay.wait_for("Message relayed.");
    for path in ["/metrics", "/readyz", "/healthz"] {
        seen.push((format!("GET {path}"), get(admin, path)));
    }
    seen.push(("serve (relayed)".to_owned(), relay.stop()));

    // 2. An Account API Token: AUTH fails with `ServerAPI key required`.
    let (t2, b2) = (fake_with(SERVER_TOKEN), fake_with(SERVER_TOKEN));
    let dir2 = tempfile::tempdir().unwrap();
    let mut relay = TracedRelay::start(&traced_config(&t2, &b2, ""), ACCOUNT_TOKEN, &dir2);
    let smtp = relay.address("Listening for SMTP.");
    let admin = relay.address("Admin endpoint listening");
    let reply = send(
        smtp,
        "app@example.com",
        &["u@example.net"],
        &message("held"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    relay.wait_for("ServerAPI key required");
    assert!(t2.auth_failures() > 0);
    seen.push(("GET /readyz (paused)".to_owned(), get(admin, "/readyz")));
    seen.push(("GET /metrics (paused)".to_owned(), get(admin, "/metrics")));
    seen.push(("serve (account token)".to_owned(), relay.stop()));

    // 3. `config` and `check`, with the token in the file, at trace level.
    let file_config = config_for(
        &t,
        &b,
        &format!("##[postmark]\nserver_token = \"{SERVER_TOKEN}\"\n"),
    );
    let path = dir.path().join("cli.toml");
    std::fs::write(&path, file_config).unwrap();
    for command in ["config", "check"] {
        let child = relay_command()
            .arg(command)
            .arg("-c")
            .arg(&path)
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_output(child, Duration::from_secs(60));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{command} failed:\n{text}");
        seen.push((command.to_owned(), text));
    }

    for (what, text) in &seen {
        assert!(!text.is_empty(), "{what} printed nothing");
        assert_no_token(what, text);
    }
    // The trace level really was on (so the check above meant something).
    let serve_log = &seen.iter().find(|(w, _)| w == "serve (relayed)").unwrap().1;
    assert!(
        serve_log.contains("TRACE"),
        "no trace lines in the serve log"
    );
}
