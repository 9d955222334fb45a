//! Rate limits on MAIL FROM: a token bucket per `[[clients]]` name, shared
//! by all of that client's sessions, and one per client IP address for
//! sessions that did not AUTH (`server.rate`). A bucket holds `count`
//! messages and refills at `count` per period, so an app may send its
//! whole allowance in a burst and then at the steady rate. Over the limit,
//! MAIL gets `450 4.7.1` and the app's own queue retries later.
//!
//! Also counted per IP: failed AUTH attempts across sessions, so that a
//! password guesser gains nothing by reconnecting.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use relay_config::{Rate, Server};

/// Most per-IP buckets kept; past it, full buckets (IPs idle long enough
/// to have their whole allowance back) are forgotten, which changes
/// nothing for them.
const MAX_IP_BUCKETS: usize = 16_384;

/// Every bucket of one listener set, shared by its sessions.
#[derive(Debug)]
pub struct RateLimits {
    /// `server.rate`: per IP, sessions without AUTH.
    anonymous: Option<Rate>,
    buckets: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    clients: HashMap<String, Bucket>,
    ips: HashMap<IpAddr, Bucket>,
    /// Failed AUTH attempts per IP and when the last one was.
    auth_failures: HashMap<IpAddr, (u32, Instant)>,
}

/// How long an IP's failed AUTH attempts are remembered after its last.
const FAILURE_MEMORY: std::time::Duration = std::time::Duration::from_secs(600);

/// Tokens left and when they were last counted.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate.count),
            at: now,
        }
    }

    /// Refills for the time passed, then takes one token if there is one.
    fn take(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let per_second = f64::from(rate.count) / rate.per.as_secs_f64();
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(f64::from(rate.count));
        self.at = now;
    }
}

/// Who a MAIL counts against.
#[derive(Debug, Clone, Copy)]
pub enum Sender<'a> {
    /// An authenticated `[[clients]]` entry and its `rate`.
    Client { name: &'a str, rate: Option<Rate> },
    /// A session without AUTH, from this address.
    Anonymous(IpAddr),
}

impl RateLimits {
    /// Empty buckets for `settings.rate` and the clients' rates.
    pub fn new(settings: &Server) -> RateLimits {
        RateLimits {
            anonymous: settings.rate,
            buckets: Mutex::new(Buckets::default()),
        }
    }

    /// Counts a failed AUTH from `ip`; returns its failures within
    /// [`FAILURE_MEMORY`] of each other, this one included.
    pub fn auth_failed(&self, ip: IpAddr, now: Instant) -> u32 {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let failures = &mut buckets.auth_failures;
        if failures.len() >= MAX_IP_BUCKETS && !failures.contains_key(&ip) {
            failures.retain(|_, (_, last)| now.saturating_duration_since(*last) < FAILURE_MEMORY);
        }
        let entry = failures.entry(ip).or_insert((0, now));
        if now.saturating_duration_since(entry.1) >= FAILURE_MEMORY {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        entry.0
    }

    /// Forgets `ip`'s failed AUTH attempts (it got one right).
    pub fn auth_succeeded(&self, ip: IpAddr) {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .auth_failures
            .remove(&ip);
    }

    /// Takes one message from `sender`'s bucket; `Err` with the rate that
    /// refuses it when the bucket is empty.
    pub fn take(&self, sender: Sender<'_>, now: Instant) -> Result<(), Rate> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (rate, bucket) = match sender {
            Sender::Client { rate: None, .. } => return Ok(()),
            Sender::Client {
                name,
                rate: Some(rate),
            } => {
                let bucket = match buckets.clients.get_mut(name) {
                    Some(bucket) => bucket,
                    None => buckets
                        .clients
                        .entry(name.to_owned())
                        .or_insert(Bucket::full(rate, now)),
                };
                (rate, bucket)
            }
            Sender::Anonymous(ip) => {
                let Some(rate) = self.anonymous else {
                    return Ok(());
                };
                if buckets.ips.len() >= MAX_IP_BUCKETS && !buckets.ips.contains_key(&ip) {
                    buckets.ips.retain(|_, b| {
                        b.refill(rate, now);
                        b.tokens < f64::from(rate.count)
                    });
                }
                (
                    rate,
                    buckets.ips.entry(ip).or_insert(Bucket::full(rate, now)),
                )
            }
        };
        if bucket.take(rate, now) {
            Ok(())
        } else {
            Err(rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rate(count: u32, secs: u64) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(secs),
        }
    }

    fn limits(anonymous: Option<Rate>) -> RateLimits {
        RateLimits {
            anonymous,
            buckets: Mutex::new(Buckets::default()),
        }
    }

    #[test]
    fn burst_then_steady_rate() {
        let l = limits(None);
        let t0 = Instant::now();
        let billing = Sender::Client {
            name: "billing",
            rate: Some(rate(3, 3600)),
        };
        for _ in 0..3 {
            assert_eq!(l.take(billing, t0), Ok(()));
        }
        assert_eq!(l.take(billing, t0), Err(rate(3, 3600)));
        // One message per 20 minutes comes back.
        assert!(l.take(billing, t0 + Duration::from_secs(1199)).is_err());
        assert_eq!(l.take(billing, t0 + Duration::from_secs(1201)), Ok(()));
        // Another client has its own bucket; one without a rate none.
        let crm = Sender::Client {
            name: "crm",
            rate: Some(rate(3, 3600)),
        };
        assert_eq!(l.take(crm, t0), Ok(()));
        let free = Sender::Client {
            name: "free",
            rate: None,
        };
        for _ in 0..100 {
            assert_eq!(l.take(free, t0), Ok(()));
        }
    }

    #[test]
    fn per_ip_for_sessions_without_auth() {
        let t0 = Instant::now();
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let unlimited = limits(None);
        for _ in 0..100 {
            assert!(unlimited.take(Sender::Anonymous(one), t0).is_ok());
        }
        let l = limits(Some(rate(2, 60)));
        assert!(l.take(Sender::Anonymous(one), t0).is_ok());
        assert!(l.take(Sender::Anonymous(one), t0).is_ok());
        assert!(l.take(Sender::Anonymous(one), t0).is_err());
        assert!(l.take(Sender::Anonymous(two), t0).is_ok());
    }

    #[test]
    fn auth_failures_add_up_per_ip_until_forgotten() {
        let l = limits(None);
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(l.auth_failed(ip, t0), 1);
        assert_eq!(l.auth_failed(ip, t0), 2);
        assert_eq!(l.auth_failed("10.0.0.2".parse().unwrap(), t0), 1);
        assert_eq!(
            l.auth_failed(ip, t0 + FAILURE_MEMORY),
            1,
            "forgotten after a quiet while"
        );
        l.auth_failed(ip, t0 + FAILURE_MEMORY);
        l.auth_succeeded(ip);
        assert_eq!(l.auth_failed(ip, t0 + FAILURE_MEMORY), 1);
    }

    #[test]
    fn idle_ip_buckets_are_forgotten_when_many() {
        let l = limits(Some(rate(1, 1)));
        let t0 = Instant::now();
        for i in 0..MAX_IP_BUCKETS as u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i));
            assert!(l.take(Sender::Anonymous(ip), t0).is_ok());
        }
        // A second later every bucket is full again: all are dropped.
        let later = t0 + Duration::from_secs(2);
        assert!(l
            .take(Sender::Anonymous("192.0.2.1".parse().unwrap()), later)
            .is_ok());
        assert_eq!(l.buckets.lock().unwrap().ips.len(), 1);
    }
}
