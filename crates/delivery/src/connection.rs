//! Opening an authenticated connection to an upstream: TCP, STARTTLS (or
//! implicit TLS, or none to loopback), EHLO, AUTH with the token twice.
//! Done step by step (not with mail-send's all-in-one builder) so that
//! `check` can name the [`Step`] that failed.

use mail_send::{Credentials, SmtpClient};
use relay_config::TlsMode;
use smtp_proto::{EXT_8BIT_MIME, EXT_PIPELINING, EXT_START_TLS};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::outcome::{is_credential_failure, reply_text, with_hint, Diagnosis};
use crate::probe::Step;
use crate::Upstream;

/// An open, authenticated SMTP session with an upstream.
pub enum Connection {
    Tls(Box<Session<TlsStream<TcpStream>>>),
    Plain(Session<TcpStream>),
}

impl Connection {
    /// Says QUIT and closes (one-off connections of `check` and
    /// `send-test`, and a worker's pooled one when it stops); a failure
    /// here changes nothing, so it is ignored.
    pub(crate) async fn quit(self) {
        let _ = match self {
            Connection::Tls(s) => s.client.quit().await,
            Connection::Plain(s) => s.client.quit().await,
        };
    }
}

/// A client plus what its EHLO told us.
pub struct Session<T: AsyncRead + AsyncWrite + Unpin> {
    pub client: SmtpClient<T>,
    /// The upstream takes pipelined MAIL/RCPT/DATA.
    pub pipelining: bool,
    /// The upstream offers 8BITMIME (`BODY=8BITMIME` on MAIL FROM).
    pub eight_bit_mime: bool,
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The upstream refused our token: not the message's fault.
    #[error("{0}")]
    Credentials(String),
    /// Anything else (DNS, refused, TLS, timeout): try again later.
    #[error("{0}")]
    Transient(String),
}

/// Connects and authenticates.
pub async fn connect(up: &Upstream) -> Result<Connection, ConnectError> {
    let tcp = tokio::time::timeout(up.timeout, TcpStream::connect((up.host.as_str(), up.port)))
        .await
        .map_err(|_| mail_send::Error::Timeout)
        .and_then(|r| r.map_err(mail_send::Error::Io))
        .map_err(|e| describe(up, e))?;
    open(up, tcp).await.map_err(|(_, e)| describe(up, e))
}

/// Greeting, STARTTLS (or implicit TLS, or none), EHLO and AUTH over an
/// already connected socket; on failure, says in which phase.
pub(crate) async fn open(
    up: &Upstream,
    tcp: TcpStream,
) -> Result<Connection, (Step, mail_send::Error)> {
    let _ = tcp.set_nodelay(true);
    let mut client = SmtpClient {
        stream: tcp,
        timeout: up.timeout,
    };
    Ok(match up.tls {
        TlsMode::None => {
            greeting(&mut client).await?;
            Connection::Plain(authenticate(up, client).await?)
        }
        TlsMode::Implicit => {
            let mut client = client
                .into_tls(&up.connector, &up.host)
                .await
                .map_err(|e| (Step::Tls, e))?;
            greeting(&mut client).await?;
            Connection::Tls(Box::new(authenticate(up, client).await?))
        }
        TlsMode::StartTls => {
            greeting(&mut client).await?;
            let ehlo = client.ehlo(&up.helo).await.map_err(|e| (Step::Ehlo, e))?;
            if !ehlo.has_capability(EXT_START_TLS) {
                return Err((Step::StartTls, mail_send::Error::MissingStartTls));
            }
            let reply = client
                .cmd(b"STARTTLS\r\n")
                .await
                .map_err(|e| (Step::StartTls, e))?;
            if reply.code / 100 != 2 {
                return Err((Step::StartTls, mail_send::Error::UnexpectedReply(reply)));
            }
            let client = client
                .into_tls(&up.connector, &up.host)
                .await
                .map_err(|e| (Step::Tls, e))?;
            Connection::Tls(Box::new(authenticate(up, client).await?))
        }
    })
}

/// Waits (bounded, unlike mail-send's `read`) for the `220` greeting.
async fn greeting<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
) -> Result<(), (Step, mail_send::Error)> {
    let reply = tokio::time::timeout(client.timeout, client.read())
        .await
        .map_err(|_| mail_send::Error::Timeout)
        .and_then(|r| r)
        .map_err(|e| (Step::Greeting, e))?;
    if reply.code / 100 != 2 {
        return Err((Step::Greeting, mail_send::Error::UnexpectedReply(reply)));
    }
    Ok(())
}

async fn authenticate<T: AsyncRead + AsyncWrite + Unpin>(
    up: &Upstream,
    mut client: SmtpClient<T>,
) -> Result<Session<T>, (Step, mail_send::Error)> {
    let fail = |e| (Step::Auth, e);
    let capabilities = client.ehlo(&up.helo).await.map_err(fail)?;
    let (username, password) = up.login.username_password();
    let credentials = Credentials::new(username.to_string(), password.to_string());
    client
        .authenticate(&credentials, &capabilities)
        .await
        .map_err(fail)?;
    Ok(Session {
        client,
        pipelining: capabilities.has_capability(EXT_PIPELINING),
        eight_bit_mime: capabilities.has_capability(EXT_8BIT_MIME),
    })
}

/// The reply with its fix, in terms of the credential this upstream uses
/// (a `535` means something else for a Server API Token than for an SMTP
/// Token).
pub(crate) fn credential_hint(up: &Upstream, reply: &str) -> String {
    match Diagnosis::of(reply) {
        Some(Diagnosis::WrongCredentials) => format!("{reply} (fix: {})", up.login.refused_fix()),
        _ => with_hint(reply),
    }
}

/// Classifies a mail-send error while connecting, naming the upstream.
fn describe(up: &Upstream, e: mail_send::Error) -> ConnectError {
    let at = format!("{}:{}", up.host, up.port);
    match e {
        mail_send::Error::AuthenticationFailed(r) | mail_send::Error::UnexpectedReply(r)
            if is_credential_failure(&r) =>
        {
            ConnectError::Credentials(format!(
                "{at} refused our credentials: {}",
                credential_hint(up, &reply_text(&r))
            ))
        }
        mail_send::Error::AuthenticationFailed(r) | mail_send::Error::UnexpectedReply(r) => {
            ConnectError::Transient(format!("{at} answered {}", reply_text(&r)))
        }
        mail_send::Error::MissingStartTls => ConnectError::Transient(format!(
            "{at} does not offer STARTTLS, which is required (tls = \"starttls\")"
        )),
        mail_send::Error::UnsupportedAuthMechanism => {
            ConnectError::Transient(format!("{at} offers no AUTH PLAIN or LOGIN after TLS"))
        }
        mail_send::Error::Timeout => ConnectError::Transient(format!("{at}: timed out")),
        other => ConnectError::Transient(format!("{at}: {other}")),
    }
}
