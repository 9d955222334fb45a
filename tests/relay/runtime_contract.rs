//! The container image's runtime contract, without a container engine: the
//! binary runs as the image runs it — uid/gid 65532 with no groups, no
//! config file, every setting from the Dockerfile's `ENV` lines (only ports
//! and the queue folder changed) — and must serve, relay to a fake Postmark,
//! answer `postmark-relay health`, and exit 0 on SIGTERM. The only place it
//! may write is the queue folder, which that uid owns.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{fake, message, running_as_root, send, TOKEN};

/// The image's user (distroless `nonroot`).
const UID: u32 = 65532;

/// The `ENV` settings of the top-level `Dockerfile`, in order.
pub fn dockerfile_env() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(workspace().join("Dockerfile")).unwrap();
    // Join continuation lines, drop comments.
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') && current.is_empty() {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut env = Vec::new();
    for line in logical {
        if let Some(rest) = line.strip_prefix("ENV ") {
            env.extend(parse_env_pairs(rest));
        }
    }
    env
}

/// `KEY=VALUE KEY='VALUE' KEY="VALUE"` as Docker's `ENV` reads them.
fn parse_env_pairs(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return pairs;
        }
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        let mut value = String::new();
        let mut quote = None;
        while let Some(&c) = chars.peek() {
            match (quote, c) {
                (None, c) if c.is_whitespace() => break,
                (None, '\'' | '"') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (_, c) => value.push(c),
            }
            chars.next();
        }
        assert!(quote.is_none(), "Dockerfile ENV {key}: unterminated quote");
        pairs.push((key, value));
    }
}

/// The workspace root (this test's crate is `crates/postmark-relay`).
pub fn workspace() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `BIN ARGS` as uid/gid 65532 with exactly `env`.
fn as_image_user(bin: &Path, args: &[&str], env: &BTreeMap<String, String>) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65532", "--regid=65532", "--clear-groups", "--"])
        .arg(bin)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .envs(env)
        .stdin(Stdio::null());
    cmd
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Switching to another user takes root (a user namespace maps only our
/// own uid), so `cargo test` lists this as ignored for anyone else; as
/// root, scripts/test and CI run it with `--include-ignored`.
#[test]
#[ignore = "needs root: runs the binary as uid 65532, the image's user (scripts/test as root runs it)"]
fn runs_like_the_image_non_root_env_only() {
    assert!(
        running_as_root(),
        "needs root to switch to uid {UID}: run it as root (sudo scripts/test runs it)"
    );
    assert!(
        !Path::new("/etc/postmark-relay/relay.toml").exists(),
        "/etc/postmark-relay/relay.toml exists here; the image has none, so this test would not test env-only configuration"
    );
    let upstream = fake();

    // A folder only root can write to, except the queue inside it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let queue = dir.path().join("queue");
    std::fs::create_dir(&queue).unwrap();
    std::os::unix::fs::chown(&queue, Some(UID), Some(UID)).unwrap();
    std::fs::set_permissions(&queue, std::fs::Permissions::from_mode(0o700)).unwrap();
    // The build folder may be private to root (a CI checkout): the image's
    // user runs a root-owned copy, as in the image.
    let bin = dir.path().join("postmark-relay");
    std::fs::copy(env!("CARGO_BIN_EXE_postmark-relay"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The fake's CA may sit in a private folder; the relay's user reads a copy.
    let ca = dir.path().join("ca.pem");
    std::fs::copy(upstream.ca_file(), &ca).unwrap();
    std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o644)).unwrap();

    let admin_port = free_port();
    let mut env: BTreeMap<String, String> = dockerfile_env().into_iter().collect();
    for key in [
        "POSTMARK_RELAY_SERVER__LISTEN",
        "POSTMARK_RELAY_SERVER__ALLOWED_NETWORKS",
        "POSTMARK_RELAY_ADMIN__LISTEN",
        "POSTMARK_RELAY_QUEUE__PATH",
    ] {
        assert!(env.contains_key(key), "the Dockerfile sets no {key}");
    }
    assert_eq!(env["POSTMARK_RELAY_SERVER__LISTEN"], "0.0.0.0:25");
    assert_eq!(env["POSTMARK_RELAY_ADMIN__LISTEN"], "0.0.0.0:9925");
    // Same addresses as the image, on ports free here.
    env.insert("POSTMARK_RELAY_SERVER__LISTEN".into(), "0.0.0.0:0".into());
    env.insert(
        "POSTMARK_RELAY_ADMIN__LISTEN".into(),
        format!("0.0.0.0:{admin_port}"),
    );
    env.insert(
        "POSTMARK_RELAY_QUEUE__PATH".into(),
        queue.display().to_string(),
    );
    env.insert("POSTMARK_SERVER_TOKEN".into(), TOKEN.into());
    env.insert(
        "POSTMARK_RELAY_UPSTREAMS__TRANSACTIONAL__HOST".into(),
        "localhost".into(),
    );
    env.insert(
        "POSTMARK_RELAY_UPSTREAMS__TRANSACTIONAL__PORT".into(),
        upstream.port().to_string(),
    );
    env.insert(
        "POSTMARK_RELAY_UPSTREAMS__TRANSACTIONAL__CA_FILE".into(),
        ca.display().to_string(),
    );

    let mut child = as_image_user(&bin, &["serve"], &env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv runs");
    let logs = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = logs.clone();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let wait_log = |needle: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = logs.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}; log:\n{}",
                logs.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let started = wait_log("postmark-relay starting.");
    assert!(
        started.contains("built-in defaults and environment"),
        "read a config file: {started}"
    );
    let listening = wait_log("Listening for SMTP.");
    let port: u16 = listening
        .split("address=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .unwrap()
        .port();
    let smtp = SocketAddr::from(([127, 0, 0, 1], port));
    wait_log("Admin endpoint listening");

    // It serves and relays.
    let reply = send(
        smtp,
        "app@example.com",
        &["u@example.net"],
        &message("runtime-contract"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let got = upstream.wait_for(1, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "log:\n{}", logs.lock().unwrap().join("\n"));
    assert_eq!(got[0].rcpt_to, vec!["u@example.net".to_string()]);

    // What it wrote belongs to the image's user.
    for entry in std::fs::read_dir(&queue).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(entry.metadata().unwrap().uid(), UID, "{:?}", entry.path());
    }

    // The HEALTHCHECK command, with the image's environment.
    let health = as_image_user(&bin, &["health"], &env).output().unwrap();
    assert!(
        health.status.success(),
        "health: {:?} {}",
        health.status,
        String::from_utf8_lossy(&health.stderr)
    );
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    assert!(http_get(admin, "/readyz").starts_with("HTTP/1.1 200"));

    // STOPSIGNAL SIGTERM: a clean exit.
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "{status:?}; log:\n{}",
        logs.lock().unwrap().join("\n")
    );
    // The whole log: the reader ends when the exited relay's stderr closes.
    reader.join().unwrap();
    let logs = logs.lock().unwrap();
    assert!(logs.iter().any(|l| l.contains("Stopped.")));
    assert!(!logs.iter().any(|l| l.contains(TOKEN)), "token in the log");
}

#[test]
fn dockerfile_env_parser_reads_quotes_and_continuations() {
    let pairs = parse_env_pairs(r#"A=1 B='["x","y"]' C="two words" D=e"f""#);
    assert_eq!(
        pairs,
        vec![
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), r#"["x","y"]"#.to_string()),
            ("C".to_string(), "two words".to_string()),
            ("D".to_string(), "ef".to_string()),
        ]
    );
}
