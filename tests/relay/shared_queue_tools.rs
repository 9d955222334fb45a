//! The operator's tools on the shared queue: `queue list/show/retry/
//! delete/stats` against PostgreSQL from any host, and `queue migrate`
//! copying an embedded queue into it (twice: nothing copied twice).

use std::time::Duration;

use relay_testkit::{TestPostgres, PG_PASSWORD};
use serde_json::Value;

use crate::admin::wait_until;
use crate::harness::*;

/// A message of about 300 KiB (several of the queue's 64 KiB chunks),
/// each line distinct so a chunk out of order would show.
fn large_message(tag: &str) -> Vec<u8> {
    let mut m = message(tag);
    for i in 0..5_000 {
        m.extend_from_slice(
            format!("line {i:05} of the large message {tag}, padded......\r\n").as_bytes(),
        );
    }
    m
}

/// An embedded queue holding a partly delivered message (one recipient
/// delivered, one deferred), a failed one and a large deferred one is
/// copied into the shared queue by `queue migrate`, run twice; the shared
/// queue then lists exactly what the embedded one did, the queue commands
/// work on it, and a replica delivers only what was still pending, each
/// once and byte for byte.
#[test]
fn queue_migrate_twice_copies_each_message_once_with_its_recipients_state() {
    let pg = TestPostgres::start();
    // The embedded relay's upstream defers one recipient, refuses another.
    let (old_upstream, b) = (fake(), fake());
    old_upstream.reject_recipient("later@example.net", (451, "4.2.0 try again later"));
    old_upstream.reject_recipient("gone@example.net", (550, "5.1.1 no such user"));
    let local = relay_for(&old_upstream, &b, "");
    let partial = queue_id(&send(
        local.addr,
        "app@example.com",
        &["now@example.net", "later@example.net"],
        &message("partial"),
    ));
    let failed = queue_id(&send(
        local.addr,
        "app@example.com",
        &["gone@example.net"],
        &message("failed"),
    ));
    wait_until("the first two attempted", Duration::from_secs(20), || {
        let list = local.queue_list();
        list.iter()
            .any(|m| m["id"] == partial && m["state"] == "deferred")
            && list
                .iter()
                .any(|m| m["id"] == failed && m["state"] == "failed")
    });
    old_upstream.set_down(true);
    let large_body = large_message("large");
    let large = queue_id(&send(
        local.addr,
        "app@example.com",
        &["big@example.net"],
        &large_body,
    ));
    wait_until("the large one deferred", Duration::from_secs(20), || {
        local
            .queue_list()
            .iter()
            .any(|m| m["id"] == large && m["state"] == "deferred")
    });
    let embedded = local.queue.clone();
    let _keep_folder = local.dir.clone();
    let status = local.terminate();
    assert!(status.success(), "{status:?}");
    let before = embedded.list();
    let raw_before = stdout(&embedded.cli(&["show", "--raw", &large]));

    let url = pg.url();
    let first = stdout(&embedded.cli(&["migrate", "--to", &url]));
    assert!(
        first.contains("Copied 3 message(s)") && first.contains("0 were already there"),
        "{first}"
    );
    let again = stdout(&embedded.cli(&["migrate", "--to", &url]));
    assert!(
        again.contains("Copied 0 message(s)") && again.contains("3 were already there"),
        "{again}"
    );
    assert!(!first.contains(PG_PASSWORD) && !again.contains(PG_PASSWORD));

    // The shared queue lists what the embedded one did, field for field.
    let shared = QueueDir::shared(&url);
    assert_eq!(shared.list(), before);
    assert_eq!(stdout(&shared.cli(&["show", "--raw", &large])), raw_before);
    let shown = stdout(&shared.cli(&["show", &partial]));
    assert!(
        shown.contains("now@example.net") && shown.contains("delivered"),
        "{shown}"
    );
    let stats: Value = serde_json::from_str(&stdout(&shared.cli(&["stats", "--json"]))).unwrap();
    assert_eq!(stats["by_state"]["deferred"], 2, "{stats}");
    assert_eq!(stats["by_state"]["failed"], 1, "{stats}");
    // Deleting through the shared queue: the failed message goes.
    let deleted = stdout(&shared.cli(&["delete", &failed]));
    assert!(deleted.contains(&failed), "{deleted}");
    assert!(shared.list().iter().all(|m| m["id"] != failed));

    // `retry --all` makes both due now (before any replica runs, so
    // neither is delivered yet); then a replica on the shared queue, with
    // an upstream that takes everything, delivers only the recipients
    // still pending.
    let retried = stdout(&shared.cli(&["retry", "--all"]));
    assert!(retried.contains("Made 2 message(s) due now"), "{retried}");
    let (upstream, b) = (fake(), fake());
    let replica = relay_with(config_for(
        &upstream,
        &b,
        &format!("##\n[queue]\nbackend = \"postgres\"\nurl = \"{url}\"\n"),
    ));
    quiesce(&shared, &[&upstream], Duration::from_secs(60)).unwrap();
    let got = upstream.messages();
    assert_eq!(
        got.len(),
        2,
        "{:?}",
        got.iter().map(subject).collect::<Vec<_>>()
    );
    let partial_copy = got.iter().find(|m| subject(m) == "partial").unwrap();
    assert_eq!(partial_copy.rcpt_to, ["later@example.net"]);
    let large_copy = got.iter().find(|m| subject(m) == "large").unwrap();
    assert_eq!(large_copy.rcpt_to, ["big@example.net"]);
    assert_eq!(strip_added_headers(&large_copy.data), &large_body[..]);
    assert!(shared.list().is_empty());
    assert!(replica.logs().iter().all(|l| !l.contains(PG_PASSWORD)));
}

/// `queue migrate` refuses while a relay delivers from the embedded queue
/// (its messages would go out twice), and copies nothing.
#[test]
fn queue_migrate_refuses_while_a_relay_delivers_from_the_embedded_queue() {
    let pg = TestPostgres::start();
    let (t, b) = (fake(), fake());
    // The delivery hangs before the greeting: the message stays leased.
    t.delay_next_greetings(1, Duration::from_secs(60));
    let local = relay_for(&t, &b, "");
    let id = queue_id(&send(
        local.addr,
        "app@example.com",
        &["u@example.net"],
        &message("busy"),
    ));
    wait_until(
        "a connection to the upstream",
        Duration::from_secs(20),
        || t.connections() >= 1,
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = local.queue_cli(&["migrate", "--to", &pg.url()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is delivering from")
            && err.contains(&id)
            && err.contains("Stop `postmark-relay serve`"),
        "{err}"
    );
    assert!(QueueDir::shared(&pg.url()).list().is_empty());
}
