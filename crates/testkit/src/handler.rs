//! Postmark's rules as a mailin `Handler`: which credentials pass, which
//! senders and recipients are refused, and what a finished transaction
//! records. One handler per connection; the session driver clones it when it
//! has to rebuild mailin's state machine.

use crate::shared::{lock, Reply, Shared};
use crate::Received;
use mailin::{Handler, Response};
use std::cell::RefCell;
use std::io;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Per-connection facts the handler and the session driver both need.
#[derive(Default)]
pub(crate) struct ConnState {
    pub(crate) id: u64,
    pub(crate) tls: bool,
    /// Set by a successful AUTH.
    pub(crate) auth_user: Option<String>,
    /// Last EHLO/HELO argument, to replay when the session is rebuilt.
    pub(crate) helo: Option<String>,
    /// While the driver replays commands into a fresh mailin session, AUTH
    /// succeeds without counting as a login.
    pub(crate) replaying: bool,
    txn: Transaction,
}

impl ConnState {
    pub(crate) fn new(id: u64) -> ConnState {
        ConnState {
            id,
            ..ConnState::default()
        }
    }

    /// Forgets the transaction in progress (RSET, failed DATA).
    pub(crate) fn reset_transaction(&mut self) {
        self.txn = Transaction::default();
    }

    /// Records one line of DATA as it came off the wire (before mailin
    /// unstuffs it), so [`Received::raw_data`] shows what was really sent.
    pub(crate) fn push_raw_data(&mut self, line: &[u8]) {
        self.txn.raw.extend_from_slice(line);
    }
}

/// The envelope and body of the transaction in progress.
#[derive(Default)]
struct Transaction {
    mail_from: String,
    rcpt_to: Vec<String>,
    data: Vec<u8>,
    /// The DATA lines as received, before dot-unstuffing.
    raw: Vec<u8>,
    /// MAIL FROM declared `BODY=8BITMIME`.
    body_8bit: bool,
}

/// mailin handler enforcing the fake's Postmark rules.
#[derive(Clone)]
pub(crate) struct PostmarkHandler {
    shared: Arc<Shared>,
    conn: Rc<RefCell<ConnState>>,
}

impl PostmarkHandler {
    pub(crate) fn new(shared: Arc<Shared>, conn: Rc<RefCell<ConnState>>) -> PostmarkHandler {
        PostmarkHandler { shared, conn }
    }

    fn authenticate(&mut self, user: &str, password: &str) -> Response {
        let mut conn = self.conn.borrow_mut();
        if conn.replaying {
            return mailin::response::AUTH_OK;
        }
        let opts = &self.shared.opts;
        let is_account = |s: &str| opts.account_token.as_deref() == Some(s);
        if is_account(user) || is_account(password) {
            self.shared.auth_failures.fetch_add(1, Ordering::SeqCst);
            return custom(535, "5.7.8 ServerAPI key required");
        }
        let smtp_token = opts
            .smtp_tokens
            .iter()
            .any(|(access, secret)| user == access && password == secret);
        if smtp_token || (user == opts.server_token && password == opts.server_token) {
            self.shared.logins.fetch_add(1, Ordering::SeqCst);
            conn.auth_user = Some(user.to_owned());
            return custom(235, "2.7.0 Authentication successful");
        }
        self.shared.auth_failures.fetch_add(1, Ordering::SeqCst);
        custom(535, "5.7.8 Authentication failed")
    }

    fn is_unverified(&self, address: &str) -> bool {
        let Some((_, domain)) = address.rsplit_once('@') else {
            return false;
        };
        let domain = domain.trim_end_matches('>');
        self.shared
            .opts
            .unverified_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }
}

impl Handler for PostmarkHandler {
    fn helo(&mut self, _ip: IpAddr, domain: &str) -> Response {
        self.conn.borrow_mut().helo = Some(domain.to_owned());
        mailin::response::OK
    }

    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        if let Some(reply) = lock(&self.shared.faults).mail_from.pop_front() {
            return reply.response();
        }
        if self.is_unverified(from) {
            return unverified_sender(self.shared.opts.unverified_code);
        }
        let mut conn = self.conn.borrow_mut();
        conn.reset_transaction();
        conn.txn.mail_from = from.to_owned();
        custom(250, "2.1.0 Ok")
    }

    fn rcpt(&mut self, to: &str) -> Response {
        if let Some(reply) = lock(&self.shared.faults).rcpt_next.pop_front() {
            return reply.response();
        }
        let rejected: Option<Reply> = lock(&self.shared.faults)
            .recipients
            .get(&to.to_ascii_lowercase())
            .cloned();
        if let Some(reply) = rejected {
            return reply.response();
        }
        let mut conn = self.conn.borrow_mut();
        if conn.txn.rcpt_to.len() >= self.shared.opts.max_rcpt {
            return custom(452, "4.5.3 Too many recipients");
        }
        conn.txn.rcpt_to.push(to.to_owned());
        custom(250, "2.1.5 Ok")
    }

    fn data_start(&mut self, _domain: &str, _from: &str, is8bit: bool, _to: &[String]) -> Response {
        let mut conn = self.conn.borrow_mut();
        conn.txn.data.clear();
        conn.txn.raw.clear();
        conn.txn.body_8bit = is8bit;
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        // mailin hands over each line with its line ending, already
        // dot-unstuffed, so the concatenation is the message as sent.
        self.conn.borrow_mut().txn.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let txn = std::mem::take(&mut self.conn.borrow_mut().txn);
        if let Some(reply) = lock(&self.shared.faults).data_end.pop_front() {
            return reply.response();
        }
        if header_from(&txn.data).is_some_and(|from| self.is_unverified(&from)) {
            return unverified_sender(self.shared.opts.unverified_code);
        }
        let conn = self.conn.borrow();
        let received = Received {
            conn_id: conn.id,
            mail_from: txn.mail_from,
            rcpt_to: txn.rcpt_to,
            data: txn.data,
            raw_data: txn.raw,
            tls: conn.tls,
            auth_user: conn.auth_user.clone(),
            body_8bit: txn.body_8bit,
        };
        lock(&self.shared.messages).push(received);
        self.shared.received.notify_all();
        custom(250, "2.0.0 Ok: queued")
    }

    fn auth_plain(&mut self, _authz: &str, user: &str, password: &str) -> Response {
        self.authenticate(user, password)
    }

    fn auth_login(&mut self, user: &str, password: &str) -> Response {
        self.authenticate(user, password)
    }
}

fn custom(code: u16, text: &str) -> Response {
    Response::custom(code, text.to_owned())
}

/// Postmark's refusal of a sender whose domain is not verified, with
/// `code` (550, or 422 as Postmark's own setup guide shows it).
fn unverified_sender(code: u16) -> Response {
    let status = if code / 100 == 4 { "4.7.1" } else { "5.7.1" };
    custom(
        code,
        &format!("{status} The from address you've used was not found in your domains"),
    )
}

/// The address in the message's `From:` header, if there is one.
fn header_from(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let mut value: Option<String> = None;
    for line in text.split("\r\n") {
        if line.is_empty() {
            break;
        }
        match value.as_mut() {
            Some(v) if line.starts_with([' ', '\t']) => v.push_str(line),
            Some(_) => break,
            None => {
                if let Some((name, rest)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("from") {
                        value = Some(rest.to_owned());
                    }
                }
            }
        }
    }
    let value = value?;
    let address = match (value.rfind('<'), value.rfind('>')) {
        (Some(start), Some(end)) if start < end => &value[start + 1..end],
        _ => value.trim(),
    };
    Some(address.to_owned())
}

#[cfg(test)]
mod tests {
    use super::header_from;

    #[test]
    fn finds_the_from_address() {
        let msg =
            b"Subject: x\r\nFrom: \"A, B\"\r\n <a@Example.com>\r\nTo: c@d\r\n\r\nFrom: no@x\r\n";
        assert_eq!(header_from(msg).as_deref(), Some("a@Example.com"));
        assert_eq!(
            header_from(b"from: bare@host.test\r\n\r\n").as_deref(),
            Some("bare@host.test")
        );
        assert_eq!(header_from(b"To: a@b\r\n\r\nFrom: body@x\r\n"), None);
    }
}
