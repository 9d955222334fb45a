//! Bounded memory: a large message costs the relay a small constant
//! buffer, not its size, so many of them at once stay inside the 64 MiB
//! the Kubernetes manifests allow (docs/REFERENCE.md, "Bounded memory").

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Barrier;
use std::time::Duration;

use crate::abuse::{peak_rss, MB};
use crate::harness::*;

/// How many clients send at the same moment: 20, or
/// `BENCH_MEMORY_CLIENTS` for the benchmark's figure (docs/BENCHMARKS.md).
fn clients() -> usize {
    std::env::var("BENCH_MEMORY_CLIENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20)
}
/// Each message's size as sent: just under `max_message_size` (10 MB).
const SIZE: usize = 9_900_000;

/// A message of `size` bytes unique to `i`: 76-character lines, some
/// starting with a dot (so stuffing is exercised both ways).
fn big_message(i: usize, size: usize) -> Vec<u8> {
    let mut out = format!("From: app@example.com\r\nSubject: big-{i}\r\n\r\n").into_bytes();
    let mut state = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    while out.len() + 78 <= size {
        let line_start = out.len();
        for _ in 0..76 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.push(b'!' + (state % 94) as u8);
        }
        if state.is_multiple_of(50) {
            out[line_start] = b'.';
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn checksum(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Dot-stuffs a CRLF message for DATA.
fn stuffed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 50);
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out
}

#[test]
fn twenty_concurrent_10_mb_messages_stay_under_64_mib_and_arrive_byte_identical() {
    let clients = clients();
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let messages: Vec<Vec<u8>> = (0..clients).map(|i| big_message(i, SIZE)).collect();
    let start = Barrier::new(clients);
    let finish = Barrier::new(clients);
    std::thread::scope(|scope| {
        for message in &messages {
            let (start, finish, addr) = (&start, &finish, relay.addr);
            scope.spawn(move || {
                let (mut c, _) = Client::connect(addr);
                assert!(c.cmd("EHLO big.client").starts_with("250"));
                assert!(c.cmd("MAIL FROM:<app@example.com>").starts_with("250"));
                assert!(c.cmd("RCPT TO:<u@example.net>").starts_with("250"));
                assert!(c.cmd("DATA").starts_with("354"));
                // Every session is inside DATA before any body byte goes.
                start.wait();
                for piece in stuffed(message).chunks(256 * 1024) {
                    c.send_raw(piece);
                }
                // ... and all of them end together.
                finish.wait();
                c.send_raw(b".\r\n");
                let reply = c.read_reply();
                assert!(reply.starts_with("250"), "{reply}");
                c.cmd("QUIT");
            });
        }
    });
    let got = t.wait_for(clients, Duration::from_secs(300));
    assert_eq!(got.len(), clients, "not every message was relayed");
    let peak = peak_rss(relay.pid());
    let want: std::collections::HashSet<u64> = messages.iter().map(|m| checksum(m)).collect();
    for m in &got {
        let sent = strip_added_headers(&m.data);
        assert!(
            want.contains(&checksum(sent)),
            "a relayed message differs from every one sent ({} bytes)",
            sent.len()
        );
    }
    let distinct: std::collections::HashSet<u64> = got
        .iter()
        .map(|m| checksum(strip_added_headers(&m.data)))
        .collect();
    assert_eq!(
        distinct.len(),
        clients,
        "a message arrived twice or not at all"
    );
    assert!(
        peak < 64 * MB,
        "relay peak RSS {} MiB with {clients} concurrent {SIZE}-byte messages (limit 64 MiB)",
        peak / MB
    );
    eprintln!(
        "relay peak RSS: {:.1} MiB with {clients} concurrent {SIZE}-byte messages",
        peak as f64 / MB as f64
    );
}
