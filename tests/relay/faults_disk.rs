//! A full disk: the queue lives on a small tmpfs that a filler file fills
//! up. Clients must get `452 4.3.1` (never a `250` for a message that was
//! not stored), the daemon keeps serving, accepts again once space is
//! freed, and what it had accepted before is delivered byte for byte.
//!
//! Needs root (to mount the tmpfs), as the tests and CI run; a failed mount
//! fails the test rather than skipping it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

/// A tmpfs mounted for the test; unmounted (lazily, so a still-open file
/// cannot keep it busy) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t tmpfs failed ({status}): the disk-full test needs root"
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes 64 KiB blocks to `path` until the file system is full; returns
/// how many bytes went in.
fn fill(path: &Path) -> usize {
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![b'x'; 64 * 1024];
    let mut written = 0;
    for _ in 0..10_000 {
        match file.write(&block) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n,
        }
    }
    let _ = file.sync_all();
    written
}

/// A message of about `size` bytes with a unique subject and body.
fn big_message(tag: &str, size: usize) -> Vec<u8> {
    let mut m = message(tag);
    let mut i = 0;
    while m.len() < size {
        m.extend_from_slice(format!("{tag} line {i:08} {}\r\n", "z".repeat(60)).as_bytes());
        i += 1;
    }
    m
}

#[test]
fn a_full_queue_disk_gets_452_never_250_and_accepts_again_once_space_is_freed() {
    let (t, b) = (fake(), fake());
    t.set_down(true);
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let queue_dir = dir.path().join("queue");
    let tmpfs = Tmpfs::mount(&queue_dir, "16m");
    let mut relay = Relay::start(Start {
        config: config_for(&t, &b, ""),
        token: Some(TOKEN),
        dir: Some(dir.clone()),
    });
    let from = "app@example.com";
    let to = ["u@example.net"];

    // Before: three messages stored normally.
    let mut sent: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..3 {
        let tag = format!("before-full-{i}");
        let body = big_message(&tag, 200 * 1024);
        let reply = send(relay.addr, from, &to, &body);
        assert!(reply.starts_with("250"), "{reply}");
        sent.push((tag, body));
    }

    // Full: every message bigger than the WAL's free room is refused.
    let filler = queue_dir.join("filler");
    let filled = fill(&filler);
    let mut refused = Vec::new();
    for i in 0..3 {
        let tag = format!("while-full-{i}");
        let reply = try_send(relay.addr, from, &to, &big_message(&tag, 1024 * 1024))
            .unwrap_or_else(|e| panic!("{tag}: the relay stopped serving: {e}"));
        assert!(
            reply.starts_with("452 4.3.1"),
            "{tag}: with the disk full the reply must be 452 4.3.1, got {reply:?}"
        );
        refused.push(tag);
    }
    relay.wait_log("Could not store a message", Duration::from_secs(5));
    // Still serving: a new session gets its greeting and EHLO.
    let (mut c, greeting) = Client::connect(relay.addr);
    assert!(greeting.starts_with("220"), "{greeting}");
    assert!(c.cmd("EHLO again.client").starts_with("250"));
    c.cmd("QUIT");

    // Freed: accepted again.
    std::fs::remove_file(&filler).unwrap();
    for i in 0..2 {
        let tag = format!("after-free-{i}");
        let body = big_message(&tag, 1024 * 1024);
        let reply = send(relay.addr, from, &to, &body);
        assert!(reply.starts_with("250"), "after freeing space: {reply}");
        sent.push((tag, body));
    }

    // Delivered intact, and nothing refused slipped through.
    t.set_down(false);
    let got = settle(&relay, &t, Duration::from_secs(30));
    let want: Vec<String> = sent.iter().map(|(tag, _)| tag.clone()).collect();
    assert_each_once(&got, &want);
    for (tag, body) in &sent {
        let m = got.iter().find(|m| subject(m) == *tag).unwrap();
        assert!(
            strip_added_headers(&m.data) == body.as_slice(),
            "{tag}: relayed bytes differ from what the client sent"
        );
    }
    println!(
        "disk full: tmpfs 16 MiB, filler {filled} bytes; sent {} acked {} refused(452) {} delivered {} duplicates 0",
        sent.len() + refused.len(),
        sent.len(),
        refused.len(),
        got.len()
    );
    drop(relay);
    drop(tmpfs);
}
