//! `postmark-relay history` run as its own process after a real relay
//! delivered to the fake Postmark: each filter of the command line, the
//! text and the JSON a script reads, on the embedded and the shared queue,
//! and `queue.history = "0s"` keeping nothing.

use std::time::{Duration, Instant};

use relay_testkit::TestPostgres;
use serde_json::{json, Value};

use crate::admin::wait_until;
use crate::client_policy::{client, smtplib_session};
use crate::harness::*;

const BILLING_PW: &str = "billing-password";

/// What the fake Postmark answers to a message it takes.
const ACCEPTED: &str = "250 2.0.0 Ok: queued";

/// The keys of one `history --json` element (docs/REFERENCE.md).
const ENTRY_KEYS: [&str; 11] = [
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
    "upstream",
];

/// `history --json ARGS` against `queue`, parsed.
fn json(queue: &QueueDir, args: &[&str]) -> Vec<Value> {
    let out = queue.history(&[&["--json"], args].concat());
    match serde_json::from_str(&stdout(&out)).unwrap() {
        Value::Array(entries) => entries,
        other => panic!("history --json {args:?}: not one JSON array: {other}"),
    }
}

/// The queue ids of `history --json ARGS`, in the order printed.
fn ids(queue: &QueueDir, args: &[&str]) -> Vec<String> {
    json(queue, args)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The lines of `history ARGS` (text).
fn text(queue: &QueueDir, args: &[&str]) -> Vec<String> {
    stdout(&queue.history(args))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn sorted_keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

fn assert_rfc3339(v: &Value) {
    let text = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"));
}

/// `address state reply` of each recipient of a JSON entry, checking each
/// has exactly the documented keys.
fn recipients(entry: &Value) -> Vec<String> {
    entry["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(sorted_keys(r), ["address", "reply", "state"], "{r}");
            let s = |k: &str| r[k].as_str().unwrap_or_else(|| panic!("{k}: {r}"));
            format!("{} {} {}", s("address"), s("state"), s("reply"))
        })
        .collect()
}

/// The `client`, `sender`, `from` and `subject` of a JSON entry.
fn origin(entry: &Value) -> Value {
    json!({
        "client": entry["client"],
        "sender": entry["sender"],
        "from": entry["from"],
        "subject": entry["subject"],
    })
}

/// A message whose envelope sender (bounces@) is not its `From:` (news@).
fn newsletter() -> Vec<u8> {
    b"From: News <news@example.org>\r\nTo: carol@example.net\r\nSubject: second\r\n\r\nhello\r\n"
        .to_vec()
}

/// Three messages leave the queue: one delivered to both its recipients,
/// one with a recipient Postmark refused for good (failed, then removed
/// with `queue delete`), and one from an authenticated client a few
/// seconds later. Every filter finds what it should; text shows one line
/// per matching recipient, JSON every documented field.
#[test]
fn history_finds_delivered_and_deleted_messages_by_each_filter() {
    let (t, b) = (fake(), fake());
    t.reject_recipient("gone@example.net", (550, "5.1.1 no such user"));
    let relay = relay_for(&t, &b, &format!("##{}", client("billing", BILLING_PW, "")));
    let queue = relay.queue.clone();

    let first = queue_id(&send(
        relay.addr,
        "app@example.com",
        &["Alice@Example.net", "bob@other.example"],
        &message("first"),
    ));
    let second = queue_id(&send(
        relay.addr,
        "bounces@example.org",
        &["carol@example.net", "gone@example.net"],
        &newsletter(),
    ));
    wait_until("the second message failed", Duration::from_secs(20), || {
        relay
            .queue_list()
            .iter()
            .any(|m| m["id"] == second.as_str() && m["state"] == "failed")
    });
    assert!(ids(&queue, &[]).iter().all(|id| *id != second));
    let deleted = stdout(&relay.queue_cli(&["delete", &second]));
    assert!(deleted.contains(&second), "{deleted}");
    // The queue empty for [`IDLE`] (2 s): both finished that long ago.
    settle(&relay, &t, Duration::from_secs(20));

    let before_third = Instant::now();
    assert_eq!(
        smtplib_session(&relay, "billing", BILLING_PW, &["third"]),
        ["ok"]
    );
    let mut third = String::new();
    wait_until(
        "the third message in the history",
        Duration::from_secs(20),
        || match ids(&queue, &["--from", "app@example.com"])
            .into_iter()
            .find(|id| *id != first)
        {
            Some(id) => {
                third = id;
                true
            }
            None => false,
        },
    );

    // No filter: all three, newest first, every documented key.
    let all = json(&queue, &[]);
    let listed: Vec<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(listed, [&*third, &*second, &*first]);
    for e in &all {
        assert_eq!(sorted_keys(e), ENTRY_KEYS, "{e}");
        assert_rfc3339(&e["received_at"]);
        assert_rfc3339(&e["finished_at"]);
        assert_eq!(e["upstream"], "transactional", "{e}");
        assert_eq!(e["stream"], Value::Null, "{e}");
        assert_eq!(e["attempts"], 1, "{e}");
    }
    let [t3, t2, t1] = [&all[0], &all[1], &all[2]];
    assert_eq!(
        origin(t1),
        json!({
            "client": null,
            "sender": "app@example.com",
            "from": "app@example.com",
            "subject": "first",
        })
    );
    assert_eq!(
        recipients(t1),
        [
            format!("Alice@Example.net delivered {ACCEPTED}"),
            format!("bob@other.example delivered {ACCEPTED}"),
        ]
    );
    assert_eq!(
        origin(t2),
        json!({
            "client": null,
            "sender": "bounces@example.org",
            "from": "news@example.org",
            "subject": "second",
        })
    );
    let r2 = recipients(t2);
    assert_eq!(r2[0], format!("carol@example.net delivered {ACCEPTED}"));
    assert!(
        r2[1].starts_with("gone@example.net failed 550") && r2[1].contains("5.1.1 no such user"),
        "{t2}"
    );
    assert_eq!(
        origin(t3),
        json!({
            "client": "billing",
            "sender": "app@example.com",
            "from": "app@example.com",
            "subject": "third",
        })
    );
    assert_eq!(
        recipients(t3),
        [format!("u@example.net delivered {ACCEPTED}")]
    );

    // --to: one exact address in another case; text shows only that
    // recipient's line: finish time, id, sender -> recipient, state, reply.
    let lines = text(&queue, &["--to", "alice@EXAMPLE.NET"]);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    humantime::parse_rfc3339(fields[0]).unwrap();
    assert_eq!(
        fields[1..6],
        [
            first.as_str(),
            "app@example.com",
            "->",
            "Alice@Example.net",
            "delivered"
        ]
    );
    assert!(lines[0].ends_with(ACCEPTED), "{lines:?}");
    assert_eq!(
        ids(&queue, &["--to", "ALICE@example.net"]),
        [first.as_str()]
    );

    // --to with a domain pattern: each matching recipient once, others not.
    let lines = text(&queue, &["--to", "*@EXAMPLE.net"]);
    let to: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().nth(4).unwrap())
        .collect();
    assert_eq!(
        to,
        [
            "u@example.net",
            "carol@example.net",
            "gone@example.net",
            "Alice@Example.net"
        ],
        "{lines:#?}"
    );
    assert_eq!(ids(&queue, &["--to", "*@Other.Example"]), [first.as_str()]);

    // --from: the envelope sender or the From: address.
    assert_eq!(
        ids(&queue, &["--from", "news@example.org"]),
        [second.as_str()]
    );
    assert_eq!(
        ids(&queue, &["--from", "BOUNCES@example.org"]),
        [second.as_str()]
    );
    assert_eq!(
        ids(&queue, &["--from", "app@example.com"]),
        [third.as_str(), first.as_str()]
    );

    // --state failed: the refused recipient alone, with Postmark's 5xx.
    let lines = text(&queue, &["--state", "failed"]);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains(&format!(
            "{second}  bounces@example.org -> gone@example.net  failed"
        )) && lines[0].contains("550")
            && lines[0].contains("no such user"),
        "{lines:?}"
    );
    assert_eq!(ids(&queue, &["--state", "failed"]), [second.as_str()]);
    assert_eq!(
        ids(&queue, &["--state", "failed", "--to", "carol@example.net"]),
        Vec::<String>::new()
    );

    // --id: that message, every recipient.
    let one = json(&queue, &["--id", &second]);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0], *t2);
    assert_eq!(text(&queue, &["--id", &second]).len(), 2);

    // --since: all three within the hour; only the third within the time
    // since it was sent plus 1.5 s (the others ended at least 2 s before
    // it was sent).
    assert_eq!(
        ids(&queue, &["--since", "1h"]),
        [third.as_str(), second.as_str(), first.as_str()]
    );
    let window = format!(
        "{}ms",
        (before_third.elapsed() + Duration::from_millis(1500)).as_millis()
    );
    assert_eq!(ids(&queue, &["--since", &window]), [third.as_str()]);

    // --limit: the newest.
    assert_eq!(ids(&queue, &["--limit", "1"]), [third.as_str()]);
    let newest = text(&queue, &["--limit", "1"]);
    assert_eq!(newest.len(), 1, "{newest:#?}");
    assert!(newest[0].contains(&third), "{newest:?}");

    // No match: nothing on stdout, exit 0, and where waiting mail is.
    let none = queue.history(&["--to", "nobody@example.invalid"]);
    assert_eq!(stdout(&none), "");
    let said = String::from_utf8_lossy(&none.stderr);
    assert!(said.contains("queue list"), "{said}");
    assert_eq!(
        ids(&queue, &["--to", "nobody@example.invalid"]),
        Vec::<String>::new()
    );
}

/// On the shared queue (PostgreSQL) a message a replica delivered is
/// found by `history --json` from another process, its recipient matched
/// in another case.
#[test]
fn history_reads_the_shared_queue() {
    let pg = TestPostgres::start();
    let (t, b) = (fake(), fake());
    let url = pg.url();
    let relay = relay_with(config_for(
        &t,
        &b,
        &format!("##\n[queue]\nbackend = \"postgres\"\nurl = \"{url}\"\n"),
    ));
    let id = queue_id(&send(
        relay.addr,
        "app@example.com",
        &["Dora@Example.net"],
        &message("shared"),
    ));
    let shared = QueueDir::shared(&url);
    quiesce(&shared, &[&t], Duration::from_secs(20)).unwrap();

    let found = json(&shared, &["--to", "dora@example.NET"]);
    assert_eq!(found.len(), 1, "{found:#?}");
    let e = &found[0];
    assert_eq!(sorted_keys(e), ENTRY_KEYS, "{e}");
    assert_eq!(e["id"], id.as_str());
    assert_eq!(e["subject"], "shared");
    assert_eq!(
        recipients(e),
        [format!("Dora@Example.net delivered {ACCEPTED}")]
    );
    assert_eq!(
        ids(&shared, &["--to", "*@example.org"]),
        Vec::<String>::new()
    );
}

/// `queue.history = "0s"`: a delivered message leaves no trace.
#[test]
fn no_history_is_kept_when_it_is_off() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "##\n[queue]\nhistory = \"0s\"\n");
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("unrecorded"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_each_once(&got, &["unrecorded".to_string()]);
    assert_eq!(ids(&relay.queue, &[]), Vec::<String>::new());
    assert_eq!(text(&relay.queue, &[]), Vec::<String>::new());
}
