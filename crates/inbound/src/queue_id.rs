//! Queue ids: short, unique, roughly time-ordered, safe in headers and
//! file names (like Postfix's `4F2B31C0A7`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// A new id: 11 hex digits of milliseconds since 1970, then 5 hex digits of
/// a per-process counter (starting at a random value). Within one
/// millisecond ids differ as long as fewer than a million are made; random
/// bits alone collided at a few thousand messages per second.
pub fn new_queue_id() -> String {
    static COUNTER: OnceLock<AtomicU32> = OnceLock::new();
    let counter = COUNTER.get_or_init(|| AtomicU32::new(fastrand::u32(..)));
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let n = counter.fetch_add(1, Ordering::Relaxed) & 0xF_FFFF;
    format!("{:011X}{:05X}", ms & 0xFFF_FFFF_FFFF, n)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn ids_are_sixteen_hex_digits_and_distinct_even_when_made_quickly() {
        let ids: HashSet<String> = (0..100_000).map(|_| super::new_queue_id()).collect();
        assert_eq!(ids.len(), 100_000);
        assert!(ids
            .iter()
            .all(|id| id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit())));
    }
}
