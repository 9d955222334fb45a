//! The queue is private whatever the umask: the folder `0700`, every file
//! SQLite makes in it `0600`, also when the `Inspector` (the `queue` CLI)
//! opens it after `serve` left, and a queue made loose by an older version
//! is tightened when it is opened.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use relay_queue::private::{inspect, Privacy};
use relay_queue::{Content, Inspector, NewMessage, Queue, RetryPolicy, SqliteQueue};

fn policy() -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_secs(30),
        max_delay: Duration::from_secs(60),
        multiplier: 2.0,
        give_up_after: Duration::from_secs(3600),
        keep_history: true,
    }
}

fn message(id: &str) -> NewMessage {
    NewMessage {
        id: id.into(),
        received_at: SystemTime::now(),
        sender: "app@example.com".into(),
        recipients: vec!["a@x.test".into()],
        upstream: "transactional".into(),
        stream: None,
        size: 5,
        client: None,
        content: Content::whole(b"Subject: x\r\n\r\nhello\r\n".to_vec()),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Every entry of `folder` with its mode, sorted by name.
fn modes(folder: &Path) -> Vec<(String, u32)> {
    let mut found: Vec<(String, u32)> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                mode(&e.path()),
            )
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn a_new_queue_is_0700_with_every_file_0600() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("queue");
    let q = SqliteQueue::open(&folder, policy()).unwrap();
    q.enqueue(message("A")).await.unwrap();
    assert_eq!(mode(&folder), 0o700);
    let files = modes(&folder);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["queue.sqlite3", "queue.sqlite3-shm", "queue.sqlite3-wal"]
    );
    for (name, mode) in &files {
        assert_eq!(*mode, 0o600, "{name}");
    }
    assert_eq!(inspect(&folder).unwrap(), Privacy::Private);
}

#[tokio::test]
async fn the_inspector_keeps_a_private_queue_private() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = SqliteQueue::open(dir.path(), policy()).unwrap();
        q.enqueue(message("A")).await.unwrap();
    }
    // The writer thread closes its connection once the last handle is gone;
    // SQLite then removes -wal and -shm.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while dir.path().join("queue.sqlite3-wal").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !dir.path().join("queue.sqlite3-wal").exists(),
        "-wal still there: {:?}",
        modes(dir.path())
    );
    let inspector = Inspector::open(dir.path()).unwrap();
    assert_eq!(inspector.list(None).unwrap().len(), 1);
    assert!(dir.path().join("queue.sqlite3-shm").exists());
    for (name, mode) in modes(dir.path()) {
        assert_eq!(mode, 0o600, "{name}");
    }
}

#[tokio::test]
async fn a_loose_queue_is_tightened_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("queue");
    {
        let q = SqliteQueue::open(&folder, policy()).unwrap();
        q.enqueue(message("A")).await.unwrap();
    }
    // As an older version under umask 022 left it.
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    assert!(matches!(inspect(&folder).unwrap(), Privacy::Loose(_)));

    let q = SqliteQueue::open(&folder, policy()).unwrap();
    assert_eq!(
        q.claim("transactional", 10, Duration::from_secs(60))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(mode(&folder), 0o700);
    for (name, mode) in modes(&folder) {
        assert_eq!(mode, 0o600, "{name}");
    }
}
