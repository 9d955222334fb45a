//! How `queue list`, `queue show` and `queue stats` look to a person:
//! plain text, ages relative to now, long errors cut to fit a table.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use relay_queue::{format_time, MessageInfo, State, Stats};

/// Longest last error shown in the `queue list` table.
const ERROR_WIDTH: usize = 60;

/// The `queue list` table, oldest message first.
pub fn table(messages: &[MessageInfo], state: Option<State>) -> String {
    if messages.is_empty() {
        return match state {
            Some(s) => format!("No {} messages in the queue.\n", s.as_str()),
            None => "The queue is empty.\n".to_string(),
        };
    }
    let now = SystemTime::now();
    let header = [
        "ID",
        "AGE",
        "SENDER",
        "RCPTS",
        "UPSTREAM",
        "STREAM",
        "STATE",
        "ATTEMPTS",
        "NEXT",
        "LAST ERROR",
    ];
    let rows: Vec<[String; 10]> = messages
        .iter()
        .map(|m| {
            [
                m.id.clone(),
                age(now, m.received_at),
                sender(&m.sender),
                m.recipients.len().to_string(),
                m.upstream.clone(),
                m.stream.clone().unwrap_or_else(|| "-".into()),
                m.state.as_str().to_string(),
                m.attempts.to_string(),
                next(now, m.next_attempt_at),
                m.last_error
                    .as_deref()
                    .map(|e| truncate(e, ERROR_WIDTH))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    line(&mut out, &header.map(String::from), &widths);
    for row in &rows {
        line(&mut out, row, &widths);
    }
    out
}

fn line(out: &mut String, cells: &[String; 10], widths: &[usize; 10]) {
    let mut text = String::new();
    for (cell, width) in cells.iter().zip(widths) {
        let _ = write!(text, "{cell:<width$}  ");
    }
    out.push_str(text.trim_end());
    out.push('\n');
}

/// `queue show`: everything known about one message.
pub fn message(m: &MessageInfo) -> String {
    let now = SystemTime::now();
    let mut out = String::new();
    let mut field = |name: &str, value: String| {
        let _ = writeln!(out, "{name:<12}{value}");
    };
    field("Message", m.id.clone());
    field(
        "Received",
        format!(
            "{} ({} ago)",
            format_time(m.received_at),
            age(now, m.received_at)
        ),
    );
    field("Size", format!("{} bytes", m.size));
    field("Sender", sender(&m.sender));
    field(
        "Client",
        m.client.clone().unwrap_or_else(|| "- (no AUTH)".into()),
    );
    field("Upstream", m.upstream.clone());
    field(
        "Stream",
        m.stream
            .clone()
            .unwrap_or_else(|| "- (the upstream's default stream)".into()),
    );
    field("State", m.state.as_str().to_string());
    field("Attempts", m.attempts.to_string());
    field(
        "Next",
        match m.next_attempt_at {
            Some(t) => format!("{} ({})", format_time(t), next(now, Some(t))),
            None => format!(
                "- (failed; `postmark-relay queue retry {}` tries again)",
                m.id
            ),
        },
    );
    if let Some(until) = m.leased_until.filter(|t| *t > now) {
        field(
            "Delivery",
            format!("in progress (leased until {})", format_time(until)),
        );
    }
    field(
        "Last error",
        m.last_error.clone().unwrap_or_else(|| "-".into()),
    );
    let _ = writeln!(out, "Recipients");
    let width = m
        .recipients
        .iter()
        .map(|r| r.address.chars().count())
        .max()
        .unwrap_or(0);
    for r in &m.recipients {
        let reply = r.reply.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "  {:<9}  {:<width$}  {reply}",
            r.state.as_str(),
            r.address
        );
    }
    out
}

/// `queue stats`: counts by state and upstream, and the oldest waiting
/// message's age.
pub fn stats(s: &Stats) -> String {
    let mut out = String::new();
    let width = s
        .by_upstream
        .keys()
        .map(|k| k.chars().count())
        .chain(["total".len()])
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "{:<width$}  {:>8}  {:>8}  {:>8}  {:>8}",
        "UPSTREAM", "QUEUED", "DEFERRED", "FAILED", "TOTAL"
    );
    let rows = s
        .by_upstream
        .iter()
        .map(|(name, c)| (name.as_str(), c))
        .chain([("total", &s.by_state)]);
    for (name, c) in rows {
        let _ = writeln!(
            out,
            "{name:<width$}  {:>8}  {:>8}  {:>8}  {:>8}",
            c.queued,
            c.deferred,
            c.failed,
            c.total()
        );
    }
    let _ = match s.oldest_received_at {
        Some(t) => writeln!(
            out,
            "Oldest waiting message: {} old (received {})",
            age(SystemTime::now(), t),
            format_time(t)
        ),
        None => writeln!(out, "Oldest waiting message: none"),
    };
    out
}

/// `<>` for the null sender, else the address.
fn sender(s: &str) -> String {
    if s.is_empty() {
        "<>".into()
    } else {
        s.to_string()
    }
}

/// When the next attempt is, relative to now.
fn next(now: SystemTime, at: Option<SystemTime>) -> String {
    match at {
        None => "-".into(),
        Some(t) => match t.duration_since(now) {
            Ok(d) if d >= Duration::from_secs(1) => format!("in {}", short(d)),
            _ => "now".into(),
        },
    }
}

/// How long ago `then` was, e.g. `42s`, `5m10s`, `3h05m`, `2d04h`.
fn age(now: SystemTime, then: SystemTime) -> String {
    short(now.duration_since(then).unwrap_or_default())
}

fn short(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// The first line of `text`, cut to `max` characters with an ellipsis.
fn truncate(text: &str, max: usize) -> String {
    let first = text.lines().next().unwrap_or("");
    if first.chars().count() <= max && first.len() == text.len() {
        return first.to_string();
    }
    let cut: String = first.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_short() {
        assert_eq!(short(Duration::from_secs(5)), "5s");
        assert_eq!(short(Duration::from_secs(310)), "5m10s");
        assert_eq!(short(Duration::from_secs(3600 + 300)), "1h05m");
        assert_eq!(short(Duration::from_secs(2 * 86400 + 4 * 3600)), "2d04h");
    }

    #[test]
    fn long_errors_are_cut() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("0123456789abc", 10), "012345678…");
        assert_eq!(truncate("one\ntwo", 10), "one…");
    }
}
