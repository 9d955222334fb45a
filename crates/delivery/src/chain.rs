//! Relaying several messages over one pipelining session, one round trip
//! each: every message's body and its end-of-data `.` share a write with the
//! next message's MAIL, RCPTs and DATA (RFC 2920 lets message content start
//! a command group). One message alone costs two round trips, as before;
//! a chain of N costs N + 1.
//!
//! Only for messages within one transaction (≤ 50 recipients); bigger ones
//! go through [`crate::transaction::relay`] on their own.

use relay_queue::PendingRecipient;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::connection::Session;
use crate::outcome::{from_reply, reply_text};
use crate::transaction::{
    body_outcome, dot_stuff, end_aborted, exchange, first_refusal, Attempted,
};

/// One message of a chain.
pub struct Job<'a> {
    pub sender: &'a str,
    pub recipients: &'a [PendingRecipient],
    /// CRLF, not dot-stuffed.
    pub body: &'a [u8],
}

/// A message whose envelope was accepted: its body goes out with the next
/// group.
struct Pending {
    job: usize,
    accepted: Vec<i64>,
    stuffed: Vec<u8>,
}

/// Relays `jobs` in order; one [`Attempted`] per job. After a broken
/// connection every job without a final answer is marked broken.
pub async fn relay_chain<T: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session<T>,
    jobs: &[Job<'_>],
) -> Vec<Attempted> {
    let mut results: Vec<Attempted> = jobs.iter().map(|_| Attempted::default()).collect();
    let mut pending: Option<Pending> = None;
    let mut broken: Option<(usize, String)> = None;
    // The last job whose commands were written; later ones were never tried.
    let mut written = 0;
    for (i, job) in jobs.iter().enumerate() {
        written = i;
        // The body moves into the group: only its answer is still needed.
        let mut group = pending
            .as_mut()
            .map(|p| std::mem::take(&mut p.stuffed))
            .unwrap_or_default();
        let envelope = envelope(job);
        group.extend_from_slice(envelope.concat().as_bytes());
        let expected = envelope.len() + usize::from(pending.is_some());
        let (replies, result) = exchange(&mut session.client, &group, expected).await;
        results[i].answered = !replies.is_empty();
        let mut replies = replies.into_iter();
        if let Some(p) = pending.take() {
            match replies.next() {
                Some(reply) => {
                    let outcome = body_outcome(&reply);
                    results[p.job].reply = Some(reply_text(&reply));
                    results[p.job]
                        .outcomes
                        .extend(p.accepted.iter().map(|&idx| (idx, outcome.clone())));
                }
                None => {
                    let error = result
                        .as_ref()
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    broken = Some((p.job, error));
                    break;
                }
            }
        }
        let replies: Vec<_> = replies.collect();
        if let Err(error) = result {
            let error = first_refusal(&replies).unwrap_or(error);
            broken = Some((i, error.to_string()));
            break;
        }
        // replies: MAIL, one per RCPT, DATA.
        let (mail, rest) = replies
            .split_first()
            .map_or((None, &[][..]), |(m, r)| (Some(m), r));
        let Some(mail) = mail else {
            broken = Some((i, "no reply to MAIL FROM".into()));
            break;
        };
        let data = rest.last();
        let rcpt_replies = &rest[..rest.len().saturating_sub(1)];
        if mail.code / 100 != 2 {
            let outcome = from_reply(mail);
            results[i]
                .outcomes
                .extend(job.recipients.iter().map(|r| (r.idx, outcome.clone())));
        } else {
            let mut accepted = Vec::new();
            for (rcpt, reply) in job.recipients.iter().zip(rcpt_replies) {
                if reply.code / 100 == 2 {
                    accepted.push(rcpt.idx);
                } else {
                    results[i].outcomes.push((rcpt.idx, from_reply(reply)));
                }
            }
            if data.is_some_and(|d| d.code == 354) && !accepted.is_empty() {
                pending = Some(Pending {
                    job: i,
                    accepted,
                    stuffed: dot_stuff(job.body),
                });
                continue;
            }
            if let Some(data) = data {
                let outcome = from_reply(data);
                results[i]
                    .outcomes
                    .extend(accepted.iter().map(|&idx| (idx, outcome.clone())));
            }
        }
        // The transaction was refused: clear it before the next one.
        if let Err(error) = end_aborted(session, data).await {
            broken = Some((i + 1, error.to_string()));
            break;
        }
    }
    if broken.is_none() {
        if let Some(p) = pending.take() {
            let (replies, result) = exchange(&mut session.client, &p.stuffed, 1).await;
            match replies.first() {
                Some(reply) => {
                    let outcome = body_outcome(reply);
                    results[p.job].reply = Some(reply_text(reply));
                    results[p.job]
                        .outcomes
                        .extend(p.accepted.iter().map(|&idx| (idx, outcome.clone())));
                }
                None => {
                    let error = result.err().map(|e| e.to_string()).unwrap_or_default();
                    broken = Some((p.job, error));
                }
            }
        }
    }
    if let Some((from, error)) = broken {
        // From `from` on, a job that was sent has no final answer (its
        // recipients stay pending); one never sent was not tried at all.
        for (j, result) in results.iter_mut().enumerate().skip(from) {
            if j <= written {
                result.broken = Some(error.clone());
            } else {
                result.untried = true;
            }
        }
    }
    results
}

/// MAIL, RCPT per recipient, DATA.
fn envelope(job: &Job<'_>) -> Vec<String> {
    let mut commands = Vec::with_capacity(job.recipients.len() + 2);
    commands.push(format!("MAIL FROM:<{}>\r\n", job.sender));
    commands.extend(
        job.recipients
            .iter()
            .map(|r| format!("RCPT TO:<{}>\r\n", r.address)),
    );
    commands.push("DATA\r\n".to_string());
    commands
}

#[cfg(test)]
mod tests {
    use super::{relay_chain, Job};
    use crate::connection::Session;
    use relay_queue::{Outcome, PendingRecipient};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// Relays three one-recipient messages (`one`, `two`, then `third`)
    /// as a chain over `client`.
    async fn run_three(client: DuplexStream, third: &[u8]) -> Vec<crate::transaction::Attempted> {
        let mut session = Session {
            client: mail_send::SmtpClient {
                stream: client,
                timeout: Duration::from_secs(5),
            },
            pipelining: true,
        };
        let rcpt = |i: i64| {
            [PendingRecipient {
                idx: i,
                address: format!("r{i}@x.test"),
            }]
        };
        let (r1, r2, r3) = (rcpt(1), rcpt(2), rcpt(3));
        let job = |sender, recipients, body| Job {
            sender,
            recipients,
            body,
        };
        let jobs = [
            job("a@x.test", &r1[..], &b"one\r\n"[..]),
            job("b@x.test", &r2[..], &b"two\r\n"[..]),
            job("c@x.test", &r3[..], third),
        ];
        relay_chain(&mut session, &jobs).await
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
        let results = run_three(client, b".three\r\n").await;
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
        assert!(results.iter().all(|r| r.broken.is_none() && !r.untried));
        assert!(matches!(
            results[0].outcomes[..],
            [(1, Outcome::Delivered(_))]
        ));
        assert!(matches!(
            results[1].outcomes[..],
            [(2, Outcome::Deferred(_))]
        ));
        assert!(matches!(
            results[2].outcomes[..],
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
        let results = run_three(client, b"three\r\n").await;
        upstream.await.expect("server");
        assert!(
            matches!(results[0].outcomes[..], [(1, Outcome::Delivered(_))])
                && results[0].broken.is_none()
        );
        assert!(
            results[1].broken.is_some() && results[1].outcomes.is_empty() && !results[1].untried
        );
        assert!(results[2].untried && results[2].broken.is_none());
    }
}
