//! The validated, typed configuration every stage reads.
//!
//! These are plain runtime values (`Duration`, `SocketAddr`, byte counts):
//! parsing, defaults and validation happen in [`crate::load`], so nothing
//! downstream ever re-checks a key.

use crate::Glob;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// The whole validated configuration of one relay process.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: Server,
    pub queue: Queue,
    pub postmark: Postmark,
    /// Upstreams by name; always contains `transactional` and `broadcast`.
    pub upstreams: BTreeMap<String, Upstream>,
    pub routing: Routing,
    pub retry: Retry,
    pub admin: Admin,
    pub log: Log,
    /// Sender rewriting for apps that send from unverified addresses.
    pub rewrite: Rewrite,
    /// Where `sendmail` sends mail for bare local names.
    pub sendmail: Sendmail,
}

/// `[server]`: the inbound SMTP listener and its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Every address to listen on; unbindable ones are skipped at start.
    pub listen: Vec<SocketAddr>,
    /// Name in the banner, EHLO reply and `Received:` header.
    pub hostname: String,
    /// Clients outside these networks get `554` at connect.
    pub allowed_networks: Vec<IpNet>,
    /// Bytes, as received (after dot-unstuffing, before added headers).
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub command_timeout: Duration,
    /// Advertise AUTH PLAIN LOGIN and accept any credentials.
    pub accept_auth: bool,
    /// Permit listening beyond loopback with an allow-all network list
    /// (an open relay); refused unless set explicitly.
    pub allow_open_relay: bool,
    /// Certificate and key for inbound STARTTLS; `None`: not offered.
    pub tls: Option<TlsFiles>,
    /// A non-loopback client must STARTTLS before AUTH or MAIL.
    pub require_tls: bool,
    /// Every client, loopback included, must AUTH before MAIL.
    pub require_auth: bool,
    /// Per client IP, for sessions that did not AUTH: messages (MAIL
    /// commands) allowed; `None`: unlimited.
    pub rate: Option<Rate>,
    /// `[[clients]]`: when any is given, AUTH checks these credentials.
    /// Kept here because the inbound stage is their only reader.
    pub clients: Vec<Client>,
}

/// `server.rate` and `clients[].rate`: a token bucket holding `count`
/// messages, refilled at `count` per `per` (so the burst equals the
/// per-period count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Messages per period, and the burst.
    pub count: u32,
    /// The period: one second, minute, hour or day.
    pub per: Duration,
}

impl std::fmt::Display for Rate {
    /// As written in the config: `"600/m"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            3600 => "h",
            _ => "d",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// `server.tls_cert_file` and `server.tls_key_file`, both checked to load
/// (see [`crate::tls_server_config`]) when the configuration was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// The `client` metrics label of sessions that did not AUTH; no
/// `[[clients]]` entry may take the name.
pub const ANONYMOUS_CLIENT: &str = "anonymous";

/// One `[[clients]]` entry: an app that authenticates with its own
/// name and password.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    /// The AUTH username; unique; shown in logs.
    pub name: String,
    /// An argon2id PHC string, checked to parse at load. A [`Secret`]:
    /// a hash still lets an attacker guess offline, so it never prints.
    pub password_hash: Secret,
    /// Globs the envelope sender and the `From:` address must match
    /// (`550 5.7.1` otherwise); empty: any sender.
    pub senders: Vec<Glob>,
    /// Messages allowed across all the client's sessions; `None`:
    /// unlimited.
    pub rate: Option<Rate>,
}

impl Client {
    /// Whether this client may send as `address` (case-insensitive).
    pub fn may_send_as(&self, address: &str) -> bool {
        self.senders.is_empty() || self.senders.iter().any(|g| g.is_match(address))
    }
}

/// `[queue]`: where the durable store lives.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    /// Which store `serve` uses.
    pub backend: QueueBackend,
    /// Folder holding the SQLite store (created if missing); `sqlite` only.
    pub path: PathBuf,
    /// The PostgreSQL URL (from `url`, `POSTMARK_RELAY_QUEUE__URL` or
    /// `url_file`); always set when `backend` is `Postgres`. Its password
    /// must never print, so the whole URL is a [`Secret`].
    pub url: Option<Secret>,
    /// `url_file` when set, kept so its permissions can be checked (see
    /// [`Config::secret_files`]).
    pub url_file: Option<PathBuf>,
    /// Extra PEM roots for the database's certificate (`sslmode=require`).
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL schema holding the relay's tables.
    pub schema: String,
    /// How long a claimed message stays with one replica if that replica
    /// stops renewing it (it died); then another takes it.
    pub lease: Duration,
    /// How long the delivery history keeps the metadata of a message that
    /// left the queue; zero: no history is written.
    pub history: Duration,
}

/// Where the queue is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueBackend {
    /// Embedded SQLite in `queue.path`: one relay.
    Sqlite,
    /// PostgreSQL at `queue.url`, shared by every relay given the same URL.
    Postgres,
}

/// `[postmark]`: account-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Postmark {
    /// The Server API Token, from `server_token`, `POSTMARK_SERVER_TOKEN` or
    /// `server_token_file`; `None` means delivery is held.
    pub server_token: Option<Secret>,
    /// `server_token_file` when set (read even if another source wins), kept
    /// so its permissions can be checked: see [`Config::secret_files`].
    pub server_token_file: Option<PathBuf>,
}

/// `[upstreams.<name>]`: one Postmark SMTP endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// Extra PEM roots trusted on top of the built-in webpki roots.
    pub ca_file: Option<PathBuf>,
    /// How many pooled, reused connections to keep open at most.
    pub connections: usize,
    /// Overrides `postmark.server_token` for this upstream.
    pub server_token: Option<Secret>,
    /// Limit for connecting and for each command's reply.
    pub timeout: Duration,
    /// `X-PM-Message-Stream` values routed to this upstream, lowercased.
    pub streams: Vec<String>,
    /// A Postmark SMTP Token: used instead of the Server API Token.
    pub smtp_token: Option<SmtpToken>,
    /// `smtp_secret_key_file` when set, kept so its permissions can be
    /// checked (see [`Config::secret_files`]).
    pub smtp_secret_key_file: Option<PathBuf>,
}

/// A Postmark SMTP Token (a message stream's Settings): the Access Key is
/// the username, the Secret Key the password; they work only together.
#[derive(Debug, Clone, PartialEq)]
pub struct SmtpToken {
    pub access_key: Secret,
    pub secret_key: Secret,
}

/// What an upstream logs in with.
#[derive(Debug, Clone, PartialEq)]
pub enum Login {
    /// The Server API Token, as both username and password.
    ServerToken(Secret),
    /// A stream's SMTP Token.
    SmtpToken(SmtpToken),
}

impl Upstream {
    /// The credentials this upstream authenticates with, if any: its SMTP
    /// Token, else its own Server API Token, else `[postmark]`'s.
    pub fn login(&self, postmark: &Postmark) -> Option<Login> {
        if let Some(token) = &self.smtp_token {
            return Some(Login::SmtpToken(token.clone()));
        }
        self.server_token
            .as_ref()
            .or(postmark.server_token.as_ref())
            .map(|token| Login::ServerToken(token.clone()))
    }
}

impl Login {
    /// The AUTH username and password.
    pub fn username_password(&self) -> (&str, &str) {
        match self {
            Login::ServerToken(token) => (token.expose(), token.expose()),
            Login::SmtpToken(t) => (t.access_key.expose(), t.secret_key.expose()),
        }
    }

    /// What to check when Postmark answers `535` to these credentials.
    pub fn refused_fix(&self) -> &'static str {
        match self {
            Login::ServerToken(_) => "username and password must both be the same Server API Token",
            Login::SmtpToken(_) => "the Access Key and Secret Key must come from the same SMTP Token of this stream (Postmark: the stream → Settings → SMTP)",
        }
    }
}

/// How the upstream connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain connect, then mandatory STARTTLS (no plaintext fallback).
    StartTls,
    /// TLS from the first byte (port 465 style).
    Implicit,
    /// No TLS at all; only allowed to a loopback host.
    None,
}

/// `[routing]`: how a message picks its upstream and stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    /// Upstream name used when no header or rule decides.
    pub default: String,
    /// `X-PM-Message-Stream` values that go to the `broadcast` upstream.
    pub broadcast_streams: Vec<String>,
    /// Lowercased stream → upstream, from `upstreams.<name>.streams`;
    /// decides before `broadcast_streams`.
    pub stream_upstreams: BTreeMap<String, String>,
    /// Checked in order; the first rule whose conditions all hold wins.
    pub rules: Vec<Rule>,
    /// `[[clients]]` name → its `upstream`/`stream`, for the clients that
    /// set either: they decide instead of the rules.
    pub clients: BTreeMap<String, ClientRoute>,
}

/// A `[[clients]]` entry's own routing: its mail goes to `upstream`
/// whatever the rules say, and carries `stream` unless the message names
/// its own `X-PM-Message-Stream`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRoute {
    /// Upstream name; validated to exist.
    pub upstream: Option<String>,
    /// The stream added as `X-PM-Message-Stream` when the message has none.
    pub stream: Option<String>,
}

/// One `[[routing.rules]]` entry, its globs compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    /// Glob on the envelope sender (MAIL FROM).
    pub sender: Option<Glob>,
    /// Glob on the `From:` header address.
    pub from: Option<Glob>,
    /// Header name that must be present.
    pub header: Option<String>,
    /// Glob the `header`'s value must match (requires `header`).
    pub value: Option<Glob>,
    /// Upstream name; validated to exist.
    pub upstream: String,
    /// Sets `X-PM-Message-Stream` when given.
    pub stream: Option<String>,
}

/// `[retry]`: the long retry schedule the queue owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub multiplier: f64,
    /// After this long since receipt a message is marked failed.
    pub give_up_after: Duration,
}

/// `[rewrite]`: replace senders Postmark would reject (`root@localhost`,
/// unverified domains) with one verified sender, because legacy apps often
/// cannot be taught a new From address.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rewrite {
    /// Domains verified on the Postmark server, lowercased. Exact matches
    /// only: `example.com` does not cover `mail.example.com`.
    pub verified_domains: Vec<String>,
    /// The verified address that replaces an unverified envelope sender
    /// and `From:`; `None` turns rewriting off. Its domain is in
    /// `verified_domains`.
    pub sender: Option<String>,
}

/// `[sendmail]`: what `sendmail` does with a recipient that is a bare
/// local name (cron mails `root`), as Postfix does with its aliases and
/// `myorigin`: Postmark can only deliver to full addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sendmail {
    /// Lowercased local name → the addresses its mail goes to.
    pub aliases: BTreeMap<String, Vec<String>>,
    /// Appended to other bare names (`alice` → `alice@domain`); `None`:
    /// they are refused.
    pub domain: Option<String>,
}

/// Why a bare recipient has no address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unqualified(pub String);

impl Sendmail {
    /// The addresses for one recipient: itself when it has a domain, its
    /// alias's addresses, or it at `domain`.
    pub fn qualify(&self, recipient: &str) -> Result<Vec<String>, Unqualified> {
        if recipient.contains('@') {
            return Ok(vec![recipient.to_string()]);
        }
        if let Some(addresses) = self.aliases.get(&recipient.to_ascii_lowercase()) {
            return Ok(addresses.clone());
        }
        match &self.domain {
            Some(domain) => Ok(vec![format!("{recipient}@{domain}")]),
            None => Err(Unqualified(recipient.to_string())),
        }
    }
}

/// `[admin]`: the HTTP admin endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    /// `None` when `listen = ""` disables it.
    pub listen: Option<SocketAddr>,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A secret (a token, a password hash) that never prints: `Debug` and
/// `Display` show `***`, so it cannot leak through logs or `config`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value, for the one place that must send it (SMTP AUTH).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
