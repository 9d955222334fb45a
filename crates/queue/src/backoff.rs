//! The long retry schedule: exponential backoff with jitter, and the
//! give-up deadline.

use std::time::Duration;

/// When to try a deferred message again, when to stop trying, and
/// whether a message that leaves the queue is kept in the history: what
/// recording a delivery outcome needs to know.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// Growth per attempt; at least 1.0.
    pub multiplier: f64,
    /// Since receipt; past it, pending recipients fail.
    pub give_up_after: Duration,
    /// Record a delivered message in the history as it leaves the queue
    /// (`queue.history` is not zero).
    pub keep_history: bool,
}

impl RetryPolicy {
    /// The reply recorded for recipients still pending when
    /// `give_up_after` has passed, naming the last error.
    pub fn gave_up(&self, last_error: Option<&str>) -> String {
        format!(
            "gave up after {}: {}",
            humantime::format_duration(self.give_up_after),
            last_error.unwrap_or("no successful delivery")
        )
    }

    /// Delay before the next try after `attempts` failed attempts (≥ 1):
    /// `initial × multiplier^(attempts-1)`, capped at `max_delay`, then
    /// jittered to between half and all of it so a burst of failures does
    /// not retry in lockstep.
    pub fn delay_after(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(64) as i32;
        let raw = self.initial_delay.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let capped = raw.min(self.max_delay.as_secs_f64()).max(0.0);
        let jittered = capped * (0.5 + fastrand::f64() * 0.5);
        Duration::from_secs_f64(jittered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(900),
            multiplier: 2.0,
            give_up_after: Duration::from_secs(72 * 3600),
            keep_history: true,
        }
    }

    #[test]
    fn grows_exponentially_within_jitter_bounds() {
        let p = policy();
        for (attempt, full) in [(1, 5.0), (2, 10.0), (3, 20.0), (4, 40.0)] {
            for _ in 0..50 {
                let d = p.delay_after(attempt).as_secs_f64();
                assert!(d >= full / 2.0 && d <= full, "attempt {attempt}: {d}");
            }
        }
    }

    #[test]
    fn is_capped_at_max_delay() {
        let p = policy();
        for _ in 0..50 {
            let d = p.delay_after(40).as_secs_f64();
            assert!((450.0..=900.0).contains(&d), "{d}");
        }
    }
}
