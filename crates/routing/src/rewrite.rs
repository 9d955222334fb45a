//! Sender rewriting: replaces an envelope sender or `From:` that Postmark
//! would reject (`root@localhost`, a domain not verified on the server) with
//! one verified address, keeping the original where a human can still see
//! it (`Reply-To:`, `X-Original-From:`).
//!
//! Pure, like routing: bytes in, bytes out, no I/O. Mail syntax (fields
//! and their spans, addresses, display names, quoting) is
//! `relay_message`'s; this module decides what to replace, and replaces
//! one field in place, leaving every other byte as it was.

use relay_config::Rewrite;
use relay_message::{
    display_name, fields, find, first_address, first_field, has, header_block, line_ending,
    mailbox, scrub, write_field,
};

/// Added when rewriting, so the original sender is never lost.
const ORIGINAL_FROM: &str = "X-Original-From";

/// `[rewrite]` ready to apply. Exists only when rewriting is on, so callers
/// hold an `Option<SenderRewrite>` and "off" costs nothing per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderRewrite {
    /// Lowercased; matched exactly (no subdomains).
    verified_domains: Vec<String>,
    /// The verified address that replaces unverified senders.
    sender: String,
}

/// A message after rewriting, with what it replaced, so the caller can
/// store the new envelope and log the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The new envelope sender (MAIL FROM): the configured sender.
    pub sender: String,
    /// The message with the new `From:` (and `Reply-To:`,
    /// `X-Original-From:`); everything else byte for byte as it was.
    pub message: Vec<u8>,
    /// The envelope sender as received ("" for the null sender).
    pub original_sender: String,
    /// The original `From:` value, unfolded and trimmed; `None` when the
    /// message had no (or an empty) `From:`.
    pub original_from: Option<String>,
}

impl SenderRewrite {
    /// The rewrite `cfg` describes; `None` when `rewrite.sender` is not set
    /// (rewriting off).
    pub fn new(cfg: &Rewrite) -> Option<SenderRewrite> {
        let sender = cfg
            .sender
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())?;
        Some(SenderRewrite {
            verified_domains: cfg
                .verified_domains
                .iter()
                .map(|d| d.trim().to_ascii_lowercase())
                .collect(),
            sender: sender.to_owned(),
        })
    }

    /// Rewrites the message if its envelope `sender` (MAIL FROM without
    /// `<>`, "" for the null sender) or its `From:` address is not at a
    /// verified domain; `None` leaves it untouched. A message without a
    /// `From:` address counts as unverified (Postmark needs one).
    ///
    /// `message` is the full message, CRLF line endings (a bare-LF message
    /// gets LF on the lines added). Never panics, whatever the bytes.
    pub fn apply(&self, sender: &str, message: &[u8]) -> Option<Rewritten> {
        let original_from = find(message, "From").filter(|v| !v.is_empty());
        let from_address = original_from.as_deref().and_then(first_address);
        if self.verified(sender) && from_address.as_deref().is_some_and(|a| self.verified(a)) {
            return None;
        }

        let block = header_block(message);
        let eol = line_ending(block);
        let from_field = first_field(block, "From");
        let mut added = self.new_from_line(original_from.as_deref(), eol);
        if from_address.is_some_and(|a| is_mailbox(&a)) && !has(message, "Reply-To") {
            // Replies should still reach whoever the app meant, not the
            // no-reply sender; a From: without a full address would only
            // make an invalid Reply-To.
            if let Some(raw) = from_field.map(|f| f.raw_value(block)) {
                write_field(&mut added, "Reply-To", raw, eol);
            }
        }
        let original = match from_field.filter(|_| original_from.is_some()) {
            Some(field) => field.raw_value(block).to_vec(),
            None if sender.is_empty() => b"<>".to_vec(),
            None => scrub(sender).into_bytes(),
        };
        write_field(&mut added, ORIGINAL_FROM, &original, eol);

        let mut out = Vec::with_capacity(message.len() + added.len());
        let mut added = Some(added);
        for field in fields(block) {
            if field.is(block, "From") {
                // The first From: becomes the new one; any later ones go
                // (a message has one From:, and Postmark must not see an
                // unverified second).
                out.extend(added.take().unwrap_or_default());
            } else {
                out.extend_from_slice(field.raw(block));
            }
        }
        if let Some(added) = added {
            if !block.is_empty() && !block.ends_with(b"\n") {
                out.extend_from_slice(eol);
            }
            out.extend(added);
        }
        out.extend_from_slice(message.get(block.len()..).unwrap_or_default());

        Some(Rewritten {
            sender: self.sender.clone(),
            message: out,
            original_sender: sender.to_owned(),
            original_from,
        })
    }

    /// Whether `address` is at one of the verified domains (exactly,
    /// case-insensitively). The null sender and bare local parts are not.
    fn verified(&self, address: &str) -> bool {
        let Some((local, domain)) = address.rsplit_once('@') else {
            return false;
        };
        !local.is_empty()
            && self
                .verified_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain.trim()))
    }

    /// `From: Display Name <sender>` (the original's display name, quoted
    /// as needed), or `From: sender` when the original had none.
    fn new_from_line(&self, original: Option<&str>, eol: &[u8]) -> Vec<u8> {
        let name = original.and_then(display_name);
        let mut line = Vec::new();
        write_field(
            &mut line,
            "From",
            mailbox(name.as_deref(), &self.sender).as_bytes(),
            eol,
        );
        line
    }
}

/// `local@domain` with both parts non-empty: worth a `Reply-To:`.
fn is_mailbox(address: &str) -> bool {
    address
        .rsplit_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite() -> SenderRewrite {
        SenderRewrite::new(&Rewrite {
            verified_domains: vec!["example.com".into(), "Example.ORG".into()],
            sender: Some("noreply@example.com".into()),
        })
        .expect("rewriting on")
    }

    fn apply(sender: &str, message: &str) -> Rewritten {
        rewrite()
            .apply(sender, message.as_bytes())
            .expect("rewritten")
    }

    fn text(r: &Rewritten) -> &str {
        std::str::from_utf8(&r.message).expect("utf-8")
    }

    #[test]
    fn off_without_a_sender() {
        let off = Rewrite {
            verified_domains: vec!["example.com".into()],
            sender: None,
        };
        assert_eq!(SenderRewrite::new(&off), None);
        let blank = Rewrite {
            sender: Some("  ".into()),
            ..off
        };
        assert_eq!(SenderRewrite::new(&blank), None);
    }

    #[test]
    fn verified_sender_and_from_are_untouched() {
        let r = rewrite();
        for (sender, msg) in [
            (
                "app@example.com",
                "From: App <app@example.com>\r\n\r\nhi\r\n",
            ),
            (
                "APP@EXAMPLE.COM",
                "from: app@Example.Com\r\nTo: x@y\r\n\r\nhi\r\n",
            ),
            ("a@example.org", "FROM: \"A\" <a@example.com>\r\n\r\n"),
        ] {
            assert_eq!(r.apply(sender, msg.as_bytes()), None, "{sender} {msg:?}");
        }
    }

    #[test]
    fn cron_daemon_from_root_at_localhost() {
        let msg = "Received: from x\r\nFrom: Cron Daemon <root@localhost>\r\nTo: ops@example.net\r\nSubject: cron\r\n\r\nbody\r\n";
        let r = apply("root@localhost", msg);
        assert_eq!(r.sender, "noreply@example.com");
        assert_eq!(r.original_sender, "root@localhost");
        assert_eq!(
            r.original_from.as_deref(),
            Some("Cron Daemon <root@localhost>")
        );
        assert_eq!(
            text(&r),
            "Received: from x\r\n\
             From: Cron Daemon <noreply@example.com>\r\n\
             Reply-To: Cron Daemon <root@localhost>\r\n\
             X-Original-From: Cron Daemon <root@localhost>\r\n\
             To: ops@example.net\r\nSubject: cron\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn unverified_envelope_with_verified_from_rewrites_both() {
        let r = apply(
            "bounce@mailer.internal",
            "From: app@example.com\r\n\r\nx\r\n",
        );
        assert_eq!(r.sender, "noreply@example.com");
        assert_eq!(
            text(&r),
            "From: noreply@example.com\r\nReply-To: app@example.com\r\nX-Original-From: app@example.com\r\n\r\nx\r\n"
        );
    }

    #[test]
    fn unverified_from_only_is_rewritten() {
        let r = apply(
            "app@example.com",
            "Subject: s\r\nFrom: shop@other.test\r\n\r\nx",
        );
        assert_eq!(r.sender, "noreply@example.com");
        assert_eq!(r.original_sender, "app@example.com");
        assert_eq!(
            text(&r),
            "Subject: s\r\nFrom: noreply@example.com\r\nReply-To: shop@other.test\r\nX-Original-From: shop@other.test\r\n\r\nx"
        );
    }

    #[test]
    fn subdomains_are_not_verified() {
        let r = apply("app@mail.example.com", "From: app@mail.example.com\r\n\r\n");
        assert_eq!(r.original_sender, "app@mail.example.com");
    }

    #[test]
    fn display_names_with_quotes_commas_and_angle_brackets() {
        let cases = [
            (
                "\"Cron Daemon\" <root@localhost>",
                "Cron Daemon <noreply@example.com>",
            ),
            (
                "\"Smith, John <john@x.test>\" <john@x.test>",
                "\"Smith, John <john@x.test>\" <noreply@example.com>",
            ),
            (
                "\"O'Brien \\\"Ops\\\"\" <ops@x.test>",
                "\"O'Brien \\\"Ops\\\"\" <noreply@example.com>",
            ),
            (
                "\"Cron\" Daemon <root@localhost>",
                "Cron Daemon <noreply@example.com>",
            ),
            (
                "Cron Daemon <root@localhost>",
                "Cron Daemon <noreply@example.com>",
            ),
            (
                "root@localhost <root@localhost>",
                "\"root@localhost\" <noreply@example.com>",
            ),
            (
                "=?utf-8?q?J=C3=B6rg?= <j@x.test>",
                "=?utf-8?q?J=C3=B6rg?= <noreply@example.com>",
            ),
            ("root@localhost (Cron Daemon)", "noreply@example.com"),
            ("<root@localhost>", "noreply@example.com"),
            (
                "Ann <a@x.test>, Bob <b@x.test>",
                "Ann <noreply@example.com>",
            ),
            ("a@x.test, Bob <b@x.test>", "noreply@example.com"),
        ];
        for (from, want) in cases {
            let r = apply("app@example.com", &format!("From: {from}\r\n\r\n"));
            let got = find(&r.message, "From");
            assert_eq!(got.as_deref(), Some(want), "{from}");
            assert_eq!(find(&r.message, "X-Original-From").as_deref(), Some(from));
            assert_eq!(
                first_address(want).as_deref(),
                Some("noreply@example.com"),
                "{want}"
            );
        }
    }

    #[test]
    fn no_from_header_adds_one_and_keeps_the_envelope_as_original() {
        let r = apply("root@localhost", "To: x@y\r\nSubject: s\r\n\r\nbody\r\n");
        assert_eq!(r.original_from, None);
        assert_eq!(
            text(&r),
            "To: x@y\r\nSubject: s\r\nFrom: noreply@example.com\r\nX-Original-From: root@localhost\r\n\r\nbody\r\n"
        );
        // Verified envelope but no From: still needs one.
        let r = apply("app@example.com", "Subject: s\r\n\r\n");
        assert_eq!(
            text(&r),
            "Subject: s\r\nFrom: noreply@example.com\r\nX-Original-From: app@example.com\r\n\r\n"
        );
    }

    #[test]
    fn headers_only_and_empty_messages() {
        let r = apply("root@localhost", "Subject: s");
        assert_eq!(
            text(&r),
            "Subject: s\r\nFrom: noreply@example.com\r\nX-Original-From: root@localhost\r\n"
        );
        let r = apply("root@localhost", "");
        assert_eq!(
            text(&r),
            "From: noreply@example.com\r\nX-Original-From: root@localhost\r\n"
        );
        let r = apply("root@localhost", "\r\nbody");
        assert_eq!(
            text(&r),
            "From: noreply@example.com\r\nX-Original-From: root@localhost\r\n\r\nbody"
        );
    }

    #[test]
    fn empty_from_is_replaced_and_the_envelope_kept() {
        let r = apply("root@localhost", "From:  \r\nTo: x@y\r\n\r\n");
        assert_eq!(r.original_from, None);
        assert_eq!(
            text(&r),
            "From: noreply@example.com\r\nX-Original-From: root@localhost\r\nTo: x@y\r\n\r\n"
        );
    }

    #[test]
    fn existing_reply_to_is_kept() {
        let msg = "From: root@localhost\r\nreply-to: ops@example.net\r\n\r\n";
        let r = apply("root@localhost", msg);
        assert_eq!(
            text(&r),
            "From: noreply@example.com\r\nX-Original-From: root@localhost\r\nreply-to: ops@example.net\r\n\r\n"
        );
    }

    #[test]
    fn from_without_a_full_address_gets_no_reply_to() {
        let r = apply("root@localhost", "From: root (Cron Daemon)\r\n\r\n");
        assert_eq!(
            text(&r),
            "From: noreply@example.com\r\nX-Original-From: root (Cron Daemon)\r\n\r\n"
        );
    }

    #[test]
    fn folded_from_keeps_its_folding_in_the_copies() {
        let msg =
            "To: x@y\r\nfRoM: \"Cron\r\n Daemon\"\r\n\t<root@localhost>\r\nSubject: s\r\n\r\nb\r\n";
        let r = apply("root@localhost", msg);
        assert_eq!(
            r.original_from.as_deref(),
            Some("\"Cron Daemon\"\t<root@localhost>")
        );
        assert_eq!(
            text(&r),
            "To: x@y\r\n\
             From: Cron Daemon <noreply@example.com>\r\n\
             Reply-To: \"Cron\r\n Daemon\"\r\n\t<root@localhost>\r\n\
             X-Original-From: \"Cron\r\n Daemon\"\r\n\t<root@localhost>\r\n\
             Subject: s\r\n\r\nb\r\n"
        );
    }

    #[test]
    fn later_from_headers_are_dropped_and_body_from_lines_kept() {
        let msg = "From: a@x.test\r\nFrom: b@y.test\r\n\r\nFrom: body line\r\n";
        let r = apply("a@x.test", msg);
        assert_eq!(
            text(&r),
            "From: noreply@example.com\r\nReply-To: a@x.test\r\nX-Original-From: a@x.test\r\n\r\nFrom: body line\r\n"
        );
    }

    #[test]
    fn domains_match_case_insensitively() {
        let r = rewrite();
        assert_eq!(
            r.apply("A@EXAMPLE.ORG", b"From: b@eXample.cOm\r\n\r\n"),
            None
        );
        assert!(r
            .apply("a@example.org", b"From: b@example.co\r\n\r\n")
            .is_some());
    }

    #[test]
    fn null_sender_is_unverified() {
        let r = apply("", "From: app@example.com\r\n\r\n");
        assert_eq!(r.original_sender, "");
        assert_eq!(r.sender, "noreply@example.com");
        let r = apply("", "Subject: bounce\r\n\r\n");
        assert_eq!(find(&r.message, "X-Original-From").as_deref(), Some("<>"));
    }

    #[test]
    fn bare_lf_messages_get_lf_lines() {
        let r = apply("root@localhost", "From: root@localhost\nTo: x@y\n\nb\n");
        assert_eq!(
            text(&r),
            "From: noreply@example.com\nReply-To: root@localhost\nX-Original-From: root@localhost\nTo: x@y\n\nb\n"
        );
    }

    #[test]
    fn junk_lines_and_non_utf8_never_panic_and_survive() {
        let r = rewrite();
        let msg = b"\xff\xfe junk without colon\r\n continued\r\nFrom: \xff\"N\xc3\r\n <root@localhost>\r\nX: \xfe\r\n\r\n\xff body";
        let out = r.apply("root@localhost", msg).expect("rewritten");
        assert!(out
            .message
            .starts_with(b"\xff\xfe junk without colon\r\n continued\r\n"));
        assert!(out.message.ends_with(b"X: \xfe\r\n\r\n\xff body"));
        assert_eq!(
            find(&out.message, "From")
                .as_deref()
                .and_then(first_address)
                .as_deref(),
            Some("noreply@example.com")
        );

        let inputs: [&[u8]; 12] = [
            b"",
            b"\r",
            b"\n",
            b":",
            b"From",
            b"From:",
            b"From: <",
            b"From: \"unterminated <a@b>\r\n\r\n",
            b"From: (((((\r\n\r\n",
            b" From: a@b\r\n",
            b"From: \\\r\n",
            b"\xff\xff: x\r\nFrom:\xff<\xff@\xff>\r\r\r\n\r",
        ];
        for input in inputs {
            for sender in ["", "root@localhost", "app@example.com", "@", "a@"] {
                let _ = r.apply(sender, input);
            }
        }
    }
}
