//! Drives one inbound SMTP session over an in-memory duplex with whatever
//! bytes the fuzzer makes up, as the client's side of the conversation.
//!
//! Input: the first byte picks the settings (chunk size for the client's
//! writes, a small or normal size limit, AUTH on or off); the rest is what
//! the client sends. Invariants checked:
//! - the session never panics, and ends promptly once the client has left
//!   (time is paused, so a session waiting on anything but the client would
//!   let the clock jump to the hang deadline);
//! - every reply line is `NNN ` or `NNN-` text ended by CRLF, with no bare
//!   CR or LF (client text echoed in replies cannot forge lines);
//! - every stored message is within the size limit, uses CRLF only, and has
//!   at least one recipient, and no envelope address holds CR, LF or NUL.
#![no_main]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use relay_config::Server;
use relay_inbound::{ReceivedMessage, Session, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Idle timeout inside the session (virtual time).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// After the client has left, the session must end well before its own
/// idle timeout could end it.
const HANG: Duration = Duration::from_secs(30);

/// Keeps what the session stores, checking each message on the way in.
struct MemStore {
    limit: u64,
    stored: Mutex<Vec<ReceivedMessage>>,
    /// Body chunks of the message being received.
    chunks: Mutex<Vec<u8>>,
}

impl Store for MemStore {
    type Error = std::io::Error;

    fn append(
        &self,
        _: &str,
        _: u32,
        chunk: Vec<u8>,
    ) -> impl Future<Output = Result<(), std::io::Error>> + Send {
        self.chunks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(&chunk);
        std::future::ready(Ok(()))
    }

    fn discard(&self, _: &str) -> impl Future<Output = ()> + Send {
        self.chunks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        std::future::ready(())
    }

    fn store(
        &self,
        message: ReceivedMessage,
    ) -> impl Future<Output = Result<(), std::io::Error>> + Send {
        let chunks = std::mem::take(&mut *self.chunks.lock().unwrap_or_else(PoisonError::into_inner));
        check_message(&message, &chunks, self.limit);
        self.stored
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(message);
        std::future::ready(Ok(()))
    }
}

fn check_message(m: &ReceivedMessage, chunks: &[u8], limit: u64) {
    assert!(
        m.size <= limit,
        "stored {} bytes over a {limit} limit",
        m.size
    );
    assert!(!m.recipients.is_empty(), "stored without recipients");
    for address in m.recipients.iter().chain([&m.sender]) {
        assert!(
            !address.contains(['\r', '\n', '\0']),
            "control byte in envelope address {address:?}"
        );
    }
    let data = [m.head.as_slice(), chunks, m.tail.as_slice()].concat();
    assert_crlf_only(&data, "stored message");
    assert!(
        data.ends_with(b"\r\n"),
        "stored message without a final CRLF"
    );
}

fn assert_crlf_only(bytes: &[u8], what: &str) {
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && bytes[i - 1] == b'\r', "{what}: bare LF at {i}");
        }
        if b == b'\r' {
            assert_eq!(bytes.get(i + 1), Some(&b'\n'), "{what}: bare CR at {i}");
        }
    }
}

fn check_replies(out: &[u8]) {
    assert_crlf_only(out, "replies");
    if !out.is_empty() {
        assert!(out.ends_with(b"\r\n"), "reply without CRLF: {out:?}");
    }
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let ok = line.len() >= 5
            && line[..3].iter().all(u8::is_ascii_digit)
            && matches!(line[3], b' ' | b'-');
        assert!(
            ok,
            "malformed reply line {:?}",
            String::from_utf8_lossy(line)
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(knobs & 0x3f) + 1;
    let limit = if knobs & 0x80 != 0 { 64 } else { 64 * 1024 };
    let settings = Arc::new(Server {
        listen: Vec::new(),
        hostname: "relay.fuzz".into(),
        allowed_networks: Vec::new(),
        max_message_size: limit,
        max_recipients: 5,
        max_connections: 1,
        command_timeout: COMMAND_TIMEOUT,
        accept_auth: knobs & 0x40 != 0,
        allow_open_relay: false,
        tls: None,
        require_tls: false,
        require_auth: false,
        rate: None,
        clients: Vec::new(),
    });
    let store = Arc::new(MemStore {
        limit,
        stored: Mutex::new(Vec::new()),
        chunks: Mutex::new(Vec::new()),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let (client, server) = tokio::io::duplex(8 * 1024);
        let peer: SocketAddr = ([127, 0, 0, 1], 40000).into();
        let session = Session::new(server, peer, settings, store, CancellationToken::new());
        let run = tokio::spawn(session.run());
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let replies = tokio::spawn(async move {
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = from_server.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            out
        });
        for piece in input.chunks(chunk) {
            if to_server.write_all(piece).await.is_err() {
                break; // the session closed (QUIT): fine
            }
        }
        let _ = to_server.shutdown().await;
        let ended = tokio::time::timeout(HANG, run).await;
        let ended = ended.expect("session still running after the client left");
        let result = ended.expect("session task panicked");
        // An I/O error only means the client went away mid-write.
        let _ = result;
        drop(to_server);
        let out = replies.await.expect("reader task");
        check_replies(&out);
    });
});
