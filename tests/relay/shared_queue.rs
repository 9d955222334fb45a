//! Several relays sharing one queue on PostgreSQL (`queue.backend =
//! "postgres"`), against a real server from Debian's `postgresql` package
//! (testkit's `TestPostgres`; these tests fail, never skip, without it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relay_testkit::{TestPostgres, PG_PASSWORD};

use crate::admin::{admin_addr, get, wait_until, with_admin};
use crate::harness::*;

/// `config_for`'s config with the shared queue at `pg`.
fn shared_config(t: &FakePostmark, b: &FakePostmark, pg: &TestPostgres) -> String {
    config_for(
        t,
        b,
        &format!(
            "##\n[queue]\nbackend = \"postgres\"\nurl = \"{}\"\nlease = \"5s\"\n",
            pg.url()
        ),
    )
}

/// Waits until the shared queue at `pg` holds nothing waiting and `fake`
/// has then taken nothing new for a while (see [`quiesce`]), read through
/// the `queue` commands on the shared queue; returns what `fake` got.
fn settle_shared(pg: &TestPostgres, fake: &FakePostmark, timeout: Duration) -> Vec<Received> {
    quiesce(&QueueDir::shared(&pg.url()), &[fake], timeout).unwrap();
    fake.messages()
}

/// The database password is in no log line.
fn assert_password_hidden(relay: &Relay) {
    if let Some(line) = relay.logs().iter().find(|l| l.contains(PG_PASSWORD)) {
        panic!("the database password appeared in the log: {line}");
    }
}

#[test]
fn two_replicas_on_one_database_deliver_every_message_exactly_once() {
    let pg = TestPostgres::start();
    let (t, b) = (fake(), fake());
    let config = shared_config(&t, &b, &pg);
    let first = relay_with(config.clone());
    let second = relay_with(config);
    let subjects: Vec<String> = (0..60).map(|i| format!("shared-{i}")).collect();
    let (to_first, to_second) = subjects.split_at(30);
    std::thread::scope(|scope| {
        scope.spawn(|| send_concurrently(first.addr, to_first, 3));
        scope.spawn(|| send_concurrently(second.addr, to_second, 3));
    });
    let got = settle_shared(&pg, &t, Duration::from_secs(60));
    assert_each_once(&got, &subjects);
    assert!(b.messages().is_empty());
    for relay in [&first, &second] {
        assert_password_hidden(relay);
    }
}

/// PostgreSQL stopped and started again under load: while it is down new
/// mail gets `452 4.3.1` and `/readyz` says the queue is unreachable; the
/// relay recovers without a restart and every acknowledged message is
/// delivered exactly once.
#[test]
fn a_database_outage_under_load_costs_452s_but_no_acknowledged_message() {
    let pg = TestPostgres::start();
    let (t, b) = (fake(), fake());
    let mut relay = relay_with(with_admin(shared_config(&t, &b, &pg)));
    let admin = admin_addr(&mut relay);
    let addr = relay.addr;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..3)
        .map(|n| {
            let (acked, refused, stop) = (acked.clone(), refused.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0..2000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let subject = format!("load-{n}-{i}");
                    match try_send(
                        addr,
                        "app@example.com",
                        &["u@example.net"],
                        &message(&subject),
                    ) {
                        Ok(reply) if reply.starts_with("250") => {
                            acked.lock().unwrap().push(subject)
                        }
                        Ok(reply) => {
                            refused.lock().unwrap().push(reply);
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(e) => panic!("{subject}: {e}"),
                    }
                }
            })
        })
        .collect();
    wait_until("some mail accepted", Duration::from_secs(20), || {
        acked.lock().unwrap().len() >= 10
    });
    pg.stop();
    wait_until("/readyz 503", Duration::from_secs(20), || {
        let (status, body) = get(admin, "/readyz");
        status == 503 && body.contains("queue unreachable")
    });
    wait_until(
        "a 452 while the database is down",
        Duration::from_secs(20),
        || {
            refused
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.starts_with("452 4.3.1"))
        },
    );
    pg.start_again();
    wait_until("/readyz 200 again", Duration::from_secs(30), || {
        get(admin, "/readyz").0 == 200
    });
    let before = acked.lock().unwrap().len();
    wait_until("mail accepted again", Duration::from_secs(20), || {
        acked.lock().unwrap().len() >= before + 10
    });
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let got = settle_shared(&pg, &t, Duration::from_secs(90));
    let counts = subject_counts(&got);
    for subject in &acked {
        assert_eq!(
            counts.get(subject),
            Some(&1),
            "{subject} was acknowledged; upstream got it {:?} times",
            counts.get(subject)
        );
    }
    assert!(
        refused.lock().unwrap().iter().all(|r| r.starts_with("452")),
        "only 452s while down: {:?}",
        refused.lock().unwrap()
    );
    assert_password_hidden(&relay);
}

/// A replica killed with `kill -9` while it holds messages (its upstream
/// connection hangs before the greeting): another replica delivers them
/// once `queue.lease` has passed, not before, each exactly once.
#[test]
fn a_replica_killed_mid_delivery_leaves_its_messages_to_another_after_the_lease() {
    let pg = TestPostgres::start();
    let (t, b) = (fake(), fake());
    let config = shared_config(&t, &b, &pg);
    t.delay_next_greetings(1, Duration::from_secs(120));
    let first = relay_with(config.clone());
    let subjects: Vec<String> = (0..3).map(|i| format!("killed-{i}")).collect();
    for subject in &subjects {
        let reply = send(
            first.addr,
            "app@example.com",
            &["u@example.net"],
            &message(subject),
        );
        assert!(reply.starts_with("250"), "{reply}");
    }
    // The first connection hangs waiting for its greeting: the replica
    // holds at least one message under lease.
    wait_until(
        "a connection to the upstream",
        Duration::from_secs(20),
        || t.connections() >= 1,
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_password_hidden(&first);
    first.kill9();
    let killed = std::time::Instant::now();
    let second = relay_with(config);
    let got = settle_shared(&pg, &t, Duration::from_secs(60));
    assert_each_once(&got, &subjects);
    // Leases are renewed every quarter lease (5 s), so the last one ran
    // out at least 3.75 s after the kill.
    assert!(
        killed.elapsed() >= Duration::from_secs(3),
        "delivered {:?} after the kill: before the lease ran out",
        killed.elapsed()
    );
    assert_password_hidden(&second);
}
