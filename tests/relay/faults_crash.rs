//! Crash under load: clients keep sending while the daemon is killed with
//! SIGKILL several times and restarted on the same queue. Every message
//! that got a `250` must arrive; with the upstream down during the kills
//! nothing may arrive twice, and with it up only deliveries in flight at a
//! kill may (at most `connections` per kill).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;

/// What the clients saw.
#[derive(Default)]
struct Seen {
    /// Tags answered `250`.
    acked: Vec<String>,
    /// Tags whose connection broke after DATA was sent (no reply): the
    /// relay may or may not have committed them.
    unknown: Vec<String>,
    /// Tags refused with a reply other than `250`.
    refused: Vec<String>,
}

/// Figures one run produced.
struct Report {
    attempts: usize,
    acked: usize,
    unknown: usize,
    refused: usize,
    delivered: usize,
    duplicates: usize,
    unknown_delivered: usize,
}

/// `n` messages from `threads` clients; `kills` SIGKILLs spread over the
/// sending; the upstream is up during the kills when `upstream_up`, else
/// only for the final restart.
fn crash_under_load(
    tag: &str,
    n: usize,
    threads: usize,
    kills: usize,
    upstream_up: bool,
) -> Report {
    let (t, b) = (fake(), fake());
    t.set_down(!upstream_up);
    let config = config_for(&t, &b, "");
    let mut relay = relay_with(config.clone());
    let addr = Arc::new(Mutex::new(relay.addr));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(120);

    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (addr, seen, next) = (addr.clone(), seen.clone(), next.clone());
            scope.spawn(move || client(tag, n, &addr, &seen, &next, deadline));
        }
        for k in 1..=kills {
            let target = k * n / (kills + 1);
            while seen.lock().unwrap().acked.len() < target && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let dir = relay.kill9_in_place();
            relay = Relay::start(Start {
                config: config.clone(),
                token: Some(TOKEN),
                dir: Some(dir),
            });
            *addr.lock().unwrap() = relay.addr;
        }
    });

    if !upstream_up {
        // Nothing can have been delivered: prove it, then the last restart.
        assert_eq!(t.messages().len(), 0);
        let dir = relay.kill9_in_place();
        t.set_down(false);
        relay = Relay::start(Start {
            config,
            token: Some(TOKEN),
            dir: Some(dir),
        });
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let got = settle_quiet(&t, seen.acked.len(), Duration::from_secs(90));
    drop(relay);
    let counts = subject_counts(&got);
    let missing: Vec<&String> = seen
        .acked
        .iter()
        .filter(|s| !counts.contains_key(*s))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages never arrived: {missing:?}",
        missing.len()
    );
    let known: std::collections::HashSet<&String> =
        seen.acked.iter().chain(&seen.unknown).collect();
    let strangers: Vec<&String> = counts.keys().filter(|s| !known.contains(s)).collect();
    assert!(
        strangers.is_empty(),
        "refused messages arrived: {strangers:?}"
    );
    let report = Report {
        attempts: next.load(Ordering::SeqCst).min(n),
        acked: seen.acked.len(),
        unknown: seen.unknown.len(),
        refused: seen.refused.len(),
        delivered: counts.len(),
        duplicates: counts.values().map(|c| c - 1).sum(),
        unknown_delivered: seen
            .unknown
            .iter()
            .filter(|s| counts.contains_key(*s))
            .count(),
    };
    println!(
        "crash under load ({tag}, upstream {}): kills={kills} sent={} acked={} no-reply={} (of which delivered {}) refused={} delivered={} duplicates={}",
        if upstream_up { "up" } else { "down" },
        report.attempts,
        report.acked,
        report.unknown,
        report.unknown_delivered,
        report.refused,
        report.delivered,
        report.duplicates,
    );
    report
}

/// One client thread: takes the next tag and sends it until the relay
/// answers (a refused connect is retried: nothing was sent); a connection
/// that breaks after DATA leaves the tag "unknown" and moves on.
fn client(
    tag: &str,
    n: usize,
    addr: &Mutex<SocketAddr>,
    seen: &Mutex<Seen>,
    next: &AtomicUsize,
    deadline: Instant,
) {
    loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        if i >= n {
            return;
        }
        let subject = format!("{tag}-{i}");
        let body = message(&subject);
        loop {
            assert!(Instant::now() < deadline, "clients ran out of time");
            let to = *addr.lock().unwrap();
            match try_send(to, "app@example.com", &["u@example.net"], &body) {
                Ok(reply) if reply.starts_with("250") => {
                    seen.lock().unwrap().acked.push(subject);
                    break;
                }
                Ok(_) => {
                    seen.lock().unwrap().refused.push(subject);
                    break;
                }
                Err(e) if e.starts_with(NO_FINAL_REPLY) => {
                    seen.lock().unwrap().unknown.push(subject);
                    break;
                }
                Err(_) => {
                    // The message was not complete: nothing can be stored.
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// Waits for `n` messages, then until no more arrive for a second (so late
/// duplicates and committed-but-unacknowledged messages are counted too).
fn settle_quiet(fake: &FakePostmark, n: usize, timeout: Duration) -> Vec<Received> {
    let deadline = Instant::now() + timeout;
    let got = fake.wait_for(n, timeout);
    let mut count = got.len();
    loop {
        std::thread::sleep(Duration::from_millis(1000));
        let now = fake.messages().len();
        if now == count || Instant::now() > deadline {
            return fake.messages();
        }
        count = now;
    }
}

#[test]
fn kill_9_three_times_under_load_with_the_upstream_down_loses_and_repeats_nothing() {
    let report = crash_under_load("crash-down", 500, 5, 3, false);
    assert_eq!(report.duplicates, 0, "duplicates with the upstream down");
    assert!(report.acked > 0);
    assert_eq!(
        report.delivered,
        report.acked + report.unknown_delivered,
        "every acknowledged message and nothing refused"
    );
}

#[test]
fn kill_9_three_times_under_load_with_the_upstream_up_repeats_at_most_one_per_connection_per_kill()
{
    let kills = 3;
    // `connections = 2` for the transactional upstream in `config_for`.
    let connections = 2;
    let report = crash_under_load("crash-up", 500, 5, kills, true);
    assert!(report.acked > 0);
    assert!(
        report.duplicates <= kills * connections,
        "{} duplicates; the bound is kills × connections = {}",
        report.duplicates,
        kills * connections
    );
}
