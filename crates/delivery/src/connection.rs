//! Opening an authenticated connection to an upstream: TCP, STARTTLS (or
//! implicit TLS, or none to loopback), EHLO, AUTH with the token twice.

use mail_send::{Credentials, SmtpClient, SmtpClientBuilder};
use relay_config::TlsMode;
use smtp_proto::EXT_PIPELINING;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::outcome::{is_credential_failure, reply_text, with_hint};
use crate::Upstream;

/// An open, authenticated SMTP session with an upstream.
pub enum Connection {
    Tls(Box<Session<TlsStream<TcpStream>>>),
    Plain(Session<TcpStream>),
}

/// A client plus what its EHLO told us.
pub struct Session<T: AsyncRead + AsyncWrite + Unpin> {
    pub client: SmtpClient<T>,
    /// The upstream takes pipelined MAIL/RCPT/DATA.
    pub pipelining: bool,
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
    let builder =
        SmtpClientBuilder::new_with_tls_connector(up.host.clone(), up.port, up.connector.clone())
            .implicit_tls(up.tls == TlsMode::Implicit)
            .helo_host(up.helo.clone())
            .timeout(up.timeout)
            // EHLO and AUTH are done below, so that we keep the capabilities.
            .say_ehlo(false);
    let describe = |e: mail_send::Error| describe(up, e);
    Ok(match up.tls {
        TlsMode::None => {
            let client = builder.connect_plain().await.map_err(describe)?;
            let _ = client.stream.set_nodelay(true);
            Connection::Plain(authenticate(up, client).await?)
        }
        TlsMode::StartTls | TlsMode::Implicit => {
            let client = builder.connect().await.map_err(describe)?;
            let _ = client.stream.get_ref().0.set_nodelay(true);
            Connection::Tls(Box::new(authenticate(up, client).await?))
        }
    })
}

async fn authenticate<T: AsyncRead + AsyncWrite + Unpin>(
    up: &Upstream,
    mut client: SmtpClient<T>,
) -> Result<Session<T>, ConnectError> {
    let capabilities = client.ehlo(&up.helo).await.map_err(|e| describe(up, e))?;
    let token = up.token.expose().to_string();
    let credentials = Credentials::new(token.clone(), token);
    client
        .authenticate(&credentials, &capabilities)
        .await
        .map_err(|e| describe(up, e))?;
    Ok(Session {
        client,
        pipelining: capabilities.has_capability(EXT_PIPELINING),
    })
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
                with_hint(&reply_text(&r))
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
