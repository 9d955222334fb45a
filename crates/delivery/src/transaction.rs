//! Relaying one message over an open session: the envelope exactly as
//! received, recipients in batches of at most 50 (Postmark's limit), one
//! outcome per recipient.
//!
//! With PIPELINING, MAIL, every RCPT and DATA go out in one write, so a
//! message on its own costs two round trips (the command group, then the
//! body); `chain` brings a run of messages down to one round trip each.

use relay_queue::{Outcome, PendingRecipient};
use smtp_proto::response::parser::ResponseReceiver;
use smtp_proto::Response;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::connection::Session;
use crate::outcome::{from_reply, reply_text};

/// Postmark accepts at most this many recipients per message.
pub const MAX_RCPT_PER_TRANSACTION: usize = 50;

/// What one message's attempt produced.
#[derive(Debug, Default)]
pub struct Attempted {
    /// Every recipient that got an answer this time.
    pub outcomes: Vec<(i64, Outcome)>,
    /// The upstream's final reply to the last DATA, for the log.
    pub reply: Option<String>,
    /// Set when the connection broke: recipients without an outcome are
    /// deferred with this reason, and the connection must be replaced.
    pub broken: Option<String>,
    /// Whether the upstream answered anything before it broke (if not, a
    /// reused connection was merely stale and the message can go again).
    pub answered: bool,
    /// Never sent (an earlier message of the same chain broke the
    /// connection): give it back without counting an attempt.
    pub untried: bool,
}

/// Sends `body` (CRLF, not dot-stuffed) from `sender` to `recipients`.
pub async fn relay<T: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session<T>,
    sender: &str,
    recipients: &[PendingRecipient],
    body: &[u8],
) -> Attempted {
    let mut attempted = Attempted::default();
    let stuffed = dot_stuff(body);
    for batch in recipients.chunks(MAX_RCPT_PER_TRANSACTION) {
        if let Err(e) = relay_batch(session, sender, batch, &stuffed, &mut attempted).await {
            attempted.broken = Some(e.to_string());
            break;
        }
    }
    attempted
}

async fn relay_batch<T: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session<T>,
    sender: &str,
    batch: &[PendingRecipient],
    stuffed: &[u8],
    attempted: &mut Attempted,
) -> Result<(), mail_send::Error> {
    let mut commands = Vec::with_capacity(batch.len() + 2);
    commands.push(format!("MAIL FROM:<{sender}>\r\n"));
    commands.extend(batch.iter().map(|r| format!("RCPT TO:<{}>\r\n", r.address)));
    commands.push("DATA\r\n".to_string());

    let client = &mut session.client;
    let replies = if session.pipelining {
        pipeline(client, &commands, attempted).await?
    } else {
        // One command at a time, stopping where the transaction cannot go on.
        let mut replies = Vec::with_capacity(commands.len());
        for (i, command) in commands.iter().enumerate() {
            let reply = client.cmd(command).await?;
            attempted.answered = true;
            let positive = reply.code / 100 == 2;
            replies.push(reply);
            let is_mail = i == 0;
            let is_last_rcpt = i == commands.len() - 2;
            let any_accepted = replies[1..].iter().any(|r| r.code / 100 == 2);
            if (is_mail && !positive) || (is_last_rcpt && !any_accepted) {
                break;
            }
        }
        replies
    };

    let mail = &replies[0];
    if mail.code / 100 != 2 {
        let outcome = from_reply(mail);
        attempted
            .outcomes
            .extend(batch.iter().map(|r| (r.idx, outcome.clone())));
        return end_aborted(session, replies.last()).await;
    }
    let mut accepted = Vec::new();
    for (rcpt, reply) in batch.iter().zip(replies.iter().skip(1)) {
        if reply.code / 100 == 2 {
            accepted.push(rcpt.idx);
        } else {
            attempted.outcomes.push((rcpt.idx, from_reply(reply)));
        }
    }
    let data_reply = replies.get(batch.len() + 1);
    match data_reply {
        Some(r) if r.code == 354 && !accepted.is_empty() => {}
        other => {
            if let Some(r) = other {
                let outcome = from_reply(r);
                attempted
                    .outcomes
                    .extend(accepted.iter().map(|&idx| (idx, outcome.clone())));
            }
            return end_aborted(session, other).await;
        }
    }

    let client = &mut session.client;
    let final_reply = tokio::time::timeout(client.timeout, async {
        client.stream.write_all(stuffed).await?;
        client.stream.flush().await?;
        client.read().await
    })
    .await
    .map_err(|_| mail_send::Error::Timeout)??;
    let outcome = body_outcome(&final_reply);
    attempted.reply = Some(reply_text(&final_reply));
    attempted
        .outcomes
        .extend(accepted.iter().map(|&idx| (idx, outcome.clone())));
    Ok(())
}

/// Sends every command in one write and reads one reply per command.
///
/// Like mail-send's `cmds`, the replies are parsed from one buffer (a
/// pipelining server sends them together; mail-send's `read` would drop all
/// but the first). Unlike it, when the upstream answers the first command and
/// hangs up (e.g. `421` at MAIL FROM), that reply is what gets recorded, not
/// just "connection reset".
async fn pipeline<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut mail_send::SmtpClient<T>,
    commands: &[String],
    attempted: &mut Attempted,
) -> Result<Vec<Response<String>>, mail_send::Error> {
    let (replies, result) = exchange(client, commands.concat().as_bytes(), commands.len()).await;
    attempted.answered |= !replies.is_empty();
    match result {
        Ok(()) => Ok(replies),
        Err(error) => Err(first_refusal(&replies).unwrap_or(error)),
    }
}

/// Writes `bytes` in one go and reads `expected` replies, parsed from one
/// buffer. Returns the replies read even when the exchange failed part-way.
pub(crate) async fn exchange<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut mail_send::SmtpClient<T>,
    bytes: &[u8],
    expected: usize,
) -> (Vec<Response<String>>, Result<(), mail_send::Error>) {
    let timeout = client.timeout;
    let mut replies = Vec::with_capacity(expected);
    let io = async {
        let stream = &mut client.stream;
        stream
            .write_all(bytes)
            .await
            .map_err(mail_send::Error::Io)?;
        stream.flush().await.map_err(mail_send::Error::Io)?;
        let mut parser = ResponseReceiver::default();
        let mut buf = vec![0u8; 4096];
        while replies.len() < expected {
            let read = stream.read(&mut buf).await.map_err(mail_send::Error::Io)?;
            if read == 0 {
                return Err(mail_send::Error::UnparseableReply);
            }
            let mut bytes = buf[..read].iter();
            while replies.len() < expected {
                match parser.parse(&mut bytes) {
                    Ok(reply) => {
                        replies.push(reply);
                        parser.reset();
                    }
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => break,
                    Err(_) => return Err(mail_send::Error::UnparseableReply),
                }
            }
        }
        Ok(())
    };
    let result = tokio::time::timeout(timeout, io)
        .await
        .unwrap_or(Err(mail_send::Error::Timeout));
    (replies, result)
}

/// When the upstream refused the first command of a group and then hung up,
/// that refusal (e.g. `421`) explains the failure better than the reset.
pub(crate) fn first_refusal(replies: &[Response<String>]) -> Option<mail_send::Error> {
    replies
        .first()
        .filter(|r| r.code / 100 != 2)
        .map(|r| mail_send::Error::UnexpectedReply(r.clone()))
}

/// The outcome of the reply to a message body. A 3xx there is a protocol
/// error, so it counts as temporary.
pub(crate) fn body_outcome(reply: &Response<String>) -> Outcome {
    match from_reply(reply) {
        Outcome::Delivered(_) if reply.code / 100 != 2 => Outcome::Deferred(reply_text(reply)),
        outcome => outcome,
    }
}

/// Leaves an aborted transaction so the connection can be reused: RSET,
/// unless the upstream already said 354 (it now expects a body, and the
/// only safe way out is to drop the connection).
pub(crate) async fn end_aborted<T: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session<T>,
    last: Option<&Response<String>>,
) -> Result<(), mail_send::Error> {
    if last.is_some_and(|r| r.code == 354) {
        return Err(mail_send::Error::UnexpectedReply(Response {
            code: 354,
            esc: [0, 0, 0],
            message: "DATA accepted with no recipient; dropping the connection".into(),
        }));
    }
    session.client.rset().await
}

/// Dot-stuffs a CRLF message and appends the end-of-data line, so the body
/// and its end go out in one write.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 64 + 5);
    let mut line_start = true;
    for &b in body {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::{dot_stuff, relay};
    use crate::connection::Session;
    use relay_queue::{Outcome, PendingRecipient};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A pipelining server answers a whole command group in one write; every
    /// reply must be read from that one buffer (mail-send's `read` keeps only
    /// the first, which once left every message waiting for a timeout).
    #[tokio::test]
    async fn replies_that_arrive_in_one_segment_are_all_read() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let upstream = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.ends_with(b"DATA\r\n") {
                let n = server.read(&mut buf).await.expect("read commands");
                seen.extend_from_slice(&buf[..n]);
            }
            server
                .write_all(
                    b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n354 go ahead\r\n",
                )
                .await
                .expect("write replies");
            let mut body = Vec::new();
            while !body.ends_with(b"\r\n.\r\n") {
                let n = server.read(&mut buf).await.expect("read body");
                body.extend_from_slice(&buf[..n]);
            }
            server
                .write_all(b"250 2.0.0 queued\r\n")
                .await
                .expect("write final");
            (seen, body)
        });
        let mut session = Session {
            client: mail_send::SmtpClient {
                stream: client,
                timeout: Duration::from_secs(5),
            },
            pipelining: true,
        };
        let rcpts = [
            PendingRecipient {
                idx: 0,
                address: "a@x.test".into(),
            },
            PendingRecipient {
                idx: 1,
                address: "b@x.test".into(),
            },
        ];
        let attempted = relay(
            &mut session,
            "s@x.test",
            &rcpts,
            b"Subject: t\r\n\r\n.dot\r\n",
        )
        .await;
        assert!(attempted.broken.is_none(), "{:?}", attempted.broken);
        assert!(
            matches!(
                attempted.outcomes[..],
                [(1, Outcome::Failed(_)), (0, Outcome::Delivered(_))]
            ),
            "{:?}",
            attempted.outcomes
        );
        let (commands, body) = upstream.await.expect("server task");
        assert_eq!(
            commands,
            b"MAIL FROM:<s@x.test>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"
        );
        assert_eq!(body, b"Subject: t\r\n\r\n..dot\r\n.\r\n");
    }

    #[test]
    fn stuffs_every_line_that_starts_with_a_dot() {
        assert_eq!(
            dot_stuff(b".a\r\nb\r\n..c\r\n.\r\n"),
            b"..a\r\nb\r\n...c\r\n..\r\n.\r\n"
        );
    }

    #[test]
    fn terminates_a_body_without_a_final_line_ending() {
        assert_eq!(dot_stuff(b"x"), b"x\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }
}
