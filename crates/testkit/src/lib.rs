//! A fake Postmark SMTP upstream for tests, and nothing else: never a
//! dependency of the shipped binary.
//!
//! [`FakePostmark`] is a real SMTP server on `127.0.0.1` with STARTTLS (a
//! throw-away CA whose PEM is at [`FakePostmark::ca_file`]), AUTH PLAIN and
//! LOGIN, and Postmark's rules: the Server API token as both username and
//! password, `ServerAPI key required` for an Account token, `... was not
//! found in your domains` for unverified senders, 50 recipients per message.
//! It records every accepted transaction byte for byte and injects faults on
//! request (failed MAIL/RCPT/DATA, dropped connections, being down, slow
//! greetings, broken STARTTLS, connections cut in or after DATA, slow
//! replies).
//!
//! The SMTP protocol is mailin's (an independent implementation, not our
//! inbound crate); this crate adds the accept loop, TLS and the Postmark
//! rules. Everything is blocking std threads, so it works from plain
//! `#[test]` and `#[tokio::test]` alike; its threads never keep a test
//! process alive.

#![forbid(unsafe_code)]

mod cert;
mod front;
mod handler;
mod postgres;
mod session;
mod shared;

pub use crate::cert::ServerCert;
pub use crate::postgres::{TestPostgres, PG_PASSWORD, PG_ROLE};

use crate::cert::TestPki;
use crate::front::Front;
use crate::shared::{lock, Reply, Shared};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

/// A running fake Postmark upstream. Dropping it stops accepting
/// connections, cuts the open ones and deletes its certificate files.
pub struct FakePostmark {
    shared: Arc<Shared>,
    front: Front,
    pki: TestPki,
}

/// How a [`FakePostmark`] behaves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// AUTH PLAIN/LOGIN succeed only with this as both username and password.
    pub server_token: String,
    /// Postmark SMTP Tokens (Access Key, Secret Key) accepted besides the
    /// Server API Token, each pair only together.
    pub smtp_tokens: Vec<(String, String)>,
    /// AUTH with this as username or password gets
    /// `535 5.7.8 ServerAPI key required`.
    pub account_token: Option<String>,
    /// Senders at these domains (MAIL FROM, or the `From:` header at the end
    /// of DATA) get `550 5.7.1 The from address you've used was not found in
    /// your domains`.
    pub unverified_domains: Vec<String>,
    /// The code of that refusal: 550 by default; Postmark's setup guide
    /// shows it as 422, which the relay must not treat as temporary.
    pub unverified_code: u16,
    /// Advertise and support STARTTLS (never implicit TLS). With TLS, AUTH
    /// is offered only after STARTTLS, like Postmark.
    pub tls: bool,
    /// MAIL before a successful AUTH gets `530 5.7.0`. When false, AUTH is
    /// not offered at all (a client configured with credentials will fail).
    pub require_auth: bool,
    /// Accepted recipients per transaction; the next RCPT gets
    /// `452 4.5.3 Too many recipients`.
    pub max_rcpt: usize,
}

impl Default for FakeOptions {
    fn default() -> FakeOptions {
        FakeOptions {
            server_token: "server-token".to_owned(),
            smtp_tokens: Vec::new(),
            account_token: None,
            unverified_domains: Vec::new(),
            unverified_code: 550,
            tls: true,
            require_auth: true,
            max_rcpt: 50,
        }
    }
}

/// One transaction the fake accepted with `250` after DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Which connection carried it: 1 for the first accepted, and so on.
    pub conn_id: u64,
    /// The MAIL FROM address, without angle brackets.
    pub mail_from: String,
    /// The accepted RCPT TO addresses, in order.
    pub rcpt_to: Vec<String>,
    /// The message as sent between DATA and the final `.` line, after
    /// dot-unstuffing; includes the line ending before the final `.`.
    pub data: Vec<u8>,
    /// The bytes exactly as the client sent them after the `354`, before
    /// any dot-unstuffing, up to and including the final `.` line: what a
    /// receiving server's own parser sees (for smuggling checks).
    pub raw_data: Vec<u8>,
    /// Whether the connection had done STARTTLS.
    pub tls: bool,
    /// The username of the successful AUTH on that connection.
    pub auth_user: Option<String>,
    /// MAIL FROM declared `BODY=8BITMIME`.
    pub body_8bit: bool,
}

impl FakePostmark {
    /// Starts a fake on `127.0.0.1` with a free port.
    ///
    /// # Panics
    /// If no port can be bound or the test certificates cannot be made.
    pub fn start(opts: FakeOptions) -> FakePostmark {
        let pki = TestPki::generate();
        let tls = opts.tls.then(|| pki.server_config());
        let shared = Arc::new(Shared::new(opts));
        let conn_shared = Arc::clone(&shared);
        let front = Front::start(move |stream, id| {
            session::serve(stream, id, Arc::clone(&conn_shared), tls.clone());
        });
        FakePostmark { shared, front, pki }
    }

    /// The port it listens on (on `127.0.0.1`); stays the same across
    /// [`set_down`](Self::set_down).
    pub fn port(&self) -> u16 {
        self.front.port()
    }

    /// PEM file of the test CA that signed its certificate (valid for
    /// `localhost`, `127.0.0.1` and `::1`); give it to clients as `ca_file`.
    pub fn ca_file(&self) -> &Path {
        self.pki.ca_file()
    }

    /// Transactions accepted so far, in order.
    pub fn messages(&self) -> Vec<Received> {
        lock(&self.shared.messages).clone()
    }

    /// Waits until at least `n` transactions were accepted or `timeout`
    /// passed, and returns all accepted so far (check the length).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let messages = lock(&self.shared.messages);
        let (messages, _) = self
            .shared
            .received
            .wait_timeout_while(messages, timeout, |m| m.len() < n)
            .unwrap_or_else(PoisonError::into_inner);
        messages.clone()
    }

    /// Successful AUTHs so far.
    pub fn logins(&self) -> usize {
        self.shared.logins.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far, including dropped ones.
    pub fn connections(&self) -> usize {
        self.front.connections()
    }

    /// Failed AUTHs so far (wrong token or Account token).
    pub fn auth_failures(&self) -> usize {
        self.shared.auth_failures.load(Ordering::SeqCst)
    }

    /// The next `n` ends of DATA get `reply` instead of `250`, e.g.
    /// `(451, "4.3.0 try later")`; those transactions are not recorded.
    /// Calls queue up: their replies are used in the order given.
    pub fn fail_next_transactions(&self, n: usize, reply: (u16, &str)) {
        let reply = Reply::new(reply.0, reply.1);
        lock(&self.shared.faults)
            .data_end
            .extend(std::iter::repeat_n(reply, n));
    }

    /// The next `n` MAIL FROM commands get `reply`. Calls queue up.
    pub fn fail_mail_from(&self, n: usize, reply: (u16, &str)) {
        let reply = Reply::new(reply.0, reply.1);
        lock(&self.shared.faults)
            .mail_from
            .extend(std::iter::repeat_n(reply, n));
    }

    /// Every RCPT TO `addr` (case-insensitive) gets `reply` from now on,
    /// e.g. `(550, "5.1.1 no such user")`.
    pub fn reject_recipient(&self, addr: &str, reply: (u16, &str)) {
        lock(&self.shared.faults)
            .recipients
            .insert(addr.to_ascii_lowercase(), Reply::new(reply.0, reply.1));
    }

    /// The next `n` RCPT TO commands get `reply`, whatever the address,
    /// e.g. `(451, "4.2.1 mailbox busy")`. Calls queue up.
    pub fn fail_next_recipients(&self, n: usize, reply: (u16, &str)) {
        let reply = Reply::new(reply.0, reply.1);
        lock(&self.shared.faults)
            .rcpt_next
            .extend(std::iter::repeat_n(reply, n));
    }

    /// The next `n` connections wait `delay` before their `220` greeting
    /// (to exceed a client's timeout). Calls queue up.
    pub fn delay_next_greetings(&self, n: usize, delay: Duration) {
        lock(&self.shared.faults)
            .greeting_delays
            .extend(std::iter::repeat_n(delay, n));
    }

    /// The next `n` STARTTLS commands get `220`, then a line of plain text
    /// instead of a TLS handshake, then the connection closes: the client's
    /// handshake fails.
    pub fn break_next_starttls(&self, n: usize) {
        lock(&self.shared.faults).broken_starttls += n;
    }

    /// The next `n` DATA bodies are cut: at the first body line the
    /// connection is closed with the rest unread (the client sees a reset).
    /// Nothing is recorded.
    pub fn reset_next_data(&self, n: usize) {
        lock(&self.shared.faults).reset_in_data += n;
    }

    /// The next `n` transactions are recorded as received at their final
    /// `.` line, and then the connection closes without a reply: the
    /// client cannot tell that the message was taken (the ambiguous case
    /// that makes a duplicate possible).
    pub fn close_before_next_data_replies(&self, n: usize) {
        lock(&self.shared.faults).vanish_after_data += n;
    }

    /// From now on every end of DATA waits `delay` before its reply
    /// (`None`: answer at once again): a slow upstream.
    pub fn set_data_reply_delay(&self, delay: Option<Duration>) {
        lock(&self.shared.faults).data_reply_delay = delay;
    }

    /// The next `n` accepted connections are closed at once, without a
    /// greeting. They still count in [`connections`](Self::connections).
    pub fn drop_next_connections(&self, n: usize) {
        self.front.drop_next_connections(n);
    }

    /// `true`: stop listening (connects are refused) and cut the open
    /// connections. `false`: listen again on the same port. Returns once
    /// the switch is done.
    ///
    /// # Panics
    /// If the port cannot be bound again (another process took it).
    pub fn set_down(&self, down: bool) {
        self.front.set_down(down);
    }
}
