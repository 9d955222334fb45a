//! What the queue's test files share: a fast retry policy, a small
//! message, and the promises both stores keep the same way.
#![allow(dead_code)] // Each test file uses what it needs.

use std::time::{Duration, SystemTime};

use relay_queue::{Claim, ClaimLimit, Content, NewMessage, Outcome, Queue, Rest, RetryPolicy};

/// Retries within milliseconds; gives up after an hour.
pub fn policy() -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        multiplier: 2.0,
        give_up_after: Duration::from_secs(3600),
        keep_history: true,
    }
}

/// A message `id` to `rcpts` on the transactional upstream.
pub fn message(id: &str, rcpts: &[&str]) -> NewMessage {
    NewMessage {
        id: id.into(),
        received_at: SystemTime::now(),
        sender: "app@example.com".into(),
        recipients: rcpts.iter().map(|r| r.to_string()).collect(),
        upstream: "transactional".into(),
        stream: None,
        size: 5,
        client: None,
        content: Content::whole(b"Subject: x\r\n\r\nhello\r\n".to_vec()),
    }
}

/// A claim that took everything due says so, with when the next message
/// becomes due (what an idle delivery asks next, answered in the same
/// round trip); one that stopped at its limit or at its byte budget says
/// more may be due; on an empty queue nothing is taken and nothing waits.
/// `q` is empty and leases for `lease`.
pub async fn short_claims_tell_when_the_next_message_is_due(q: &impl Queue, lease: Duration) {
    for id in ["S1", "S2", "S3", "S4"] {
        q.enqueue(message(id, &["a@x.test"])).await.unwrap();
    }
    let first = q.claim_due("transactional", 2.into(), lease).await.unwrap();
    assert_eq!(
        first.rest,
        Rest::MoreDue,
        "a claim that reached its limit must say more may be due"
    );
    assert_eq!(first.messages.len(), 2);
    let tiny = ClaimLimit {
        messages: 10,
        bytes: 1,
    };
    let cut = q.claim_due("transactional", tiny, lease).await.unwrap();
    assert_eq!(
        cut.rest,
        Rest::MoreDue,
        "a claim cut by its byte budget left one due"
    );
    assert_eq!(cut.messages.len(), 1);
    let before = SystemTime::now();
    let claim = q
        .claim_due("transactional", 10.into(), lease)
        .await
        .unwrap();
    let Claim {
        messages: last,
        rest: Rest::NextDue(Some(next)),
    } = claim
    else {
        panic!("the last due message taken, the claim must say when the next is due: {claim:?}");
    };
    assert_eq!(last.len(), 1);
    assert!(
        next > SystemTime::now(),
        "everything is in flight, yet the next is due at once: {next:?}"
    );
    // Everything is in flight: the next due is the first lease's end.
    assert!(next + Duration::from_millis(1) >= before + lease - Duration::from_secs(5));
    assert!(next <= SystemTime::now() + lease);
    for c in first.messages.into_iter().chain(cut.messages).chain(last) {
        let delivered = c
            .recipients
            .iter()
            .map(|r| (r.idx, Outcome::Delivered("250 ok".into())))
            .collect();
        q.finish(&c.id, delivered, None).await.unwrap();
    }
    let claim = q
        .claim_due("transactional", 10.into(), lease)
        .await
        .unwrap();
    assert!(
        claim.messages.is_empty() && claim.rest == Rest::NextDue(None),
        "an empty queue: nothing taken, nothing waits: {claim:?}"
    );
}
