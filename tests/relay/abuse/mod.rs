//! Hostile input against the real daemon over TCP: endless lines, more
//! clients than `max_connections`, malformed commands, an open-relay
//! configuration, and a hunt for the token in everything the relay prints.
//! Each test bounds its waits; memory checks read the relay's own
//! `/proc/<pid>/status`, so they measure what the daemon holds, not time.

mod commands;
mod connections;
mod long_lines;
mod open_relay;
mod secrets;

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// A memory figure of the relay (`VmRSS`, `VmHWM`) in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

/// Resident memory now.
fn rss(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS:")
}

/// Peak resident memory since the last [`reset_peak`].
pub(crate) fn peak_rss(pid: u32) -> u64 {
    status_bytes(pid, "VmHWM:")
}

/// Resets the peak (`VmHWM`) to the current RSS (proc(5), clear_refs 5).
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

pub(crate) const MB: u64 = 1024 * 1024;

/// Waits for `child` to exit (at most `limit`), killing it after that.
fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The binary, with nothing from the test's environment that configures it.
fn relay_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_postmark-relay"));
    cmd.env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("POSTMARK_") {
            cmd.env_remove(key);
        }
    }
    cmd
}
