//! Restart with a large backlog: the queue is filled directly (as a long
//! outage would leave it), then the daemon starts on it. It must take new
//! mail at once while the backlog drains, and drain in order of due time.
//!
//! `RELAY_BACKLOG_N` sets the backlog size (default 20,000; RELIABILITY.md
//! also gives the figures for 100,000), `RELAY_BACKLOG_DRAIN` how many
//! deliveries to watch (default 3,000; `all` for the whole backlog). Times
//! are measured and printed, never asserted.

use std::time::{Duration, Instant, SystemTime};

use relay_queue::{NewMessage, Queue, RetryPolicy, SqliteQueue};

use crate::harness::*;

fn env_count(name: &str, default: usize, all: usize) -> usize {
    match std::env::var(name) {
        Ok(v) if v == "all" => all,
        Ok(v) => v.parse().unwrap_or(default),
        Err(_) => default,
    }
}

/// Writes `n` messages straight into the queue in `folder`, message `i`
/// due `i` ms after a base an hour ago (so the drain order is known).
fn fill_queue(folder: &std::path::Path, n: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            multiplier: 2.0,
            give_up_after: Duration::from_secs(72 * 3600),
            keep_history: true,
        };
        let queue = SqliteQueue::open(folder, policy).unwrap();
        let base = SystemTime::now() - Duration::from_secs(3600);
        let indices: Vec<usize> = (0..n).collect();
        for wave in indices.chunks(2000) {
            let mut set = tokio::task::JoinSet::new();
            for &i in wave {
                let queue = queue.clone();
                let tag = format!("backlog-{i}");
                set.spawn(async move {
                    queue
                        .enqueue(NewMessage {
                            id: format!("BACKLOG{i:09}"),
                            received_at: base + Duration::from_millis(i as u64),
                            sender: "app@example.com".into(),
                            recipients: vec!["u@example.net".into()],
                            upstream: "transactional".into(),
                            stream: None,
                            size: 0,
                            client: None,
                            content: relay_queue::Content::whole(message(&tag)),
                        })
                        .await
                });
            }
            while let Some(done) = set.join_next().await {
                done.unwrap().unwrap();
            }
        }
    });
}

/// The backlog index of a `backlog-N` subject.
fn backlog_index(m: &Received) -> Option<usize> {
    subject(m).strip_prefix("backlog-")?.parse().ok()
}

#[test]
fn a_large_backlog_drains_in_due_order_while_new_mail_is_accepted_at_once() {
    let n = env_count("RELAY_BACKLOG_N", 20_000, 20_000);
    let watch = env_count("RELAY_BACKLOG_DRAIN", 3_000, n).min(n);
    let (t, b) = (fake(), fake());
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let filling = Instant::now();
    fill_queue(&dir.path().join("queue"), n);
    let fill_took = filling.elapsed();

    let starting = Instant::now();
    let relay = Relay::start(Start {
        config: config_for(&t, &b, ""),
        token: Some(TOKEN),
        dir: Some(dir),
    });
    let listening = starting.elapsed();
    let first = t.wait_for(1, Duration::from_secs(60));
    assert!(!first.is_empty(), "no delivery within 60 s of starting");
    let first_delivery = starting.elapsed();

    // New mail while the backlog drains: accepted (stored) at once.
    let sending = Instant::now();
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("new-during-drain"),
    );
    let accept_took = sending.elapsed();
    assert!(reply.starts_with("250"), "{reply}");

    let draining = Instant::now();
    let delivered_at_first = t.messages().len();
    let deadline = if watch == n {
        Duration::from_secs(3600)
    } else {
        Duration::from_secs(60)
    };
    let got = t.wait_for(watch, deadline);
    let drain_secs = draining.elapsed().as_secs_f64();
    assert!(
        got.len() >= watch,
        "only {} of {watch} delivered in {deadline:?}",
        got.len()
    );
    let rate = (got.len() - delivered_at_first) as f64 / drain_secs;

    // Due order. Each of the `connections` workers claims the oldest-due
    // messages, up to a chain of 8, and claims again only once the
    // upstream answered for the last chain; so when a message is claimed,
    // every message due before it is claimed too, and at most
    // `connections × 8` messages are in flight, itself included. Only
    // those can still arrive after it: whatever stalls, fewer than that
    // many messages due before a message may arrive after it. (A stalled
    // chain may be overtaken by any number of later ones, so how far a
    // message lands from its due position is no measure.)
    let order: Vec<usize> = got.iter().filter_map(backlog_index).collect();
    let in_flight = CONNECTIONS * CHAIN;
    let late = earlier_due_arriving_later(&order, n);
    let (worst_at, worst) = late
        .iter()
        .copied()
        .enumerate()
        .max_by_key(|&(_, l)| l)
        .unwrap_or((0, 0));
    assert!(
        worst < in_flight,
        "backlog not drained in due order: {worst} messages due before backlog-{} arrived after it \
         (at most {} may: connections × chain length); arrivals around it: {:?}",
        order[worst_at],
        in_flight - 1,
        &order[worst_at.saturating_sub(20)..(worst_at + 20).min(order.len())]
    );
    let mut unique = order.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), order.len(), "a backlog message arrived twice");

    println!(
        "backlog: N={n} filled in {:.1} s; listening {:.2} s after spawn; first delivery {:.2} s after spawn; new message accepted in {:.3} s; {} delivered in {:.1} s = {rate:.0} msg/s; most messages due earlier arriving later {worst} (bound {})",
        fill_took.as_secs_f64(),
        listening.as_secs_f64(),
        first_delivery.as_secs_f64(),
        accept_took.as_secs_f64(),
        got.len(),
        drain_secs,
        in_flight - 1,
    );
}

/// `connections` of the transactional upstream in `config_for`.
const CONNECTIONS: usize = 2;
/// Messages a delivery worker claims at once (`CHAIN` in
/// crates/delivery/src/worker.rs).
const CHAIN: usize = 8;

/// For each arrival in `order` (backlog indices below `n`, in arrival
/// order): how many messages due before it arrived after it. A Fenwick
/// tree over the indices seen so far, walking the arrivals backwards.
fn earlier_due_arriving_later(order: &[usize], n: usize) -> Vec<usize> {
    let mut tree = vec![0usize; n + 1];
    let mut late = vec![0; order.len()];
    for (pos, &idx) in order.iter().enumerate().rev() {
        // Arrivals after `pos` with an index below `idx`.
        let mut i = idx;
        while i > 0 {
            late[pos] += tree[i];
            i &= i - 1;
        }
        let mut i = idx + 1;
        while i <= n {
            tree[i] += 1;
            i += i & i.wrapping_neg();
        }
    }
    late
}

#[test]
fn earlier_due_arriving_later_counts_per_arrival() {
    assert_eq!(earlier_due_arriving_later(&[0, 1, 2, 3], 4), [0, 0, 0, 0]);
    // 3 overtook 0, 1 and 2; 2 overtook 1.
    assert_eq!(earlier_due_arriving_later(&[3, 0, 2, 1], 4), [3, 0, 1, 0]);
}
