//! One place that turns what the upstream said (or an I/O failure) into a
//! recipient outcome, and Postmark's fixable failures into advice.

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

/// 2xx → delivered, 4xx → deferred, anything else → failed.
pub fn from_reply(r: &Response<String>) -> Outcome {
    let text = with_hint(&reply_text(r));
    match r.code {
        200..=299 => Outcome::Delivered(text),
        400..=499 => Outcome::Deferred(text),
        _ => Outcome::Failed(text),
    }
}

/// What an operator should do about a Postmark reply, if it is one of
/// the failures they can fix (docs/REFERENCE.md, "Errors that explain themselves").
pub fn hint(reply: &str) -> Option<&'static str> {
    let lower = reply.to_ascii_lowercase();
    if lower.contains("serverapi key required") {
        Some("an Account API Token is configured; use the Server API Token (Servers → your server → API Tokens)")
    } else if lower.contains("not found in your domains") {
        Some("the sender's domain is not verified on this Postmark server (Sender Signatures)")
    } else if lower.starts_with("535") {
        Some("username and password must both be the same Server API Token")
    } else {
        None
    }
}

/// The reply followed by its hint, when there is one.
pub fn with_hint(reply: &str) -> String {
    match hint(reply) {
        Some(h) => format!("{reply} (fix: {h})"),
        None => reply.to_string(),
    }
}

/// Whether a reply means our credentials are wrong (not the message's fault).
pub fn is_credential_failure(r: &Response<String>) -> bool {
    r.code == 535
        || r.code == 530
        || r.message
            .to_ascii_lowercase()
            .contains("serverapi key required")
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
            from_reply(&r(250, [2, 0, 0], "ok")),
            Outcome::Delivered(_)
        ));
        assert!(matches!(
            from_reply(&r(451, [4, 3, 0], "later")),
            Outcome::Deferred(_)
        ));
        assert_eq!(
            from_reply(&r(550, [5, 1, 1], "no user")),
            Outcome::Failed("550 5.1.1 no user".into())
        );
    }

    #[test]
    fn postmark_failures_carry_their_fix() {
        let unverified = reply_text(&r(
            550,
            [5, 7, 1],
            "The from address you've used was not found in your domains",
        ));
        assert!(with_hint(&unverified).contains("Sender Signatures"));
        assert!(with_hint("535 5.7.8 ServerAPI key required").contains("use the Server API Token"));
        assert!(with_hint("535 5.7.8 Authentication failed")
            .contains("both be the same Server API Token"));
        assert_eq!(with_hint("451 4.3.0 busy"), "451 4.3.0 busy");
    }
}
