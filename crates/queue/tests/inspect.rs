//! The `Inspector` against a live `SqliteQueue` on the same folder, as the
//! `queue` CLI sees a running `serve`.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::time::{Duration, SystemTime};

use relay_queue::{
    Content, Deleted, Finished, Inspector, NewMessage, Outcome, Queue, RecipientState, RetryPolicy,
    SqliteQueue, State,
};
use serde_json::Value;

const LEASE: Duration = Duration::from_secs(60);

fn policy() -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_secs(30),
        max_delay: Duration::from_secs(60),
        multiplier: 2.0,
        give_up_after: Duration::from_secs(3600),
        keep_history: true,
    }
}

fn message(id: &str, upstream: &str, rcpts: &[&str]) -> NewMessage {
    NewMessage {
        id: id.into(),
        received_at: SystemTime::now(),
        sender: "app@example.com".into(),
        recipients: rcpts.iter().map(|r| r.to_string()).collect(),
        upstream: upstream.into(),
        stream: (upstream == "broadcast").then(|| "newsletter".to_string()),
        size: 21,
        client: None,
        content: Content::whole(b"Subject: x\r\n\r\nhello\r\n".to_vec()),
    }
}

/// A queue holding Q (queued), D (deferred: one delivered, one deferred
/// recipient) and F (failed: one delivered, one failed recipient).
async fn three_states(dir: &std::path::Path) -> SqliteQueue {
    let q = SqliteQueue::open(dir, policy()).unwrap();
    q.enqueue(message("D", "transactional", &["a@x.test", "b@x.test"]))
        .await
        .unwrap();
    q.enqueue(message("F", "transactional", &["c@x.test", "d@x.test"]))
        .await
        .unwrap();
    for c in q.claim("transactional", 10, LEASE).await.unwrap() {
        let second = if c.id == "D" {
            Outcome::Deferred("451 4.3.0 later".into())
        } else {
            Outcome::Failed("550 5.1.1 no such user".into())
        };
        let outcomes = vec![
            (c.recipients[0].idx, Outcome::Delivered("250 ok".into())),
            (c.recipients[1].idx, second),
        ];
        q.finish(&c.id, outcomes, None).await.unwrap();
    }
    q.enqueue(message("Q", "broadcast", &["e@x.test"]))
        .await
        .unwrap();
    q
}

#[tokio::test]
async fn list_shows_every_message_and_filters_by_state() {
    let dir = tempfile::tempdir().unwrap();
    let _q = three_states(dir.path()).await;
    let inspector = Inspector::open(dir.path()).unwrap();

    let all = inspector.list(None).unwrap();
    let ids: Vec<&str> = all.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), 3);
    for id in ["Q", "D", "F"] {
        assert!(ids.contains(&id), "{ids:?}");
    }
    let failed = inspector.list(Some(State::Failed)).unwrap();
    assert_eq!(failed.len(), 1);
    let f = &failed[0];
    assert_eq!(
        (f.id.as_str(), f.state, f.attempts),
        ("F", State::Failed, 1)
    );
    assert_eq!(f.next_attempt_at, None);
    assert_eq!(f.recipients[0].state, RecipientState::Delivered);
    assert_eq!(f.recipients[1].state, RecipientState::Failed);
    assert_eq!(
        f.recipients[1].reply.as_deref(),
        Some("550 5.1.1 no such user")
    );
    let deferred = inspector.list(Some(State::Deferred)).unwrap();
    assert_eq!(deferred.len(), 1);
    assert_eq!(deferred[0].id, "D");
    assert_eq!(deferred[0].last_error.as_deref(), Some("451 4.3.0 later"));
    let queued = inspector.list(Some(State::Queued)).unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].stream.as_deref(), Some("newsletter"));
}

#[tokio::test]
async fn json_has_exactly_the_contract_keys_and_types() {
    let dir = tempfile::tempdir().unwrap();
    let _q = three_states(dir.path()).await;
    let inspector = Inspector::open(dir.path()).unwrap();
    let json = serde_json::to_string(&inspector.list(None).unwrap()).unwrap();
    let value: Value = serde_json::from_str(&json).unwrap();
    let array = value.as_array().unwrap();
    assert_eq!(array.len(), 3);
    for m in array {
        let obj = m.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "attempts",
                "client",
                "id",
                "last_error",
                "next_attempt_at",
                "received_at",
                "recipients",
                "sender",
                "size",
                "state",
                "stream",
                "upstream"
            ]
        );
        assert!(m["id"].is_string());
        assert_rfc3339(&m["received_at"]);
        assert_eq!(m["size"], 21);
        assert_eq!(m["sender"], "app@example.com");
        assert!(m["upstream"].is_string());
        assert!(m["stream"].is_null() || m["stream"].is_string());
        assert!(m["client"].is_null() || m["client"].is_string());
        assert!(m["attempts"].is_u64());
        assert!(m["last_error"].is_null() || m["last_error"].is_string());
        for r in m["recipients"].as_array().unwrap() {
            let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
            keys.sort();
            assert_eq!(keys, ["address", "reply", "state"]);
            assert!(r["address"].is_string());
            assert!(["pending", "delivered", "failed"].contains(&r["state"].as_str().unwrap()));
            assert!(r["reply"].is_null() || r["reply"].is_string());
        }
        match m["state"].as_str().unwrap() {
            "failed" => assert!(m["next_attempt_at"].is_null()),
            "queued" | "deferred" => assert_rfc3339(&m["next_attempt_at"]),
            other => panic!("state {other}"),
        }
    }
    let by_id = |id: &str| array.iter().find(|m| m["id"] == id).unwrap();
    assert_eq!(by_id("Q")["state"], "queued");
    assert_eq!(by_id("Q")["stream"], "newsletter");
    assert_eq!(by_id("Q")["recipients"][0]["reply"], Value::Null);
    assert_eq!(by_id("D")["state"], "deferred");
    assert_eq!(by_id("D")["stream"], Value::Null);
    assert_eq!(by_id("F")["state"], "failed");
    assert_eq!(by_id("F")["recipients"][1]["state"], "failed");
    assert_eq!(
        by_id("F")["recipients"][1]["reply"],
        "550 5.1.1 no such user"
    );
}

fn assert_rfc3339(v: &Value) {
    let text = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"));
}

#[tokio::test]
async fn retry_of_a_failed_message_makes_it_claimable_with_its_failed_recipients_pending() {
    let dir = tempfile::tempdir().unwrap();
    let q = three_states(dir.path()).await;
    let inspector = Inspector::open(dir.path()).unwrap();
    // D waits 15-30 s for its next attempt, F is failed: nothing is due.
    assert!(q
        .claim("transactional", 10, LEASE)
        .await
        .unwrap()
        .is_empty());

    assert!(inspector.retry("F").unwrap());
    assert!(!inspector.retry("nope").unwrap());
    let info = inspector.show("F").unwrap().unwrap();
    assert_eq!(info.state, State::Deferred);
    assert_eq!(info.recipients[1].state, RecipientState::Pending);
    assert_eq!(
        info.recipients[1].reply.as_deref(),
        Some("550 5.1.1 no such user"),
        "the last reply is kept until the next attempt"
    );
    let claimed = q.claim("transactional", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1, "only F was made due");
    assert_eq!(claimed[0].id, "F");
    let pending: Vec<&str> = claimed[0]
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(pending, ["d@x.test"], "the delivered one is not sent again");
    let finished = q
        .finish(
            "F",
            vec![(
                claimed[0].recipients[0].idx,
                Outcome::Delivered("250".into()),
            )],
            None,
        )
        .await
        .unwrap();
    assert_eq!(finished, Finished::Delivered);
    assert!(inspector.show("F").unwrap().is_none());
}

#[tokio::test]
async fn retry_all_makes_everything_due_and_keeps_a_lease() {
    let dir = tempfile::tempdir().unwrap();
    let q = three_states(dir.path()).await;
    let inspector = Inspector::open(dir.path()).unwrap();
    assert_eq!(inspector.retry_all().unwrap(), 3);
    let claimed = q.claim("transactional", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 2);
    // A retry while they are leased does not hand them out twice.
    assert_eq!(inspector.retry_all().unwrap(), 3);
    assert!(q
        .claim("transactional", 10, LEASE)
        .await
        .unwrap()
        .is_empty());
    let d = inspector.show("D").unwrap().unwrap();
    assert!(d.leased_until.unwrap() > SystemTime::now());
}

#[tokio::test]
async fn delete_removes_a_message_but_not_one_being_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let q = three_states(dir.path()).await;
    let inspector = Inspector::open(dir.path()).unwrap();
    assert_eq!(inspector.delete("F", true).unwrap(), Deleted::Removed);
    assert!(inspector.show("F").unwrap().is_none());
    assert_eq!(inspector.delete("F", true).unwrap(), Deleted::NotFound);

    assert_eq!(q.claim("broadcast", 10, LEASE).await.unwrap().len(), 1);
    match inspector.delete("Q", true).unwrap() {
        Deleted::Leased(until) => assert!(until > SystemTime::now()),
        other => panic!("deleted under a lease: {other:?}"),
    }
    q.release("Q").await.unwrap();
    assert_eq!(inspector.delete("Q", true).unwrap(), Deleted::Removed);
    let left: Vec<String> = inspector
        .list(None)
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(left, ["D"]);
}

#[tokio::test]
async fn show_returns_the_stored_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let _q = three_states(dir.path()).await;
    let inspector = Inspector::open(dir.path()).unwrap();
    let info = inspector.show("Q").unwrap().unwrap();
    assert_eq!(info.id, "Q");
    assert_eq!(info.recipients.len(), 1);
    let mut raw = Vec::new();
    assert!(inspector.write_raw("Q", &mut raw).unwrap());
    assert_eq!(raw, b"Subject: x\r\n\r\nhello\r\n");
    assert!(inspector.show("nope").unwrap().is_none());
    assert!(!inspector.write_raw("nope", &mut raw).unwrap());
}

#[tokio::test]
async fn stats_count_by_state_and_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let _q = three_states(dir.path()).await;
    let inspector = Inspector::open(dir.path()).unwrap();
    let stats = inspector.stats().unwrap();
    assert_eq!(
        (
            stats.by_state.queued,
            stats.by_state.deferred,
            stats.by_state.failed
        ),
        (1, 1, 1)
    );
    assert_eq!(stats.by_state.total(), 3);
    assert_eq!(stats.by_upstream["transactional"].deferred, 1);
    assert_eq!(stats.by_upstream["transactional"].failed, 1);
    assert_eq!(stats.by_upstream["broadcast"].queued, 1);
    let oldest = stats.oldest_received_at.unwrap();
    assert!(oldest <= SystemTime::now());
    let json: Value = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["by_state"]["failed"], 1);
    assert_eq!(json["by_upstream"]["broadcast"]["queued"], 1);
    assert_rfc3339(&json["oldest_received_at"]);

    let empty = tempfile::tempdir().unwrap();
    drop(SqliteQueue::open(empty.path(), policy()).unwrap());
    let stats = Inspector::open(empty.path()).unwrap().stats().unwrap();
    assert_eq!(stats.by_state.total(), 0);
    assert_eq!(stats.oldest_received_at, None);
}

#[test]
fn opening_a_folder_without_a_queue_fails_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let err = Inspector::open(&missing).err().unwrap();
    let text = err.to_string();
    assert!(text.contains("no queue"), "{text}");
    assert!(text.contains("nowhere"), "{text}");
    assert!(!missing.exists());
    let err = Inspector::open(dir.path()).err().unwrap();
    assert!(err.to_string().contains("no queue"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
