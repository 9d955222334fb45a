//! The shared queue's promises, checked against a real PostgreSQL server
//! (Debian's `postgresql` package; the tests fail, never skip, without it).
//! They mirror `queue.rs` and add what sharing brings: leases between
//! replicas, wake-ups across them, and outages.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::time::{Duration, Instant};

use relay_queue::{
    ClaimLimit, Content, Deleted, Finished, Outcome, PgInspector, PgQueue, PgSettings, Queue,
    QueueError, RecipientState, State,
};
use relay_testkit::{TestPostgres, PG_PASSWORD};

mod common;
use common::{message, policy};

fn settings(pg: &TestPostgres, schema: &str, lease: Duration) -> PgSettings {
    PgSettings {
        url: pg.url(),
        ca_file: None,
        schema: schema.into(),
        lease,
    }
}

/// `settings` for a server from `TestPostgres::start_tls`, with
/// `sslmode=require`, trusting `ca_file`.
fn tls_settings(pg: &TestPostgres, ca_file: Option<&std::path::Path>) -> PgSettings {
    PgSettings {
        url: pg.tls_url(),
        ca_file: ca_file.map(Into::into),
        ..settings(pg, "tls", LEASE)
    }
}

async fn open(pg: &TestPostgres, schema: &str) -> PgQueue {
    PgQueue::open(&settings(pg, schema, LEASE), policy())
        .await
        .unwrap()
}

const LEASE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn enqueue_claim_and_finish_keep_the_embedded_queues_semantics() {
    let pg = TestPostgres::start();
    let q = open(&pg, "postmark_relay").await;
    q.enqueue(message("P1", &["a@x.test", "b@x.test", "c@x.test"]))
        .await
        .unwrap();
    assert_eq!(
        q.waiting().await.unwrap(),
        vec![("transactional".to_string(), 1)]
    );
    let stats = q.stats().await.unwrap();
    assert_eq!(stats.by_state.queued, 1);
    assert!(stats.oldest_received_at.is_some());
    let c = q.claim("transactional", 10, LEASE).await.unwrap().remove(0);
    assert_eq!(
        c.content,
        Content::whole(b"Subject: x\r\n\r\nhello\r\n".to_vec())
    );
    assert!(
        q.claim("transactional", 10, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "leased message handed out twice"
    );
    assert!(q.claim("broadcast", 10, LEASE).await.unwrap().is_empty());
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
    let pending: Vec<&str> = c.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(pending, ["b@x.test"]);
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
        "one recipient failed: kept as failed"
    );
    assert!(q.waiting().await.unwrap().is_empty());
    assert_eq!(q.stats().await.unwrap().by_state.failed, 1);

    // Released: no attempt counted. Delivered: gone.
    q.enqueue(message("R1", &["a@x.test"])).await.unwrap();
    q.claim("transactional", 10, LEASE).await.unwrap();
    q.release("R1").await.unwrap();
    let c = q.claim("transactional", 10, LEASE).await.unwrap().remove(0);
    assert_eq!(c.attempts, 0);
    let done = q
        .finish("R1", vec![(0, Outcome::Delivered("250".into()))], None)
        .await
        .unwrap();
    assert_eq!(done, Finished::Delivered);
    assert_eq!(q.next_due("transactional").await.unwrap(), None);
    assert!(matches!(
        q.finish("R1", vec![], None).await,
        Err(QueueError::NotFound(_))
    ));

    // Reroute moves waiting messages; the schema is reused on reopen.
    q.enqueue(message("M1", &["a@x.test"])).await.unwrap();
    drop(q);
    let q = open(&pg, "postmark_relay").await;
    let moved = q
        .reroute(|_, _| ("broadcast".to_string(), Some("news".to_string())))
        .await
        .unwrap();
    assert_eq!(moved, 1);
    let c = q.claim("broadcast", 10, LEASE).await.unwrap().remove(0);
    assert_eq!((c.id.as_str(), c.stream.as_deref()), ("M1", Some("news")));

    // give_up_after passed: the pending recipients fail.
    let mut p = policy();
    p.give_up_after = Duration::ZERO;
    q.set_policy(p).await.unwrap();
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

/// A large body goes in as chunks before its enqueue and comes back out
/// piece by piece; an enqueue missing a chunk is refused; discard drops.
#[tokio::test]
async fn chunked_bodies_are_stored_checked_and_dropped() {
    let pg = TestPostgres::start();
    let q = open(&pg, "chunks").await;
    for seq in 0..3u32 {
        q.append("C1", seq, vec![b'a' + seq as u8; 70_000])
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
            vec![b'a' + seq as u8; 70_000]
        );
    }
    assert!(matches!(
        q.chunk("C1", 3).await,
        Err(QueueError::MissingChunk(_, 3))
    ));
    q.finish("C1", vec![(0, Outcome::Delivered("250 ok".into()))], None)
        .await
        .unwrap();
    assert!(
        q.chunk("C1", 0).await.is_err(),
        "chunks leave with the message"
    );

    q.append("M1", 0, b"x".to_vec()).await.unwrap();
    let mut m = message("M1", &["a@x.test"]);
    m.content.chunks = 2;
    assert!(matches!(
        q.enqueue(m).await,
        Err(QueueError::MissingChunk(_, 1))
    ));
    q.discard("M1").await.unwrap();
    assert!(q.chunk("M1", 0).await.is_err());
    assert!(q
        .claim("transactional", 10, LEASE)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn concurrent_enqueues_commit_together_and_a_duplicate_fails_alone() {
    let pg = TestPostgres::start();
    // Replicas starting at the same moment all find the schema built once.
    let opened = futures_join_all((0..4).map(|_| {
        let settings = settings(&pg, "together", LEASE);
        async move { PgQueue::open(&settings, policy()).await }
    }))
    .await;
    let queues: Vec<PgQueue> = opened.into_iter().map(Result::unwrap).collect();
    let q = queues[0].clone();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let q = queues[i % queues.len()].clone();
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
    let (dup, fresh) = tokio::join!(
        q.enqueue(message("C1", &["a@x.test"])),
        q.enqueue(message("X2", &["a@x.test"]))
    );
    assert!(dup.is_err());
    fresh.unwrap();
    assert_eq!(
        q.waiting().await.unwrap(),
        vec![("transactional".to_string(), 201)]
    );
    // Two replicas claiming at once never get the same message.
    let limit = ClaimLimit {
        messages: 50,
        bytes: u64::MAX,
    };
    let mut seen = std::collections::HashSet::new();
    loop {
        let (a, b) = tokio::join!(
            queues[1].claim("transactional", limit, LEASE),
            queues[2].claim("transactional", limit, LEASE)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        if a.is_empty() && b.is_empty() {
            break;
        }
        for c in a.into_iter().chain(b) {
            assert!(seen.insert(c.id.clone()), "{} claimed twice", c.id);
        }
    }
    assert_eq!(seen.len(), 201);
}

/// A lease held by a live replica is renewed and never taken, even by a
/// replica that starts later; once its holder is gone it expires and
/// another replica takes the message.
#[tokio::test]
async fn a_live_replicas_lease_is_kept_and_an_expired_one_is_taken() {
    let pg = TestPostgres::start();
    let lease = Duration::from_secs(2);
    let first = PgQueue::open(&settings(&pg, "leases", lease), policy())
        .await
        .unwrap();
    first.enqueue(message("L1", &["a@x.test"])).await.unwrap();
    assert_eq!(
        first.claim("transactional", 10, LEASE).await.unwrap().len(),
        1
    );
    let second = PgQueue::open(&settings(&pg, "leases", lease), policy())
        .await
        .unwrap();
    assert!(second
        .claim("transactional", 10, LEASE)
        .await
        .unwrap()
        .is_empty());
    let due = second.next_due("transactional").await.unwrap().unwrap();
    assert!(
        due > std::time::SystemTime::now(),
        "in flight, yet due at once ({due:?}): idle deliveries would claim in a loop"
    );
    tokio::time::sleep(lease * 2).await;
    assert!(
        second
            .claim("transactional", 10, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "a live replica's lease was taken"
    );
    drop(first);
    let deadline = Instant::now() + lease * 3;
    loop {
        let claimed = second.claim("transactional", 10, LEASE).await.unwrap();
        if let Some(c) = claimed.first() {
            assert_eq!(c.id, "L1");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the expired lease was never taken"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_commit_through_one_replica_wakes_another() {
    let pg = TestPostgres::start();
    let sender = open(&pg, "wake").await;
    let receiver = open(&pg, "wake").await;
    // Let the receiver's LISTEN connection settle (it wakes once on connecting).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let arrivals = receiver.arrivals();
    let notified = arrivals.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    sender.enqueue(message("W1", &["a@x.test"])).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), notified)
        .await
        .expect("no wake-up within 1 s of another replica's commit");
}

/// Database down: enqueues and claims fail (the relay answers 452), the
/// queue reports itself unwritable; all of it recovers on its own.
#[tokio::test]
async fn an_outage_fails_operations_and_they_resume_on_their_own() {
    let pg = TestPostgres::start();
    let q = open(&pg, "outage").await;
    q.enqueue(message("O1", &["a@x.test"])).await.unwrap();
    pg.stop();
    let down = q.enqueue(message("O2", &["a@x.test"])).await;
    assert!(
        matches!(&down, Err(e @ QueueError::Unreachable(_)) if e.is_storage()),
        "{down:?}"
    );
    assert!(q.append("O3", 0, b"x".to_vec()).await.is_err());
    assert!(q.check_writable().await.is_err());
    assert!(q.claim("transactional", 10, LEASE).await.is_err());
    let url_password = relay_testkit::PG_PASSWORD;
    let text = format!("{:?}", q.check_writable().await);
    assert!(!text.contains(url_password), "{text}");
    pg.start_again();
    let deadline = Instant::now() + Duration::from_secs(20);
    while q.check_writable().await.is_err() {
        assert!(Instant::now() < deadline, "never writable again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    q.enqueue(message("O2", &["a@x.test"])).await.unwrap();
    let ids: Vec<String> = q
        .claim("transactional", 10, LEASE)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["O1", "O2"], "nothing acknowledged was lost");
}

/// `join_all` without a futures dependency: runs them concurrently.
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// The operator's tools on the shared queue keep the embedded ones'
/// rules: a message a replica is delivering is not deleted; `retry` gives
/// failed recipients another try and wakes idle replicas at once.
#[tokio::test]
async fn the_inspector_never_deletes_under_a_live_lease_and_retry_wakes_replicas() {
    let pg = TestPostgres::start();
    let q = open(&pg, "postmark_relay").await;
    let tools = PgInspector::open(&settings(&pg, "postmark_relay", LEASE))
        .await
        .unwrap();
    q.enqueue(message("L1", &["a@x.test"])).await.unwrap();
    q.enqueue(message("F1", &["b@x.test"])).await.unwrap();
    let claimed = q.claim("transactional", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(matches!(
        tools.delete("L1", true).await.unwrap(),
        Deleted::Leased(_)
    ));
    let failed = q
        .finish("F1", vec![(0, Outcome::Failed("550 no".into()))], None)
        .await
        .unwrap();
    assert!(matches!(failed, Finished::Failed));
    let arrivals = q.arrivals();
    let woken = arrivals.notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    assert!(tools.retry("F1").await.unwrap());
    tokio::time::timeout(Duration::from_secs(5), woken)
        .await
        .expect("retry woke the replica");
    let info = tools.show("F1").await.unwrap().unwrap();
    assert_eq!(info.state, State::Deferred);
    assert_eq!(info.recipients[0].state, RecipientState::Pending);
    assert!(!tools.retry("nope").await.unwrap());
    assert_eq!(tools.delete("nope", true).await.unwrap(), Deleted::NotFound);
    q.release("L1").await.unwrap();
    assert_eq!(tools.delete("L1", true).await.unwrap(), Deleted::Removed);
    let listed: Vec<String> = tools
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(listed, ["F1"]);
}

/// `sslmode=require` with the database's CA as `queue.ca_file`: the queue
/// works, and over TLS (the server refuses TCP without it, and lists the
/// relay's sessions as encrypted).
#[tokio::test]
async fn with_sslmode_require_and_the_ca_file_the_queue_talks_tls() {
    let pg = TestPostgres::start_tls();
    let plain = PgQueue::open(&settings(&pg, "tls", LEASE), policy()).await;
    let refused = plain
        .err()
        .expect("the server took a connection without TLS");
    let text = format!("{refused} {refused:?}");
    println!("plain TCP to a TLS-only server: {refused}");
    assert!(text.contains("no encryption"), "{text}");
    assert!(!text.contains(PG_PASSWORD), "{text}");

    let q = PgQueue::open(&tls_settings(&pg, Some(pg.ca_file())), policy())
        .await
        .unwrap();
    q.enqueue(message("T1", &["a@x.test"])).await.unwrap();
    let claimed = q.claim("transactional", 10, LEASE).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["T1"]);
    let sessions = |ssl: &str| {
        pg.psql(&format!(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
              WHERE ssl = {ssl} AND application_name = 'postmark-relay'"
        ))
    };
    let encrypted: u32 = sessions("true").parse().unwrap();
    assert!(
        encrypted > 0,
        "no TLS session of the relay while its queue is open"
    );
    assert_eq!(sessions("false"), "0", "a session of the relay without TLS");
    q.finish("T1", vec![(0, Outcome::Delivered("250 ok".into()))], None)
        .await
        .unwrap();
    assert!(q.waiting().await.unwrap().is_empty());
}

/// `sslmode=require` without the CA that signed the database's
/// certificate: opening fails, and the error tells the operator what to
/// set, without the password.
#[tokio::test]
async fn an_untrusted_database_certificate_fails_naming_queue_ca_file() {
    let pg = TestPostgres::start_tls();
    let settings = tls_settings(&pg, None);
    let queue = PgQueue::open(&settings, policy()).await;
    let tools = PgInspector::open(&settings).await;
    for err in [queue.err(), tools.err()] {
        let err = err.expect("opened without trusting the database's certificate");
        let text = err.to_string();
        println!("without queue.ca_file: {text}");
        assert!(text.contains("certificate"), "{text}");
        assert!(text.contains("queue.ca_file"), "{text}");
        let debug = format!("{err:?}");
        assert!(!text.contains(PG_PASSWORD), "{text}");
        assert!(!debug.contains(PG_PASSWORD), "{debug}");
    }
}

/// As on SQLite ([`common::short_claims_tell_when_the_next_message_is_due`]):
/// here the claim's one statement answers.
#[tokio::test]
async fn a_short_claim_tells_when_the_next_message_is_due() {
    let pg = TestPostgres::start();
    let q = open(&pg, "short_claims").await;
    common::short_claims_tell_when_the_next_message_is_due(&q, LEASE).await;
}
