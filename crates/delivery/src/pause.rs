//! The credential pause: when an upstream refuses our token, nothing sent
//! there can succeed, so its workers stop claiming messages (which keep
//! their retries) and probe again with growing delays.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// First and longest wait between credential probes.
const FIRST_PROBE: Duration = Duration::from_secs(5);
const LONGEST_PROBE: Duration = Duration::from_secs(300);

/// Shared by one upstream's workers.
#[derive(Debug, Default)]
pub struct Pause {
    state: Mutex<Option<(Instant, Duration)>>,
}

impl Pause {
    /// Pauses (or extends the pause) after a credential failure; returns
    /// true the first time, so only the onset is logged loudly.
    pub fn credentials_refused(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (first, wait) = match *state {
            Some((_, wait)) => (false, (wait * 2).min(LONGEST_PROBE)),
            None => (true, FIRST_PROBE),
        };
        *state = Some((Instant::now() + wait, wait));
        first
    }

    /// Ends the pause after a successful login.
    pub fn resume(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some()
    }

    /// Until when workers must wait, if paused.
    pub fn until(&self) -> Option<Instant> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|(until, _)| until)
            .filter(|until| *until > Instant::now())
    }

    /// Whether the upstream is paused for credentials (for readiness).
    pub fn is_paused(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}
