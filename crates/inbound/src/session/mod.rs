//! One client connection: the SMTP state machine over any byte stream.
//!
//! The session reads into a small buffer, and handles whatever complete
//! input it holds before reading again, so pipelined commands are answered
//! in order and their replies go out in one write. Each phase lives in its
//! own file: `command` (the verbs), `data` (DATA and BDAT bodies), `auth`
//! (AUTH PLAIN/LOGIN), `starttls` (the switch to TLS and what it resets).

mod auth;
mod command;
mod data;
mod starttls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use relay_config::Server;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::RateLimits;
use tokio_util::sync::CancellationToken;

use crate::handoff::Store;
use crate::reply;
use crate::spool::Incoming;
use crate::tls::{Conn, InboundTls};

/// Longest command line we accept, as RFC 5321 §4.5.3.1.4 and smtp-proto.
pub const MAX_LINE: usize = 4096;

/// What a handler tells the loop to do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Close,
    /// `220` to STARTTLS was queued: flush it, then hand the stream to
    /// the TLS handshake.
    StartTls,
}

/// Where the session is in the conversation.
pub(crate) enum State {
    /// Waiting for a command line.
    Command,
    /// Discarding the rest of an over-long command line.
    SkipLine,
    /// Reading a DATA body.
    Data(Incoming),
    /// Reading `remaining` bytes of a BDAT chunk.
    Bdat { remaining: usize, last: bool },
    /// In an AUTH exchange.
    Auth(auth::Step),
}

/// The mail transaction between MAIL and the end of DATA/BDAT.
pub(crate) struct Transaction {
    pub sender: String,
    pub recipients: Vec<String>,
    /// The body collected from BDAT chunks so far.
    pub chunks: Option<Incoming>,
}

/// One SMTP session. Generic over the stream so tests can drive it over
/// an in-memory duplex as well as TCP.
pub struct Session<S, T> {
    stream: Conn<S>,
    settings: Arc<Server>,
    /// The certificate STARTTLS presents; `None`: STARTTLS not offered.
    tls: Option<Arc<InboundTls>>,
    store: Arc<T>,
    client: SocketAddr,
    shutdown: CancellationToken,
    pub(crate) out: Vec<u8>,
    pub(crate) input: Vec<u8>,
    pub(crate) state: State,
    pub(crate) helo: Option<(String, &'static str)>,
    pub(crate) tx: Option<Transaction>,
    pub(crate) authenticated: bool,
    /// The `[[clients]]` name this session authenticated as.
    pub(crate) client_name: Option<String>,
    /// Shared by every session of a listener: argon2 takes ~19 MiB per
    /// verification, so a flood of AUTH attempts must not run them all at
    /// once (memory would grow with the number of attempts).
    pub(crate) verifications: Arc<Semaphore>,
    /// Rate-limit buckets and failed-AUTH counts per IP, shared by every
    /// session of a listener.
    pub(crate) rates: Arc<RateLimits>,
}

impl<S, T> Session<S, T>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Store,
{
    /// A session for a client that passed the connection checks.
    pub fn new(
        stream: S,
        client: SocketAddr,
        settings: Arc<Server>,
        store: Arc<T>,
        shutdown: CancellationToken,
    ) -> Self {
        Session {
            stream: Conn::Plain(stream),
            tls: None,
            store,
            client,
            shutdown,
            out: Vec::with_capacity(512),
            input: Vec::with_capacity(4096),
            state: State::Command,
            helo: None,
            tx: None,
            authenticated: false,
            client_name: None,
            verifications: Arc::new(Semaphore::new(1)),
            rates: Arc::new(RateLimits::new(&settings)),
            settings,
        }
    }

    /// Shares `limit` (permits = password verifications at once) with the
    /// other sessions; without it a session verifies one at a time alone.
    pub fn with_verification_limit(mut self, limit: Arc<Semaphore>) -> Self {
        self.verifications = limit;
        self
    }

    /// Counts messages in `rates`, shared with the other sessions; without
    /// it a session's rate limits count its own messages only.
    pub fn with_rate_limits(mut self, rates: Arc<RateLimits>) -> Self {
        self.rates = rates;
        self
    }

    /// Offers STARTTLS with this certificate.
    pub fn with_tls(mut self, tls: Option<Arc<InboundTls>>) -> Self {
        self.tls = tls;
        self
    }

    /// Runs the conversation until QUIT, disconnect, timeout or shutdown.
    /// `Err` is an I/O error on the connection.
    pub async fn run(mut self) -> std::io::Result<()> {
        let result = self.converse().await;
        // A message cut off mid-body (the client left, a timeout, an I/O
        // error) will not be stored: its chunks go now.
        if let State::Data(incoming) = std::mem::replace(&mut self.state, State::Command) {
            self.discard(incoming).await;
        }
        self.abandon_transaction().await;
        result
    }

    /// Drops the transaction in progress, with any body chunks it stored.
    pub(crate) async fn abandon_transaction(&mut self) {
        if let Some(incoming) = self.tx.take().and_then(|tx| tx.chunks) {
            self.discard(incoming).await;
        }
    }

    /// Forgets a message that will not be stored.
    pub(crate) async fn discard(&self, incoming: Incoming) {
        if incoming.has_chunks() {
            self.store.discard(&incoming.id).await;
        }
    }

    async fn converse(&mut self) -> std::io::Result<()> {
        self.out
            .extend_from_slice(reply::greeting(&self.settings.hostname).as_bytes());
        let mut read_buf = vec![0u8; 16 * 1024];
        loop {
            match self.handle_input().await? {
                Flow::Close => {
                    self.flush().await?;
                    return Ok(());
                }
                Flow::StartTls => {
                    self.flush().await?;
                    if !self.start_tls().await {
                        return Ok(());
                    }
                    continue;
                }
                Flow::Continue => {}
            }
            self.flush().await?;
            let idle = matches!(
                self.state,
                State::Command | State::SkipLine | State::Auth(_)
            );
            let n = tokio::select! {
                read = tokio::time::timeout(self.settings.command_timeout, self.stream.read(&mut read_buf)) => match read {
                    Ok(read) => read?,
                    Err(_) => {
                        tracing::info!(client = %self.client, "Closing an idle session: command timeout.");
                        return self.close_with(reply::TIMEOUT).await;
                    }
                },
                _ = self.shutdown.cancelled(), if idle => return self.close_with(reply::SHUTTING_DOWN).await,
            };
            if n == 0 {
                return Ok(());
            }
            self.input.extend_from_slice(&read_buf[..n]);
        }
    }

    /// Handles everything complete in `input`, leaving partial input there.
    async fn handle_input(&mut self) -> std::io::Result<Flow> {
        loop {
            match &mut self.state {
                State::Command | State::Auth(_) => {
                    let Some(end) = self.input.iter().position(|&b| b == b'\n') else {
                        if self.input.len() > MAX_LINE {
                            self.input.clear();
                            self.state = State::SkipLine;
                            self.reply(reply::LINE_TOO_LONG);
                        }
                        return Ok(Flow::Continue);
                    };
                    let line: Vec<u8> = self.input.drain(..=end).collect();
                    let flow = if line.len() > MAX_LINE {
                        self.reply(reply::LINE_TOO_LONG);
                        Flow::Continue
                    } else if let State::Auth(step) = &self.state {
                        let step = step.clone();
                        self.auth_line(step, &line).await
                    } else {
                        self.command(&line).await
                    };
                    match flow {
                        Flow::Continue => {}
                        Flow::Close => return Ok(Flow::Close),
                        Flow::StartTls => {
                            // Whatever the client sent after STARTTLS was
                            // sent in plain text: never run it as if it
                            // came over TLS (CVE-2011-0411).
                            self.input.clear();
                            return Ok(Flow::StartTls);
                        }
                    }
                }
                State::SkipLine => match self.input.iter().position(|&b| b == b'\n') {
                    Some(end) => {
                        self.input.drain(..=end);
                        self.state = State::Command;
                    }
                    None => {
                        self.input.clear();
                        return Ok(Flow::Continue);
                    }
                },
                State::Data(incoming) => {
                    let progress = incoming.decoder.feed(&self.input);
                    incoming.spool(&*self.store).await;
                    match progress {
                        crate::decoder::Progress::Done(used) => {
                            self.input.drain(..used);
                            let State::Data(incoming) =
                                std::mem::replace(&mut self.state, State::Command)
                            else {
                                unreachable!("state checked above")
                            };
                            self.end_of_data(incoming).await;
                        }
                        crate::decoder::Progress::More => {
                            self.input.clear();
                            return Ok(Flow::Continue);
                        }
                    }
                }
                State::Bdat { remaining, last } => {
                    let take = (*remaining).min(self.input.len());
                    let (left, last) = (*remaining - take, *last);
                    if let Some(incoming) = self.tx.as_mut().and_then(|tx| tx.chunks.as_mut()) {
                        incoming.decoder.feed(&self.input[..take]);
                        incoming.spool(&*self.store).await;
                    }
                    self.input.drain(..take);
                    if left > 0 {
                        self.state = State::Bdat {
                            remaining: left,
                            last,
                        };
                        return Ok(Flow::Continue);
                    }
                    self.state = State::Command;
                    self.end_of_chunk(last).await;
                }
            }
        }
    }

    pub(crate) fn reply(&mut self, text: impl AsRef<str>) {
        self.out.extend_from_slice(text.as_ref().as_bytes());
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    async fn close_with(&mut self, text: &str) -> std::io::Result<()> {
        self.reply(text);
        self.flush().await?;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
        Ok(())
    }

    pub(crate) fn settings(&self) -> &Server {
        &self.settings
    }

    pub(crate) fn client(&self) -> SocketAddr {
        self.client
    }

    pub(crate) fn store(&self) -> &T {
        &self.store
    }

    /// Whether the conversation is encrypted (STARTTLS done).
    pub(crate) fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// The `[[clients]]` entry this session authenticated as, if any.
    pub(crate) fn authenticated_client(&self) -> Option<&relay_config::Client> {
        let name = self.client_name.as_deref()?;
        self.settings.clients.iter().find(|c| c.name == name)
    }

    /// Loopback clients are trusted with plain text (same host); every
    /// other client must encrypt before sending credentials.
    pub(crate) fn is_loopback(&self) -> bool {
        let ip = self.client.ip();
        ip.is_loopback()
            || matches!(ip, std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
    }
}
