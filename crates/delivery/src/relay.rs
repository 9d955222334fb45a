//! Relaying messages over one open session: the one transaction path that
//! every delivery takes, whether one message or a run of them, one
//! recipient or hundreds, pipelining upstream or not.
//!
//! Each message goes out as transactions of at most 50 recipients
//! (Postmark's limit), envelope exactly as received, one outcome per
//! recipient. Over a pipelining upstream, a body and its end-of-data `.`
//! share a write with the next transaction's MAIL, RCPTs and DATA (RFC 2920
//! lets message content start a command group), so a run of N transactions
//! costs N + 1 round trips; without PIPELINING each command waits for its
//! reply.

use relay_queue::PendingRecipient;
use smtp_proto::Response;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::attempt::{Answers, Attempt};
use crate::body::{write_body, Body, Chunks};
use crate::connection::Session;
use crate::outcome::{classify_body, reply_text};
use crate::transaction::{
    abort, envelope, exchange, failure, judge, one_by_one, Next, MAX_RCPT_PER_TRANSACTION,
};

/// One message to relay.
pub struct Job<'a> {
    /// MAIL FROM; "" is the null sender.
    pub sender: &'a str,
    /// Only the recipients still pending.
    pub recipients: &'a [PendingRecipient],
    pub body: Body<'a>,
}

/// What a run of jobs produced.
#[derive(Debug)]
pub struct Relayed {
    /// One per job, in order.
    pub attempts: Vec<Attempt>,
    /// The connection is in a clean state and may carry more mail.
    pub reusable: bool,
}

/// A body whose DATA got `354` and whose last piece (with the `.` line)
/// has yet to go out (pipelining: with the next command group); its reply
/// answers `accepted`.
struct PendingBody {
    job: usize,
    accepted: Vec<i64>,
    last_piece: Vec<u8>,
}

/// Relays `jobs` in order over `session`, reading stored body chunks from
/// `chunks`. After the connection breaks, the rest are left untried.
pub async fn relay<T: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session<T>,
    jobs: &[Job<'_>],
    chunks: &impl Chunks,
) -> Relayed {
    let mut answers: Vec<Answers> = jobs.iter().map(|_| Answers::default()).collect();
    // Whether the upstream said anything about each job.
    let mut heard = vec![false; jobs.len()];
    let mut sent_up_to: Option<usize> = None;
    let mut pending: Option<PendingBody> = None;
    let mut broken: Option<String> = None;

    let mut transactions: Vec<(usize, &Job<'_>, &[PendingRecipient])> = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        for batch in job.recipients.chunks(MAX_RCPT_PER_TRANSACTION) {
            transactions.push((j, job, batch));
        }
    }
    for (j, job, batch) in transactions {
        sent_up_to = Some(j);
        // RFC 6152: an 8-bit body is declared, to an upstream that offers
        // 8BITMIME (Postmark does); to one that does not, it goes as it is.
        let eight_bit = job.body.content.eight_bit && session.eight_bit_mime;
        let commands = envelope(job.sender, batch, eight_bit);
        let (replies, result) = if session.pipelining {
            // The previous body moves into this group: only its reply is
            // still needed.
            let mut group = pending
                .as_mut()
                .map(|p| std::mem::take(&mut p.last_piece))
                .unwrap_or_default();
            group.extend_from_slice(commands.concat().as_bytes());
            let expected = commands.len() + usize::from(pending.is_some());
            exchange(&mut session.client, &group, expected).await
        } else {
            one_by_one(&mut session.client, &commands).await
        };
        heard[j] |= !replies.is_empty();
        let mut replies = replies.into_iter();
        if let Some(p) = pending.take() {
            let Some(reply) = replies.next() else {
                broken = Some(reason(result));
                break;
            };
            heard[p.job] = true;
            answer_body(&mut answers[p.job], &p.accepted, &reply);
        }
        let replies: Vec<_> = replies.collect();
        if let Err(error) = result {
            broken = Some(failure(&replies, error));
            break;
        }
        match judge(batch, &replies, &mut answers[j].outcomes) {
            Next::SendBody { accepted } => {
                let timeout = session.client.timeout;
                let last_piece = match write_body(
                    &mut session.client.stream,
                    &job.body,
                    chunks,
                    timeout,
                )
                .await
                {
                    Ok(last_piece) => last_piece,
                    Err(e) => {
                        broken = Some(e);
                        break;
                    }
                };
                let body = PendingBody {
                    job: j,
                    accepted,
                    last_piece,
                };
                if session.pipelining {
                    pending = Some(body);
                } else if let Err(e) = send_last_piece(session, &mut answers, body).await {
                    broken = Some(e);
                    break;
                }
            }
            Next::Abort { last } => {
                if let Err(e) = abort(session, last).await {
                    broken = Some(e.to_string());
                    break;
                }
            }
        }
    }
    // The last body has no next group to travel with.
    if let Some(p) = pending.take().filter(|_| broken.is_none()) {
        if let Err(e) = send_last_piece(session, &mut answers, p).await {
            broken = Some(e);
        }
    }

    let attempts = jobs
        .iter()
        .zip(answers)
        .zip(heard)
        .enumerate()
        .map(|(j, ((job, answers), heard))| {
            if sent_up_to.is_none_or(|last| j > last) {
                Attempt::Untried
            } else if answers.outcomes.len() >= job.recipients.len() {
                Attempt::Answered(answers)
            } else {
                Attempt::Broken {
                    answers,
                    reason: broken.clone().unwrap_or_else(|| "no reply".into()),
                    silent: !heard,
                }
            }
        })
        .collect();
    Relayed {
        attempts,
        reusable: broken.is_none(),
    }
}

/// Sends a body's last piece on its own and reads its reply.
async fn send_last_piece<T: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session<T>,
    answers: &mut [Answers],
    body: PendingBody,
) -> Result<(), String> {
    let (replies, result) = exchange(&mut session.client, &body.last_piece, 1).await;
    match replies.first() {
        Some(reply) => {
            answer_body(&mut answers[body.job], &body.accepted, reply);
            Ok(())
        }
        None => Err(reason(result)),
    }
}

/// The reply to a body answers every recipient DATA was sent for.
fn answer_body(answers: &mut Answers, accepted: &[i64], reply: &Response<String>) {
    let outcome = classify_body(reply);
    answers.reply = Some(reply_text(reply));
    answers
        .outcomes
        .extend(accepted.iter().map(|&idx| (idx, outcome.clone())));
}

fn reason(result: Result<(), mail_send::Error>) -> String {
    result
        .err()
        .map_or_else(|| "no reply".into(), |e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::{relay, Job};
    use crate::attempt::Attempt;
    use crate::body::{Body, NoChunks};
    use crate::connection::Session;
    use relay_queue::{Content, Outcome, PendingRecipient};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn session(client: DuplexStream, pipelining: bool) -> Session<DuplexStream> {
        Session {
            client: mail_send::SmtpClient {
                stream: client,
                timeout: Duration::from_secs(5),
            },
            pipelining,
            eight_bit_mime: true,
        }
    }

    fn rcpt(idx: i64) -> PendingRecipient {
        PendingRecipient {
            idx,
            address: format!("r{idx}@x.test"),
        }
    }

    /// Relays three one-recipient messages (`one`, `two`, then `third`)
    /// over a pipelining `client`.
    async fn run_three(client: DuplexStream, third: &[u8]) -> super::Relayed {
        let (r1, r2, r3) = ([rcpt(1)], [rcpt(2)], [rcpt(3)]);
        let bodies = [
            Content::whole(b"one\r\n".to_vec()),
            Content::whole(b"two\r\n".to_vec()),
            Content::whole(third.to_vec()),
        ];
        let jobs = [
            job("a@x.test", &r1[..], &bodies[0]),
            job("b@x.test", &r2[..], &bodies[1]),
            job("c@x.test", &r3[..], &bodies[2]),
        ];
        relay(&mut session(client, true), &jobs, &NoChunks).await
    }

    fn job<'a>(
        sender: &'a str,
        recipients: &'a [PendingRecipient],
        content: &'a Content,
    ) -> Job<'a> {
        Job {
            sender,
            recipients,
            body: Body {
                id: "T",
                prefix: b"",
                content,
            },
        }
    }

    async fn read_until(server: &mut DuplexStream, end: &[u8]) -> Vec<u8> {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.ends_with(end) {
            let n = server.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "client hung up; got {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    }

    fn outcomes(attempt: &Attempt) -> &[(i64, Outcome)] {
        match attempt {
            Attempt::Answered(a) | Attempt::Broken { answers: a, .. } => &a.outcomes,
            Attempt::Untried => &[],
        }
    }

    /// A pipelining server answers a whole command group in one write;
    /// every reply must be read from that one buffer (mail-send's `read`
    /// keeps only the first, which once left every message waiting for a
    /// timeout).
    #[tokio::test]
    async fn replies_that_arrive_in_one_segment_are_all_read() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let upstream = tokio::spawn(async move {
            let seen = read_until(&mut server, b"DATA\r\n").await;
            server
                .write_all(
                    b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n354 go ahead\r\n",
                )
                .await
                .expect("write replies");
            let body = read_until(&mut server, b"\r\n.\r\n").await;
            server
                .write_all(b"250 2.0.0 queued\r\n")
                .await
                .expect("write final");
            (seen, body)
        });
        let rcpts = [rcpt(0), rcpt(1)];
        let content = Content::whole(b"Subject: t\r\n\r\n.dot\r\n".to_vec());
        let jobs = [job("s@x.test", &rcpts, &content)];
        let relayed = relay(&mut session(client, true), &jobs, &NoChunks).await;
        assert!(relayed.reusable);
        assert!(
            matches!(
                outcomes(&relayed.attempts[0]),
                [(1, Outcome::Failed(_)), (0, Outcome::Delivered(_))]
            ),
            "{:?}",
            relayed.attempts
        );
        let (commands, body) = upstream.await.expect("server task");
        assert_eq!(
            commands,
            b"MAIL FROM:<s@x.test>\r\nRCPT TO:<r0@x.test>\r\nRCPT TO:<r1@x.test>\r\nDATA\r\n"
        );
        assert_eq!(body, b"Subject: t\r\n\r\n..dot\r\n.\r\n");
    }

    /// Three messages: each body shares a write with the next envelope, so
    /// the upstream sees four groups; the second body is deferred (451).
    #[tokio::test]
    async fn each_body_travels_with_the_next_envelope() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let upstream = tokio::spawn(async move {
            let mut groups = Vec::new();
            groups.push(read_until(&mut server, b"DATA\r\n").await);
            server
                .write_all(b"250 ok\r\n250 ok\r\n354 go\r\n")
                .await
                .expect("write");
            groups.push(read_until(&mut server, b"DATA\r\n").await);
            server
                .write_all(b"250 queued one\r\n250 ok\r\n250 ok\r\n354 go\r\n")
                .await
                .expect("write");
            groups.push(read_until(&mut server, b"DATA\r\n").await);
            server
                .write_all(b"451 4.3.0 later\r\n250 ok\r\n250 ok\r\n354 go\r\n")
                .await
                .expect("write");
            groups.push(read_until(&mut server, b"\r\n.\r\n").await);
            server
                .write_all(b"250 queued three\r\n")
                .await
                .expect("write");
            groups
        });
        let relayed = run_three(client, b".three\r\n").await;
        let groups = upstream.await.expect("server");
        assert_eq!(
            groups[0],
            b"MAIL FROM:<a@x.test>\r\nRCPT TO:<r1@x.test>\r\nDATA\r\n"
        );
        assert_eq!(
            groups[1],
            b"one\r\n.\r\nMAIL FROM:<b@x.test>\r\nRCPT TO:<r2@x.test>\r\nDATA\r\n"
        );
        assert_eq!(
            groups[2],
            b"two\r\n.\r\nMAIL FROM:<c@x.test>\r\nRCPT TO:<r3@x.test>\r\nDATA\r\n"
        );
        assert_eq!(groups[3], b"..three\r\n.\r\n");
        assert!(relayed.reusable);
        assert!(relayed
            .attempts
            .iter()
            .all(|a| matches!(a, Attempt::Answered(_))));
        assert!(matches!(
            outcomes(&relayed.attempts[0]),
            [(1, Outcome::Delivered(_))]
        ));
        assert!(matches!(
            outcomes(&relayed.attempts[1]),
            [(2, Outcome::Deferred(_))]
        ));
        assert!(matches!(
            outcomes(&relayed.attempts[2]),
            [(3, Outcome::Delivered(_))]
        ));
    }

    /// When the connection dies after the second envelope was sent, the
    /// first message keeps its answer, the second is broken (pending), the
    /// third was never sent.
    #[tokio::test]
    async fn a_broken_connection_leaves_later_messages_untried() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let upstream = tokio::spawn(async move {
            read_until(&mut server, b"DATA\r\n").await;
            server
                .write_all(b"250 ok\r\n250 ok\r\n354 go\r\n")
                .await
                .expect("write");
            read_until(&mut server, b"DATA\r\n").await;
            server
                .write_all(b"250 queued one\r\n")
                .await
                .expect("write");
            drop(server);
        });
        let relayed = run_three(client, b"three\r\n").await;
        upstream.await.expect("server");
        assert!(!relayed.reusable);
        assert!(matches!(
            &relayed.attempts[0],
            Attempt::Answered(a) if matches!(a.outcomes[..], [(1, Outcome::Delivered(_))])
        ));
        assert!(matches!(
            &relayed.attempts[1],
            Attempt::Broken { answers, silent: false, .. } if answers.outcomes.is_empty()
        ));
        assert!(matches!(relayed.attempts[2], Attempt::Untried));
    }

    /// Without PIPELINING each command waits for its reply; a message with
    /// more than 50 recipients goes as two transactions, and a refused MAIL
    /// ends its transaction with RSET.
    #[tokio::test]
    async fn one_by_one_in_transactions_of_at_most_fifty() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let upstream = tokio::spawn(async move {
            let mut transcript = Vec::new();
            // First transaction: MAIL refused, then RSET.
            transcript.push(read_until(&mut server, b"\r\n").await);
            server
                .write_all(b"451 4.3.0 busy\r\n")
                .await
                .expect("write");
            transcript.push(read_until(&mut server, b"\r\n").await);
            server.write_all(b"250 reset\r\n").await.expect("write");
            // Second transaction: MAIL, RCPT x 10, DATA, body.
            for _ in 0..11 {
                transcript.push(read_until(&mut server, b"\r\n").await);
                server.write_all(b"250 ok\r\n").await.expect("write");
            }
            transcript.push(read_until(&mut server, b"\r\n").await);
            server.write_all(b"354 go\r\n").await.expect("write");
            transcript.push(read_until(&mut server, b"\r\n.\r\n").await);
            server.write_all(b"250 queued\r\n").await.expect("write");
            transcript
        });
        let rcpts: Vec<_> = (0..60).map(rcpt).collect();
        let content = Content::whole(b"hi\r\n".to_vec());
        let jobs = [job("s@x.test", &rcpts, &content)];
        let relayed = relay(&mut session(client, false), &jobs, &NoChunks).await;
        let transcript = upstream.await.expect("server");
        assert_eq!(transcript[0], b"MAIL FROM:<s@x.test>\r\n");
        assert_eq!(transcript[1], b"RSET\r\n");
        assert_eq!(transcript[3], b"RCPT TO:<r50@x.test>\r\n");
        assert_eq!(
            transcript.last().map(Vec::as_slice),
            Some(&b"hi\r\n.\r\n"[..])
        );
        assert!(relayed.reusable);
        let outcomes = outcomes(&relayed.attempts[0]);
        assert_eq!(outcomes.len(), 60);
        assert_eq!(
            outcomes
                .iter()
                .filter(|(_, o)| matches!(o, Outcome::Deferred(_)))
                .count(),
            50
        );
        assert_eq!(
            outcomes
                .iter()
                .filter(|(_, o)| matches!(o, Outcome::Delivered(_)))
                .count(),
            10
        );
    }
}
