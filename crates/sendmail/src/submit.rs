//! Hands one message to the local relay on mail-send's SMTP client: plain
//! TCP (the relay listens on loopback or a private address), no TLS, no
//! AUTH (the relay needs none), every step bounded by a timeout. Owns what
//! mail-send leaves to its caller: the greeting's timeout, HELO when EHLO
//! is refused, SIZE and BODY declared when offered, and sorting failures
//! into the exit codes' three kinds.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use mail_send::smtp::message::Parameters;
use mail_send::smtp::AssertReply;
use mail_send::SmtpClient;
use smtp_proto::{Response, EXT_8BIT_MIME, EXT_SIZE};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long each step may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The TCP connect: a relay that is down must not hang the caller.
    pub connect: Duration,
    /// Greeting and each command's reply.
    pub command: Duration,
    /// DATA, the body and the reply after it: the relay commits to disk
    /// before it answers.
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

/// Sends one message; `Ok` holds the relay's final reply (`250 ... queued
/// as ID`).
pub async fn submit(
    addr: SocketAddr,
    helo: &str,
    envelope: &Envelope<'_>,
    timeouts: Timeouts,
) -> Result<String, SubmitError> {
    let mut client = SmtpClient::connect(addr, timeouts.connect)
        .await
        .map_err(|e| {
            let why = match e {
                mail_send::Error::Timeout => "timed out".to_string(),
                e => io_text(&e),
            };
            SubmitError::Unreachable(format!("cannot connect to the relay at {addr}: {why}"))
        })?;
    // Small local writes (commands, the body's end) must not wait for a
    // delayed ACK.
    let _ = client.stream.set_nodelay(true);
    client.timeout = timeouts.command;
    let session = Session { addr, timeouts };
    let result = session.transaction(&mut client, helo, envelope).await;
    if !matches!(result, Err(SubmitError::Unreachable(_))) {
        // Polite either way; the outcome is already decided.
        let _ = client.quit().await;
    }
    result
}

/// What every step needs to know to report a failure.
struct Session {
    addr: SocketAddr,
    timeouts: Timeouts,
}

impl Session {
    async fn transaction(
        &self,
        client: &mut SmtpClient<TcpStream>,
        helo: &str,
        envelope: &Envelope<'_>,
    ) -> Result<String, SubmitError> {
        // mail-send bounds each command, not the wait for the greeting.
        let greeting = tokio::time::timeout(self.timeouts.command, client.read())
            .await
            .unwrap_or(Err(mail_send::Error::Timeout));
        greeting
            .and_then(|reply| reply.assert_positive_completion())
            .map_err(|e| self.failed("the connection", e))?;

        let mut params = Parameters::new();
        match client.ehlo(helo).await {
            Ok(ehlo) => {
                if ehlo.has_capability(EXT_SIZE) {
                    params.add(("SIZE".to_string(), envelope.data.len().to_string()));
                }
                if ehlo.has_capability(EXT_8BIT_MIME) && !envelope.data.is_ascii() {
                    params.add(("BODY", "8BITMIME"));
                }
            }
            Err(mail_send::Error::UnexpectedReply(reply)) if reply.code / 100 == 5 => client
                .cmd(format!("HELO {helo}\r\n"))
                .await
                .and_then(|reply| reply.assert_positive_completion())
                .map_err(|e| self.failed("HELO", e))?,
            Err(e) => return Err(self.failed("EHLO", e)),
        }

        client
            .mail_from(envelope.sender, &params)
            .await
            .map_err(|e| self.failed(&format!("MAIL FROM:<{}>{params}", envelope.sender), e))?;
        for rcpt in envelope.recipients {
            client
                .rcpt_to(rcpt, &Parameters::default())
                .await
                .map_err(|e| self.failed(&format!("RCPT TO:<{rcpt}>"), e))?;
        }
        client.timeout = self.timeouts.data_end;
        let reply = send_data(client, envelope.data)
            .await
            .map_err(|e| self.failed("the message", e))?;
        Ok(reply_text(&reply))
    }

    /// Sorts a failed step: a `4xx` is temporary, any other reply
    /// permanent, no reply at all (timeout, closed, garbage) unreachable.
    fn failed(&self, what: &str, e: mail_send::Error) -> SubmitError {
        let addr = self.addr;
        match e {
            mail_send::Error::UnexpectedReply(reply) => {
                let text = format!("the relay at {addr} refused {what}: {}", reply_text(&reply));
                if reply.code / 100 == 4 {
                    SubmitError::Temporary(text)
                } else {
                    SubmitError::Permanent(text)
                }
            }
            mail_send::Error::Timeout => {
                SubmitError::Unreachable(format!("timed out waiting for the relay at {addr}"))
            }
            mail_send::Error::UnparseableReply => SubmitError::Unreachable(format!(
                "connection closed by the relay at {addr}, or it did not answer in SMTP"
            )),
            e => SubmitError::Unreachable(format!(
                "lost the connection to the relay at {addr}: {}",
                io_text(&e)
            )),
        }
    }
}

/// DATA, the body, the final dot. mail-send's `data()` appends the final
/// `\r\n.\r\n` itself (so the body goes without its last CRLF) and
/// dot-stuffs every `.` that follows a line break, but not one that starts
/// the body: that one is doubled here.
async fn send_data(
    client: &mut SmtpClient<TcpStream>,
    data: &[u8],
) -> mail_send::Result<Response<String>> {
    let body = data.strip_suffix(b"\r\n").unwrap_or(data);
    if !body.starts_with(b".") {
        return client.data(body).await;
    }
    client.cmd(b"DATA\r\n").await?.assert_code(354)?;
    let timeout = client.timeout;
    tokio::time::timeout(timeout, async {
        client.stream.write_all(b".").await?;
        client.write_message(body).await?;
        client.read().await
    })
    .await
    .map_err(|_| mail_send::Error::Timeout)??
    .into_positive_completion()
}

/// A reply as the relay wrote it: `452 4.5.3 Too many recipients`.
fn reply_text(reply: &Response<String>) -> String {
    match reply.esc {
        [0, 0, 0] => format!("{} {}", reply.code, reply.message),
        [a, b, c] => format!("{} {a}.{b}.{c} {}", reply.code, reply.message),
    }
}

/// An error without mail-send's "I/O error: " prefix.
fn io_text(e: &mail_send::Error) -> String {
    match e {
        mail_send::Error::Io(io) => io.to_string(),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    #[test]
    fn wildcard_listeners_are_dialed_on_loopback() {
        let d = |s: &str| dial_address(s.parse().unwrap()).to_string();
        assert_eq!(d("0.0.0.0:25"), "127.0.0.1:25");
        assert_eq!(d("[::]:2525"), "[::1]:2525");
        assert_eq!(d("10.1.2.3:25"), "10.1.2.3:25");
    }

    /// A scripted server on its own thread: answers each line it reads
    /// with the next reply (the body's lines get none until the `.`),
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
                if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                    return got;
                }
                got.extend_from_slice(&line);
                if in_data && line != b".\r\n" {
                    continue;
                }
                in_data = line == b"DATA\r\n";
                let Some(r) = replies.next() else { return got };
                if writer.write_all(r.as_bytes()).is_err() {
                    return got;
                }
            }
        });
        (addr, handle)
    }

    fn envelope<'a>(sender: &'a str, rcpts: &'a [String], data: &'a [u8]) -> Envelope<'a> {
        Envelope {
            sender,
            recipients: rcpts,
            data,
        }
    }

    #[tokio::test]
    async fn a_whole_session_dot_stuffs_and_declares_size() {
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
        let env = envelope("s@x", &rcpts, data);
        let reply = submit(addr, "localhost", &env, Timeouts::default())
            .await
            .unwrap();
        assert_eq!(reply, "250 2.0.0 Ok: queued as X1");
        let got = String::from_utf8(server.join().unwrap()).unwrap();
        assert_eq!(
            got,
            "EHLO localhost\r\nMAIL FROM:<s@x> SIZE=32\r\nRCPT TO:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n\
             Subject: s\r\n\r\n..leading dot\r\nok\r\n.\r\nQUIT\r\n"
        );
    }

    #[tokio::test]
    async fn eight_bit_bodies_say_so_and_a_leading_dot_is_stuffed() {
        let (addr, server) = scripted(&[
            "220 hi\r\n",
            "250-hi\r\n250 8BITMIME\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
            "250 ok\r\n",
            "221 bye\r\n",
        ]);
        let rcpts = ["a@b".to_string()];
        let env = envelope("", &rcpts, ".x: J\u{f6}rg\r\n\r\nb".as_bytes());
        submit(addr, "localhost", &env, Timeouts::default())
            .await
            .unwrap();
        let got = String::from_utf8(server.join().unwrap()).unwrap();
        assert_eq!(
            got,
            "EHLO localhost\r\nMAIL FROM:<> BODY=8BITMIME\r\nRCPT TO:<a@b>\r\nDATA\r\n\
             ..x: J\u{f6}rg\r\n\r\nb\r\n.\r\nQUIT\r\n"
        );
    }

    #[tokio::test]
    async fn helo_when_ehlo_is_refused() {
        let (addr, server) = scripted(&[
            "220 hi\r\n",
            "502 5.5.1 no EHLO here\r\n",
            "250 hello\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
            "250 ok\r\n",
            "221 bye\r\n",
        ]);
        let rcpts = ["a@b".to_string()];
        let env = envelope("s@x", &rcpts, b"x\r\n");
        let reply = submit(addr, "localhost", &env, Timeouts::default())
            .await
            .unwrap();
        assert_eq!(reply, "250 ok");
        let got = String::from_utf8(server.join().unwrap()).unwrap();
        assert_eq!(
            got,
            "EHLO localhost\r\nHELO localhost\r\nMAIL FROM:<s@x>\r\nRCPT TO:<a@b>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n"
        );
    }

    #[tokio::test]
    async fn replies_map_to_temporary_and_permanent() {
        let (addr, server) = scripted(&[
            "220 hi\r\n",
            "250 hi\r\n",
            "250 ok\r\n",
            "452 4.5.3 Too many\r\n",
            "221 bye\r\n",
        ]);
        let rcpts = ["a@b".to_string()];
        let env = envelope("", &rcpts, b"x\r\n");
        let err = submit(addr, "localhost", &env, Timeouts::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SubmitError::Temporary(t) if t.contains("refused RCPT TO:<a@b>: 452 4.5.3 Too many")),
            "{err:?}"
        );
        let got = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(got.ends_with("RCPT TO:<a@b>\r\nQUIT\r\n"), "{got}");

        let (addr, _server) = scripted(&["554 5.7.1 go away\r\n", "221 bye\r\n"]);
        let err = submit(addr, "localhost", &env, Timeouts::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SubmitError::Permanent(t) if t.contains("554 5.7.1 go away")),
            "{err:?}"
        );

        let (addr, _server) = scripted(&[
            "220 hi\r\n",
            "250-hi\r\n250 SIZE 10\r\n",
            "552 5.3.4 Message too big\r\n",
            "221 bye\r\n",
        ]);
        let err = submit(addr, "localhost", &env, Timeouts::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SubmitError::Permanent(t) if t.contains("MAIL FROM:<> SIZE=3: 552 5.3.4")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let rcpts = ["a@b".to_string()];
        let env = envelope("", &rcpts, b"x\r\n");
        let timeouts = Timeouts {
            command: Duration::from_millis(200),
            ..Timeouts::default()
        };
        let err = submit(addr, "localhost", &env, timeouts).await.unwrap_err();
        assert!(
            matches!(&err, SubmitError::Unreachable(t) if t.contains("timed out")),
            "{err:?}"
        );
        drop(listener);
    }

    #[tokio::test]
    async fn nobody_listening_is_unreachable() {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let rcpts = ["a@b".to_string()];
        let env = envelope("", &rcpts, b"x\r\n");
        let err = submit(addr, "localhost", &env, Timeouts::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SubmitError::Unreachable(t) if t.starts_with("cannot connect to the relay at")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_closed_connection_is_unreachable() {
        let (addr, _server) = scripted(&["220 hi\r\n"]);
        let rcpts = ["a@b".to_string()];
        let env = envelope("", &rcpts, b"x\r\n");
        let err = submit(addr, "localhost", &env, Timeouts::default())
            .await
            .unwrap_err();
        assert!(matches!(err, SubmitError::Unreachable(_)), "{err:?}");
    }
}
