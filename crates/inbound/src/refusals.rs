//! Refused commands in the log: an operator asking "why did my app's mail
//! not arrive?" must find the `550` its RCPT got, or the `552` for a size,
//! not only the messages that were accepted. At info level, naming the
//! client, the command and the reply; rate-limited for the whole process so
//! a client that hammers the relay with bad commands cannot fill the disk.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use relay_message::scrub;

/// Refusals logged in a burst, and per second after it.
const BURST: f64 = 20.0;
/// Longest command text logged (an address can be long; a line cannot
/// be longer than this and still be useful).
const MAX_COMMAND: usize = 200;

/// The process-wide budget.
static BUDGET: Mutex<Budget> = Mutex::new(Budget {
    tokens: BURST,
    last: None,
    suppressed: 0,
});

/// A token bucket, and what it dropped since the last line it allowed.
struct Budget {
    tokens: f64,
    last: Option<Instant>,
    suppressed: u64,
}

impl Budget {
    /// Whether a line may be logged now; if so, how many were dropped
    /// before it.
    fn take(&mut self, now: Instant) -> Option<u64> {
        if let Some(last) = self.last {
            let refill = now.duration_since(last).as_secs_f64() * BURST;
            self.tokens = (self.tokens + refill).min(BURST);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// Logs each refusal (a `4xx` or `5xx` line) among `replies`, the replies
/// to `line`, with the peer and the `[[clients]]` name it authenticated as
/// (`name`). Only the verb of an AUTH command is logged: its argument may
/// be a password.
pub(crate) fn log(peer: SocketAddr, name: Option<&str>, line: &[u8], replies: &[u8]) {
    let refused: Vec<&str> = std::str::from_utf8(replies)
        .unwrap_or_default()
        .split("\r\n")
        .filter(|r| r.starts_with(['4', '5']) && r.as_bytes().get(3) != Some(&b'-'))
        .collect();
    if refused.is_empty() {
        return;
    }
    let command = command_text(line);
    for reply in refused {
        let allowed = BUDGET
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(Instant::now());
        match allowed {
            Some(0) => {}
            Some(dropped) => tracing::info!(
                dropped,
                "Refused commands were not logged for a while (at most 20 a second)."
            ),
            None => continue,
        }
        tracing::info!(%peer, client = %name.unwrap_or(""), command = %command, reply = %reply, "Refused a command.");
    }
}

/// The command as the client sent it, safe to log: no line ending or
/// control characters, capped, and AUTH without its argument.
fn command_text(line: &[u8]) -> String {
    let text = scrub(String::from_utf8_lossy(line).trim_end());
    let mut words = text.split_whitespace();
    let verb = words.next().unwrap_or_default();
    let shown = if verb.eq_ignore_ascii_case("AUTH") {
        match words.next() {
            Some(mechanism) => format!("{verb} {mechanism}"),
            None => verb.to_string(),
        }
    } else {
        text.trim().to_string()
    };
    shown.chars().take(MAX_COMMAND).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn auth_arguments_are_never_shown() {
        assert_eq!(
            command_text(b"AUTH PLAIN AGJpbGxpbmcAc2VjcmV0\r\n"),
            "AUTH PLAIN"
        );
        assert_eq!(
            command_text(b"RCPT TO:<bad\x01@example.net>\r\n"),
            "RCPT TO:<bad @example.net>"
        );
        assert_eq!(command_text(&[b'x'; 5000]).len(), MAX_COMMAND);
    }

    #[test]
    fn the_budget_allows_a_burst_then_a_rate_and_counts_what_it_dropped() {
        let start = Instant::now();
        let mut budget = Budget {
            tokens: BURST,
            last: None,
            suppressed: 0,
        };
        for _ in 0..20 {
            assert_eq!(budget.take(start), Some(0));
        }
        assert_eq!(budget.take(start), None);
        assert_eq!(budget.take(start), None);
        assert_eq!(budget.take(start + Duration::from_millis(100)), Some(2));
    }
}
