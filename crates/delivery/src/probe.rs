//! Checking one upstream by hand, for `check` and `send-test`: the same
//! connection the daemon opens, taken one step at a time (DNS, TCP,
//! greeting, STARTTLS, TLS, AUTH), so a failure names its step, says why
//! in words, and says what to change.

use std::fmt;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use relay_config::{Config, TlsMode};
use relay_queue::{Content, Outcome, PendingRecipient};
use rustls::CertificateError;
use tokio::net::TcpStream;

use crate::attempt::Attempt;
use crate::body::{Body, NoChunks};
use crate::connection::{open, Connection};
use crate::outcome::{reply_text, Diagnosis};
use crate::relay::{relay, Job};
use crate::{Upstream, UpstreamError};

/// Where a check (or opening a connection) stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Before connecting: the configuration cannot work (no token, bad
    /// `ca_file`).
    Config,
    /// Looking up the host's addresses.
    Resolve,
    /// Opening the TCP connection.
    Connect,
    /// Waiting for the SMTP greeting.
    Greeting,
    /// EHLO before STARTTLS.
    Ehlo,
    /// STARTTLS offered and accepted.
    StartTls,
    /// The TLS handshake and certificate check.
    Tls,
    /// AUTH with the Server API Token.
    Auth,
    /// MAIL FROM with the address `check --from` asks about.
    Sender,
    /// Sending the test message.
    Send,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Config => "config",
            Step::Resolve => "DNS resolve",
            Step::Connect => "TCP connect",
            Step::Greeting => "SMTP greeting",
            Step::Ehlo => "EHLO",
            Step::StartTls => "STARTTLS",
            Step::Tls => "TLS handshake",
            Step::Auth => "AUTH",
            Step::Sender => "MAIL FROM",
            Step::Send => "send",
        })
    }
}

/// A failed step, why it failed, and what the operator can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub step: Step,
    /// What went wrong, naming the host (never the token).
    pub reason: String,
    /// What to change, when we know.
    pub fix: Option<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FAILED at {}: {}", self.step, self.reason)?;
        match &self.fix {
            Some(fix) => write!(f, " — fix: {fix}"),
            None => Ok(()),
        }
    }
}

/// The verdict on one upstream, printed by `check` as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Logged in (and took the sender asked about, if any); says how the
    /// connection was secured.
    Passed(TlsMode, Option<String>),
    Failed(Failure),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (tls, sender) = match self {
            Verdict::Passed(tls, sender) => (tls, sender),
            Verdict::Failed(failure) => return failure.fmt(f),
        };
        f.write_str(match tls {
            TlsMode::StartTls => "OK (STARTTLS, authenticated",
            TlsMode::Implicit => "OK (implicit TLS, authenticated",
            TlsMode::None => "OK (no TLS, authenticated",
        })?;
        match sender {
            Some(sender) => write!(f, "; sender {sender} accepted)"),
            None => f.write_str(")"),
        }
    }
}

/// Per step (connect, each command): long enough for a slow network, short
/// enough that a blocked port is reported while the operator still waits.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Probes every upstream at once (a blocked port costs one timeout, not
/// one per upstream); verdicts come back in `config.upstreams` order. With
/// `sender`, each is also asked whether it takes that address as a sender
/// (nothing is sent). For `check`.
pub async fn probe_all(config: &Config, sender: Option<&str>) -> Vec<Verdict> {
    let tasks: Vec<_> = crate::upstreams(config)
        .into_iter()
        .map(|(_, built)| match for_probe(built) {
            Ok(up) => {
                let sender = sender.map(str::to_string);
                tokio::spawn(async move { probe(&up, sender.as_deref()).await })
            }
            Err(failure) => tokio::spawn(async move { Verdict::Failed(failure) }),
        })
        .collect();
    let mut verdicts = Vec::with_capacity(tasks.len());
    for task in tasks {
        verdicts.push(task.await.unwrap_or_else(|e| {
            Verdict::Failed(Failure {
                step: Step::Config,
                reason: format!("the check itself failed: {e}"),
                fix: None,
            })
        }));
    }
    verdicts
}

/// The delivery settings of upstream `name`, built as `serve` builds them
/// (with the probe's shorter timeout), or why they cannot work. For
/// `send-test`.
pub fn target(config: &Config, name: &str) -> Result<Upstream, Failure> {
    crate::upstreams(config)
        .into_iter()
        .find(|(n, _)| n == name)
        .map_or_else(
            || {
                Err(Failure {
                    step: Step::Config,
                    reason: format!("there is no upstream named {name}"),
                    fix: Some(format!("add [upstreams.{name}] to the config")),
                })
            },
            |(_, built)| for_probe(built),
        )
}

/// A built upstream with the probe's timeout, or a config failure with its
/// fix.
fn for_probe(built: Result<Upstream, UpstreamError>) -> Result<Upstream, Failure> {
    let fix = match &built {
        Ok(_) => None,
        Err(UpstreamError::NoToken { name }) => Some(format!("set POSTMARK_SERVER_TOKEN (or postmark.server_token, postmark.server_token_file, upstreams.{name}.server_token) to the Server API Token (Postmark: Servers → your server → API Tokens)")),
        Err(UpstreamError::Tls { name, .. }) => Some(format!("point upstreams.{name}.ca_file at a readable PEM file of CA certificates")),
    };
    built
        .map(|mut up| {
            up.timeout = up.timeout.min(PROBE_TIMEOUT);
            up
        })
        .map_err(|e| Failure {
            step: Step::Config,
            reason: e.to_string(),
            fix,
        })
}

/// Connects, secures and authenticates to `up` as the daemon would; with
/// `sender`, says `MAIL FROM:<sender>` and then `RSET` (Postmark refuses an
/// unverified sender there, so nothing needs sending); then QUIT. Reports
/// the first step that failed.
pub async fn probe(up: &Upstream, sender: Option<&str>) -> Verdict {
    let mut connection = match login(up).await {
        Ok(connection) => connection,
        Err(failure) => return Verdict::Failed(failure),
    };
    if let Some(sender) = sender {
        if let Err(failure) = ask_sender(up, &mut connection, sender).await {
            connection.quit().await;
            return Verdict::Failed(failure);
        }
    }
    connection.quit().await;
    Verdict::Passed(up.tls, sender.map(str::to_string))
}

/// `MAIL FROM:<sender>`, then `RSET`: whether the upstream takes `sender`.
async fn ask_sender(
    up: &Upstream,
    connection: &mut Connection,
    sender: &str,
) -> Result<(), Failure> {
    let command = format!("MAIL FROM:<{sender}>\r\n");
    let asked = async {
        match connection {
            Connection::Tls(s) => s.client.cmd(command.as_bytes()).await,
            Connection::Plain(s) => s.client.cmd(command.as_bytes()).await,
        }
    };
    let at = format!("{}:{}", up.host, up.port);
    let reply = match tokio::time::timeout(up.timeout, asked).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => {
            return Err(Failure {
                step: Step::Sender,
                reason: format!("{at} did not answer MAIL FROM: {e}"),
                fix: None,
            })
        }
        Err(_) => {
            return Err(Failure {
                step: Step::Sender,
                reason: format!(
                    "{at} did not answer MAIL FROM within {}s",
                    up.timeout.as_secs()
                ),
                fix: Some(timeout_fix(up)),
            })
        }
    };
    if reply.code / 100 != 2 {
        let text = reply_text(&reply);
        return Err(Failure {
            step: Step::Sender,
            fix: Diagnosis::of(&text).map(|d| d.fix().to_string()),
            reason: format!("{at} refuses {sender} as a sender: {text}"),
        });
    }
    let reset = async {
        match connection {
            Connection::Tls(s) => s.client.rset().await,
            Connection::Plain(s) => s.client.rset().await,
        }
    };
    let _ = tokio::time::timeout(up.timeout, reset).await;
    Ok(())
}

/// Sends one message from `from` to `to` over a fresh connection, outside
/// the queue. `message` is CRLF text, not dot-stuffed. Returns the
/// upstream's final reply, or why it was not accepted, with a fix when
/// Postmark's reply has a known one (an unverified sender, a wrong token).
pub async fn send_test(
    up: &Upstream,
    from: &str,
    to: &str,
    message: &[u8],
) -> Result<String, String> {
    let mut connection = login(up).await.map_err(|f| f.to_string())?;
    let recipients = [PendingRecipient {
        idx: 0,
        address: to.to_string(),
    }];
    let content = Content::whole(message.to_vec());
    let jobs = [Job {
        sender: from,
        recipients: &recipients,
        body: Body {
            id: "send-test",
            prefix: b"",
            content: &content,
        },
    }];
    let relayed = match &mut connection {
        Connection::Tls(s) => relay(s.as_mut(), &jobs, &NoChunks).await,
        Connection::Plain(s) => relay(s, &jobs, &NoChunks).await,
    };
    if relayed.reusable {
        connection.quit().await;
    }
    let at = format!("{}:{}", up.host, up.port);
    let (answers, broken) = match relayed.attempts.into_iter().next() {
        Some(Attempt::Answered(answers)) => (answers, None),
        Some(Attempt::Broken {
            answers, reason, ..
        }) => (answers, Some(reason)),
        Some(Attempt::Untried) | None => Default::default(),
    };
    match answers.outcomes.into_iter().next() {
        Some((_, Outcome::Delivered(text))) => Ok(answers.reply.unwrap_or(text)),
        Some((_, Outcome::Deferred(text))) => {
            Err(format!("{at} deferred the message (temporary): {text}"))
        }
        Some((_, Outcome::Failed(text))) => Err(format!("{at} rejected the message: {text}")),
        None => Err(format!(
            "{at}: the connection broke before an answer: {}",
            broken.unwrap_or_else(|| "no reply".into())
        )),
    }
}

/// DNS, TCP, then the daemon's own TLS + AUTH sequence.
async fn login(up: &Upstream) -> Result<Connection, Failure> {
    let tcp = reach(up).await?;
    open(up, tcp)
        .await
        .map_err(|(step, e)| explain(up, step, e))
}

/// Resolves the host and connects to the first address that answers.
async fn reach(up: &Upstream) -> Result<TcpStream, Failure> {
    let at = format!("{}:{}", up.host, up.port);
    let fail = |step, reason: String, fix: Option<String>| Failure { step, reason, fix };
    let resolved = tokio::time::timeout(
        up.timeout,
        tokio::net::lookup_host((up.host.as_str(), up.port)),
    )
    .await;
    let addrs: Vec<SocketAddr> = match resolved {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => {
            return Err(fail(
                Step::Resolve,
                format!("cannot resolve {}: {e}", up.host),
                Some(format!(
                    "check upstreams.{}.host and this machine's DNS",
                    up.name
                )),
            ))
        }
        Err(_) => {
            return Err(fail(
                Step::Resolve,
                format!("resolving {} timed out", up.host),
                Some("check this machine's DNS resolver".into()),
            ))
        }
    };
    let mut last = None;
    for addr in &addrs {
        match tokio::time::timeout(up.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = Some((*addr, Some(e))),
            Err(_) => last = Some((*addr, None)),
        }
    }
    let Some((addr, error)) = last else {
        return Err(fail(
            Step::Resolve,
            format!("{} has no addresses", up.host),
            Some(format!("check upstreams.{}.host", up.name)),
        ));
    };
    Err(match error {
        None => fail(
            Step::Connect,
            format!(
                "no answer from {at} ({addr}) within {}s",
                up.timeout.as_secs()
            ),
            Some(timeout_fix(up)),
        ),
        Some(e) if e.kind() == ErrorKind::ConnectionRefused => fail(
            Step::Connect,
            format!("connection refused by {at} ({addr})"),
            Some(format!(
                "nothing listens there: check upstreams.{0}.host and upstreams.{0}.port (Postmark listens on 25, 587 and 2525)",
                up.name
            )),
        ),
        Some(e) => fail(
            Step::Connect,
            format!("cannot connect to {at} ({addr}): {e}"),
            Some("check this machine's network and firewall".into()),
        ),
    })
}

/// A connect that gets no answer at all is usually a firewall dropping
/// SMTP ports; Postmark's 2525 exists for exactly that.
fn timeout_fix(up: &Upstream) -> String {
    if up.port == 25 || up.port == 587 {
        format!(
            "the network may block this port; try port 2525 (upstreams.{}.port = 2525)",
            up.name
        )
    } else {
        format!("a firewall may block {}:{}", up.host, up.port)
    }
}

/// Turns what failed while opening the session into words and a fix.
fn explain(up: &Upstream, step: Step, e: mail_send::Error) -> Failure {
    let at = format!("{}:{}", up.host, up.port);
    let name = &up.name;
    let failure = |reason: String, fix: Option<String>| Failure { step, reason, fix };
    match e {
        mail_send::Error::AuthenticationFailed(r) | mail_send::Error::UnexpectedReply(r)
            if step == Step::Auth =>
        {
            let reply = reply_text(&r);
            let fix = match Diagnosis::of(&reply) {
                Some(Diagnosis::AccountToken) => Some("use the Server API Token (Servers → your server → API Tokens), not an Account API Token".into()),
                Some(Diagnosis::WrongCredentials) => Some(match up.login {
                    relay_config::Login::ServerToken(_) => "the same Server API Token must be both username and password: check that the configured token is this Postmark server's Server API Token".into(),
                    relay_config::Login::SmtpToken(_) => format!("{}; check upstreams.{name}.smtp_access_key and smtp_secret_key", up.login.refused_fix()),
                }),
                _ => None,
            };
            failure(format!("{at} refused our credentials: {reply}"), fix)
        }
        mail_send::Error::UnexpectedReply(r) => failure(
            format!("{at} answered {}", reply_text(&r)),
            (step == Step::Greeting).then(|| "the server refuses connections from here; try again later or ask Postmark support".into()),
        ),
        mail_send::Error::MissingStartTls => failure(
            format!("{at} does not offer STARTTLS, which is required (tls = \"starttls\")"),
            Some(format!(
                "point upstreams.{name}.host/port at Postmark (STARTTLS on 25, 587, 2525); if a proxy strips STARTTLS, that proxy must go"
            )),
        ),
        mail_send::Error::UnsupportedAuthMechanism => failure(
            format!("{at} offers no AUTH PLAIN or LOGIN after TLS"),
            Some(format!("check that upstreams.{name}.host is a Postmark SMTP host")),
        ),
        mail_send::Error::Tls(e) => tls_failure(up, step, &e),
        mail_send::Error::InvalidTLSName => failure(
            format!("{} is not a valid TLS server name", up.host),
            Some(format!("set upstreams.{name}.host to a DNS name")),
        ),
        mail_send::Error::Timeout => failure(
            format!("{at} did not answer within {}s", up.timeout.as_secs()),
            Some(if step == Step::Greeting && up.tls == TlsMode::StartTls {
                format!("the port may expect implicit TLS (then set upstreams.{name}.tls = \"implicit\"), or a firewall holds the connection")
            } else {
                timeout_fix(up)
            }),
        ),
        mail_send::Error::UnparseableReply => failure(
            format!("{at} closed the connection or did not answer like an SMTP server"),
            Some(format!("check upstreams.{name}.port and upstreams.{name}.tls")),
        ),
        other => failure(format!("{at}: {other}"), None),
    }
}

/// Names the certificate problem rustls found, and what fixes it.
fn tls_failure(up: &Upstream, step: Step, e: &rustls::Error) -> Failure {
    let name = &up.name;
    let host = &up.host;
    let (reason, fix) = match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => (
            format!("certificate of {host} not trusted ({e})"),
            Some(format!(
                "add its CA with upstreams.{name}.ca_file if a proxy intercepts TLS"
            )),
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => (
            format!("certificate is not valid for {host} ({e})"),
            Some(format!(
                "set upstreams.{name}.host to a name on the certificate (e.g. smtp.postmarkapp.com)"
            )),
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => (
            format!("certificate of {host} is expired or not yet valid ({e})"),
            Some("check this machine's clock".into()),
        ),
        other => (format!("TLS with {host} failed: {other}"), None),
    };
    Failure { step, reason, fix }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_reads_as_one_line_with_its_fix() {
        let f = Failure {
            step: Step::Connect,
            reason: "connection refused by h:1".into(),
            fix: Some("check the port".into()),
        };
        assert_eq!(
            f.to_string(),
            "FAILED at TCP connect: connection refused by h:1 — fix: check the port"
        );
        assert_eq!(
            Verdict::Passed(TlsMode::StartTls, None).to_string(),
            "OK (STARTTLS, authenticated)"
        );
    }
}
