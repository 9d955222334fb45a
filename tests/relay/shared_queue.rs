//! Several relays sharing one queue on PostgreSQL (`queue.backend =
//! "postgres"`), against a real server from Debian's `postgresql` package
//! (testkit's `TestPostgres`; these tests fail, never skip, without it).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay_testkit::{TestPostgres, PG_PASSWORD};

use crate::admin::{admin_addr, get, wait_until, with_admin};
use crate::harness::*;

/// `config_for`'s config with the shared queue at `pg`.
fn shared_config(t: &FakePostmark, b: &FakePostmark, pg: &TestPostgres) -> String {
    shared_config_leasing(t, b, pg, "5s")
}

/// [`shared_config`] with `queue.lease = lease`.
fn shared_config_leasing(
    t: &FakePostmark,
    b: &FakePostmark,
    pg: &TestPostgres,
    lease: &str,
) -> String {
    config_for(
        t,
        b,
        &format!(
            "##\n[queue]\nbackend = \"postgres\"\nurl = \"{}\"\nlease = \"{lease}\"\n",
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
    println!(
        "two replicas: {} sent, {} delivered, each once",
        subjects.len(),
        got.len()
    );
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
    println!(
        "database outage under load: acked={} refused-452={} delivered={} (each acknowledged message once)",
        acked.len(),
        refused.lock().unwrap().len(),
        got.len()
    );
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
    println!(
        "replica killed mid-delivery: {} messages delivered by the other, the last {:.1} s after the kill (lease 5 s)",
        subjects.len(),
        killed.elapsed().as_secs_f64()
    );
    assert!(
        killed.elapsed() >= Duration::from_secs(3),
        "delivered {:?} after the kill: before the lease ran out",
        killed.elapsed()
    );
    assert_password_hidden(&second);
}

#[test]
fn three_replicas_receiving_at_once_deliver_every_message_exactly_once() {
    let pg = TestPostgres::start();
    // The contract: the relay's role needs no superuser rights.
    assert_eq!(
        pg.psql("SELECT rolsuper FROM pg_roles WHERE rolname = 'relay'"),
        "f",
        "the relay's role must not be a superuser"
    );
    let (t, b) = (fake(), fake());
    let config = shared_config(&t, &b, &pg);
    let replicas: Vec<Relay> = (0..3).map(|_| relay_with(config.clone())).collect();
    let subjects: Vec<String> = (0..90).map(|i| format!("three-{i}")).collect();
    std::thread::scope(|scope| {
        for (replica, share) in replicas.iter().zip(subjects.chunks(30)) {
            scope.spawn(move || send_concurrently(replica.addr, share, 3));
        }
    });
    let got = settle_shared(&pg, &t, Duration::from_secs(90));
    assert_each_once(&got, &subjects);
    println!(
        "three replicas: {} sent, {} delivered, each once",
        subjects.len(),
        got.len()
    );
    assert!(b.messages().is_empty());
    for relay in &replicas {
        assert_password_hidden(relay);
    }
}

/// What the clients of one test saw.
#[derive(Default)]
struct Seen {
    /// Subjects answered `250`.
    acked: Vec<String>,
    /// Subjects whose connection broke after the whole message was sent
    /// (no reply): the relay may or may not have committed them.
    unknown: Vec<String>,
}

/// One client sending `<tag>-0`, `<tag>-1`, ... to `addr` until `stop`,
/// at most `max` messages or until `deadline`. It stops for good when
/// `addr` refuses connections (its replica is dead).
fn keep_sending(
    addr: SocketAddr,
    tag: &str,
    max: usize,
    seen: &Mutex<Seen>,
    stop: &AtomicBool,
    deadline: Instant,
) {
    for i in 0..max {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            return;
        }
        let subject = format!("{tag}-{i}");
        match try_send(
            addr,
            "app@example.com",
            &["u@example.net"],
            &message(&subject),
        ) {
            Ok(reply) if reply.starts_with("250") => seen.lock().unwrap().acked.push(subject),
            Ok(reply) => panic!("{subject}: {reply}"),
            Err(e) if e.starts_with(NO_FINAL_REPLY) => seen.lock().unwrap().unknown.push(subject),
            Err(e) if e.starts_with("connect") => return,
            // Cut before the end of the message: nothing can be stored.
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The queue ids whose lease names the relay process `pid` (a lease
/// owner is `host:pid:random`).
fn leased_by(pg: &TestPostgres, pid: u32) -> HashSet<String> {
    pg.psql(&format!(
        "SELECT id FROM postmark_relay.messages WHERE lease_owner LIKE '%:{pid}:%'"
    ))
    .lines()
    .map(str::to_string)
    .collect()
}

/// `kill -9` of one of two replicas while clients send to both and the
/// upstream is slow to answer (so the dead one surely had deliveries in
/// flight): no acknowledged message is lost, and only a message the dead
/// replica held leased (claimed, outcome not yet recorded) may arrive a
/// second time, as in `faults_crash`.
#[test]
fn kill_9_of_a_replica_under_load_loses_nothing_and_repeats_only_its_leased_messages() {
    let pg = TestPostgres::start();
    let (t, b) = (fake(), fake());
    // A long lease: the dead replica's leases are read after the kill,
    // before any could expire and be taken over (renewed every quarter
    // lease, so at least 15 s are left).
    let lease = Duration::from_secs(20);
    let config = shared_config_leasing(&t, &b, &pg, "20s");
    t.set_data_reply_delay(Some(Duration::from_millis(50)));
    let doomed = relay_with(config.clone());
    let survivor = relay_with(config);
    let (doomed_addr, survivor_addr) = (doomed.addr, survivor.addr);
    let seen = Mutex::new(Seen::default());
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(180);
    let acked = || seen.lock().unwrap().acked.len();
    let mut leased = HashSet::new();
    std::thread::scope(|scope| {
        for (addr, tag) in [
            (doomed_addr, "doomed-a"),
            (doomed_addr, "doomed-b"),
            (survivor_addr, "survivor-a"),
            (survivor_addr, "survivor-b"),
        ] {
            let (seen, stop) = (&seen, &stop);
            scope.spawn(move || keep_sending(addr, tag, 300, seen, stop, deadline));
        }
        wait_until("60 messages accepted", Duration::from_secs(90), || {
            acked() >= 60
        });
        wait_until(
            "the doomed replica delivering",
            Duration::from_secs(60),
            || !leased_by(&pg, doomed.pid()).is_empty(),
        );
        let pid = doomed.pid();
        assert_password_hidden(&doomed);
        doomed.kill9();
        let killed = Instant::now();
        leased = leased_by(&pg, pid);
        assert!(
            killed.elapsed() < lease / 2,
            "reading the dead replica's leases took {:?}: some may have expired",
            killed.elapsed()
        );
        let before = acked();
        wait_until(
            "the survivor accepting mail after the kill",
            Duration::from_secs(60),
            || acked() >= before + 30,
        );
        stop.store(true, Ordering::Relaxed);
    });
    let seen = seen.into_inner().unwrap();
    t.set_data_reply_delay(None);
    let got = settle_shared(&pg, &t, Duration::from_secs(120));

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
    let known: HashSet<&String> = seen.acked.iter().chain(&seen.unknown).collect();
    let strangers: Vec<&String> = counts.keys().filter(|s| !known.contains(s)).collect();
    assert!(
        strangers.is_empty(),
        "messages no client finished arrived: {strangers:?}"
    );
    // Each extra copy must be of a message the dead replica held leased.
    let mut ids: HashMap<String, HashSet<String>> = HashMap::new();
    for m in &got {
        let id = relayed_id(m).unwrap_or_else(|| panic!("no queue id in {m:?}"));
        ids.entry(subject(m)).or_default().insert(id);
    }
    let mut duplicates = 0;
    for (subject, n) in counts.iter().filter(|(_, n)| **n > 1) {
        let id: Vec<&String> = ids[subject].iter().collect();
        assert!(
            *n == 2 && id.len() == 1 && leased.contains(id[0]),
            "{subject} (queue id {id:?}) arrived {n} times; the dead replica held {leased:?}"
        );
        duplicates += n - 1;
    }
    // At most `connections` (2) workers × 8 messages claimed each (the
    // delivery worker's CHAIN) can be in flight in one replica.
    assert!(
        leased.len() <= 2 * 8,
        "the dead replica held {} leases: more than its workers can claim",
        leased.len()
    );
    println!(
        "replica killed under load: acked={} no-reply={} delivered={} duplicates={duplicates} leased-at-kill={}",
        seen.acked.len(),
        seen.unknown.len(),
        counts.len(),
        leased.len()
    );
    assert_password_hidden(&survivor);
}

/// A replica that accepted messages while the upstream was down (so they
/// are deferred, or leased by a delivery attempt) is killed with `kill -9`;
/// when the upstream is back, the other replica delivers every one of
/// them, each once.
#[test]
fn a_replica_killed_while_the_upstream_is_down_leaves_every_message_to_another() {
    let pg = TestPostgres::start();
    let (t, b) = (fake(), fake());
    t.set_down(true);
    let config = shared_config(&t, &b, &pg);
    let doomed = relay_with(config.clone());
    let subjects: Vec<String> = (0..20).map(|i| format!("down-{i}")).collect();
    send_concurrently(doomed.addr, &subjects, 2);
    // Only the doomed replica exists: every attempt so far was its own.
    wait_until(
        "the doomed replica to have tried every message",
        Duration::from_secs(60),
        || {
            pg.psql("SELECT count(*) FROM postmark_relay.messages WHERE attempts > 0")
                == subjects.len().to_string()
        },
    );
    let survivor = relay_with(config);
    let pid = doomed.pid();
    assert_password_hidden(&doomed);
    doomed.kill9();
    let leased = leased_by(&pg, pid);
    assert!(
        t.messages().is_empty(),
        "delivered while the upstream was down"
    );
    t.set_down(false);
    let got = settle_shared(&pg, &t, Duration::from_secs(90));
    assert_each_once(&got, &subjects);
    println!(
        "replica killed with the upstream down: {} messages, {} leased by it at the kill",
        subjects.len(),
        leased.len()
    );
    assert_password_hidden(&survivor);
}
