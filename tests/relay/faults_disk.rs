//! A full disk: the queue lives on a small tmpfs that a filler file fills
//! up. Clients must get `452 4.3.1` (never a `250` for a message that was
//! not stored), the daemon keeps serving, accepts again once space is
//! freed, and what it had accepted before is delivered byte for byte.
//!
//! No root needed: the relay runs in a user and mount namespace of its own
//! (`unshare --user --map-root-user --mount`, which any user may create on
//! Debian), where it mounts the tmpfs over its queue folder before it
//! starts; the tmpfs goes away with the relay. The test reaches that file
//! system through `/proc/<pid>/root`, the relay's view of the file tree.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::harness::*;

/// Mounts a `size` tmpfs over the queue folder, then runs the rest of the
/// command line (the relay): `sh -c SCRIPT sh SIZE FOLDER RELAY...`.
const MOUNT_THEN_EXEC: &str = r#"mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@""#;

/// Starts a relay on `start` whose queue folder is a fresh `size` tmpfs
/// in its own mount namespace, which its `queue` commands enter; returns
/// it and the queue folder as this process reaches it.
fn relay_on_tmpfs(start: Start<'_>, size: &str) -> (Relay, PathBuf) {
    let probe = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .output()
        .expect("unshare (util-linux) runs");
    assert!(
        probe.status.success(),
        "this test mounts its tmpfs in a user namespace, which this system refuses ({}): \
         enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, \
         user.max_user_namespaces > 0) or run the tests as root",
        String::from_utf8_lossy(&probe.stderr).trim()
    );
    let dir = start.dir.clone().expect("a folder to mount the queue in");
    let queue = dir.path().join("queue");
    std::fs::create_dir_all(&queue).unwrap();
    let args = [
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "--",
        "sh",
        "-c",
        MOUNT_THEN_EXEC,
        "sh",
        size,
    ];
    let wrapper: Vec<&OsStr> = args
        .iter()
        .map(OsStr::new)
        .chain([queue.as_os_str()])
        .collect();
    let mut relay = Relay::start_under(start, &wrapper);
    let pid = relay.pid().to_string();
    // SQLite resolves /proc/<pid>/root to "/" (it follows symlinks by
    // name), so `queue` commands run inside the namespaces instead.
    relay.queue.enter = [
        "nsenter",
        "--target",
        &pid,
        "--user",
        "--mount",
        "--preserve-credentials",
        "--",
    ]
    .map(OsString::from)
    .to_vec();
    let seen_here = PathBuf::from(format!("/proc/{pid}/root{}", queue.display()));
    (relay, seen_here)
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
    let (mut relay, queue) = relay_on_tmpfs(
        Start {
            config: config_for(&t, &b, ""),
            token: Some(TOKEN),
            dir: Some(Arc::new(tempfile::tempdir().unwrap())),
        },
        "16m",
    );
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
    let filler = queue.join("filler");
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
}
