//! The delivery history: what `postmark-relay history` reads. Each message
//! that leaves the queue (delivered, or deleted by an operator) is copied
//! into `history` and `history_recipients` in the same transaction that
//! removes it (`sql::archive`), never with its body; old entries are
//! pruned in bounded batches. Both backends keep the same tables; this
//! module builds the one query both run.

use std::time::SystemTime;

use serde::Serialize;

use crate::info::{rfc3339, RecipientState};

/// Entries pruned per statement: small enough that a prune never holds
/// the write lock long (SQLite) or a large transaction (PostgreSQL).
pub const PRUNE_BATCH: usize = 1000;

/// What `history` asks for; every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// A recipient matches this address pattern (see [`like_pattern`]).
    pub to: Option<String>,
    /// The envelope sender or the `From:` address matches this pattern.
    pub from: Option<String>,
    /// The queue id.
    pub id: Option<String>,
    /// Finished at or after this time.
    pub since: Option<SystemTime>,
    /// A recipient (the one matching `to`, if given) ended in this state.
    pub state: Option<FinalState>,
    /// At most this many messages, newest first.
    pub limit: usize,
}

/// How a recipient ended: `--state delivered|failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalState {
    Delivered,
    Failed,
}

impl FinalState {
    /// The stored and printed name.
    pub fn as_str(self) -> &'static str {
        match self {
            FinalState::Delivered => "delivered",
            FinalState::Failed => "failed",
        }
    }

    pub(crate) fn parse(stored: &str) -> FinalState {
        if stored == "delivered" {
            FinalState::Delivered
        } else {
            FinalState::Failed
        }
    }
}

impl std::str::FromStr for FinalState {
    type Err = String;

    fn from_str(s: &str) -> Result<FinalState, String> {
        match s {
            "delivered" => Ok(FinalState::Delivered),
            "failed" => Ok(FinalState::Failed),
            other => Err(format!("unknown state {other:?} (delivered or failed)")),
        }
    }
}

impl From<FinalState> for RecipientState {
    fn from(state: FinalState) -> RecipientState {
        match state {
            FinalState::Delivered => RecipientState::Delivered,
            FinalState::Failed => RecipientState::Failed,
        }
    }
}

/// One message that left the queue: one element of `history --json`
/// (docs/REFERENCE.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    pub id: String,
    #[serde(serialize_with = "rfc3339")]
    pub received_at: SystemTime,
    /// When it was delivered or deleted.
    #[serde(serialize_with = "rfc3339")]
    pub finished_at: SystemTime,
    /// The `[[clients]]` name it came from; `None` without AUTH.
    pub client: Option<String>,
    /// Envelope sender; empty for `<>`.
    pub sender: String,
    /// The `From:` address.
    pub from: Option<String>,
    /// The `Subject:`, at most 200 characters.
    pub subject: Option<String>,
    pub upstream: String,
    pub stream: Option<String>,
    /// Delivery attempts made.
    pub attempts: u32,
    /// Every envelope recipient, in RCPT order.
    pub recipients: Vec<HistoryRecipient>,
}

/// One recipient of a [`HistoryEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRecipient {
    pub address: String,
    pub state: FinalState,
    /// The upstream's reply (Postmark's carries its message id), or why it
    /// never went.
    pub reply: Option<String>,
}

/// An address pattern as a SQL `LIKE` pattern with `\` as escape: `*` any
/// run of characters, `?` one character, everything else literal. The
/// same pattern means the same in SQLite and PostgreSQL, so the filter runs
/// in the database and can use its indexes.
pub fn like_pattern(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 4);
    for ch in glob.trim().chars() {
        match ch {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(ch);
            }
            ch => out.extend(ch.to_lowercase()),
        }
    }
    out
}

/// Whether `text` matches the address pattern `pattern` as the database
/// filter does ([`like_pattern`]): case-insensitive, `*` and `?`
/// wildcards.
pub fn pattern_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.trim().to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    // Greedy matching with one backtrack point (the last `*`): linear in
    // practice, never exponential.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A value bound to the history query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Param {
    Text(String),
    Int(i64),
}

/// The history query's SQL for one backend and its parameters in order.
#[derive(Debug)]
pub(crate) struct Sql {
    pub text: String,
    pub params: Vec<Param>,
}

/// How a backend writes what differs: its numbered placeholder, and a
/// case-insensitive `LIKE` on a column that its index can serve.
pub(crate) struct Dialect {
    pub placeholder: fn(usize) -> String,
    pub ci_like: fn(&str, &str) -> String,
    /// Where the database has an index of reversed addresses: the
    /// condition that a column ends with a (lowercase, reversed, `LIKE`)
    /// prefix pattern, for `*@domain` filters.
    pub ci_suffix: Option<fn(&str, &str) -> String>,
}

/// `*@example.com`: a pattern whose only wildcard is one leading `*`, as
/// the reversed `LIKE` prefix (`moc.elpmaxe@%`) an index of reversed
/// addresses serves.
fn reversed_suffix(glob: &str) -> Option<String> {
    let rest = glob.trim().strip_prefix('*')?;
    if rest.is_empty() || rest.contains(['*', '?']) {
        return None;
    }
    let reversed: String = rest.chars().rev().collect();
    Some(format!("{}%", like_pattern(&reversed)))
}

/// Messages a first, windowed try of a recipient filter looks at: the
/// newest this many, each checked through the recipients' primary key.
const RECENT_WINDOW: usize = 5000;

/// The queries to try in order, stopping at the first that returns
/// `q.limit` messages (the last one's answer is final). A recipient filter
/// that matches many recipients (`*@big-customer.com`, `--state
/// delivered`) would make the full query collect and sort every match, so
/// it is first tried on the newest [`RECENT_WINDOW`] messages: when that
/// finds `limit` of them they are the newest of all (nothing newer lies
/// outside the window). A rare match finds fewer, and the full query,
/// which starts from the recipients' address index, answers.
pub(crate) fn plan(q: &HistoryQuery, d: &Dialect) -> Vec<Sql> {
    if q.to.is_none() && q.state.is_none() {
        return vec![select(q, d, None)];
    }
    vec![select(q, d, Some(RECENT_WINDOW)), select(q, d, None)]
}

/// `SELECT` of the matching messages' columns (in
/// [`HistoryEntry`] order, recipients apart), newest first; with `window`,
/// among the newest `window` messages only.
fn select(q: &HistoryQuery, d: &Dialect, window: Option<usize>) -> Sql {
    let mut params = Vec::new();
    let mut bind = |p: Param| {
        params.push(p);
        (d.placeholder)(params.len())
    };
    let mut conditions = Vec::new();
    if let Some(id) = &q.id {
        conditions.push(format!("h.id = {}", bind(Param::Text(id.clone()))));
    }
    if let Some(since) = q.since {
        conditions.push(format!(
            "h.finished_at >= {}",
            bind(Param::Int(crate::sql::millis(since)))
        ));
    }
    if let Some(from) = &q.from {
        let p = bind(Param::Text(like_pattern(from)));
        conditions.push(format!(
            "({} OR {})",
            (d.ci_like)("h.sender", &p),
            (d.ci_like)("h.from_addr", &p)
        ));
    }
    let mut recipient = Vec::new();
    if let Some(to) = &q.to {
        match (d.ci_suffix, reversed_suffix(to)) {
            (Some(suffix), Some(pattern)) => {
                let p = bind(Param::Text(pattern));
                recipient.push(suffix("r.address", &p));
            }
            _ => {
                let p = bind(Param::Text(like_pattern(to)));
                recipient.push((d.ci_like)("r.address", &p));
            }
        }
    }
    if let Some(state) = q.state {
        recipient.push(format!(
            "r.state = {}",
            bind(Param::Text(state.as_str().into()))
        ));
    }
    if !recipient.is_empty() && window.is_some() {
        conditions.push(format!(
            "EXISTS (SELECT 1 FROM history_recipients r WHERE r.message_id = h.id AND {})",
            recipient.join(" AND ")
        ));
    } else if !recipient.is_empty() {
        conditions.push(format!(
            "h.id IN (SELECT r.message_id FROM history_recipients r WHERE {})",
            recipient.join(" AND ")
        ));
    }
    let source = match window {
        Some(n) => format!(
            "(SELECT * FROM history ORDER BY finished_at DESC, id DESC LIMIT {}) h",
            bind(Param::Int(i64::try_from(n).unwrap_or(i64::MAX)))
        ),
        None => "history h".to_owned(),
    };
    let limit = bind(Param::Int(i64::try_from(q.limit).unwrap_or(i64::MAX)));
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    Sql {
        text: format!(
            "SELECT h.id, h.received_at, h.finished_at, h.client, h.sender, h.from_addr, h.subject,
                    h.upstream, h.stream, h.attempts
             FROM {source} {filter}
             ORDER BY h.finished_at DESC, h.id DESC LIMIT {limit}"
        ),
        params,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_escaped_like_patterns() {
        assert_eq!(like_pattern("*@Example.com"), "%@example.com");
        assert_eq!(like_pattern("a?c"), "a_c");
        assert_eq!(like_pattern("100%_off\\"), "100\\%\\_off\\\\");
    }

    /// A recipient filter is tried on the newest messages first, then on
    /// all; other filters need one query.
    #[test]
    fn recipient_filters_try_the_newest_messages_first() {
        let d = Dialect {
            placeholder: |n| format!("${n}"),
            ci_like: |col, p| format!("lower({col}) LIKE {p}"),
            ci_suffix: None,
        };
        let by_sender = HistoryQuery {
            from: Some("a@b".into()),
            limit: 50,
            ..Default::default()
        };
        assert_eq!(plan(&by_sender, &d).len(), 1);
        let by_recipient = HistoryQuery {
            to: Some("*@b".into()),
            limit: 50,
            ..Default::default()
        };
        let tries = plan(&by_recipient, &d);
        assert_eq!(tries.len(), 2);
        assert!(tries[0].text.contains("LIMIT $2) h"), "{}", tries[0].text);
        assert!(tries[0].text.contains("EXISTS"), "{}", tries[0].text);
        assert!(!tries[1].text.contains(") h"), "{}", tries[1].text);
    }

    #[test]
    fn leading_star_patterns_become_reversed_prefixes() {
        assert_eq!(
            reversed_suffix("*@Example.COM").as_deref(),
            Some("moc.elpmaxe@%")
        );
        assert_eq!(reversed_suffix("*_x").as_deref(), Some("x\\_%"));
        for other in ["a@b", "*", "*@*.com", "*@b?", "a*@b"] {
            assert_eq!(reversed_suffix(other), None, "{other}");
        }
    }

    #[test]
    fn patterns_match_like_the_database() {
        assert!(pattern_matches("*@Example.com", "alice@example.COM"));
        assert!(pattern_matches("alice@example.com", "Alice@Example.com"));
        assert!(pattern_matches("a?ice@*", "alice@x"));
        assert!(pattern_matches("*", ""));
        assert!(!pattern_matches("*@example.com", "alice@example.net"));
        assert!(!pattern_matches("alice", "alice@example.com"));
        assert!(pattern_matches("*a*b*c", "xxaxxbxxbc"));
    }

    #[test]
    fn only_given_filters_are_bound_in_order() {
        let d = Dialect {
            placeholder: |n| format!("${n}"),
            ci_like: |col, p| format!("lower({col}) LIKE {p}"),
            ci_suffix: None,
        };
        let all = select(
            &HistoryQuery {
                limit: 5,
                ..Default::default()
            },
            &d,
            None,
        );
        assert!(!all.text.contains("WHERE"), "{}", all.text);
        assert_eq!(all.params, [Param::Int(5)]);
        let q = HistoryQuery {
            to: Some("A@b".into()),
            state: Some(FinalState::Failed),
            limit: 1,
            ..Default::default()
        };
        let sql = select(&q, &d, None);
        assert!(
            sql.text
                .contains("lower(r.address) LIKE $1 AND r.state = $2"),
            "{}",
            sql.text
        );
        assert_eq!(
            sql.params,
            [
                Param::Text("a@b".into()),
                Param::Text("failed".into()),
                Param::Int(1)
            ]
        );
    }
}
