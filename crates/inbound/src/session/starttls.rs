//! STARTTLS (RFC 3207): the command, the handshake, and the reset after
//! it: the session forgets HELO, any transaction and any AUTH, as if the
//! client had just connected.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Flow, Session, State};
use crate::handoff::Store;
use crate::reply;
use crate::tls::Conn;

impl<S, T> Session<S, T>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Store,
{
    /// The STARTTLS command.
    pub(crate) fn starttls(&mut self) -> Flow {
        if self.tls.is_none() {
            self.reply(reply::STARTTLS_NOT_OFFERED);
            Flow::Continue
        } else if self.is_tls() {
            self.reply(reply::ALREADY_TLS);
            Flow::Continue
        } else {
            self.reply(reply::READY_FOR_TLS);
            Flow::StartTls
        }
    }

    /// Runs the handshake on the plain stream. `false`: it failed (logged)
    /// and the connection is over.
    pub(crate) async fn start_tls(&mut self) -> bool {
        let Some(acceptor) = self.tls.as_ref().map(|tls| tls.acceptor()) else {
            return false;
        };
        let Conn::Plain(plain) = std::mem::replace(&mut self.stream, Conn::Gone) else {
            return false;
        };
        let timeout = self.settings().command_timeout;
        match tokio::time::timeout(timeout, acceptor.accept(plain)).await {
            Ok(Ok(tls)) => {
                self.stream = Conn::Tls(Box::new(tls));
                self.abandon_transaction().await;
                self.state = State::Command;
                self.helo = None;
                self.authenticated = false;
                self.client_name = None;
                tracing::debug!(client = %self.client(), "STARTTLS done.");
                true
            }
            Ok(Err(e)) => {
                tracing::info!(client = %self.client(), error = %e, "STARTTLS handshake failed; closing the connection.");
                false
            }
            Err(_) => {
                tracing::info!(client = %self.client(), "STARTTLS handshake timed out; closing the connection.");
                false
            }
        }
    }
}
