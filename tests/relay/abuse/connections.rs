//! 1,000 idle clients, all connected at once, against
//! `max_connections = 100`: the ones beyond get `421` at once, memory stays
//! bounded, and slow clients holding every other slot do not stop a normal
//! client in a freed slot.
//!
//! The test process holds the 1,000 sockets open together, so it needs an
//! open-files limit above that (`ulimit -n`; scripts/test raises it).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::{rss, MB};
use crate::harness::*;

const SLOTS: usize = 100;
const CLIENTS: usize = 1000;

/// The first line the relay sends, read within 10 s ("" if it closed).
fn greeting(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        match stream.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// The soft limit on open files of this process (`Max open files` in
/// /proc/self/limits); `None` if unlimited or unreadable.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[test]
fn clients_beyond_max_connections_get_421_and_a_free_slot_still_works() {
    // The clients, plus room for what other tests running alongside hold.
    let need = CLIENTS as u64 + 1024;
    if let Some(limit) = open_files_limit() {
        assert!(
            limit >= need,
            "this test holds {CLIENTS} sockets open at once, but the open-files limit is {limit}: \
             raise it to at least {need} before running the tests (`ulimit -n 4096`; \
             scripts/test does this)"
        );
    }
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, &format!("max_connections = {SLOTS}"));
    let pid = relay.pid();
    let before = rss(pid);

    // Every client connects before any greeting is read: all 1,000 are
    // open together.
    let started = Instant::now();
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|i| {
            TcpStream::connect(relay.addr).unwrap_or_else(|e| panic!("client {i}: connect: {e}"))
        })
        .collect();
    let connected = started.elapsed();
    let greetings: Vec<String> = clients.iter_mut().map(greeting).collect();
    let welcomed = greetings.iter().filter(|g| g.starts_with("220")).count();
    let refused = greetings.iter().filter(|g| g.starts_with("421")).count();
    let other: Vec<&String> = greetings
        .iter()
        .filter(|g| !g.starts_with("220") && !g.starts_with("421"))
        .collect();
    assert!(other.is_empty(), "neither 220 nor 421: {other:?}");
    assert_eq!(welcomed, SLOTS, "clients greeted with 220");
    assert_eq!(refused, CLIENTS - SLOTS, "clients refused with 421");
    eprintln!(
        "{CLIENTS} clients open at once (connected in {connected:?}): {welcomed} greeted, {refused} refused with 421 in {:?}",
        started.elapsed()
    );
    // The refused ones were closed by the relay (this side keeps them
    // open to the end); the greeted ones hold their slots.
    let mut holders = Vec::new();
    let mut refused_streams = Vec::new();
    for (stream, greeting) in clients.into_iter().zip(&greetings) {
        if greeting.starts_with("220") {
            holders.push(stream);
        } else {
            refused_streams.push(stream);
        }
    }
    for stream in &mut refused_streams {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).ok(), Some(0), "a 421 left open");
    }
    // Make some holders slow rather than idle: one mid-command, one
    // mid-DATA, trickling nothing more.
    holders[0]
        .write_all(b"EHLO slow\r\nMAIL FROM:<slow@exa")
        .unwrap();
    holders[1]
        .write_all(b"EHLO slow\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<u@example.net>\r\nDATA\r\nSubject: never ends\r\n")
        .unwrap();
    let grown = rss(pid).saturating_sub(before);
    eprintln!(
        "RSS growth with {SLOTS} held and {refused} refused: {} MB",
        grown / MB
    );
    assert!(grown < 32 * MB, "RSS grew by {grown} bytes");

    // Free one slot; a normal client gets it (retrying while the relay
    // notices the freed slot) and its message goes through.
    drop(holders.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        let (mut c, hello) = Client::connect(relay.addr);
        if hello.starts_with("220") {
            assert!(c.cmd("EHLO normal.client").starts_with("250"));
            assert!(c.cmd("MAIL FROM:<app@example.com>").starts_with("250"));
            assert!(c.cmd("RCPT TO:<u@example.net>").starts_with("250"));
            assert!(c.cmd("DATA").starts_with("354"));
            c.send_raw(&message("in-a-free-slot"));
            break c.cmd(".");
        }
        assert!(hello.starts_with("421"), "{hello}");
        assert!(Instant::now() < deadline, "no slot freed within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(reply.starts_with("250"), "{reply}");
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    assert_eq!(subject(&got[0]), "in-a-free-slot");
    drop(holders);
    drop(refused_streams);
    assert!(!relay.logs().iter().any(|l| l.contains("panicked")));
}
