//! AUTH for apps that insist on authenticating (`accept_auth = true`):
//! PLAIN and LOGIN are offered and any credentials are accepted. The relay
//! itself is protected by `allowed_networks`, not by passwords.

use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Flow, Session, State};
use crate::handoff::Store;
use crate::reply;

/// Which line of an AUTH exchange comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    PlainResponse,
    LoginUsername,
    LoginPassword,
}

impl<S, T> Session<S, T>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Store,
{
    pub(crate) fn auth(&mut self, mechanism: u64, initial: &str) -> Flow {
        if !self.settings().accept_auth {
            self.reply(reply::AUTH_NOT_OFFERED);
        } else if self.authenticated {
            self.reply(reply::ALREADY_AUTHENTICATED);
        } else if self.tx.is_some() {
            self.reply(reply::NESTED_MAIL);
        } else if mechanism == AUTH_PLAIN && !initial.is_empty() {
            self.succeed();
        } else if mechanism == AUTH_PLAIN {
            self.prompt(Step::PlainResponse, reply::AUTH_CONTINUE);
        } else if mechanism == AUTH_LOGIN && !initial.is_empty() {
            self.prompt(Step::LoginPassword, reply::AUTH_PASSWORD);
        } else if mechanism == AUTH_LOGIN {
            self.prompt(Step::LoginUsername, reply::AUTH_USERNAME);
        } else {
            self.reply(reply::AUTH_MECHANISM);
        }
        Flow::Continue
    }

    pub(crate) fn auth_line(&mut self, step: Step, line: &[u8]) -> Flow {
        self.state = State::Command;
        if line.trim_ascii() == b"*" {
            self.reply(reply::AUTH_CANCELLED);
        } else if step == Step::LoginUsername {
            self.prompt(Step::LoginPassword, reply::AUTH_PASSWORD);
        } else {
            self.succeed();
        }
        Flow::Continue
    }

    fn prompt(&mut self, next: Step, text: &str) {
        self.state = State::Auth(next);
        self.reply(text);
    }

    fn succeed(&mut self) {
        self.authenticated = true;
        self.reply(reply::AUTH_OK);
    }
}
