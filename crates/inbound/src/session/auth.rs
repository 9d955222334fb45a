//! AUTH PLAIN and LOGIN. Two modes, never both (config refuses it):
//!
//! - `[[clients]]`: the credentials are checked against each client's
//!   argon2id hash (on a blocking thread: argon2 is slow on purpose). A
//!   non-loopback client may authenticate only over TLS, so a password
//!   never crosses the network in plain text. After a few failures each
//!   further answer is delayed, to slow down guessing.
//! - `accept_auth = true`: any credentials are accepted, for apps that
//!   insist on authenticating; the relay is then protected by
//!   `allowed_networks`, not by passwords.

use std::time::Duration;

use argon2::{PasswordHash, PasswordVerifier};
use base64ct::{Base64, Encoding};
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Flow, Session, State};
use crate::handoff::Store;
use crate::reply;

/// Failed attempts answered at once; each one after that waits
/// [`FAILURE_DELAY`] first.
const FREE_FAILURES: u32 = 3;
const FAILURE_DELAY: Duration = Duration::from_secs(1);

/// Which line of an AUTH exchange comes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    PlainResponse,
    LoginUsername,
    /// The username, decoded, waiting for its password.
    LoginPassword(Vec<u8>),
}

impl<S, T> Session<S, T>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Store,
{
    /// Whether AUTH is offered to this client now (in EHLO).
    pub(crate) fn auth_offered(&self) -> bool {
        let s = self.settings();
        s.accept_auth || (!s.clients.is_empty() && (self.is_tls() || self.is_loopback()))
    }

    /// `server.require_tls` applies and the client has not done STARTTLS.
    pub(crate) fn must_starttls(&self) -> bool {
        self.settings().require_tls && !self.is_tls() && !self.is_loopback()
    }

    pub(crate) async fn auth(&mut self, mechanism: u64, initial: &str) -> Flow {
        let s = self.settings();
        let checked = !s.clients.is_empty();
        if !s.accept_auth && !checked {
            self.reply(reply::AUTH_NOT_OFFERED);
        } else if self.must_starttls() {
            self.reply(reply::STARTTLS_FIRST);
        } else if checked && !self.is_tls() && !self.is_loopback() {
            self.reply(reply::ENCRYPTION_REQUIRED);
        } else if self.authenticated {
            self.reply(reply::ALREADY_AUTHENTICATED);
        } else if self.tx.is_some() {
            self.reply(reply::NESTED_MAIL);
        } else if mechanism == AUTH_PLAIN && !initial.is_empty() {
            self.plain(initial.as_bytes()).await;
        } else if mechanism == AUTH_PLAIN {
            self.prompt(Step::PlainResponse, reply::AUTH_CONTINUE);
        } else if mechanism == AUTH_LOGIN && !initial.is_empty() {
            match decode(initial.as_bytes()) {
                Some(username) => self.prompt(Step::LoginPassword(username), reply::AUTH_PASSWORD),
                None => self.reply(reply::AUTH_UNDECODABLE),
            }
        } else if mechanism == AUTH_LOGIN {
            self.prompt(Step::LoginUsername, reply::AUTH_USERNAME);
        } else {
            self.reply(reply::AUTH_MECHANISM);
        }
        Flow::Continue
    }

    pub(crate) async fn auth_line(&mut self, step: Step, line: &[u8]) -> Flow {
        self.state = State::Command;
        let line = line.trim_ascii();
        if line == b"*" {
            self.reply(reply::AUTH_CANCELLED);
            return Flow::Continue;
        }
        match step {
            Step::PlainResponse => self.plain(line).await,
            Step::LoginUsername => match decode(line) {
                Some(username) => self.prompt(Step::LoginPassword(username), reply::AUTH_PASSWORD),
                None => self.reply(reply::AUTH_UNDECODABLE),
            },
            Step::LoginPassword(username) => match decode(line) {
                Some(password) => self.check(&username, password).await,
                None => self.reply(reply::AUTH_UNDECODABLE),
            },
        }
        Flow::Continue
    }

    /// A PLAIN response: base64 of `authzid NUL authcid NUL password`.
    async fn plain(&mut self, response: &[u8]) {
        let Some(decoded) = decode(response) else {
            return self.reply(reply::AUTH_UNDECODABLE);
        };
        let mut parts = decoded.splitn(3, |&b| b == 0);
        let (Some(authzid), Some(authcid), Some(password)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return self.reply(reply::AUTH_UNDECODABLE);
        };
        // Acting for another identity is not something clients may do.
        if !authzid.is_empty() && authzid != authcid {
            return self.fail(None).await;
        }
        self.check(authcid, password.to_vec()).await;
    }

    /// Checks a username and password, answers `235` or `535`.
    async fn check(&mut self, username: &[u8], password: Vec<u8>) {
        if self.settings().accept_auth {
            self.authenticated = true;
            return self.reply(reply::AUTH_OK);
        }
        let clients = &self.settings().clients;
        let found = clients
            .iter()
            .find(|c| c.name.as_bytes() == username)
            .map(|c| c.name.clone());
        // An unknown name still costs one verification, so the answer's
        // timing does not tell which names exist.
        let hash = clients
            .iter()
            .find(|c| c.name.as_bytes() == username)
            .or(clients.first())
            .map(|c| c.password_hash.expose().to_owned())
            .unwrap_or_default();
        // Closed never: the semaphore lives as long as the listener.
        let _permit = self.verifications.clone().acquire_owned().await.ok();
        let verified = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|h| {
                argon2::Argon2::default()
                    .verify_password(&password, &h)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        match found {
            Some(name) if verified => {
                tracing::info!(peer = %self.client(), client = %name, "Client authenticated.");
                self.authenticated = true;
                self.client_name = Some(name);
                self.rates.auth_succeeded(self.client().ip());
                self.reply(reply::AUTH_OK);
            }
            found => self.fail(found).await,
        }
    }

    /// Answers `535`, after a delay once the client's address has failed
    /// often (in this session or others).
    async fn fail(&mut self, known: Option<String>) {
        let failures = self
            .rates
            .auth_failed(self.client().ip(), std::time::Instant::now());
        tracing::warn!(
            peer = %self.client(),
            client = known.as_deref().unwrap_or(""),
            failures,
            "AUTH failed: wrong username or password."
        );
        if failures > FREE_FAILURES {
            tokio::time::sleep(FAILURE_DELAY).await;
        }
        self.reply(reply::AUTH_INVALID);
    }

    fn prompt(&mut self, next: Step, text: &str) {
        self.state = State::Auth(next);
        self.reply(text);
    }
}

/// Base64 as AUTH sends it; `=` alone is the empty response (RFC 4954).
fn decode(text: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(text.trim_ascii()).ok()?;
    if text == "=" {
        return Some(Vec::new());
    }
    Base64::decode_vec(text).ok()
}
