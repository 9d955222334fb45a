//! End-to-end tests: the built `postmark-relay` binary, real SMTP clients,
//! and fake Postmark upstreams (real SMTP + STARTTLS + AUTH), all over
//! loopback TCP with ports chosen by the OS.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod abuse;
mod admin;
mod app_credentials;
mod check;
mod client_policy;
mod clients;
mod config_command;
mod credentials;
mod deploy_files;
mod durability;
mod faults_backlog;
mod faults_crash;
mod faults_disk;
mod faults_stop;
mod faults_upstream;
mod harness;
mod history;
mod limits;
mod memory;
mod monitoring;
mod pooling;
mod privacy;
mod queue_cmd;
mod relaying;
mod retries;
mod rewrite;
mod routing;
mod runtime_contract;
mod sendmail;
mod shared_queue;
mod shared_queue_start;
mod shared_queue_tools;
mod smtp_tokens;
mod smuggling;
