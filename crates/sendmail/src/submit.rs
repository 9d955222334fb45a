//! A tiny blocking SMTP client: one message to the local relay, plain
//! text, no AUTH (the relay needs none), every step bounded by a timeout.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// How long each step may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The TCP connect: a relay that is down must not hang the caller.
    pub connect: Duration,
    /// Greeting and each command's reply.
    pub command: Duration,
    /// The reply after the final dot: the relay commits to disk first.
    pub data_end: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            command: Duration::from_secs(60),
            data_end: Duration::from_secs(120),
        }
    }
}

/// One message to hand over.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// MAIL FROM; "" is the null sender.
    pub sender: &'a str,
    /// RCPT TO, one command each.
    pub recipients: &'a [String],
    /// The message with CRLF line endings, not yet dot-stuffed.
    pub data: &'a [u8],
}

/// Why the relay did not take the message; decides the exit code.
#[derive(Debug)]
pub enum SubmitError {
    /// No connection, a timeout, or a dropped connection: try again later.
    Unreachable(String),
    /// A `4xx` reply: try again later.
    Temporary(String),
    /// A `5xx` reply: the message will not be accepted as it is.
    Permanent(String),
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Unreachable(s) | SubmitError::Temporary(s) | SubmitError::Permanent(s) => {
                f.write_str(s)
            }
        }
    }
}

/// The address to dial for a listen address: a wildcard listener is
/// reached over loopback.
pub fn dial_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Sends one message; `Ok` holds the relay's final reply (`250 ... queued as ID`).
pub fn submit(
    addr: SocketAddr,
    helo: &str,
    envelope: &Envelope<'_>,
    timeouts: Timeouts,
) -> Result<String, SubmitError> {
    let stream = TcpStream::connect_timeout(&addr, timeouts.connect).map_err(|e| {
        SubmitError::Unreachable(format!("cannot connect to the relay at {addr}: {e}"))
    })?;
    let mut session = Session::new(stream, addr, timeouts).map_err(|e| session_io(addr, e))?;
    let result = session.transaction(helo, envelope);
    // Polite either way; the outcome is already decided.
    let _ = session.command("QUIT");
    result
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn session_io(addr: SocketAddr, e: io::Error) -> SubmitError {
    let what = match e.kind() {
        _ if is_timeout(&e) => "timed out waiting for",
        io::ErrorKind::UnexpectedEof => "connection closed by",
        _ => "lost the connection to",
    };
    SubmitError::Unreachable(format!("{what} the relay at {addr}: {e}"))
}

/// A reply: its code and full text (all lines, trimmed).
struct Reply {
    code: u16,
    text: String,
}

struct Session {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
    timeouts: Timeouts,
}

impl Session {
    fn new(stream: TcpStream, addr: SocketAddr, timeouts: Timeouts) -> io::Result<Session> {
        stream.set_read_timeout(Some(timeouts.command))?;
        stream.set_write_timeout(Some(timeouts.command))?;
        stream.set_nodelay(true)?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Session {
            writer: stream,
            reader,
            addr,
            timeouts,
        })
    }

    fn transaction(&mut self, helo: &str, envelope: &Envelope<'_>) -> Result<String, SubmitError> {
        let greeting = self.read_reply();
        self.expect("the connection", greeting, 2)?;
        let ehlo = self.command(&format!("EHLO {helo}"));
        let extensions = match ehlo {
            Ok(r) if r.code / 100 == 2 => r.text,
            Ok(r) if r.code / 100 == 5 => {
                let helo = self.command(&format!("HELO {helo}"));
                self.expect("HELO", helo, 2)?;
                String::new()
            }
            other => {
                self.expect("EHLO", other, 2)?;
                String::new()
            }
        };
        let mut mail = format!("MAIL FROM:<{}>", envelope.sender);
        if has_extension(&extensions, "SIZE") {
            mail.push_str(&format!(" SIZE={}", envelope.data.len()));
        }
        if has_extension(&extensions, "8BITMIME") && !envelope.data.is_ascii() {
            mail.push_str(" BODY=8BITMIME");
        }
        let reply = self.command(&mail);
        self.expect(&mail, reply, 2)?;
        for rcpt in envelope.recipients {
            let line = format!("RCPT TO:<{rcpt}>");
            let reply = self.command(&line);
            self.expect(&line, reply, 2)?;
        }
        let reply = self.command("DATA");
        self.expect("DATA", reply, 3)?;
        let reply = match self.send_data(envelope.data) {
            Err(e) if is_timeout(&e) => Err(e),
            sent => {
                let reply = self
                    .reader
                    .get_ref()
                    .set_read_timeout(Some(self.timeouts.data_end))
                    .and_then(|()| self.read_reply());
                // A relay that refused mid-body (and closed) still said why.
                match (sent, reply) {
                    (Err(e), Err(_)) => Err(e),
                    (_, reply) => reply,
                }
            }
        };
        self.expect("the message", reply, 2)
    }

    /// Classifies a reply: the wanted class passes, `4xx` is temporary,
    /// anything else permanent.
    fn expect(
        &self,
        what: &str,
        reply: io::Result<Reply>,
        class: u16,
    ) -> Result<String, SubmitError> {
        let reply = reply.map_err(|e| session_io(self.addr, e))?;
        let explain = || format!("the relay at {} refused {what}: {}", self.addr, reply.text);
        match reply.code / 100 {
            c if c == class => Ok(reply.text),
            4 => Err(SubmitError::Temporary(explain())),
            _ => Err(SubmitError::Permanent(explain())),
        }
    }

    fn command(&mut self, line: &str) -> io::Result<Reply> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())?;
        self.read_reply()
    }

    /// The body, dot-stuffed, then the terminating `.` line.
    fn send_data(&mut self, data: &[u8]) -> io::Result<()> {
        let mut out = io::BufWriter::with_capacity(64 * 1024, &self.writer);
        for line in data.split_inclusive(|&b| b == b'\n') {
            if line.first() == Some(&b'.') {
                out.write_all(b".")?;
            }
            out.write_all(line)?;
        }
        if !data.is_empty() && !data.ends_with(b"\r\n") {
            out.write_all(b"\r\n")?;
        }
        out.write_all(b".\r\n")?;
        out.flush()
    }

    fn read_reply(&mut self) -> io::Result<Reply> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a reply",
                ));
            }
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c));
            let Some(code) = code else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not an SMTP reply: {:?}", line.trim_end()),
                ));
            };
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(line.trim_end());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code, text });
            }
        }
    }
}

/// Whether an EHLO reply lists `keyword` (lines after the first).
fn has_extension(ehlo: &str, keyword: &str) -> bool {
    ehlo.lines().skip(1).any(|l| {
        l.get(4..)
            .and_then(|ext| ext.split_whitespace().next())
            .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn wildcard_listeners_are_dialed_on_loopback() {
        let d = |s: &str| dial_address(s.parse().unwrap()).to_string();
        assert_eq!(d("0.0.0.0:25"), "127.0.0.1:25");
        assert_eq!(d("[::]:2525"), "[::1]:2525");
        assert_eq!(d("10.1.2.3:25"), "10.1.2.3:25");
    }

    #[test]
    fn extensions_are_found() {
        let ehlo = "250-relay greets you\n250-SIZE 100\n250-8BITMIME\n250 PIPELINING";
        assert!(has_extension(ehlo, "size"));
        assert!(has_extension(ehlo, "8BITMIME"));
        assert!(!has_extension(ehlo, "AUTH"));
        assert!(!has_extension("250 SIZE", "SIZE"));
    }

    /// A scripted server: answers each line it reads with the next reply,
    /// records what it got.
    fn scripted(
        replies: &'static [&'static str],
    ) -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let mut got = Vec::new();
            let mut in_data = false;
            let mut replies = replies.iter();
            writer
                .write_all(replies.next().unwrap().as_bytes())
                .unwrap();
            loop {
                let mut line = Vec::new();
                if reader.read_until(b'\n', &mut line).unwrap() == 0 {
                    return got;
                }
                got.extend_from_slice(&line);
                if in_data && line != b".\r\n" {
                    continue;
                }
                in_data = line == b"DATA\r\n";
                let Some(r) = replies.next() else { return got };
                writer.write_all(r.as_bytes()).unwrap();
            }
        });
        (addr, handle)
    }

    #[test]
    fn a_whole_session_dot_stuffs_and_declares_size() {
        let (addr, server) = scripted(&[
            "220 hi\r\n",
            "250-hi\r\n250-SIZE 1000\r\n250 8BITMIME\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
            "250 2.0.0 Ok: queued as X1\r\n",
            "221 bye\r\n",
        ]);
        let rcpts = ["a@b".to_string(), "c@d".to_string()];
        let data = b"Subject: s\r\n\r\n.leading dot\r\nok\r\n";
        let env = Envelope {
            sender: "s@x",
            recipients: &rcpts,
            data,
        };
        let reply = submit(addr, "localhost", &env, Timeouts::default()).unwrap();
        assert_eq!(reply, "250 2.0.0 Ok: queued as X1");
        let got = String::from_utf8(server.join().unwrap()).unwrap();
        assert_eq!(
            got,
            "EHLO localhost\r\nMAIL FROM:<s@x> SIZE=32\r\nRCPT TO:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n\
             Subject: s\r\n\r\n..leading dot\r\nok\r\n.\r\nQUIT\r\n"
        );
    }

    #[test]
    fn replies_map_to_temporary_and_permanent() {
        let (addr, _server) = scripted(&[
            "220 hi\r\n",
            "250 hi\r\n",
            "250 ok\r\n",
            "452 4.5.3 Too many\r\n",
            "221 bye\r\n",
        ]);
        let rcpts = ["a@b".to_string()];
        let env = Envelope {
            sender: "",
            recipients: &rcpts,
            data: b"x\r\n",
        };
        let err = submit(addr, "localhost", &env, Timeouts::default()).unwrap_err();
        assert!(
            matches!(&err, SubmitError::Temporary(t) if t.contains("452 4.5.3")),
            "{err:?}"
        );

        let (addr, _server) = scripted(&["554 5.7.1 go away\r\n", "221 bye\r\n"]);
        let err = submit(addr, "localhost", &env, Timeouts::default()).unwrap_err();
        assert!(
            matches!(&err, SubmitError::Permanent(t) if t.contains("554")),
            "{err:?}"
        );
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let rcpts = ["a@b".to_string()];
        let env = Envelope {
            sender: "",
            recipients: &rcpts,
            data: b"x\r\n",
        };
        let timeouts = Timeouts {
            command: Duration::from_millis(200),
            ..Timeouts::default()
        };
        let err = submit(addr, "localhost", &env, timeouts).unwrap_err();
        assert!(matches!(err, SubmitError::Unreachable(_)), "{err:?}");
        drop(listener);
    }
}
