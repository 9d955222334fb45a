//! Relaying messages over one open session: the one transaction path that
//! every delivery takes, whether one message or an endless stream of them,
//! one recipient or hundreds, pipelining upstream or not.
//!
//! Each message goes out as transactions of at most 50 recipients
//! (Postmark's limit), envelope exactly as received, one outcome per
//! recipient. Over a pipelining upstream, a body and its end-of-data `.`
//! share a write with the next transaction's MAIL, RCPTs and DATA (RFC 2920
//! lets message content start a command group), so N transactions in a row
//! cost N + 1 round trips; without PIPELINING each command waits for its
//! reply.
//!
//! A [`Pipeline`] is that path kept open: the worker pushes messages into
//! it as it claims them, and each message's attempt comes back as soon as
//! the upstream's reply to its body arrives, so the worker can record it
//! while the next message is already on the wire. The connection's
//! pipeline stays full across claims; only when nothing more is due does
//! the last body go out on its own ([`Pipeline::finish`]).

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

/// Relays `jobs` in order over `session`, reading stored body chunks from
/// `chunks`, and ends with the last body sent. After the connection
/// breaks, the rest are left untried.
pub async fn relay<T: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session<T>,
    jobs: &[Job<'_>],
    chunks: &impl Chunks,
) -> Relayed {
    let mut attempts: Vec<Option<Attempt>> = jobs.iter().map(|_| None).collect();
    let mut pipeline = Pipeline::new(session);
    for (j, job) in jobs.iter().enumerate() {
        for (k, attempt) in pipeline.push(j, job, chunks).await {
            attempts[k] = Some(attempt);
        }
    }
    for (k, attempt) in pipeline.finish().await {
        attempts[k] = Some(attempt);
    }
    Relayed {
        reusable: !pipeline.is_broken(),
        attempts: attempts
            .into_iter()
            .map(|a| a.unwrap_or(Attempt::Untried))
            .collect(),
    }
}

/// A session carrying messages one after another; each pushed message's
/// attempt comes back, tagged with the caller's key `K`, from the call
/// that heard its last reply: usually the next [`Pipeline::push`], else
/// [`Pipeline::finish`]. Attempts come back in the order pushed.
pub struct Pipeline<'s, T: AsyncRead + AsyncWrite + Unpin, K> {
    session: &'s mut Session<T>,
    /// The message whose body waits for its reply (pipelining only).
    open: Option<Open<K>>,
    /// That body: its last piece, with the `.` line, goes with the next
    /// command group.
    pending: Option<PendingBody>,
    /// Why the connection broke; nothing more goes over it.
    broken: Option<String>,
}

/// A message sent whose attempt is not complete yet.
struct Open<K> {
    key: K,
    answers: Answers,
    /// The upstream said something about it (else a stale pooled
    /// connection may be why it broke).
    heard: bool,
    /// Its recipients: every one needs an outcome.
    recipients: usize,
}

impl<K> Open<K> {
    fn new(key: K, recipients: usize) -> Self {
        Open {
            key,
            answers: Answers::default(),
            heard: false,
            recipients,
        }
    }

    /// The attempt, once nothing more will be heard about the message.
    fn end(self, broken: Option<&str>) -> (K, Attempt) {
        let attempt = if self.answers.outcomes.len() >= self.recipients {
            Attempt::Answered(self.answers)
        } else {
            Attempt::Broken {
                answers: self.answers,
                reason: broken.unwrap_or("no reply").to_string(),
                silent: !self.heard,
            }
        };
        (self.key, attempt)
    }
}

/// A body whose DATA got `354` and whose last piece (with the `.` line)
/// has yet to go out; its reply answers `accepted`.
struct PendingBody {
    accepted: Vec<i64>,
    last_piece: Vec<u8>,
}

impl<'s, T: AsyncRead + AsyncWrite + Unpin, K> Pipeline<'s, T, K> {
    /// A pipeline over a freshly opened or reused session.
    pub fn new(session: &'s mut Session<T>) -> Self {
        Pipeline {
            session,
            open: None,
            pending: None,
            broken: None,
        }
    }

    /// The connection broke: it must not be reused.
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Sends `job`'s transactions. Returns the attempts this completed:
    /// the message before it (whose body's reply came with this job's
    /// envelope replies), and this one if it needs nothing more (refused,
    /// or sent without pipelining). On a broken connection the job comes
    /// back untried.
    pub async fn push(&mut self, key: K, job: &Job<'_>, chunks: &impl Chunks) -> Vec<(K, Attempt)> {
        let mut done = Vec::new();
        if self.broken.is_some() {
            done.push((key, Attempt::Untried));
            return done;
        }
        let mut current = Open::new(key, job.recipients.len());
        for batch in job.recipients.chunks(MAX_RCPT_PER_TRANSACTION) {
            if let Err(reason) = self
                .transaction(job, batch, &mut current, &mut done, chunks)
                .await
            {
                self.break_off(reason, current, &mut done);
                return done;
            }
        }
        if self.pending.is_some() {
            self.open = Some(current);
        } else {
            done.push(current.end(None));
        }
        done
    }

    /// Sends the last body's end on its own and returns its attempt: the
    /// end of a run, when nothing more is due.
    pub async fn finish(&mut self) -> Vec<(K, Attempt)> {
        let mut done = Vec::new();
        let (Some(mut open), Some(body)) = (self.open.take(), self.pending.take()) else {
            return done;
        };
        if self.broken.is_some() {
            done.push(open.end(self.broken.as_deref()));
            return done;
        }
        let (replies, result) = exchange(&mut self.session.client, &body.last_piece, 1).await;
        match replies.first() {
            Some(reply) => {
                answer_body(&mut open.answers, &body.accepted, reply);
                done.push(open.end(None));
            }
            None => {
                let reason = reason(result);
                done.push(open.end(Some(&reason)));
                self.broken = Some(reason);
            }
        }
        done
    }

    /// One transaction (MAIL, RCPTs of `batch`, DATA, body) of `current`,
    /// carrying the pending body's end; a message it completes goes to
    /// `done`. An error means the connection broke.
    async fn transaction(
        &mut self,
        job: &Job<'_>,
        batch: &[PendingRecipient],
        current: &mut Open<K>,
        done: &mut Vec<(K, Attempt)>,
        chunks: &impl Chunks,
    ) -> Result<(), String> {
        let session = &mut *self.session;
        // RFC 6152: an 8-bit body is declared, to an upstream that offers
        // 8BITMIME (Postmark does); to one that does not, it goes as it is.
        let eight_bit = job.body.content.eight_bit && session.eight_bit_mime;
        let commands = envelope(job.sender, batch, eight_bit);
        let mut pending = self.pending.take();
        let (replies, result) = if session.pipelining {
            // The previous body moves into this group: only its reply is
            // still needed.
            let mut group = pending
                .as_mut()
                .map(|p| std::mem::take(&mut p.last_piece))
                .unwrap_or_default();
            for command in &commands {
                group.extend_from_slice(command.as_bytes());
            }
            let expected = commands.len() + usize::from(pending.is_some());
            exchange(&mut session.client, &group, expected).await
        } else {
            one_by_one(&mut session.client, &commands).await
        };
        // Any reply shows the connection is alive (not a stale one).
        current.heard |= !replies.is_empty();
        let mut replies = replies.into_iter();
        if let Some(body) = pending {
            // The body before this group belongs to the previous message,
            // or to this one's previous transaction.
            let owner = match self.open.as_mut() {
                Some(previous) => previous,
                None => &mut *current,
            };
            let Some(reply) = replies.next() else {
                return Err(reason(result));
            };
            owner.heard = true;
            answer_body(&mut owner.answers, &body.accepted, &reply);
            if let Some(previous) = self.open.take() {
                done.push(previous.end(None));
            }
        }
        let replies: Vec<_> = replies.collect();
        if let Err(error) = result {
            return Err(failure(&replies, error));
        }
        match judge(batch, &replies, &mut current.answers.outcomes) {
            Next::SendBody { accepted } => {
                let timeout = session.client.timeout;
                let last_piece =
                    write_body(&mut session.client.stream, &job.body, chunks, timeout).await?;
                let body = PendingBody {
                    accepted,
                    last_piece,
                };
                if session.pipelining {
                    self.pending = Some(body);
                } else {
                    let (replies, result) =
                        exchange(&mut session.client, &body.last_piece, 1).await;
                    let Some(reply) = replies.first() else {
                        return Err(reason(result));
                    };
                    answer_body(&mut current.answers, &body.accepted, reply);
                }
            }
            Next::Abort { last } => abort(session, last).await.map_err(|e| e.to_string())?,
        }
        Ok(())
    }

    /// The connection broke while `current` was being sent: it and the
    /// message before it end with what was heard.
    fn break_off(&mut self, reason: String, current: Open<K>, done: &mut Vec<(K, Attempt)>) {
        self.pending = None;
        if let Some(previous) = self.open.take() {
            done.push(previous.end(Some(&reason)));
        }
        done.push(current.end(Some(&reason)));
        self.broken = Some(reason);
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

    /// A pipeline hands each attempt back as soon as its body's reply is
    /// in: the first message's with the second push (its reply came with
    /// the second envelope's), the second's at `finish`; a message whose
    /// only recipient is refused comes back from its own push.
    #[tokio::test]
    async fn a_pipeline_hands_back_each_attempt_when_its_reply_arrives() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let upstream = tokio::spawn(async move {
            read_until(&mut server, b"DATA\r\n").await;
            server
                .write_all(b"250 ok\r\n250 ok\r\n354 go\r\n")
                .await
                .expect("write");
            read_until(&mut server, b"DATA\r\n").await;
            server
                .write_all(
                    b"250 queued one\r\n250 ok\r\n550 5.1.1 unknown\r\n503 no valid recipients\r\n",
                )
                .await
                .expect("write");
            read_until(&mut server, b"RSET\r\n").await;
            server.write_all(b"250 reset\r\n").await.expect("write");
            read_until(&mut server, b"DATA\r\n").await;
            server
                .write_all(b"250 ok\r\n250 ok\r\n354 go\r\n")
                .await
                .expect("write");
            read_until(&mut server, b"\r\n.\r\n").await;
            server
                .write_all(b"250 queued three\r\n")
                .await
                .expect("write");
        });
        let (r1, r2, r3) = ([rcpt(1)], [rcpt(2)], [rcpt(3)]);
        let bodies = [
            Content::whole(b"one\r\n".to_vec()),
            Content::whole(b"two\r\n".to_vec()),
            Content::whole(b"three\r\n".to_vec()),
        ];
        let mut session = session(client, true);
        let mut pipeline = super::Pipeline::new(&mut session);
        let first = pipeline
            .push("one", &job("a@x.test", &r1, &bodies[0]), &NoChunks)
            .await;
        assert!(first.is_empty(), "{first:?}");
        let second = pipeline
            .push("two", &job("b@x.test", &r2, &bodies[1]), &NoChunks)
            .await;
        assert!(
            matches!(
                &second[..],
                [("one", Attempt::Answered(a)), ("two", Attempt::Answered(b))]
                    if matches!(a.outcomes[..], [(1, Outcome::Delivered(_))])
                        && matches!(b.outcomes[..], [(2, Outcome::Failed(_))])
            ),
            "{second:?}"
        );
        let third = pipeline
            .push("three", &job("c@x.test", &r3, &bodies[2]), &NoChunks)
            .await;
        assert!(third.is_empty(), "{third:?}");
        let last = pipeline.finish().await;
        assert!(
            matches!(
                &last[..],
                [("three", Attempt::Answered(a))] if matches!(a.outcomes[..], [(3, Outcome::Delivered(_))])
            ),
            "{last:?}"
        );
        assert!(!pipeline.is_broken());
        upstream.await.expect("server");
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
