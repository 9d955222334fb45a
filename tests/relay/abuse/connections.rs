//! 1,000 idle clients against `max_connections = 100`: the ones beyond get
//! `421` at once, memory stays bounded, and slow clients holding every
//! other slot do not stop a normal client in a freed slot.

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

#[test]
fn clients_beyond_max_connections_get_421_and_a_free_slot_still_works() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, &format!("max_connections = {SLOTS}"));
    let pid = relay.pid();
    let before = rss(pid);

    let started = Instant::now();
    let mut holders = Vec::new();
    let mut refused = 0;
    for i in 0..CLIENTS {
        let mut stream = TcpStream::connect(relay.addr).unwrap();
        let first = greeting(&mut stream);
        if i < SLOTS {
            assert!(first.starts_with("220"), "client {i}: {first:?}");
            holders.push(stream);
        } else {
            assert!(first.starts_with("421"), "client {i}: {first:?}");
            refused += 1;
        }
    }
    eprintln!(
        "{CLIENTS} clients: {refused} refused with 421 in {:?}",
        started.elapsed()
    );
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
    assert!(!relay.logs().iter().any(|l| l.contains("panicked")));
}
