//! The queue's promises, checked against a real SQLite file.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::time::Duration;

use relay_queue::{Content, Finished, Outcome, Queue, QueueError, SqliteQueue};

mod common;
use common::{message, policy};

const LEASE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn an_enqueued_message_survives_a_reopen_and_is_claimed_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = SqliteQueue::open(dir.path(), policy()).unwrap();
        q.enqueue(message("A1", &["a@x.test", "b@x.test"]))
            .await
            .unwrap();
    }
    let q = SqliteQueue::open(dir.path(), policy()).unwrap();
    let claimed = q.claim("transactional", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, "A1");
    assert_eq!(
        claimed[0].content,
        Content::whole(b"Subject: x\r\n\r\nhello\r\n".to_vec())
    );
    assert_eq!(claimed[0].recipients.len(), 2);
    assert!(
        q.claim("transactional", 10, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "leased message handed out twice"
    );
    assert!(q.claim("broadcast", 10, LEASE).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_lease_left_by_a_crash_is_cleared_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = SqliteQueue::open(dir.path(), policy()).unwrap();
        q.enqueue(message("L1", &["a@x.test"])).await.unwrap();
        assert_eq!(q.claim("transactional", 10, LEASE).await.unwrap().len(), 1);
    }
    let q = SqliteQueue::open(dir.path(), policy()).unwrap();
    assert_eq!(q.claim("transactional", 10, LEASE).await.unwrap().len(), 1);
}

#[tokio::test]
async fn delivered_recipients_are_never_handed_out_again() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(dir.path(), policy()).unwrap();
    q.enqueue(message("P1", &["a@x.test", "b@x.test", "c@x.test"]))
        .await
        .unwrap();
    let c = q.claim("transactional", 10, LEASE).await.unwrap().remove(0);
    let outcomes = vec![
        (c.recipients[0].idx, Outcome::Delivered("250 ok".into())),
        (c.recipients[1].idx, Outcome::Deferred("451 later".into())),
        (
            c.recipients[2].idx,
            Outcome::Failed("550 no such user".into()),
        ),
    ];
    let finished = q.finish("P1", outcomes, None).await.unwrap();
    assert!(matches!(finished, Finished::Deferred(_)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let c = q.claim("transactional", 10, LEASE).await.unwrap().remove(0);
    assert_eq!(c.attempts, 1);
    assert_eq!(
        c.recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect::<Vec<_>>(),
        ["b@x.test"]
    );
    let done = q
        .finish(
            "P1",
            vec![(c.recipients[0].idx, Outcome::Delivered("250".into()))],
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        done,
        Finished::Failed,
        "one recipient failed, so the message is kept as failed"
    );
    assert!(q
        .claim("transactional", 10, LEASE)
        .await
        .unwrap()
        .is_empty());
    assert!(q.waiting().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_fully_delivered_message_leaves_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(dir.path(), policy()).unwrap();
    q.enqueue(message("D1", &["a@x.test"])).await.unwrap();
    assert_eq!(
        q.waiting().await.unwrap(),
        vec![("transactional".to_string(), 1)]
    );
    let c = q.claim("transactional", 10, LEASE).await.unwrap().remove(0);
    let done = q
        .finish(
            "D1",
            vec![(c.recipients[0].idx, Outcome::Delivered("250".into()))],
            None,
        )
        .await
        .unwrap();
    assert_eq!(done, Finished::Delivered);
    assert!(q.waiting().await.unwrap().is_empty());
    assert_eq!(q.next_due("transactional").await.unwrap(), None);
}

#[tokio::test]
async fn release_does_not_count_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(dir.path(), policy()).unwrap();
    q.enqueue(message("R1", &["a@x.test"])).await.unwrap();
    q.claim("transactional", 10, LEASE).await.unwrap();
    q.release("R1").await.unwrap();
    let c = q.claim("transactional", 10, LEASE).await.unwrap().remove(0);
    assert_eq!(c.attempts, 0);
}

/// A message in flight is not due: idle deliveries asking when to look
/// again hear "when its lease runs out", not "now" (they would claim in
/// a loop); released, it is due at once; `queue retry` while it is in
/// flight leaves its lease alone.
#[tokio::test]
async fn a_message_in_flight_is_due_when_its_lease_ends_and_at_once_when_released() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(dir.path(), policy()).unwrap();
    q.enqueue(message("N1", &["a@x.test"])).await.unwrap();
    let before = std::time::SystemTime::now();
    assert!(q.next_due("transactional").await.unwrap().unwrap() <= before);
    q.claim("transactional", 10, LEASE).await.unwrap();
    let due = q.next_due("transactional").await.unwrap().unwrap();
    // (times are stored in whole milliseconds)
    assert!(
        due + Duration::from_millis(1) >= before + LEASE,
        "in flight but due {due:?}"
    );
    let inspector = relay_queue::Inspector::open(dir.path()).unwrap();
    assert!(inspector.retry("N1").unwrap());
    assert_eq!(q.next_due("transactional").await.unwrap(), Some(due));
    assert!(q
        .claim("transactional", 10, LEASE)
        .await
        .unwrap()
        .is_empty());
    q.release("N1").await.unwrap();
    let due = q.next_due("transactional").await.unwrap().unwrap();
    assert!(
        due <= std::time::SystemTime::now(),
        "released but due {due:?}"
    );
    assert_eq!(q.claim("transactional", 10, LEASE).await.unwrap().len(), 1);
}

#[tokio::test]
async fn pending_recipients_fail_once_give_up_after_has_passed() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = policy();
    p.give_up_after = Duration::from_millis(0);
    let q = SqliteQueue::open(dir.path(), p).unwrap();
    q.enqueue(message("G1", &["a@x.test"])).await.unwrap();
    let c = q.claim("transactional", 10, LEASE).await.unwrap().remove(0);
    let done = q
        .finish(
            "G1",
            vec![(c.recipients[0].idx, Outcome::Deferred("451 busy".into()))],
            None,
        )
        .await
        .unwrap();
    assert_eq!(done, Finished::Expired);
}

#[tokio::test]
async fn concurrent_enqueues_all_commit() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(dir.path(), policy()).unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let q = q.clone();
            tokio::spawn(async move { q.enqueue(message(&format!("C{i}"), &["a@x.test"])).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        q.waiting().await.unwrap(),
        vec![("transactional".to_string(), 200)]
    );
}

#[tokio::test]
async fn a_duplicate_id_fails_alone_without_undoing_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(dir.path(), policy()).unwrap();
    q.enqueue(message("X1", &["a@x.test"])).await.unwrap();
    let (dup, fresh) = tokio::join!(
        q.enqueue(message("X1", &["a@x.test"])),
        q.enqueue(message("X2", &["a@x.test"]))
    );
    assert!(dup.is_err());
    fresh.unwrap();
    assert_eq!(
        q.waiting().await.unwrap(),
        vec![("transactional".to_string(), 2)]
    );
}

#[tokio::test]
async fn a_commit_wakes_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(dir.path(), policy()).unwrap();
    let arrivals = q.arrivals();
    let notified = arrivals.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    q.enqueue(message("W1", &["a@x.test"])).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), notified)
        .await
        .expect("no wake-up after commit");
}

#[tokio::test]
async fn a_claim_stops_at_its_byte_budget_but_always_takes_one() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(dir.path(), policy()).unwrap();
    for i in 0..4 {
        // What a claim holds in memory: head and tail (chunks are read
        // while sending).
        let mut m = message(&format!("B{i}"), &["a@x.test"]);
        m.content = Content {
            head: vec![b'h'; 40],
            chunks: 0,
            tail: vec![b't'; 60],
            eight_bit: false,
        };
        q.enqueue(m).await.unwrap();
    }
    let batch = relay_queue::ClaimLimit {
        messages: 10,
        bytes: 250,
    };
    assert_eq!(
        q.claim("transactional", batch, LEASE).await.unwrap().len(),
        2
    );
    let tiny = relay_queue::ClaimLimit {
        messages: 10,
        bytes: 1,
    };
    assert_eq!(
        q.claim("transactional", tiny, LEASE).await.unwrap().len(),
        1,
        "a big message must still go"
    );
}

/// A large body goes in as chunks before its enqueue and comes back out
/// piece by piece, in order, after a reopen.
#[tokio::test]
async fn a_chunked_body_is_stored_with_its_message_and_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = SqliteQueue::open(dir.path(), policy()).unwrap();
        for seq in 0..3u32 {
            q.append("C1", seq, vec![b'a' + seq as u8; 1000])
                .await
                .unwrap();
        }
        let mut m = message("C1", &["a@x.test"]);
        m.content = Content {
            head: b"Subject: big\r\n\r\n".to_vec(),
            chunks: 3,
            tail: b"end\r\n".to_vec(),
            eight_bit: true,
        };
        q.enqueue(m).await.unwrap();
    }
    let q = SqliteQueue::open(dir.path(), policy()).unwrap();
    let c = q.claim("transactional", 10, LEASE).await.unwrap().remove(0);
    assert_eq!(c.content.head, b"Subject: big\r\n\r\n");
    assert_eq!(c.content.chunks, 3);
    assert_eq!(c.content.tail, b"end\r\n");
    assert!(
        c.content.eight_bit,
        "the 8-bit flag is stored with the message"
    );
    for seq in 0..3u32 {
        assert_eq!(
            q.chunk("C1", seq).await.unwrap(),
            vec![b'a' + seq as u8; 1000]
        );
    }
    assert!(matches!(
        q.chunk("C1", 3).await,
        Err(QueueError::MissingChunk(_, 3))
    ));
    // Delivered: the message and its chunks are gone.
    q.finish("C1", vec![(0, Outcome::Delivered("250 ok".into()))], None)
        .await
        .unwrap();
    assert!(q.chunk("C1", 0).await.is_err());
}

/// An enqueue whose chunks are not all there is refused (and so never
/// acknowledged), and chunks of a message never enqueued are dropped by
/// `discard` or at the next open.
#[tokio::test]
async fn chunks_must_all_be_there_and_orphans_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = SqliteQueue::open(dir.path(), policy()).unwrap();
        q.append("M1", 0, b"x".to_vec()).await.unwrap();
        let mut m = message("M1", &["a@x.test"]);
        m.content.chunks = 2;
        assert!(matches!(
            q.enqueue(m).await,
            Err(QueueError::MissingChunk(_, 1))
        ));
        q.append("D1", 0, b"y".to_vec()).await.unwrap();
        q.discard("D1").await.unwrap();
        assert!(q.chunk("D1", 0).await.is_err());
        // M1's chunk is an orphan until the next open.
        assert_eq!(q.chunk("M1", 0).await.unwrap(), b"x");
    }
    let q = SqliteQueue::open(dir.path(), policy()).unwrap();
    assert!(q.chunk("M1", 0).await.is_err());
    assert!(q
        .claim("transactional", 10, LEASE)
        .await
        .unwrap()
        .is_empty());
}

/// A queue written by the first release (schema 1: whole messages in
/// `data`) is upgraded in place and its messages read as they were.
#[tokio::test]
async fn a_version_1_queue_is_upgraded_and_its_messages_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("queue.sqlite3")).unwrap();
        conn.execute_batch(
            "CREATE TABLE messages (id TEXT PRIMARY KEY, received_at INTEGER NOT NULL,
                 sender TEXT NOT NULL, upstream TEXT NOT NULL, stream TEXT, size INTEGER NOT NULL,
                 data BLOB NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                 next_attempt_at INTEGER, lease_until INTEGER, last_error TEXT);
             CREATE INDEX messages_due ON messages (upstream, next_attempt_at);
             CREATE TABLE recipients (message_id TEXT NOT NULL, idx INTEGER NOT NULL,
                 address TEXT NOT NULL, state TEXT NOT NULL, reply TEXT,
                 PRIMARY KEY (message_id, idx)) WITHOUT ROWID;
             PRAGMA user_version = 1;
             INSERT INTO messages (id, received_at, sender, upstream, size, data, state, next_attempt_at)
                 VALUES ('OLD', 0, 'a@x.test', 'transactional', 5, x'48690d0a', 'queued', 0);
             INSERT INTO recipients VALUES ('OLD', 0, 'b@x.test', 'pending', NULL);",
        )
        .unwrap();
    }
    let q = SqliteQueue::open(dir.path(), policy()).unwrap();
    let c = q.claim("transactional", 10, LEASE).await.unwrap().remove(0);
    assert_eq!(c.id, "OLD");
    assert_eq!(c.content, Content::whole(b"Hi\r\n".to_vec()));
}

/// See [`common::short_claims_tell_when_the_next_message_is_due`]; here
/// the answer comes with the writer round trip of the claim.
#[tokio::test]
async fn a_short_claim_tells_when_the_next_message_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(dir.path(), policy()).unwrap();
    common::short_claims_tell_when_the_next_message_is_due(&q, LEASE).await;
}
