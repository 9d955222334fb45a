//! The pieces of one SMTP transaction, shared by every way of sending:
//! the command group (MAIL, RCPT per recipient, DATA), reading what the
//! upstream answered to it, sending it pipelined or one command at a time,
//! and leaving a refused transaction so the connection can be reused.

use relay_queue::{Outcome, PendingRecipient};
use smtp_proto::response::parser::ResponseReceiver;
use smtp_proto::Response;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::connection::Session;
use crate::outcome::classify;

/// Postmark accepts at most this many recipients per message.
pub const MAX_RCPT_PER_TRANSACTION: usize = 50;

/// MAIL FROM, one RCPT TO per recipient, DATA: one line each.
pub(crate) fn envelope(
    sender: &str,
    recipients: &[PendingRecipient],
    eight_bit: bool,
) -> Vec<String> {
    let mut commands = Vec::with_capacity(recipients.len() + 2);
    let body = if eight_bit { " BODY=8BITMIME" } else { "" };
    commands.push(format!("MAIL FROM:<{sender}>{body}\r\n"));
    commands.extend(
        recipients
            .iter()
            .map(|r| format!("RCPT TO:<{}>\r\n", r.address)),
    );
    commands.push("DATA\r\n".to_string());
    commands
}

/// What to do after the replies to an envelope.
pub(crate) enum Next<'r> {
    /// DATA got `354`: send the body; these recipients wait for its reply.
    SendBody { accepted: Vec<i64> },
    /// The transaction ended without a body; clear it (the last reply
    /// tells whether RSET can).
    Abort { last: Option<&'r Response<String>> },
}

/// Reads the replies to [`envelope`]'s commands (MAIL, one per RCPT,
/// DATA; fewer when sent one by one and stopped early). Refused recipients
/// get their outcome in `outcomes`.
pub(crate) fn judge<'r>(
    recipients: &[PendingRecipient],
    replies: &'r [Response<String>],
    outcomes: &mut Vec<(i64, Outcome)>,
) -> Next<'r> {
    let Some(mail) = replies.first() else {
        return Next::Abort { last: None };
    };
    if mail.code / 100 != 2 {
        let outcome = classify(mail);
        outcomes.extend(recipients.iter().map(|r| (r.idx, outcome.clone())));
        return Next::Abort {
            last: replies.last(),
        };
    }
    let mut accepted = Vec::new();
    for (rcpt, reply) in recipients.iter().zip(&replies[1..]) {
        if reply.code / 100 == 2 {
            accepted.push(rcpt.idx);
        } else {
            outcomes.push((rcpt.idx, classify(reply)));
        }
    }
    match replies.get(recipients.len() + 1) {
        Some(data) if data.code == 354 && !accepted.is_empty() => Next::SendBody { accepted },
        Some(data) => {
            let outcome = classify(data);
            outcomes.extend(accepted.iter().map(|&idx| (idx, outcome.clone())));
            Next::Abort { last: Some(data) }
        }
        None => Next::Abort {
            last: replies.last(),
        },
    }
}

/// Sends the commands one at a time (an upstream without PIPELINING),
/// stopping where the transaction cannot go on: MAIL refused, or no
/// recipient accepted. Returns the replies read, even when it failed.
pub(crate) async fn one_by_one<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut mail_send::SmtpClient<T>,
    commands: &[String],
) -> (Vec<Response<String>>, Result<(), mail_send::Error>) {
    let mut replies: Vec<Response<String>> = Vec::with_capacity(commands.len());
    let last_rcpt = commands.len().saturating_sub(2);
    for (i, command) in commands.iter().enumerate() {
        match client.cmd(command).await {
            Ok(reply) => replies.push(reply),
            Err(e) => return (replies, Err(e)),
        }
        let mail_refused = i == 0 && replies[0].code / 100 != 2;
        let none_accepted = i == last_rcpt && !replies[1..].iter().any(|r| r.code / 100 == 2);
        if mail_refused || none_accepted {
            break;
        }
    }
    (replies, Ok(()))
}

/// Writes `bytes` in one go and reads `expected` replies, parsed from one
/// buffer (a pipelining server sends them together; mail-send's `read`
/// would drop all but the first). Returns the replies read even when the
/// exchange failed part-way.
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

/// Why an exchange about `replies` (an envelope's) failed: when the
/// upstream refused the first command and then hung up, that refusal
/// (e.g. `421`) explains it better than the reset.
pub(crate) fn failure(replies: &[Response<String>], error: mail_send::Error) -> String {
    match replies.first() {
        Some(first) if first.code / 100 != 2 => {
            mail_send::Error::UnexpectedReply(first.clone()).to_string()
        }
        _ => error.to_string(),
    }
}

/// Leaves a refused transaction so the connection can be reused: RSET,
/// unless the upstream said 354 (it now expects a body, and the only safe
/// way out is to drop the connection).
pub(crate) async fn abort<T: AsyncRead + AsyncWrite + Unpin>(
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
