//! Runs the real `postmark-relay` binary against fake Postmark upstreams,
//! over real sockets, and gives tests a small SMTP client.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use relay_testkit::{FakeOptions, FakePostmark, Received};

/// The token the fakes accept by default.
pub const TOKEN: &str = "server-token";

/// A config for a relay whose upstreams are the given fakes (STARTTLS,
/// trusting the fakes' test CA) with short retry delays. `extra` is text for
/// the `[server]` table, optionally followed by `##` and text appended at
/// the end (e.g. `[routing]` tables).
pub fn config_for(transactional: &FakePostmark, broadcast: &FakePostmark, extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
hostname = "relay.test"
{extra_server}

[upstreams.transactional]
host = "localhost"
port = {tp}
ca_file = "{tca}"
connections = 2

[upstreams.broadcast]
host = "localhost"
port = {bp}
ca_file = "{bca}"
connections = 1

[retry]
initial_delay = "100ms"
max_delay = "500ms"
multiplier = 2.0

[admin]
listen = ""

{extra_rest}
"#,
        tp = transactional.port(),
        tca = transactional.ca_file().display(),
        bp = broadcast.port(),
        bca = broadcast.ca_file().display(),
        extra_server = extra.split("##").next().unwrap_or(""),
        extra_rest = extra.split("##").nth(1).unwrap_or(""),
    )
}

/// A relay with the default token whose upstreams are the given fakes;
/// `extra` as for [`config_for`].
pub fn relay_for(transactional: &FakePostmark, broadcast: &FakePostmark, extra: &str) -> Relay {
    relay_with(config_for(transactional, broadcast, extra))
}

/// A relay on `config` with the fakes' token and a fresh folder.
pub fn relay_with(config: String) -> Relay {
    Relay::start(Start {
        config,
        token: Some(TOKEN),
        dir: None,
    })
}

/// A running relay process.
pub struct Relay {
    child: Child,
    pub addr: SocketAddr,
    pub dir: Arc<tempfile::TempDir>,
    /// Its queue folder (`queue` in `dir`), for the `queue` commands.
    pub queue: QueueDir,
    logs: Arc<Mutex<Vec<String>>>,
    /// Reads the log until the relay's stderr closes.
    reader: Option<std::thread::JoinHandle<()>>,
}

/// How to start a relay: its config text and environment.
pub struct Start<'a> {
    pub config: String,
    pub token: Option<&'a str>,
    /// Reuse a previous relay's folder (its queue) instead of a new one.
    pub dir: Option<Arc<tempfile::TempDir>>,
}

impl Relay {
    /// Starts the binary and waits until it listens.
    pub fn start(start: Start<'_>) -> Relay {
        Relay::start_under(start, &[])
    }

    /// Starts the binary as the last argument of `wrapper` (a program and
    /// its arguments that end by exec'ing the rest of their command line;
    /// empty: the binary itself), and waits until it listens.
    pub fn start_under(start: Start<'_>, wrapper: &[&OsStr]) -> Relay {
        let dir = start
            .dir
            .unwrap_or_else(|| Arc::new(tempfile::tempdir().unwrap()));
        let config_path = dir.path().join("relay.toml");
        std::fs::write(&config_path, &start.config).unwrap();
        let queue = dir.path().join("queue");
        let bin = OsStr::new(env!("CARGO_BIN_EXE_postmark-relay"));
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        cmd.arg("serve")
            .arg("-c")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .env("POSTMARK_RELAY_QUEUE__PATH", &queue)
            .env("POSTMARK_RELAY_LOG__LEVEL", "info,relay_delivery=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match start.token {
            Some(t) => cmd.env("POSTMARK_SERVER_TOKEN", t),
            None => cmd.env_remove("POSTMARK_SERVER_TOKEN"),
        };
        Relay::spawn(cmd, dir)
    }

    /// Runs `cmd` (a `serve`, perhaps wrapped: `sh -c`, `setpriv`) with its
    /// stderr captured as the log, and waits until it listens; `dir` is
    /// the test's folder, kept as long as the relay.
    pub fn spawn(mut cmd: Command, dir: Arc<tempfile::TempDir>) -> Relay {
        // Every relay of the tests keeps its queue in `<dir>/queue`.
        let queue = dir.path().join("queue");
        cmd.stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("postmark-relay runs");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut relay = Relay {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            dir,
            queue: QueueDir::new(queue),
            logs,
            reader: Some(reader),
        };
        let line = relay.wait_log("Listening for SMTP.", Duration::from_secs(20));
        let addr = line
            .split("address=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap();
        relay.addr = addr.parse().unwrap();
        relay
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits for a log line containing `needle`; panics with the log if none.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.logs().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            if Instant::now() > deadline || self.child.try_wait().unwrap().is_some() {
                panic!(
                    "no log line with {needle:?}; log:\n{}",
                    self.logs().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many log lines contain `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.logs().iter().filter(|l| l.contains(needle)).count()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) -> Arc<tempfile::TempDir> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.dir.clone()
    }

    /// SIGKILL, keeping the handle (to be replaced by a restarted relay);
    /// returns the folder for the restart.
    pub fn kill9_in_place(&mut self) -> Arc<tempfile::TempDir> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.dir.clone()
    }

    /// The relay's process id (for `/proc/<pid>/status` memory checks).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGHUP: reload the configuration.
    pub fn hup(&self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    }

    /// SIGTERM, then the exit status (waits at most 40 s).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "relay did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `postmark-relay queue ARGS` against this relay's queue.
    pub fn queue_cli(&self, args: &[&str]) -> Output {
        self.queue.cli(args)
    }

    /// `queue list --json`, parsed (panics unless the command succeeds).
    pub fn queue_list(&self) -> Vec<serde_json::Value> {
        self.queue.list()
    }

    /// Log lines that mention queue id `id` and contain `needle`.
    pub fn count_log_for(&self, id: &str, needle: &str) -> usize {
        let field = format!("queue_id={id}");
        self.logs()
            .iter()
            .filter(|l| l.contains(needle) && l.split_whitespace().any(|w| w == field))
            .count()
    }
}

impl Drop for Relay {
    /// Stops the relay, then checks the promise every test relies on: the
    /// token never appears in the log, at any level the tests run.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            // The whole log: the reader ends when the dead relay's stderr
            // closes.
            if let Some(reader) = self.reader.take() {
                let _ = reader.join();
            }
            if let Some(line) = self.logs().iter().find(|l| l.contains(TOKEN)) {
                panic!("the token appeared in the log: {line}");
            }
        }
    }
}

/// Starts a fake upstream with default rules.
pub fn fake() -> FakePostmark {
    FakePostmark::start(FakeOptions::default())
}

/// A minimal SMTP client that shows every reply: for checking codes.
pub struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    /// Connects and returns the client and the greeting line.
    pub fn connect(addr: SocketAddr) -> (Client, String) {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        let mut client = Client { stream, reader };
        let greeting = client.read_reply();
        (client, greeting)
    }

    /// Reads one (possibly multi-line) reply; "" on EOF.
    pub fn read_reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                return reply;
            }
            reply.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return reply;
            }
        }
    }

    /// Sends raw bytes without reading.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends one command line and returns the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.read_reply()
    }

    /// Whether the server closed the connection.
    pub fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.reader.read(&mut buf), Ok(0))
    }
}

/// Sends one message (body without the final dot line) and returns the
/// final reply.
pub fn send(addr: SocketAddr, from: &str, to: &[&str], body: &[u8]) -> String {
    let (mut c, _) = Client::connect(addr);
    assert!(c.cmd("EHLO test.client").starts_with("250"));
    assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
    for rcpt in to {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(r.starts_with("250"), "{r}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    c.send_raw(body);
    c.send_raw(b".\r\n");
    let reply = c.read_reply();
    c.cmd("QUIT");
    reply
}

/// Sends one message per subject (see [`message`]), each on its own
/// connection, from `threads` concurrent clients; panics unless every
/// reply is `250`.
pub fn send_concurrently(addr: SocketAddr, subjects: &[String], threads: usize) {
    std::thread::scope(|scope| {
        for chunk in subjects.chunks(subjects.len().div_ceil(threads)) {
            scope.spawn(move || {
                for s in chunk {
                    let reply = send(addr, "app@example.com", &["u@example.net"], &message(s));
                    assert!(reply.starts_with("250"), "{s}: {reply}");
                }
            });
        }
    });
}

/// The queue id from a `250 ... queued as ID` reply.
pub fn queue_id(reply: &str) -> String {
    reply.trim().rsplit(' ').next().unwrap().to_string()
}

/// How long the fakes must take nothing new, with the queue empty, before
/// [`quiesce`] returns: time for a late copy (a delivery still in flight,
/// or one sent again) to show up before the test counts.
pub const IDLE: Duration = Duration::from_secs(2);

/// A queue, as `postmark-relay queue ...` reaches it: an embedded one in
/// a folder, or a shared one on PostgreSQL.
#[derive(Debug, Clone)]
pub struct QueueDir {
    /// A command that runs the rest of its command line where the relay's
    /// files are (e.g. `nsenter` into its mount namespace); empty: here.
    pub enter: Vec<OsString>,
    /// The `[queue]` section the commands run with.
    section: String,
}

impl QueueDir {
    /// The queue in folder `path` (as the relay sees it), on this
    /// process's file system.
    pub fn new(path: PathBuf) -> QueueDir {
        let section = format!("[queue]\npath = {:?}\n", path.display().to_string());
        QueueDir {
            enter: Vec::new(),
            section,
        }
    }

    /// The shared queue at `url` (every replica's queue).
    pub fn shared(url: &str) -> QueueDir {
        QueueDir {
            enter: Vec::new(),
            section: format!("[queue]\nbackend = \"postgres\"\nurl = {url:?}\n"),
        }
    }

    /// Runs `postmark-relay queue ARGS` against it (with nothing from the
    /// test's environment that configures it).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.run("queue", args)
    }

    /// Runs `postmark-relay history ARGS` against it, as [`QueueDir::cli`].
    pub fn history(&self, args: &[&str]) -> Output {
        self.run("history", args)
    }

    /// Runs `postmark-relay COMMAND ARGS` with only its `[queue]` section.
    fn run(&self, command: &str, args: &[&str]) -> Output {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("queue.toml");
        std::fs::write(&config, &self.section).unwrap();
        cli_command(&self.enter)
            .arg(command)
            .args(args)
            .arg("-c")
            .arg(&config)
            .output()
            .expect("postmark-relay runs")
    }

    /// `queue list --json`, parsed (panics unless the command succeeds).
    pub fn list(&self) -> Vec<serde_json::Value> {
        let out = self.cli(&["list", "--json"]);
        assert!(out.status.success(), "queue list --json: {out:?}");
        match serde_json::from_slice(&out.stdout).unwrap() {
            serde_json::Value::Array(messages) => messages,
            other => panic!("queue list --json: not one JSON array: {other}"),
        }
    }

    /// Messages that delivery still has to handle (`queued` + `deferred`
    /// in `queue stats --json`: failed messages stay, but are never sent).
    pub fn waiting(&self) -> Result<u64, String> {
        let out = self.cli(&["stats", "--json"]);
        if !out.status.success() {
            return Err(format!(
                "queue stats --json: {:?}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let stats: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("queue stats --json: {e}"))?;
        let count = |state: &str| stats["by_state"][state].as_u64();
        match (count("queued"), count("deferred")) {
            (Some(queued), Some(deferred)) => Ok(queued + deferred),
            _ => Err(format!("queue stats --json without counts: {stats}")),
        }
    }
}

/// The one wait before counting what the upstreams got: until the queue
/// at `queue` holds nothing waiting (every message delivered or failed)
/// and then no fake in `fakes` has taken a new message for [`IDLE`] with
/// the queue still empty. Errs with what was still waiting after
/// `timeout` (plus [`IDLE`]).
pub fn quiesce(queue: &QueueDir, fakes: &[&FakePostmark], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout + IDLE;
    let received = || fakes.iter().map(|f| f.messages().len()).sum::<usize>();
    let mut seen = received();
    let mut quiet_since: Option<Instant> = None;
    loop {
        let now = received();
        if now != seen {
            seen = now;
            quiet_since = None;
        }
        let left = queue.waiting()?;
        if left > 0 {
            quiet_since = None;
        } else if quiet_since.get_or_insert_with(Instant::now).elapsed() >= IDLE {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(if left > 0 {
                format!("after {timeout:?}, {left} message(s) still wait in the queue (upstreams got {now})")
            } else {
                format!("after {timeout:?}, the upstreams still take messages (got {now}) with the queue empty")
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// [`quiesce`] on `relay`'s queue and `fake`; returns what `fake` got.
/// Panics with the relay's log if the queue does not drain in `timeout`.
pub fn settle(relay: &Relay, fake: &FakePostmark, timeout: Duration) -> Vec<Received> {
    settle_all(relay, &[fake], timeout);
    fake.messages()
}

/// [`quiesce`] on `relay`'s queue and every fake in `fakes`.
pub fn settle_all(relay: &Relay, fakes: &[&FakePostmark], timeout: Duration) {
    if let Err(e) = quiesce(&relay.queue, fakes, timeout) {
        panic!("{e}; log:\n{}", relay.logs().join("\n"));
    }
}

/// The client's part of a relayed message (after the headers we add).
pub fn strip_added_headers(data: &[u8]) -> &[u8] {
    let mut rest = data;
    loop {
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return rest;
        };
        let line = &rest[..end];
        let ours = [
            "Received:",
            "\t",
            "Date:",
            "Message-ID:",
            "X-PM-Message-Stream:",
        ]
        .iter()
        .any(|p| line.starts_with(p.as_bytes()));
        if !ours {
            return rest;
        }
        rest = &rest[end + 2..];
    }
}

/// A message with a unique `Subject:` and `Message-ID:` built from `tag`, so
/// a test can tell its messages apart upstream.
pub fn message(tag: &str) -> Vec<u8> {
    format!(
        "From: App <app@example.com>\r\nTo: u@example.net\r\nSubject: {tag}\r\nMessage-ID: <{tag}@example.com>\r\n\r\nbody of {tag}\r\n"
    )
    .into_bytes()
}

/// The values of header `name` (case-insensitive) in the header section of
/// `data`, unfolded lines only (enough for the headers the relay handles).
pub fn header_values(data: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    text.split("\r\n")
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// The `Subject:` of a received message ("" if none).
pub fn subject(m: &Received) -> String {
    header_values(&m.data, "Subject")
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// Panics unless every subject in `want` arrived exactly once and nothing
/// else arrived; the message says what was missing or duplicated.
pub fn assert_each_once(got: &[Received], want: &[String]) {
    let mut subjects: Vec<String> = got.iter().map(subject).collect();
    subjects.sort();
    let mut want = want.to_vec();
    want.sort();
    assert_eq!(subjects, want, "upstream got these subjects (sorted)");
}

/// Runs `postmark-relay ARGS -c CONFIG` with no token or overrides from the
/// test's environment, and returns its output.
/// A command that has not exited after [`CLI_LIMIT`] is killed and the
/// test fails: a `serve` expected to refuse its config must not hang the
/// suite when it starts instead.
pub fn run_cli(args: &[&str], config: &Path) -> Output {
    let mut child = cli_command(&[])
        .args(args)
        .arg("-c")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("postmark-relay runs");
    let started = Instant::now();
    while child.try_wait().expect("wait for postmark-relay").is_none() {
        if started.elapsed() > CLI_LIMIT {
            let _ = child.kill();
            let out = child.wait_with_output().expect("postmark-relay output");
            panic!(
                "postmark-relay {args:?} still ran after {CLI_LIMIT:?}; its log:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("postmark-relay output")
}

/// The longest a one-shot command may take in a test.
pub const CLI_LIMIT: Duration = Duration::from_secs(60);

/// The binary (after `enter`, a command prefix; see [`QueueDir`]), with
/// nothing from the test's environment that configures it.
fn cli_command(enter: &[OsString]) -> Command {
    let bin = env!("CARGO_BIN_EXE_postmark-relay");
    let mut cmd = match enter.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(bin);
            cmd
        }
        None => Command::new(bin),
    };
    cmd.env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("POSTMARK_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// How a [`try_send`] error starts when the whole message was sent but no
/// reply came: the relay may or may not have stored it.
pub const NO_FINAL_REPLY: &str = "no reply to the end of DATA";

/// Like [`send`], but for a relay that may die or refuse at any moment:
/// `Ok` holds the final reply to DATA (or the first reply that stopped the
/// transaction), `Err` says how the connection failed before that.
pub fn try_send(addr: SocketAddr, from: &str, to: &[&str], body: &[u8]) -> Result<String, String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut writer = stream;
    let read = |reader: &mut BufReader<TcpStream>| -> Result<String, String> {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => return Err(format!("connection closed after {reply:?}")),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
            reply.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(reply);
            }
        }
    };
    let greeting = read(&mut reader)?;
    if !greeting.starts_with("220") {
        return Ok(greeting);
    }
    let mut commands = vec![
        "EHLO test.client".to_string(),
        format!("MAIL FROM:<{from}>"),
    ];
    commands.extend(to.iter().map(|r| format!("RCPT TO:<{r}>")));
    commands.push("DATA".into());
    for command in &commands {
        writer
            .write_all(format!("{command}\r\n").as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let reply = read(&mut reader)?;
        let want = if command == "DATA" { "354" } else { "250" };
        if !reply.starts_with(want) {
            return Ok(reply);
        }
    }
    writer
        .write_all(body)
        .and_then(|()| writer.write_all(b".\r\n"))
        .map_err(|e| format!("write: {e}"))?;
    let reply = read(&mut reader).map_err(|e| format!("{NO_FINAL_REPLY}: {e}"))?;
    let _ = writer.write_all(b"QUIT\r\n");
    Ok(reply)
}

/// How many times each subject arrived, for subjects that arrived.
pub fn subject_counts(got: &[Received]) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for m in got {
        *counts.entry(subject(m)).or_insert(0) += 1;
    }
    counts
}

/// The queue id the relay put in its `Received:` header (`... id ID`).
pub fn relayed_id(m: &Received) -> Option<String> {
    let text = String::from_utf8_lossy(&m.data);
    let received = text.split("\r\n\r\n").next()?;
    let after = received.split(" id ").nth(1)?;
    let id = after
        .split(|c: char| c.is_whitespace() || c == ';')
        .next()?;
    Some(id.to_string())
}

/// Whether this process runs as root (reads /proc, no libc call).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// A command's standard output; panics with both streams unless it
/// exited 0.
pub fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Standard base64 with padding (test-only; no dependency for 20 lines).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
