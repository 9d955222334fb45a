//! What [`crate::Inspector`] reports: plain values that serialise to the
//! `queue list --json` / `queue stats --json` shapes of the contract.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use crate::State;

/// One message as `queue list` and `queue show` present it. Serialises to
/// exactly one element of `queue list --json` (docs/REFERENCE.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageInfo {
    /// The queue id the client saw in our `250`.
    pub id: String,
    #[serde(serialize_with = "rfc3339")]
    pub received_at: SystemTime,
    /// Bytes as received.
    pub size: u64,
    /// Envelope sender; empty for the null sender `<>`.
    pub sender: String,
    /// Upstream name chosen by routing.
    pub upstream: String,
    /// `X-PM-Message-Stream` relayed with the message, if any.
    pub stream: Option<String>,
    /// The `[[clients]]` name the message came from; `None` without AUTH.
    pub client: Option<String>,
    #[serde(serialize_with = "state_name")]
    pub state: State,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// When delivery is next due; `None` for failed messages.
    #[serde(serialize_with = "rfc3339_opt")]
    pub next_attempt_at: Option<SystemTime>,
    /// Why the last attempt did not deliver everything (upstream reply or
    /// our description, with a fix hint where we know one).
    pub last_error: Option<String>,
    /// Every envelope recipient, in RCPT order.
    pub recipients: Vec<RecipientInfo>,
    /// Until when a delivery worker holds the message (a delivery is in
    /// flight); not part of the JSON contract, shown by `queue show`.
    #[serde(skip)]
    pub leased_until: Option<SystemTime>,
}

/// One envelope recipient of a [`MessageInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecipientInfo {
    pub address: String,
    pub state: RecipientState,
    /// The upstream's last reply for this recipient, if any.
    pub reply: Option<String>,
}

/// Where one recipient stands (the stored `recipients.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientState {
    /// Not yet taken by the upstream; will be tried (again).
    Pending,
    /// Taken by the upstream; never sent again.
    Delivered,
    /// Refused for good; kept with its reply until retried or deleted.
    Failed,
}

/// What [`crate::Inspector::delete`] did: a leased message is refused
/// rather than pulled from under a delivery in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The message and its recipients are gone.
    Removed,
    /// No message with that id.
    NotFound,
    /// A delivery holds the message until this time; try again shortly.
    Leased(SystemTime),
}

/// Messages per state: what `queue stats` prints and metrics export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    pub queued: u64,
    pub deferred: u64,
    pub failed: u64,
}

impl StateCounts {
    /// All messages counted.
    pub fn total(&self) -> u64 {
        self.queued + self.deferred + self.failed
    }

    pub(crate) fn add(&mut self, state: State, n: u64) {
        match state {
            State::Queued => self.queued += n,
            State::Deferred => self.deferred += n,
            State::Failed => self.failed += n,
        }
    }
}

/// A summary of the whole queue, for `queue stats` and the admin metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub by_state: StateCounts,
    /// Per upstream name, the same counts.
    pub by_upstream: BTreeMap<String, StateCounts>,
    /// When the oldest message still waiting for delivery (queued or
    /// deferred) was received; failed messages are left out because they
    /// stay until someone deletes them and would pin this forever.
    #[serde(serialize_with = "rfc3339_opt")]
    pub oldest_received_at: Option<SystemTime>,
}

impl FromStr for State {
    type Err = String;

    /// Parses the stored / displayed name (`queued`, `deferred`, `failed`).
    fn from_str(s: &str) -> Result<State, String> {
        match s {
            "queued" => Ok(State::Queued),
            "deferred" => Ok(State::Deferred),
            "failed" => Ok(State::Failed),
            other => Err(format!(
                "unknown message state {other:?} (queued, deferred or failed)"
            )),
        }
    }
}

impl FromStr for RecipientState {
    type Err = String;

    /// Parses the stored name (`pending`, `delivered`, `failed`).
    fn from_str(s: &str) -> Result<RecipientState, String> {
        match s {
            "pending" => Ok(RecipientState::Pending),
            "delivered" => Ok(RecipientState::Delivered),
            "failed" => Ok(RecipientState::Failed),
            other => Err(format!("unknown recipient state {other:?}")),
        }
    }
}

impl RecipientState {
    /// The stored name, as `queue show` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientState::Pending => "pending",
            RecipientState::Delivered => "delivered",
            RecipientState::Failed => "failed",
        }
    }
}

/// RFC 3339 in UTC, to the second: the contract's time format.
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub(crate) fn rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(*t))
}

fn rfc3339_opt<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&format_time(*t)),
        None => s.serialize_none(),
    }
}

fn state_name<S: Serializer>(state: &State, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.as_str())
}
