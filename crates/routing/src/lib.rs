//! Routing for postmark-relay: decides, for one message, which upstream it
//! goes to and which Postmark message stream it uses.
//!
//! Owns: the precedence (an `X-PM-Message-Stream` header, then the rules in
//! order, then `routing.default`) and glob matching. Reads headers through
//! `relay_message`, which owns mail syntax. Pure: no I/O, no async, no
//! clock. Must not know: SMTP sessions, the queue, or how a route is
//! delivered.
//!
//! Also owns sender rewriting ([`SenderRewrite`]): the same kind of pure
//! decision on the same headers, applied after routing.
#![forbid(unsafe_code)]

mod rewrite;
mod route;
mod router;

pub use rewrite::{Rewritten, SenderRewrite};
pub use route::Route;
pub use router::Router;
