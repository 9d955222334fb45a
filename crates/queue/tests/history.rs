//! The delivery history on both backends: a message that leaves the queue
//! (delivered, or deleted by an operator) is kept with its metadata and
//! each recipient's final state and reply, found by the `history` filters,
//! and pruned in batches. PostgreSQL from Debian's package, started here.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::time::{Duration, SystemTime};

use relay_queue::{
    Content, FinalState, HistoryEntry, HistoryQuery, Inspector, NewMessage, Outcome, PgInspector,
    PgQueue, PgSettings, Queue, SqliteQueue,
};
use relay_testkit::TestPostgres;

mod common;
use common::policy;

/// One backend: its queue and its operator view.
enum Store {
    Local(SqliteQueue, Inspector),
    Shared(PgQueue, PgInspector),
}

impl Store {
    async fn enqueue(&self, m: NewMessage) {
        match self {
            Store::Local(q, _) => q.enqueue(m).await.unwrap(),
            Store::Shared(q, _) => q.enqueue(m).await.unwrap(),
        }
    }

    /// Claims `id`'s upstream and records `outcomes` for its recipients in
    /// order.
    async fn deliver(&self, outcomes: Vec<Outcome>) {
        let lease = Duration::from_secs(60);
        let claimed = match self {
            Store::Local(q, _) => q.claim("transactional", 1, lease).await.unwrap(),
            Store::Shared(q, _) => q.claim("transactional", 1, lease).await.unwrap(),
        };
        let c = &claimed[0];
        let outcomes = c.recipients.iter().map(|r| r.idx).zip(outcomes).collect();
        match self {
            Store::Local(q, _) => q.finish(&c.id, outcomes, None).await.unwrap(),
            Store::Shared(q, _) => q.finish(&c.id, outcomes, None).await.unwrap(),
        };
    }

    async fn history(&self, q: HistoryQuery) -> Vec<HistoryEntry> {
        match self {
            Store::Local(_, i) => i.history(&q).unwrap(),
            Store::Shared(_, i) => i.history(&q).await.unwrap(),
        }
    }

    async fn delete(&self, id: &str) {
        match self {
            Store::Local(_, i) => i.delete(id, true).unwrap(),
            Store::Shared(_, i) => i.delete(id, true).await.unwrap(),
        };
    }

    async fn prune(&self, before: SystemTime, batch: usize) -> usize {
        match self {
            Store::Local(q, _) => q.prune_history(before, batch).await.unwrap(),
            Store::Shared(q, _) => q.prune_history(before, batch).await.unwrap(),
        }
    }
}

/// Message `id` from `sender` (with a `From:` and `Subject:` in its head)
/// to `rcpts`, from client `client`.
fn message(id: &str, sender: &str, rcpts: &[&str], client: Option<&str>) -> NewMessage {
    NewMessage {
        id: id.into(),
        received_at: SystemTime::now(),
        sender: sender.into(),
        recipients: rcpts.iter().map(|r| r.to_string()).collect(),
        upstream: "transactional".into(),
        stream: Some("outbound".into()),
        size: 5,
        client: client.map(Into::into),
        content: Content {
            head: format!("From: \"App\" <{sender}>\r\nSubject: Reset for {id}\r\n\r\n")
                .into_bytes(),
            chunks: 0,
            tail: b"the body is never kept\r\n".to_vec(),
            eight_bit: false,
        },
    }
}

fn query() -> HistoryQuery {
    HistoryQuery {
        limit: 50,
        ..Default::default()
    }
}

fn ids(entries: &[HistoryEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

/// The whole story on one backend.
async fn keeps_finds_and_prunes(store: Store) {
    // H1: delivered to both recipients, from client billing.
    store
        .enqueue(message(
            "H1",
            "app@billing.test",
            &["Alice@Example.com", "bob@example.net"],
            Some("billing"),
        ))
        .await;
    store
        .deliver(vec![
            Outcome::Delivered("250 2.0.0 Ok: queued as pm-1".into()),
            Outcome::Delivered("250 2.0.0 Ok: queued as pm-2".into()),
        ])
        .await;
    // H2: one recipient delivered, one refused for good: stays failed in
    // the queue (not in the history) until an operator deletes it.
    store
        .enqueue(message(
            "H2",
            "news@crm.test",
            &["alice@example.com", "carol@example.org"],
            None,
        ))
        .await;
    store
        .deliver(vec![
            Outcome::Delivered("250 ok pm-3".into()),
            Outcome::Failed("550 5.1.1 inactive recipient".into()),
        ])
        .await;
    assert_eq!(ids(&store.history(query()).await), ["H1"]);
    store.delete("H2").await;
    // H3: deleted while still pending: kept as failed, saying so.
    store
        .enqueue(message(
            "H3",
            "app@billing.test",
            &["dave@example.com"],
            Some("billing"),
        ))
        .await;
    store.delete("H3").await;

    let all = store.history(query()).await;
    assert_eq!(ids(&all), ["H3", "H2", "H1"], "newest first");
    let h1 = &all[2];
    assert_eq!(h1.client.as_deref(), Some("billing"));
    assert_eq!(h1.sender, "app@billing.test");
    assert_eq!(h1.from.as_deref(), Some("app@billing.test"));
    assert_eq!(h1.subject.as_deref(), Some("Reset for H1"));
    assert_eq!(h1.upstream, "transactional");
    assert_eq!(h1.stream.as_deref(), Some("outbound"));
    assert_eq!(h1.attempts, 1);
    assert!(h1.finished_at >= h1.received_at);
    assert_eq!(h1.recipients.len(), 2);
    assert_eq!(h1.recipients[0].address, "Alice@Example.com");
    assert_eq!(h1.recipients[0].state, FinalState::Delivered);
    assert_eq!(
        h1.recipients[0].reply.as_deref(),
        Some("250 2.0.0 Ok: queued as pm-1")
    );
    let h2 = &all[1];
    assert_eq!(h2.client, None);
    assert_eq!(
        h2.recipients.iter().map(|r| r.state).collect::<Vec<_>>(),
        [FinalState::Delivered, FinalState::Failed]
    );
    assert_eq!(
        h2.recipients[1].reply.as_deref(),
        Some("550 5.1.1 inactive recipient")
    );
    let h3 = &all[0];
    assert_eq!(h3.recipients[0].state, FinalState::Failed);
    assert!(
        h3.recipients[0]
            .reply
            .as_deref()
            .unwrap()
            .starts_with("deleted from the queue before delivery"),
        "{h3:?}"
    );
    let json = serde_json::to_value(&all[2]).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "attempts",
            "client",
            "finished_at",
            "from",
            "id",
            "received_at",
            "recipients",
            "sender",
            "stream",
            "subject",
            "upstream"
        ]
    );
    assert!(!serde_json::to_string(&all).unwrap().contains("never kept"));

    // Filters: exact address any case, globs, sender or From:, id, state,
    // since, limit.
    let find = |q: HistoryQuery| store.history(q);
    let to = |a: &str| HistoryQuery {
        to: Some(a.into()),
        ..query()
    };
    assert_eq!(ids(&find(to("ALICE@example.com")).await), ["H2", "H1"]);
    assert_eq!(ids(&find(to("*@example.org")).await), ["H2"]);
    assert_eq!(ids(&find(to("?ave@*")).await), ["H3"]);
    assert!(find(to("alice@example")).await.is_empty(), "whole address");
    assert!(find(to("a%")).await.is_empty(), "% is literal");
    let from = HistoryQuery {
        from: Some("*@CRM.test".into()),
        ..query()
    };
    assert_eq!(ids(&find(from).await), ["H2"]);
    let by_id = HistoryQuery {
        id: Some("H1".into()),
        ..query()
    };
    assert_eq!(ids(&find(by_id).await), ["H1"]);
    let failed = HistoryQuery {
        state: Some(FinalState::Failed),
        ..query()
    };
    assert_eq!(ids(&find(failed).await), ["H3", "H2"]);
    // The state belongs to the recipient the address matched.
    let alice_failed = HistoryQuery {
        to: Some("alice@example.com".into()),
        state: Some(FinalState::Failed),
        ..query()
    };
    assert!(find(alice_failed).await.is_empty());
    let future = HistoryQuery {
        since: Some(SystemTime::now() + Duration::from_secs(60)),
        ..query()
    };
    assert!(find(future).await.is_empty());
    let one = HistoryQuery {
        limit: 1,
        ..query()
    };
    assert_eq!(ids(&find(one).await), ["H3"]);

    // Pruning: in batches, oldest first, only what finished before.
    assert_eq!(
        store
            .prune(SystemTime::now() - Duration::from_secs(3600), 10)
            .await,
        0
    );
    let later = SystemTime::now() + Duration::from_secs(1);
    assert_eq!(store.prune(later, 2).await, 2);
    assert_eq!(ids(&store.history(query()).await), ["H3"]);
    assert_eq!(store.prune(later, 2).await, 1);
    assert!(store.history(query()).await.is_empty());
    assert!(
        store.history(to("dave@example.com")).await.is_empty(),
        "recipients pruned too"
    );
}

#[tokio::test]
async fn sqlite_history() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(dir.path(), policy()).unwrap();
    let i = Inspector::open(dir.path()).unwrap();
    keeps_finds_and_prunes(Store::Local(q, i)).await;
}

#[tokio::test]
async fn postgres_history() {
    let pg = TestPostgres::start();
    let settings = PgSettings {
        url: pg.url(),
        ca_file: None,
        schema: "history".into(),
        lease: Duration::from_secs(60),
    };
    let q = PgQueue::open(&settings, policy()).await.unwrap();
    let i = PgInspector::open(&settings).await.unwrap();
    keeps_finds_and_prunes(Store::Shared(q, i)).await;
}

/// With the history off nothing is written.
#[tokio::test]
async fn no_history_when_off() {
    let dir = tempfile::tempdir().unwrap();
    let off = relay_queue::RetryPolicy {
        keep_history: false,
        ..policy()
    };
    let q = SqliteQueue::open(dir.path(), off).unwrap();
    let store = Store::Local(q, Inspector::open(dir.path()).unwrap());
    store
        .enqueue(message("N1", "a@b.test", &["c@d.test"], None))
        .await;
    store
        .deliver(vec![Outcome::Delivered("250 ok".into())])
        .await;
    assert!(store.history(query()).await.is_empty());
}
