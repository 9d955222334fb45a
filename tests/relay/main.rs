//! End-to-end tests: the built `postmark-relay` binary, real SMTP clients,
//! and fake Postmark upstreams (real SMTP + STARTTLS + AUTH), all over
//! loopback TCP with ports chosen by the OS.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod admin;
mod check;
mod clients;
mod config_command;
mod credentials;
mod durability;
mod harness;
mod limits;
mod pooling;
mod queue_cmd;
mod relaying;
mod retries;
mod rewrite;
mod routing;
mod sendmail;
mod smuggling;
