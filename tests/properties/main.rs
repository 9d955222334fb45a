//! Property tests of the byte-level promises, on arbitrary input:
//! - ingest → relay round trip: what a client sends (dot-stuffed) comes out
//!   of the inbound decoder and delivery's dot-stuffing so that a receiving
//!   server unstuffs exactly the client's message, line endings normalised;
//! - dot-stuffing: the relayed bytes have no end-of-data before their end,
//!   only CRLF line endings, and unstuff back to the input;
//! - routing: header order, name case and folding do not change a route,
//!   and the first rule that matches wins.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use proptest::prelude::*;
use relay_config::{Glob, Routing, Rule};
use relay_delivery::dot_stuff;
use relay_inbound::{Decoder, Progress};
use relay_routing::Router;

/// Bytes with many of the ones that matter to SMTP framing.
fn framing_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => Just(b'\r'),
        4 => Just(b'\n'),
        4 => Just(b'.'),
        1 => Just(0u8),
        3 => b'a'..=b'c',
        2 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..max)
}

/// What a client puts on the wire for `message`: a `.` at the start of a
/// line (after LF, the client's notion of a line) is doubled, the last line
/// gets a CRLF if it has none, then the end-of-data line.
fn client_sends(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    let mut line_start = true;
    for &b in message {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The message the client meant, as the relay promises to store it: every
/// bare CR and bare LF is a CRLF, and it ends with a line ending.
fn normalised(message: &[u8]) -> Vec<u8> {
    let mut m = message.to_vec();
    if !m.ends_with(b"\r\n") {
        m.extend_from_slice(b"\r\n");
    }
    let mut out = Vec::with_capacity(m.len() + 8);
    let mut i = 0;
    while i < m.len() {
        match m[i] {
            b'\r' if m.get(i + 1) == Some(&b'\n') => {
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

/// A receiving server: reads CRLF lines up to the first `.` line and
/// unstuffs. Returns the message and the bytes after the terminator.
fn receiver_unstuffs(wire: &[u8]) -> (Vec<u8>, &[u8]) {
    let mut out = Vec::new();
    let mut rest = wire;
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let line = &rest[..end];
        rest = &rest[end + 2..];
        if line == b"." {
            return (out, rest);
        }
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        out.extend_from_slice(b"\r\n");
    }
    panic!("no end-of-data line in {:?}", String::from_utf8_lossy(wire));
}

/// Checks what goes upstream after DATA: CRLF lines only, and the only `.`
/// line is the last one.
fn assert_safe_on_the_wire(wire: &[u8]) {
    assert!(wire.ends_with(b"\r\n.\r\n") || wire == b".\r\n");
    for (i, &b) in wire.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && wire[i - 1] == b'\r', "bare LF at {i}");
        }
        if b == b'\r' {
            assert_eq!(wire.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
    let lines: Vec<&[u8]> = wire.split(|&b| b == b'\n').collect();
    let dot_lines = lines.iter().filter(|l| **l == b".\r").count();
    assert_eq!(dot_lines, 1, "a `.` line before the end");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) client → inbound decoder → stored → dot_stuff → receiver.
    #[test]
    fn ingest_then_relay_round_trips(
        message in framing_bytes(300),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let wire_in = client_sends(&message);
        // Feed in arbitrary pieces: where reads split must not matter.
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(wire_in.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(wire_in.len());
        let mut decoder = Decoder::data(1 << 20);
        let mut start = 0;
        let mut done = None;
        for cut in cuts {
            if let Progress::Done(used) = decoder.feed(&wire_in[start..cut]) {
                done = Some(start + used);
                break;
            }
            start = cut;
        }
        prop_assert_eq!(done, Some(wire_in.len()), "the end was not where the client put it");
        let stored = decoder.into_message();
        prop_assert_eq!(&stored, &normalised(&message));

        let wire_out = dot_stuff(&stored);
        assert_safe_on_the_wire(&wire_out);
        let (received, after) = receiver_unstuffs(&wire_out);
        prop_assert!(after.is_empty());
        prop_assert_eq!(received, normalised(&message));
    }

    /// (b) dot_stuff on any CRLF message: safe on the wire, and reversible.
    #[test]
    fn dot_stuffing_is_safe_and_reversible(message in framing_bytes(300)) {
        let body = normalised(&message);
        let wire = dot_stuff(&body);
        let terminator = wire.windows(5).position(|w| w == b"\r\n.\r\n");
        if let Some(at) = terminator {
            prop_assert_eq!(at + 5, wire.len(), "end-of-data before the end");
        }
        assert_safe_on_the_wire(&wire);
        let (received, after) = receiver_unstuffs(&wire);
        prop_assert!(after.is_empty());
        prop_assert_eq!(received, body);
    }

    /// (c1) The same headers in any order, any name case, folded or not,
    /// route the same.
    #[test]
    fn header_order_case_and_folding_do_not_change_the_route(
        picks in prop::collection::vec(0..HEADERS.len(), 1..6),
        order in any::<u64>(),
        case_bits in any::<u64>(),
        fold_bits in any::<u64>(),
        sender in prop::sample::select(SENDERS),
    ) {
        let mut picks = picks;
        picks.sort_unstable();
        picks.dedup();
        let canonical = build_message(&picks, 0, 0);
        let mut shuffled = picks.clone();
        // A deterministic shuffle from `order`.
        let mut state = order | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let variant = build_message(&shuffled, case_bits, fold_bits);
        let router = router(all_rules());
        prop_assert_eq!(
            router.route(sender, &canonical),
            router.route(sender, &variant),
            "{:?} vs {:?}",
            String::from_utf8_lossy(&canonical),
            String::from_utf8_lossy(&variant)
        );
    }

    /// (c2) With several rules, the route is that of the first rule that
    /// matches on its own.
    #[test]
    fn the_first_matching_rule_wins(
        rules in prop::collection::vec(0..all_rules().len(), 1..6),
        picks in prop::collection::vec(0..HEADERS.len(), 0..6),
        sender in prop::sample::select(SENDERS),
    ) {
        let pool = all_rules();
        let rules: Vec<Rule> = rules
            .iter()
            .enumerate()
            .map(|(i, &r)| Rule { name: format!("{i}-{}", pool[r].name), ..pool[r].clone() })
            .collect();
        let mut picks = picks;
        picks.sort_unstable();
        picks.dedup();
        // No stream header here: it would decide before any rule.
        picks.retain(|&p| !HEADERS[p].0.eq_ignore_ascii_case("X-PM-Message-Stream"));
        let message = build_message(&picks, 0, 0);
        let first_alone = rules.iter().find(|rule| {
            router(vec![(*rule).clone()]).route(sender, &message).rule.is_some()
        });
        let route = router(rules.clone()).route(sender, &message);
        prop_assert_eq!(route.rule, first_alone.map(|r| r.name.clone()));
        if let Some(rule) = first_alone {
            prop_assert_eq!(&route.upstream, &rule.upstream);
            prop_assert_eq!(&route.stream, &rule.stream);
        } else {
            prop_assert_eq!(route.upstream.as_str(), "transactional");
        }
    }
}

/// Headers to build messages from: (name, value with at least one space
/// where a fold can go).
const HEADERS: [(&str, &str); 8] = [
    ("From", "\"News Desk\" <desk@news.example.com>"),
    ("Subject", "spring sale starts"),
    (
        "List-Unsubscribe",
        "<mailto:unsub@news.example.com> <https://x.test/u>",
    ),
    ("X-Campaign", "spring 2024"),
    ("To", "someone <u@example.net>"),
    ("X-PM-Message-Stream", "broadcasts "),
    ("Reply-To", "Help <help@example.org>"),
    ("X-Priority", "3 (Normal)"),
];

const SENDERS: &[&str] = &[
    "app@example.com",
    "list@news.example.com",
    "",
    "root@localhost",
];

/// A message with the picked headers in the given order; bit i of
/// `case_bits` swaps the case of header i's name, bit i of `fold_bits`
/// folds its value at the first space.
fn build_message(picks: &[usize], case_bits: u64, fold_bits: u64) -> Vec<u8> {
    let mut out = String::new();
    for (i, &p) in picks.iter().enumerate() {
        let (name, value) = HEADERS[p];
        let name: String = if case_bits >> i & 1 == 1 {
            name.chars()
                .map(|c| {
                    if c.is_ascii_uppercase() {
                        c.to_ascii_lowercase()
                    } else {
                        c.to_ascii_uppercase()
                    }
                })
                .collect()
        } else {
            name.to_owned()
        };
        let value = if fold_bits >> i & 1 == 1 {
            value.replacen(' ', "\r\n\t", 1)
        } else {
            value.to_owned()
        };
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\nbody\r\n");
    out.into_bytes()
}

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

/// Rules that match some of the messages above and not others.
fn all_rules() -> Vec<Rule> {
    vec![
        Rule {
            sender: Some(glob("*@news.example.com")),
            stream: Some("newsletter".into()),
            ..rule("news-sender", "broadcast")
        },
        Rule {
            from: Some(glob("*@NEWS.example.com")),
            ..rule("news-from", "broadcast")
        },
        Rule {
            header: Some("list-unsubscribe".into()),
            ..rule("lists", "broadcast")
        },
        Rule {
            header: Some("X-Campaign".into()),
            value: Some(glob("spring*")),
            stream: Some("campaigns".into()),
            ..rule("campaign", "broadcast")
        },
        Rule {
            header: Some("Subject".into()),
            value: Some(glob("*sale*")),
            ..rule("sale", "transactional")
        },
        Rule {
            sender: Some(glob("root@*")),
            from: Some(glob("*@example.org")),
            ..rule("root-org", "transactional")
        },
        Rule {
            header: Some("X-Missing".into()),
            ..rule("never", "broadcast")
        },
        Rule {
            sender: Some(glob("*")),
            ..rule("everyone", "transactional")
        },
    ]
}

fn router(rules: Vec<Rule>) -> Router {
    Router::new(&Routing {
        default: "transactional".into(),
        broadcast_streams: vec!["broadcast".into(), "broadcasts".into()],
        stream_upstreams: Default::default(),
        clients: Default::default(),
        rules,
    })
}

fn glob(pattern: &str) -> Glob {
    Glob::new(pattern).expect("valid glob")
}
