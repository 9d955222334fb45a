//! What the delivery history keeps of a message's header: its `From:`
//! address and `Subject:`, taken once at enqueue so that recording a
//! finished message copies columns and never parses a body.

use relay_message::{find, first_address};

/// Longest `Subject:` kept, in characters: enough to recognise a message,
/// bounded so a hostile header cannot grow the history.
const SUBJECT_CHARS: usize = 200;

/// The `From:` address and the `Subject:` (unfolded, capped) of a
/// message: in its head, or in its tail when it is stored whole.
pub(crate) fn of(content: &crate::Content) -> (Option<String>, Option<String>) {
    if content.head.is_empty() {
        from_and_subject(&content.tail)
    } else {
        from_and_subject(&content.head)
    }
}

fn from_and_subject(head: &[u8]) -> (Option<String>, Option<String>) {
    let from = find(head, "From").and_then(|v| first_address(&v));
    let subject = find(head, "Subject").map(|s| s.trim().chars().take(SUBJECT_CHARS).collect());
    (from, subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_address_and_capped_subject() {
        let long = "x".repeat(300);
        let head = format!("From: \"Billing\" <Bill@Example.com>\r\nSubject: {long}\r\n\r\n");
        let (from, subject) = from_and_subject(head.as_bytes());
        assert_eq!(from.as_deref(), Some("Bill@Example.com"));
        assert_eq!(subject.map(|s| s.len()), Some(SUBJECT_CHARS));
        assert_eq!(from_and_subject(b"X-Other: 1\r\n\r\n"), (None, None));
    }
}
