//! Cross-replica wake-up: every enqueue's commit NOTIFYs the queue's
//! channel, and each replica keeps one connection LISTENing on it that
//! wakes its delivery workers ([`crate::Queue::arrivals`]). A lost
//! connection is re-opened with backoff; until it is back the workers are
//! woken every few seconds instead (a slow poll), so nothing waits long.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Socket};

use super::connect::{Target, Tls};

/// First wait before connecting again.
const RECONNECT_MIN: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// How often workers are woken while the connection is away.
const SLOW_POLL: Duration = Duration::from_secs(5);
/// Longest another replica's commit waits for a wake-up here.
const REMOTE_WAKE_EVERY: Duration = Duration::from_millis(20);

/// How one connection ended.
enum Ended {
    /// It never got to LISTEN.
    Failed(String),
    /// It listened, then was lost.
    Lost(String),
}

/// Keeps a LISTEN connection on `channel` for ever (until aborted).
pub(crate) async fn run(target: Target, channel: String, owner: Arc<str>, arrivals: Arc<Notify>) {
    let mut backoff = RECONNECT_MIN;
    let mut failing = false;
    loop {
        let ended = match &target.tls {
            Tls::Plain => listen(&target, tokio_postgres::NoTls, &channel, &owner, &arrivals).await,
            Tls::Rustls(tls) => listen(&target, tls.clone(), &channel, &owner, &arrivals).await,
        };
        match ended {
            Ended::Lost(reason) => {
                tracing::warn!(error = %reason, "Lost the shared queue's wake-up connection; reconnecting (deliveries poll meanwhile).");
                backoff = RECONNECT_MIN;
                failing = false;
            }
            Ended::Failed(reason) if !failing => {
                tracing::warn!(error = %reason, "Cannot open the shared queue's wake-up connection; retrying with backoff (deliveries poll meanwhile).");
                failing = true;
            }
            Ended::Failed(reason) => {
                tracing::debug!(error = %reason, "Still cannot open the wake-up connection.")
            }
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            arrivals.notify_waiters();
            tokio::time::sleep(SLOW_POLL.min(until - Instant::now())).await;
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// One connection's life: connect, LISTEN, wake on every notification.
async fn listen<T: MakeTlsConnect<Socket>>(
    target: &Target,
    tls: T,
    channel: &str,
    owner: &str,
    arrivals: &Notify,
) -> Ended {
    let (client, mut connection) = match target.config.connect(tls).await {
        Ok(pair) => pair,
        Err(e) => return Ended::Failed(reason(e)),
    };
    // The LISTEN's reply comes through the connection, which must be
    // polled meanwhile.
    let command = format!("LISTEN {channel}");
    let listening = client.batch_execute(&command);
    tokio::pin!(listening);
    loop {
        tokio::select! {
            done = &mut listening => match done {
                Ok(()) => break,
                Err(e) => return Ended::Failed(reason(e)),
            },
            message = poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Ended::Failed(reason(e)),
                None => return Ended::Failed("the server closed the connection".into()),
            },
        }
    }
    tracing::debug!(
        channel,
        "Listening for messages committed by other replicas."
    );
    // Whatever was committed while this connection was away.
    arrivals.notify_waiters();
    // Other replicas' commits wake one delivery here at most once per
    // REMOTE_WAKE_EVERY: under load their own deliveries take their mail,
    // and a wake-up for each of their commits only had ours claim nothing.
    // A commit heard owes a wake-up, paid at once if the last one is
    // REMOTE_WAKE_EVERY old (the sleep is then already over).
    let mut woke = Instant::now() - REMOTE_WAKE_EVERY;
    let mut owed = false;
    loop {
        let message = tokio::select! {
            message = poll_fn(|cx| connection.poll_message(cx)) => message,
            _ = tokio::time::sleep_until(woke + REMOTE_WAKE_EVERY), if owed => {
                owed = false;
                woke = Instant::now();
                crate::wake(arrivals);
                continue;
            }
        };
        match message {
            // The payload names who committed; our own writer woke our
            // deliveries already.
            Some(Ok(AsyncMessage::Notification(note))) => owed |= note.payload() != owner,
            Some(Ok(_)) => {}
            Some(Err(e)) => return Ended::Lost(reason(e)),
            None => return Ended::Lost("the server closed the connection".into()),
        }
    }
}

/// What went wrong, as `QueueError` says it: tokio-postgres's own text
/// names only the step ("error performing TLS handshake"), not the cause.
fn reason(e: tokio_postgres::Error) -> String {
    crate::QueueError::from(e).to_string()
}
