//! What the queue's test files share: a fast retry policy and a small
//! message.
#![allow(dead_code)] // Each test file uses what it needs.

use std::time::{Duration, SystemTime};

use relay_queue::{Content, NewMessage, RetryPolicy};

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
