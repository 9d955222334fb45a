//! `bench-sink`: a fast SMTP sink for the benchmark.
//!
//! Advertises PIPELINING and AUTH PLAIN LOGIN, answers AUTH with `235`
//! (Postfix's smtp-sink answers `250`, which real clients treat as a
//! failure), takes every message with `250`, and counts them. Plain TCP
//! only, no TLS: it listens on loopback for the benchmark.
//!
//! A connection to the control port gets one line and is closed:
//! `total unique no_message_id auths first_ms last_ms`
//! where `unique` counts distinct Message-ID values (so duplicates show
//! as `total > unique`), `auths` is the number of successful AUTHs (one per
//! upstream connection a relay opened) and `*_ms` are Unix milliseconds of
//! the first and latest message taken (0 if none).
//!
//! `--delay-ms D` imitates a WAN link: every chunk read is processed D ms
//! after it arrived and every reply leaves D ms after it was produced
//! (one-way delay D each way, RTT 2·D), without serialising pipelined
//! traffic. The delays are kept by a thread of their own ([`DelayLine`]),
//! accurate to ~0.1 ms.
//!
//! Usage: bench-sink --listen 127.0.0.1:PORT --control 127.0.0.1:PORT [--delay-ms D]

use std::collections::hash_map::DefaultHasher;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant as StdInstant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

const EHLO: &[u8] = b"250-sink.localdomain\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250 ENHANCEDSTATUSCODES\r\n";
/// How much of a message's start is kept to find its Message-ID.
const HEADER_KEEP: usize = 16 * 1024;

#[derive(Default)]
struct Counters {
    total: AtomicU64,
    no_id: AtomicU64,
    auths: AtomicU64,
    first_ms: AtomicU64,
    last_ms: AtomicU64,
    ids: Mutex<HashSet<u64>>,
}

impl Counters {
    fn message(&self, header: &[u8]) {
        match message_id(header) {
            Some(id) => {
                let mut h = DefaultHasher::new();
                id.hash(&mut h);
                self.ids.lock().expect("counter lock").insert(h.finish());
            }
            None => {
                self.no_id.fetch_add(1, Ordering::Relaxed);
            }
        }
        let now = now_ms();
        let _ = self
            .first_ms
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        self.last_ms.fetch_max(now, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Release);
    }

    fn line(&self) -> String {
        let unique = self.ids.lock().expect("counter lock").len() as u64;
        format!(
            "{} {} {} {} {} {}\n",
            self.total.load(Ordering::Acquire),
            unique + self.no_id.load(Ordering::Relaxed),
            self.no_id.load(Ordering::Relaxed),
            self.auths.load(Ordering::Relaxed),
            self.first_ms.load(Ordering::Relaxed),
            self.last_ms.load(Ordering::Relaxed),
        )
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The Message-ID header's value in a message's first bytes, if any.
fn message_id(header: &[u8]) -> Option<&[u8]> {
    let mut start = 0;
    while start < header.len() {
        let end = header[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(header.len(), |p| start + p);
        let line = &header[start..end];
        if line == b"\r" || line.is_empty() {
            return None; // end of the header section
        }
        if line.len() > 11 && line[..11].eq_ignore_ascii_case(b"message-id:") {
            return Some(line[11..].trim_ascii());
        }
        start = end + 1;
    }
    None
}

enum Mode {
    Command,
    /// Inside DATA: how much of `\r\n.\r\n` has been seen.
    Data(usize),
    AuthPlain,
    AuthLoginUser,
    AuthLoginPassword,
}

/// One connection's protocol state; fed bytes, it appends replies.
struct Session {
    counters: Arc<Counters>,
    mode: Mode,
    buf: Vec<u8>,
    header: Vec<u8>,
}

const END: &[u8; 5] = b"\r\n.\r\n";

impl Session {
    fn new(counters: Arc<Counters>) -> Self {
        Session {
            counters,
            mode: Mode::Command,
            buf: Vec::with_capacity(8192),
            header: Vec::with_capacity(HEADER_KEEP),
        }
    }

    /// Handles `input`; returns false once the client said QUIT.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        let mut rest = input;
        loop {
            if let Mode::Data(mut matched) = self.mode {
                let mut ended = None;
                for (i, &b) in rest.iter().enumerate() {
                    if b == END[matched] {
                        matched += 1;
                        if matched == END.len() {
                            ended = Some(i + 1);
                            break;
                        }
                    } else {
                        matched = usize::from(b == b'\r');
                    }
                }
                let used = ended.unwrap_or(rest.len());
                if self.header.len() < HEADER_KEEP {
                    let take = used.min(HEADER_KEEP - self.header.len());
                    self.header.extend_from_slice(&rest[..take]);
                }
                rest = &rest[used..];
                if ended.is_none() {
                    self.mode = Mode::Data(matched);
                    return true;
                }
                self.counters.message(&self.header);
                self.header.clear();
                out.extend_from_slice(b"250 2.0.0 Ok: queued\r\n");
                self.mode = Mode::Command;
                continue;
            }
            // Command-like modes work on whole lines.
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                self.buf.extend_from_slice(rest);
                return true;
            };
            let line_owned;
            let line: &[u8] = if self.buf.is_empty() {
                &rest[..nl]
            } else {
                self.buf.extend_from_slice(&rest[..nl]);
                line_owned = std::mem::take(&mut self.buf);
                &line_owned
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let keep_going = self.line(line, out);
            rest = &rest[nl + 1..];
            if !keep_going {
                return false;
            }
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) -> bool {
        match self.mode {
            Mode::AuthPlain | Mode::AuthLoginPassword => {
                self.authenticated(out);
                return true;
            }
            Mode::AuthLoginUser => {
                out.extend_from_slice(b"334 UGFzc3dvcmQ6\r\n");
                self.mode = Mode::AuthLoginPassword;
                return true;
            }
            Mode::Command | Mode::Data(_) => {}
        }
        let verb = line.get(..4).unwrap_or(line).to_ascii_uppercase();
        match verb.as_slice() {
            b"EHLO" => out.extend_from_slice(EHLO),
            b"HELO" => out.extend_from_slice(b"250 sink.localdomain\r\n"),
            b"MAIL" => out.extend_from_slice(b"250 2.1.0 Ok\r\n"),
            b"RCPT" => out.extend_from_slice(b"250 2.1.5 Ok\r\n"),
            b"DATA" => {
                out.extend_from_slice(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                // As if a line had just ended, so a lone "." ends an empty message.
                self.mode = Mode::Data(2);
                self.header.clear();
            }
            b"RSET" | b"NOOP" => out.extend_from_slice(b"250 2.0.0 Ok\r\n"),
            b"QUIT" => {
                out.extend_from_slice(b"221 2.0.0 Bye\r\n");
                return false;
            }
            b"AUTH" => {
                let words: Vec<&[u8]> = line
                    .split(|&b| b == b' ')
                    .filter(|w| !w.is_empty())
                    .collect();
                let mechanism = words.get(1).map(|m| m.to_ascii_uppercase());
                match (mechanism.as_deref(), words.len()) {
                    (Some(b"PLAIN"), 2) => {
                        out.extend_from_slice(b"334 \r\n");
                        self.mode = Mode::AuthPlain;
                    }
                    (Some(b"PLAIN"), _) => self.authenticated(out),
                    (Some(b"LOGIN"), 2) => {
                        out.extend_from_slice(b"334 VXNlcm5hbWU6\r\n");
                        self.mode = Mode::AuthLoginUser;
                    }
                    (Some(b"LOGIN"), _) => {
                        out.extend_from_slice(b"334 UGFzc3dvcmQ6\r\n");
                        self.mode = Mode::AuthLoginPassword;
                    }
                    _ => out.extend_from_slice(b"504 5.5.4 Unrecognized authentication type\r\n"),
                }
            }
            b"STAR" => out.extend_from_slice(b"454 4.7.0 TLS not available\r\n"),
            _ => out.extend_from_slice(b"502 5.5.2 Command not recognized\r\n"),
        }
        true
    }

    fn authenticated(&mut self, out: &mut Vec<u8>) {
        self.counters.auths.fetch_add(1, Ordering::Relaxed);
        out.extend_from_slice(b"235 2.7.0 Authentication successful\r\n");
        self.mode = Mode::Command;
    }
}

const GREETING: &[u8] = b"220 sink.localdomain ESMTP bench-sink\r\n";

async fn serve_direct(mut stream: TcpStream, counters: Arc<Counters>) -> std::io::Result<()> {
    let mut session = Session::new(counters);
    let mut input = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(4096);
    stream.write_all(GREETING).await?;
    loop {
        let n = stream.read(&mut input).await?;
        if n == 0 {
            return Ok(());
        }
        let open = session.feed(&input[..n], &mut out);
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if !open {
            return Ok(());
        }
    }
}

/// Wakes tasks at exact instants. tokio's timer has 1 ms ticks and rounds
/// every deadline up, which made a 10 ms hop 11-12 ms (RTT 22.5 ms instead
/// of 20); a thread sleeping on a condvar wakes within ~0.1 ms.
struct DelayLine {
    heap: Mutex<BinaryHeap<Reverse<Due>>>,
    wake: Condvar,
}

struct Due {
    at: StdInstant,
    seq: u64,
    tx: oneshot::Sender<()>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl DelayLine {
    fn start() -> Arc<DelayLine> {
        let line = Arc::new(DelayLine {
            heap: Mutex::new(BinaryHeap::new()),
            wake: Condvar::new(),
        });
        let l = line.clone();
        std::thread::spawn(move || {
            let mut heap = l.heap.lock().expect("delay line lock");
            loop {
                let now = StdInstant::now();
                match heap.peek() {
                    Some(Reverse(due)) if due.at <= now => {
                        if let Some(Reverse(due)) = heap.pop() {
                            let _ = due.tx.send(());
                        }
                    }
                    Some(Reverse(due)) => {
                        let wait = due.at - now;
                        heap = l.wake.wait_timeout(heap, wait).expect("delay line lock").0;
                    }
                    None => heap = l.wake.wait(heap).expect("delay line lock"),
                }
            }
        });
        line
    }

    async fn until(&self, at: StdInstant) {
        if at <= StdInstant::now() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        self.heap
            .lock()
            .expect("delay line lock")
            .push(Reverse(Due { at, seq, tx }));
        self.wake.notify_one();
        let _ = rx.await;
    }
}

async fn serve_delayed(
    stream: TcpStream,
    counters: Arc<Counters>,
    delay: Duration,
    line: Arc<DelayLine>,
) -> std::io::Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    let (in_tx, mut in_rx) = mpsc::unbounded_channel::<(StdInstant, Vec<u8>)>();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<(StdInstant, Vec<u8>)>();
    let reader = tokio::spawn(async move {
        let mut input = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut input).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if in_tx.send((StdInstant::now(), input[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let out_line = line.clone();
    let writer = tokio::spawn(async move {
        while let Some((at, bytes)) = out_rx.recv().await {
            out_line.until(at + delay).await;
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut session = Session::new(counters);
    let _ = out_tx.send((StdInstant::now(), GREETING.to_vec()));
    while let Some((at, bytes)) = in_rx.recv().await {
        line.until(at + delay).await;
        let mut out = Vec::new();
        let open = session.feed(&bytes, &mut out);
        if !out.is_empty() {
            let _ = out_tx.send((StdInstant::now(), out));
        }
        if !open {
            break;
        }
    }
    drop(out_tx);
    let _ = writer.await;
    reader.abort();
    Ok(())
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let listen = arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:2526".into());
    let control = arg(&args, "--control").unwrap_or_else(|| "127.0.0.1:2527".into());
    let delay = Duration::from_millis(
        arg(&args, "--delay-ms")
            .map(|d| d.parse().expect("--delay-ms takes milliseconds"))
            .unwrap_or(0),
    );
    // One thread: the sink must cost the measured relay as little CPU as it can.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let counters = Arc::new(Counters::default());
        let line = DelayLine::start();
        let smtp = TcpListener::bind(&listen).await?;
        let ctl = TcpListener::bind(&control).await?;
        let c = counters.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = ctl.accept().await {
                let _ = s.write_all(c.line().as_bytes()).await;
            }
        });
        eprintln!("bench-sink: smtp on {listen}, control on {control}, delay {delay:?} each way");
        loop {
            let (stream, _) = smtp.accept().await?;
            let _ = stream.set_nodelay(true);
            let counters = counters.clone();
            let line = line.clone();
            tokio::spawn(async move {
                let _ = if delay.is_zero() {
                    serve_direct(stream, counters).await
                } else {
                    serve_delayed(stream, counters, delay, line).await
                };
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (String, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        let mut s = Session::new(counters.clone());
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut out);
        }
        (String::from_utf8(out).unwrap(), counters)
    }

    #[test]
    fn pipelined_transaction_split_anywhere() {
        let all: &[u8] = b"EHLO x\r\nAUTH PLAIN AGEAYQ==\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nMessage-ID: <1@x>\r\n\r\n..body\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n.\r\nQUIT\r\n";
        for cut in 0..all.len() {
            let (out, c) = run(&[&all[..cut], &all[cut..]]);
            assert_eq!(c.total.load(Ordering::Relaxed), 2, "cut at {cut}");
            assert_eq!(c.ids.lock().unwrap().len(), 1);
            assert_eq!(c.no_id.load(Ordering::Relaxed), 1);
            assert!(out.contains("235 "), "{out}");
            assert!(out.ends_with("221 2.0.0 Bye\r\n"), "{out}");
        }
    }

    #[test]
    fn auth_login_takes_two_lines() {
        let (out, c) = run(&[b"AUTH LOGIN\r\ndXNlcg==\r\ncGFzcw==\r\n"]);
        assert!(out.ends_with("235 2.7.0 Authentication successful\r\n"), "{out}");
        assert_eq!(c.auths.load(Ordering::Relaxed), 1);
    }
}
