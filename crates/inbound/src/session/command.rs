//! The SMTP verbs: one method per command, each answering with a reply
//! from [`crate::reply`].

use smtp_proto::{Error as ParseError, Request};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Flow, Session, State, Transaction};
use crate::decoder::Decoder;
use crate::handoff::Store;
use crate::queue_id::new_queue_id;
use crate::reply;
use crate::spool::Incoming;

impl<S, T> Session<S, T>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Store,
{
    /// Handles one complete command line (with its line ending); a reply
    /// that refuses it is logged (see [`crate::refusals`]).
    pub(crate) async fn command(&mut self, line: &[u8]) -> Flow {
        let start = self.out.len();
        let flow = self.dispatch(line).await;
        crate::refusals::log(
            self.client(),
            self.client_name.as_deref(),
            line,
            &self.out[start.min(self.out.len())..],
        );
        flow
    }

    /// Runs one command line.
    async fn dispatch(&mut self, line: &[u8]) -> Flow {
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request,
            Err(e) => {
                self.parse_error(e);
                return Flow::Continue;
            }
        };
        if matches!(
            request,
            Request::Rset | Request::Ehlo { .. } | Request::Helo { .. }
        ) {
            self.abandon_transaction().await;
        }
        match request {
            Request::Ehlo { host } => self.hello(&host, "ESMTP"),
            Request::Helo { host } => self.hello(&host, "SMTP"),
            Request::Mail { .. } if has_forbidden_bytes(line) => self.reply(reply::BAD_SENDER),
            Request::Rcpt { .. } if has_forbidden_bytes(line) => self.reply(reply::BAD_RECIPIENT),
            Request::Mail { from }
                if from.flags & smtp_proto::MAIL_SMTPUTF8 != 0 || !from.address.is_ascii() =>
            {
                self.reply(reply::NO_SMTPUTF8)
            }
            Request::Rcpt { to } if !to.address.is_ascii() => self.reply(reply::NO_SMTPUTF8),
            Request::Mail { from } => self.mail(&from.address, from.size as u64),
            Request::Rcpt { to } => self.rcpt(&to.address),
            Request::Data => self.data(),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last),
            Request::Auth {
                mechanism,
                initial_response,
            } => return self.auth(mechanism, &initial_response).await,
            Request::StartTls => return self.starttls(),
            Request::Rset => {
                self.tx = None;
                self.reply(reply::RESET_OK);
            }
            Request::Noop { .. } => self.reply(reply::OK),
            Request::Vrfy { .. } => self.reply(reply::CANNOT_VRFY),
            Request::Help { .. } => self.reply(reply::HELP),
            Request::Quit => {
                let bye = reply::bye(&self.settings().hostname);
                self.reply(bye);
                return Flow::Close;
            }
            _ => self.reply(reply::NOT_IMPLEMENTED),
        }
        Flow::Continue
    }

    fn parse_error(&mut self, error: ParseError) {
        let text = match error {
            ParseError::UnknownCommand => reply::UNKNOWN_COMMAND.to_string(),
            ParseError::InvalidSenderAddress => reply::BAD_SENDER.to_string(),
            ParseError::InvalidRecipientAddress => reply::BAD_RECIPIENT.to_string(),
            ParseError::SyntaxError { syntax } => format!("501 5.5.4 Syntax: {syntax}\r\n"),
            ParseError::InvalidParameter { param } => {
                format!("501 5.5.4 Invalid parameter {param}\r\n")
            }
            ParseError::UnsupportedParameter { param } => {
                format!("555 5.5.4 Unsupported parameter {}\r\n", clean(&param))
            }
            _ => reply::SYNTAX_ERROR.to_string(),
        };
        self.reply(text);
    }

    fn hello(&mut self, host: &str, protocol: &'static str) {
        self.tx = None;
        self.helo = Some((clean(host), protocol));
        let (starttls, auth) = (self.tls.is_some() && !self.is_tls(), self.auth_offered());
        let s = self.settings();
        let text = if protocol == "ESMTP" {
            reply::ehlo(
                &s.hostname,
                &clean(host),
                s.max_message_size,
                starttls,
                auth,
            )
        } else {
            reply::helo(&s.hostname)
        };
        self.reply(text);
    }

    fn mail(&mut self, address: &str, declared_size: u64) {
        if self.helo.is_none() {
            self.reply(reply::HELO_FIRST);
        } else if self.must_starttls() {
            self.reply(reply::STARTTLS_FIRST);
        } else if self.settings().require_auth && !self.authenticated {
            self.reply(reply::AUTH_REQUIRED);
        } else if self.tx.is_some() {
            self.reply(reply::NESTED_MAIL);
        } else if declared_size > self.settings().max_message_size {
            self.reply(reply::MESSAGE_TOO_BIG);
        } else if let Some(refused) = self.refuse_sender("Sender", address) {
            self.store()
                .refused(self.client_name.as_deref(), crate::Refusal::Sender);
            self.reply(refused);
        } else if let Some(limited) = self.over_rate() {
            self.store()
                .refused(self.client_name.as_deref(), crate::Refusal::Rate);
            self.reply(limited);
        } else {
            self.tx = Some(Transaction {
                sender: address.to_string(),
                recipients: Vec::new(),
                chunks: None,
            });
            self.reply(reply::SENDER_OK);
        }
    }

    /// The `450` for a MAIL over the client's `rate` (or, without AUTH,
    /// over `server.rate` for this IP); `None` takes one message from the
    /// bucket.
    fn over_rate(&self) -> Option<String> {
        let sender = match self.authenticated_client() {
            Some(c) => crate::rate::Sender::Client {
                name: &c.name,
                rate: c.rate,
            },
            None => crate::rate::Sender::Anonymous(self.client().ip()),
        };
        let rate = self.rates.take(sender, std::time::Instant::now()).err()?;
        let who = match sender {
            crate::rate::Sender::Client { name, .. } => format!("client {name}"),
            crate::rate::Sender::Anonymous(ip) => ip.to_string(),
        };
        Some(reply::rate_limited(&who, rate))
    }

    /// The reply refusing `address` under the authenticated client's
    /// `senders`, if it is refused. The null sender passes (bounces carry
    /// no sender); its `From:` is still checked after DATA.
    pub(crate) fn refuse_sender(&self, what: &str, address: &str) -> Option<String> {
        let client = self.authenticated_client()?;
        (!address.is_empty() && !client.may_send_as(address))
            .then(|| reply::sender_not_allowed(what, address, &client.name))
    }

    fn rcpt(&mut self, address: &str) {
        let max = self.settings().max_recipients;
        let Some(tx) = self.tx.as_mut() else {
            return self.reply(reply::MAIL_FIRST);
        };
        if address.is_empty() {
            self.reply(reply::BAD_RECIPIENT);
        } else if tx.recipients.len() >= max {
            self.reply(reply::TOO_MANY_RECIPIENTS);
        } else {
            tx.recipients.push(address.to_string());
            self.reply(reply::RECIPIENT_OK);
        }
    }

    fn data(&mut self) {
        match &self.tx {
            None => self.reply(reply::MAIL_FIRST),
            Some(tx) if tx.recipients.is_empty() => self.reply(reply::RCPT_FIRST),
            Some(tx) if tx.chunks.is_some() => self.reply(reply::NESTED_MAIL),
            Some(_) => {
                let decoder = Decoder::data(self.settings().max_message_size);
                self.state = State::Data(Incoming::new(new_queue_id(), decoder));
                self.reply(reply::START_DATA);
            }
        }
    }

    fn bdat(&mut self, size: usize, last: bool) {
        // The chunk's bytes follow the command whatever we answer, so they
        // are always read; `end_of_chunk` decides the reply.
        let limit = self.settings().max_message_size;
        if let Some(tx) = self.tx.as_mut() {
            if !tx.recipients.is_empty() && tx.chunks.is_none() {
                tx.chunks = Some(Incoming::new(new_queue_id(), Decoder::bdat(limit)));
            }
        }
        self.state = State::Bdat {
            remaining: size,
            last,
        };
    }
}

/// A bare CR or a NUL in a MAIL/RCPT line: smtp-proto drops them from
/// the address, but an address that contained them could forge protocol
/// lines or headers downstream, so the command is refused outright. So is
/// a line that is not UTF-8: smtp-proto would replace the bad bytes with
/// U+FFFD and the relay would send mail for an address nobody gave.
fn has_forbidden_bytes(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.iter().any(|&b| matches!(b, b'\r' | b'\n' | b'\0')) || std::str::from_utf8(line).is_err()
}

/// Client text echoed in replies or headers: one line (control characters
/// scrubbed), at most 255 characters.
fn clean(s: &str) -> String {
    relay_message::scrub(s).chars().take(255).collect()
}
