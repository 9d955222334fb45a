//! Queue ids: short, unique, roughly time-ordered, safe in headers and
//! file names (like Postfix's `4F2B31C0A7`).

use std::time::{SystemTime, UNIX_EPOCH};

/// A new id: 11 hex digits of milliseconds since 1970, then 5 random ones.
pub fn new_queue_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!(
        "{:011X}{:05X}",
        ms & 0xFFF_FFFF_FFFF,
        fastrand::u32(..0x10_0000)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_sixteen_hex_digits_and_distinct() {
        let a = super::new_queue_id();
        let b = super::new_queue_id();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
