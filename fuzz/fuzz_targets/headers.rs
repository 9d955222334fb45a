//! Header parsing, sender rewriting and routing on arbitrary bytes.
//!
//! Input: the first byte is the envelope sender's length, then the sender,
//! then the message. Everything must run without panicking on the raw
//! bytes; on the message with its line endings normalised to CRLF (what
//! the relay hands these functions) the stronger invariants hold:
//! - `header_block` is a prefix of the message; `find` and `has` agree;
//! - routing is deterministic, and a stream header decides without a rule;
//! - a rewritten message re-parses: its `From:` address is the configured
//!   sender, its body is byte for byte the original's, other headers read
//!   the same, and rewriting it again changes nothing;
//! - a message whose envelope and `From:` are verified is left untouched.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use relay_config::{Glob, Rewrite, Routing, Rule};
use relay_message::{find, first_address, has, header_block};
use relay_routing::{Router, SenderRewrite};

const SENDER: &str = "noreply@example.com";
const NAMES: [&str; 6] = [
    "From",
    "Subject",
    "To",
    "X-PM-Message-Stream",
    "List-Unsubscribe",
    "Reply-To",
];

fn rule(name: &str, upstream: &str) -> Rule {
    Rule {
        name: name.into(),
        sender: None,
        from: None,
        header: None,
        value: None,
        upstream: upstream.into(),
        stream: None,
    }
}

fn router() -> Router {
    let rules = vec![
        Rule {
            sender: Some(glob("*@news.example.com")),
            stream: Some("newsletter".into()),
            ..rule("news", "broadcast")
        },
        Rule {
            from: Some(glob("*@Example.ORG")),
            ..rule("org", "transactional")
        },
        Rule {
            header: Some("X-Campaign".into()),
            value: Some(glob("spring*")),
            ..rule("campaign", "broadcast")
        },
        Rule {
            header: Some("List-Unsubscribe".into()),
            ..rule("lists", "broadcast")
        },
    ];
    Router::new(&Routing {
        default: "transactional".into(),
        broadcast_streams: vec!["broadcast".into(), "broadcasts".into()],
        stream_upstreams: Default::default(),
        rules,
        clients: Default::default(),
    })
}

fn glob(pattern: &str) -> Glob {
    Glob::new(pattern).expect("valid glob")
}

fn rewrite() -> SenderRewrite {
    SenderRewrite::new(&Rewrite {
        verified_domains: vec!["example.com".into(), "example.org".into()],
        sender: Some(SENDER.into()),
    })
    .expect("rewriting on")
}

/// Bare CR and bare LF become CRLF, as the inbound decoder stores them.
fn normalise(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn verified(address: &str) -> bool {
    address.rsplit_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && ["example.com", "example.org"]
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain.trim()))
    })
}

/// Must not panic, whatever the bytes.
fn exercise(router: &Router, rewrite: &SenderRewrite, sender: &str, message: &[u8]) {
    let block = header_block(message);
    assert!(message.starts_with(block), "header block is not a prefix");
    for name in NAMES {
        let found = find(message, name);
        assert_eq!(found.is_some(), has(message, name), "{name}");
        if let Some(value) = found {
            let _ = first_address(&value);
        }
    }
    let _ = first_address(&String::from_utf8_lossy(message));
    let route = router.route(sender, message);
    assert_eq!(
        route,
        router.route(sender, message),
        "routing is not deterministic"
    );
    if find(message, "X-PM-Message-Stream").is_some_and(|s| !s.is_empty()) {
        assert_eq!(route.rule, None, "a stream header decides before the rules");
    }
    let _ = rewrite.apply(sender, message);
}

fn check_rewrite(rewrite: &SenderRewrite, sender: &str, message: &[u8]) {
    let from = find(message, "From").and_then(|v| first_address(&v));
    let Some(r) = rewrite.apply(sender, message) else {
        return;
    };
    assert!(
        !(verified(sender) && from.as_deref().is_some_and(verified)),
        "a verified message was rewritten"
    );
    assert_eq!(r.sender, SENDER);
    let body = &message[header_block(message).len()..];
    assert!(r.message.ends_with(body), "the body changed");
    let new_from = find(&r.message, "From").and_then(|v| first_address(&v));
    assert_eq!(
        new_from.as_deref(),
        Some(SENDER),
        "rewritten From: does not re-parse"
    );
    for name in ["Subject", "To", "X-PM-Message-Stream", "List-Unsubscribe"] {
        assert_eq!(
            find(&r.message, name),
            find(message, name),
            "{name} changed"
        );
    }
    assert_eq!(
        rewrite.apply(&r.sender, &r.message),
        None,
        "rewriting a rewritten message changed it again"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let len = usize::from(len).min(rest.len());
    let (sender, message) = rest.split_at(len);
    let sender = String::from_utf8_lossy(sender);
    static SETUP: OnceLock<(Router, SenderRewrite)> = OnceLock::new();
    let (router, rewrite) = SETUP.get_or_init(|| (router(), rewrite()));
    exercise(router, rewrite, &sender, message);
    let normalised = normalise(message);
    exercise(router, rewrite, &sender, &normalised);
    check_rewrite(rewrite, &sender, &normalised);
});
