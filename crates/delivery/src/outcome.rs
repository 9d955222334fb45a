//! The one place that reads the upstream's replies: a reply (or the reply
//! to a message body) becomes a recipient [`Outcome`], and the Postmark
//! failures an operator can fix become a [`Diagnosis`] with the fix.

use relay_queue::Outcome;
use smtp_proto::Response;

/// An upstream reply as one line of text: `550 5.1.1 no such user`.
pub fn reply_text(r: &Response<String>) -> String {
    let message = r.message.replace(['\r', '\n'], " ");
    if r.esc[0] != 0 {
        format!(
            "{} {}.{}.{} {}",
            r.code,
            r.esc[0],
            r.esc[1],
            r.esc[2],
            message.trim()
        )
    } else {
        format!("{} {}", r.code, message.trim())
    }
}

/// 2xx → delivered, 4xx → deferred, anything else → failed; the text is
/// the reply with its fix when there is one. An unverified sender fails
/// whatever its code: Postmark has sent it as `422`, and retrying for days
/// cannot verify a domain (the message stays for `queue retry`).
pub fn classify(r: &Response<String>) -> Outcome {
    let text = reply_text(r);
    let unverified = is_unverified_sender(&text);
    let text = with_hint(&text);
    match r.code {
        200..=299 => Outcome::Delivered(text),
        _ if unverified => Outcome::Failed(text),
        400..=499 => Outcome::Deferred(text),
        _ => Outcome::Failed(text),
    }
}

/// The outcome of the reply to a message body. A 3xx there is a protocol
/// error, so it counts as temporary.
pub fn classify_body(r: &Response<String>) -> Outcome {
    match classify(r) {
        Outcome::Failed(text) if r.code / 100 == 3 && !is_unverified_sender(&text) => {
            Outcome::Deferred(text)
        }
        outcome => outcome,
    }
}

/// A Postmark failure the operator can fix (docs/REFERENCE.md, "Errors that
/// explain themselves").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Diagnosis {
    /// An Account API Token where the Server API Token belongs.
    AccountToken,
    /// Username and password are not the same Server API Token.
    WrongCredentials,
    /// The sender's domain is not verified on the Postmark server.
    UnverifiedSender,
}

impl Diagnosis {
    /// The diagnosis of a reply's text (`535 5.7.8 ...`), if it has one.
    pub fn of(reply: &str) -> Option<Diagnosis> {
        let lower = reply.to_ascii_lowercase();
        if lower.contains("serverapi key required") {
            Some(Diagnosis::AccountToken)
        } else if lower.contains("not found in your domains") {
            Some(Diagnosis::UnverifiedSender)
        } else if lower.starts_with("535") {
            Some(Diagnosis::WrongCredentials)
        } else {
            None
        }
    }

    /// What the operator should do.
    pub fn fix(self) -> &'static str {
        match self {
            Diagnosis::AccountToken => "an Account API Token is configured; use the Server API Token (Servers → your server → API Tokens)",
            Diagnosis::WrongCredentials => "username and password must both be the same Server API Token",
            Diagnosis::UnverifiedSender => "the sender's domain is not verified on this Postmark server (Sender Signatures)",
        }
    }
}

/// Whether a reply says the sender's domain is not verified.
fn is_unverified_sender(reply: &str) -> bool {
    Diagnosis::of(reply) == Some(Diagnosis::UnverifiedSender)
}

/// The fix for a reply, if it is one of the failures an operator can fix.
pub fn hint(reply: &str) -> Option<&'static str> {
    Diagnosis::of(reply).map(Diagnosis::fix)
}

/// The reply followed by its fix, when there is one.
pub fn with_hint(reply: &str) -> String {
    match hint(reply) {
        Some(h) => format!("{reply} (fix: {h})"),
        None => reply.to_string(),
    }
}

/// Whether a reply means our credentials are wrong (not the message's fault).
pub fn is_credential_failure(r: &Response<String>) -> bool {
    r.code == 535 || r.code == 530 || Diagnosis::of(&r.message) == Some(Diagnosis::AccountToken)
}

/// Why a message ended failed: the `reason` label of
/// `postmark_relay_messages_failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The upstream refused it for good.
    Rejected,
    /// Refused because the sender's domain is not verified.
    UnverifiedSender,
    /// `retry.give_up_after` passed while recipients were still pending.
    Expired,
}

impl FailureReason {
    /// Every reason, for metrics that start at 0.
    pub const ALL: [FailureReason; 3] = [
        FailureReason::Rejected,
        FailureReason::UnverifiedSender,
        FailureReason::Expired,
    ];

    /// Why a refusal with this reply text failed the message.
    pub fn of_refusal(reply: &str) -> FailureReason {
        match Diagnosis::of(reply) {
            Some(Diagnosis::UnverifiedSender) => FailureReason::UnverifiedSender,
            _ => FailureReason::Rejected,
        }
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            FailureReason::Rejected => "rejected",
            FailureReason::UnverifiedSender => "unverified_sender",
            FailureReason::Expired => "expired",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(code: u16, esc: [u8; 3], message: &str) -> Response<String> {
        Response {
            code,
            esc,
            message: message.into(),
        }
    }

    #[test]
    fn codes_map_to_outcomes() {
        assert!(matches!(
            classify(&r(250, [2, 0, 0], "ok")),
            Outcome::Delivered(_)
        ));
        assert!(matches!(
            classify(&r(451, [4, 3, 0], "later")),
            Outcome::Deferred(_)
        ));
        assert_eq!(
            classify(&r(550, [5, 1, 1], "no user")),
            Outcome::Failed("550 5.1.1 no user".into())
        );
        assert!(matches!(
            classify_body(&r(354, [0, 0, 0], "go on")),
            Outcome::Deferred(_)
        ));
    }

    #[test]
    fn postmark_failures_carry_their_fix() {
        let unverified = reply_text(&r(
            550,
            [5, 7, 1],
            "The from address you've used was not found in your domains",
        ));
        assert!(with_hint(&unverified).contains("Sender Signatures"));
        assert_eq!(
            FailureReason::of_refusal(&unverified),
            FailureReason::UnverifiedSender
        );
        assert!(with_hint("535 5.7.8 ServerAPI key required").contains("use the Server API Token"));
        assert!(with_hint("535 5.7.8 Authentication failed")
            .contains("both be the same Server API Token"));
        assert_eq!(with_hint("451 4.3.0 busy"), "451 4.3.0 busy");
        // Postmark's setup guide shows the unverified sender as a 422: it
        // fails at once all the same, with its fix.
        let guide = r(
            422,
            [0, 0, 0],
            "The from address you've used was not found in your domains",
        );
        match classify(&guide) {
            Outcome::Failed(text) => assert!(text.contains("Sender Signatures"), "{text}"),
            other => panic!("a 422 unverified sender was {other:?}"),
        }
        assert!(matches!(classify_body(&guide), Outcome::Failed(_)));
        assert_eq!(
            FailureReason::of_refusal("550 5.1.1 no user"),
            FailureReason::Rejected
        );
    }
}
