//! One SMTP connection: reads lines, feeds them to mailin's state machine,
//! writes its replies, and upgrades to TLS after STARTTLS.
//!
//! This replaces mailin-embedded's connection loop, which cannot tell the
//! handler whether TLS is active or which connection it serves. It also
//! corrects four things mailin's state machine does unlike Postmark, each
//! of which would break a pooled client:
//! - MAIL before AUTH gets `503` there; Postmark says `530`.
//! - RSET or EHLO after a successful AUTH put mailin back into "must
//!   authenticate" (MAIL then gets `503`); Postmark keeps the login.
//! - A failed end of DATA leaves mailin in DATA mode, so the next command
//!   would be taken as message text.
//! - STARTTLS is accepted when TLS is already active.
//!
//! For the middle two the driver rebuilds the session: a fresh mailin
//! session, marked TLS if the connection is, replays EHLO and (if logged in)
//! an AUTH that the handler accepts without counting.

use crate::handler::{ConnState, PostmarkHandler};
use crate::shared::{lock, Shared};
use mailin::{Action, AuthMechanism, Response, Session, SessionBuilder};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// A connection idle this long is closed, so stray threads end eventually.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// `AUTH PLAIN` for `\0x\0x`: the replayed login only needs to reach the
/// handler, which accepts anything while replaying.
const REPLAY_AUTH: &[u8] = b"AUTH PLAIN AHgAeA==\r\n";

/// Serves one accepted connection until the client leaves or it fails.
pub(crate) fn serve(
    stream: TcpStream,
    conn_id: u64,
    shared: Arc<Shared>,
    tls: Option<Arc<ServerConfig>>,
) {
    // Errors only mean the client went away; the fake has nobody to tell.
    let _ = serve_inner(stream, conn_id, shared, tls);
}

fn serve_inner(
    stream: TcpStream,
    conn_id: u64,
    shared: Arc<Shared>,
    tls: Option<Arc<ServerConfig>>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let ip = stream
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a| a.ip());
    let greeting_delay = lock(&shared.faults).greeting_delays.pop_front();
    if let Some(delay) = greeting_delay {
        std::thread::sleep(delay);
    }
    let mut driver = Driver::new(ip, conn_id, shared, tls.is_some());
    let mut reader = BufReader::new(stream);
    reply(reader.get_mut(), &driver.session.greeting())?;
    if let (Next::StartTls, Some(config)) = (driver.run(&mut reader)?, tls) {
        // Bytes the client pipelined after STARTTLS are dropped with the
        // buffer, as RFC 3207 requires.
        let tcp = reader.into_inner();
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        driver.tls_started();
        let mut reader = BufReader::new(StreamOwned::new(conn, tcp));
        driver.run(&mut reader)?;
    }
    Ok(())
}

enum Next {
    Closed,
    StartTls,
}

/// mailin's session plus the corrections described in the module docs.
struct Driver {
    builder: SessionBuilder,
    session: Session<PostmarkHandler>,
    handler: PostmarkHandler,
    conn: Rc<RefCell<ConnState>>,
    ip: IpAddr,
    require_auth: bool,
    tls_offered: bool,
    /// Between the `354` and the final `.` line.
    in_data: bool,
    shared: Arc<Shared>,
    /// Injected fault for the DATA body in progress, chosen at its `354`.
    data_fault: DataFault,
}

/// What to do to the DATA body in progress (see the `Faults` fields).
#[derive(Clone, Copy, PartialEq, Eq)]
enum DataFault {
    None,
    Reset,
    Vanish,
}

impl Driver {
    fn new(ip: IpAddr, conn_id: u64, shared: Arc<Shared>, tls_offered: bool) -> Driver {
        let require_auth = shared.opts.require_auth;
        let mut builder = SessionBuilder::new("fake-postmark.localhost");
        if tls_offered {
            builder.enable_start_tls();
        } else {
            // mailin only allows AUTH under TLS unless told otherwise.
            builder.insecure_enable_plaintext_auth();
        }
        if require_auth {
            builder
                .enable_auth(AuthMechanism::Plain)
                .enable_auth(AuthMechanism::Login);
        }
        let conn = Rc::new(RefCell::new(ConnState::new(conn_id)));
        let handler = PostmarkHandler::new(Arc::clone(&shared), Rc::clone(&conn));
        let session = builder.build(ip, handler.clone());
        Driver {
            builder,
            session,
            handler,
            conn,
            ip,
            require_auth,
            tls_offered,
            in_data: false,
            shared,
            data_fault: DataFault::None,
        }
    }

    fn tls_started(&mut self) {
        self.conn.borrow_mut().tls = true;
        self.session.tls_active();
    }

    fn run<S: Read + Write>(&mut self, reader: &mut BufReader<S>) -> io::Result<Next> {
        let mut line = Vec::with_capacity(128);
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(Next::Closed);
            }
            if let Some(next) = self.inject(&line, reader.get_mut())? {
                return Ok(next);
            }
            let res = self.handle_line(&line);
            reply(reader.get_mut(), &res)?;
            match res.action {
                Action::Close => return Ok(Next::Closed),
                Action::UpgradeTls => return Ok(Next::StartTls),
                Action::Reply | Action::NoReply => {}
            }
        }
    }

    /// Applies a fault the test asked for at this line, if any; `Some`
    /// ends the connection (after whatever the fault wrote).
    fn inject<W: Write>(&mut self, line: &[u8], out: &mut W) -> io::Result<Option<Next>> {
        if self.in_data {
            match self.data_fault {
                DataFault::Reset => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "injected reset in DATA",
                    ));
                }
                DataFault::Vanish if line == b".\r\n" => {
                    // Record the transaction as taken, then say nothing.
                    let _ = self.handle_line(line);
                    return Ok(Some(Next::Closed));
                }
                _ => {}
            }
            if line == b".\r\n" {
                let delay = lock(&self.shared.faults).data_reply_delay;
                if let Some(delay) = delay {
                    std::thread::sleep(delay);
                }
            }
            return Ok(None);
        }
        if verb(line) == "STARTTLS" && self.tls_offered && !self.conn.borrow().tls {
            let mut faults = lock(&self.shared.faults);
            if faults.broken_starttls > 0 {
                faults.broken_starttls -= 1;
                drop(faults);
                out.write_all(b"220 2.0.0 Ready to start TLS\r\n")?;
                out.write_all(b"this is not a TLS handshake\r\n")?;
                out.flush()?;
                return Ok(Some(Next::Closed));
            }
        }
        Ok(None)
    }

    fn handle_line(&mut self, line: &[u8]) -> Response {
        if self.in_data {
            self.conn.borrow_mut().push_raw_data(line);
            let res = self.session.process(line);
            if line == b".\r\n" {
                self.in_data = false;
                if res.is_error && res.action != Action::Close {
                    // Leave DATA mode: mailin would stay in it.
                    self.conn.borrow_mut().reset_transaction();
                    self.rebuild(None);
                }
            }
            return res;
        }
        let (authed, tls) = {
            let conn = self.conn.borrow();
            (conn.auth_user.is_some(), conn.tls)
        };
        match verb(line).as_str() {
            "MAIL" if self.require_auth && !authed => {
                return custom(530, "5.7.0 Authentication required");
            }
            "STARTTLS" if !self.tls_offered || tls => {
                return custom(503, "5.5.1 STARTTLS not available");
            }
            "RSET" if authed => {
                self.conn.borrow_mut().reset_transaction();
                self.rebuild(None);
                return custom(250, "2.0.0 Ok");
            }
            "EHLO" if authed => {
                self.conn.borrow_mut().reset_transaction();
                return self.rebuild(Some(line));
            }
            _ => {}
        }
        let res = self.session.process(line);
        if res.code == 354 {
            self.in_data = true;
            let mut faults = lock(&self.shared.faults);
            self.data_fault = if faults.reset_in_data > 0 {
                faults.reset_in_data -= 1;
                DataFault::Reset
            } else if faults.vanish_after_data > 0 {
                faults.vanish_after_data -= 1;
                DataFault::Vanish
            } else {
                DataFault::None
            };
        }
        res
    }

    /// Replaces mailin's session by a fresh one in the state "greeted (and
    /// logged in, if the connection is)", answering `ehlo` (the client's
    /// EHLO line) or a replayed EHLO. Keeps the old session if EHLO fails.
    fn rebuild(&mut self, ehlo: Option<&[u8]>) -> Response {
        let (tls, authed, helo) = {
            let conn = self.conn.borrow();
            let helo = conn.helo.clone().unwrap_or_else(|| "localhost".into());
            (conn.tls, conn.auth_user.is_some(), helo)
        };
        let mut session = self.builder.build(self.ip, self.handler.clone());
        if tls {
            session.tls_active();
        }
        let replayed_ehlo = format!("EHLO {helo}\r\n");
        let res = session.process(ehlo.unwrap_or(replayed_ehlo.as_bytes()));
        if res.is_error {
            return res;
        }
        if authed {
            self.conn.borrow_mut().replaying = true;
            session.process(REPLAY_AUTH);
            self.conn.borrow_mut().replaying = false;
        }
        self.session = session;
        res
    }
}

/// The command word of a line, uppercased.
fn verb(line: &[u8]) -> String {
    let end = line
        .iter()
        .position(|b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end]).to_ascii_uppercase()
}

fn custom(code: u16, text: &str) -> Response {
    Response::custom(code, text.to_owned())
}

/// Writes a reply in one piece (one TLS record, one TCP segment).
fn reply<W: Write>(out: &mut W, res: &Response) -> io::Result<()> {
    let buf = res.buffer()?;
    if !buf.is_empty() {
        out.write_all(&buf)?;
        out.flush()?;
    }
    Ok(())
}
