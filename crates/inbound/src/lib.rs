//! The inbound SMTP server: where applications hand their mail to the relay.
//!
//! Owns: listening sockets, per-connection checks (allowed networks,
//! connection cap), inbound STARTTLS and AUTH against `[[clients]]`, the
//! SMTP session state machine (smtp-proto parses
//! commands; the DATA decoder is ours), limits, and the trace headers.
//! Hands each message to a [`Store`] (the body in chunks while it arrives,
//! so memory does not grow with message size) and answers `250` only after
//! the store says it is durable.
//!
//! Must not know: routing, SQLite, or anything about Postmark.
#![forbid(unsafe_code)]

mod decoder;
mod handoff;
mod listener;
mod queue_id;
mod rate;
/// Refused commands in the log, rate-limited.
mod refusals;
pub mod reply;
mod session;
mod spool;
mod tls;
mod trace;

pub use decoder::{Decoder, Progress};
pub use handoff::{ReceivedMessage, Refusal, Store};
pub use listener::{bind, serve, BindError};
pub use rate::RateLimits;
pub use session::{Session, MAX_LINE};
pub use spool::{CHUNK, HEAD_LIMIT};
pub use tls::InboundTls;
