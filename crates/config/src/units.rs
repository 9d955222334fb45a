//! Sizes and durations: parsed from the forms users write (`"10MB"`,
//! `10000000`, `"15m"`) and printed back in the shortest exact form, so the
//! printed configuration loads to the same values.

use std::time::Duration;

use bytesize::ByteSize;

/// `"10MB"` (10,000,000), `"10MiB"` (10,485,760) or plain digits (bytes).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let parsed = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<u64>().map_err(|e| e.to_string())
    } else {
        text.parse::<ByteSize>().map(|size| size.as_u64())
    };
    parsed.map_err(|_| {
        format!("`{text}` is not a size (e.g. \"10MB\", \"10MiB\" or a number of bytes)")
    })
}

/// Humantime durations: `"5s"`, `"15m"`, `"72h"`, `"1h 30m"`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration ({e}; e.g. \"5s\", \"15m\", \"72h\")"))
}

/// `"600/m"`, `"10000/h"`: a count per second (`s`), minute (`m`), hour
/// (`h`) or day (`d`).
pub(crate) fn parse_rate(text: &str) -> Result<crate::Rate, String> {
    let bad = || {
        format!(
            "`{text}` is not a rate: a count per s, m, h or d, e.g. \"600/m\" or \"10000/h\" (\"\" = unlimited)"
        )
    };
    let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        "d" => Duration::from_secs(86_400),
        _ => return Err(bad()),
    };
    if count == 0 {
        return Err(format!(
            "`{text}` would refuse every message; give a count of at least 1 (\"\" = unlimited)"
        ));
    }
    Ok(crate::Rate { count, per })
}

/// The largest whole unit that states `size` exactly, e.g. `"10MB"`.
pub(crate) fn format_size(size: u64) -> String {
    const UNITS: [(u64, &str); 6] = [
        (1_000_000_000, "GB"),
        (1 << 30, "GiB"),
        (1_000_000, "MB"),
        (1 << 20, "MiB"),
        (1_000, "kB"),
        (1 << 10, "KiB"),
    ];
    UNITS
        .iter()
        .find(|(unit, _)| size != 0 && size.is_multiple_of(*unit))
        .map(|(unit, name)| format!("{}{name}", size / unit))
        .unwrap_or_else(|| size.to_string())
}

/// The largest whole unit that states `duration` exactly, e.g. `"72h"`.
pub(crate) fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() != 0 {
        let nanos = duration.as_nanos();
        return if nanos.is_multiple_of(1_000_000) {
            format!("{}ms", nanos / 1_000_000)
        } else {
            format!("{nanos}ns")
        };
    }
    let secs = duration.as_secs();
    match secs {
        0 => "0s".into(),
        s if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        s if s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_decimal_binary_and_bytes() {
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("10MiB"), Ok(10_485_760));
        assert_eq!(parse_size("12345"), Ok(12_345));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("-5").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn sizes_print_exactly() {
        for size in [10_000_000, 10_485_760, 1_500, 12_345, 0, 3_000_000_000] {
            assert_eq!(parse_size(&format_size(size)), Ok(size), "{size}");
        }
        assert_eq!(format_size(10_000_000), "10MB");
        assert_eq!(format_size(10_485_760), "10MiB");
        assert_eq!(format_size(12_345), "12345");
    }

    #[test]
    fn durations_parse_and_print_exactly() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("72h"), Ok(Duration::from_secs(72 * 3600)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("soon").is_err());
        for d in [
            Duration::from_secs(5),
            Duration::from_secs(900),
            Duration::from_secs(72 * 3600),
            Duration::from_secs(90),
            Duration::from_millis(1500),
            Duration::from_nanos(7),
            Duration::ZERO,
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(900)), "15m");
        assert_eq!(format_duration(Duration::from_secs(72 * 3600)), "72h");
    }
}
