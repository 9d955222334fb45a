//! Mail syntax for postmark-relay: the one place that knows how an RFC 5322
//! message is written.
//!
//! Owns: the header block and its fields (with byte spans, so a caller can
//! replace one field and keep every other byte), lookups by name, folding,
//! address lists and display names (one quote/comment scanner for all of
//! them), quoting a display name, scrubbing control characters, CRLF line
//! endings and the RFC 5322 date.
//!
//! Pure functions on bytes and strings: no I/O, no allocation beyond the
//! result, and never a panic, whatever the input. Lenient where mail in the
//! wild is sloppy (bare LF, non-UTF-8 read lossily, junk lines skipped).
//! Must not know: SMTP, routing rules, the queue, or Postmark.
#![forbid(unsafe_code)]

mod address;
mod date;
mod header;
mod scan;
mod text;

pub use address::{address_list, display_name, first_address, mailbox, phrase};
pub use date::rfc5322;
pub use header::{
    fields, find, first_field, has, header_block, is_field_name, line_ending, unfold, write_field,
    Field, Fields,
};
pub use text::{scrub, to_crlf};
