//! The configuration as written: serde structs that mirror the TOML of
//! docs/REFERENCE.md key for key, with its defaults. Values stay close to their text
//! (addresses, sizes and durations are strings) so that validation, not
//! serde, explains what is wrong with them.

use std::collections::BTreeMap;

use figment::value::Value;
use serde::{Deserialize, Serialize};

use crate::lenient;

/// Upstream names every configuration has; files may add more.
pub(crate) const TRANSACTIONAL: &str = "transactional";
pub(crate) const BROADCAST: &str = "broadcast";

/// The top-level tables, in the order docs/REFERENCE.md lists them.
pub(crate) const SECTIONS: [&str; 11] = [
    "server",
    "clients",
    "queue",
    "postmark",
    "upstreams",
    "routing",
    "retry",
    "rewrite",
    "sendmail",
    "admin",
    "log",
];

/// The whole file. Used for the built-in defaults and for printing the
/// effective configuration; loading reads each table on its own so one bad
/// table does not hide problems in the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    pub server: RawServer,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<RawClient>,
    pub queue: RawQueue,
    pub postmark: RawPostmark,
    pub upstreams: RawUpstreams,
    pub routing: RawRouting,
    pub retry: RawRetry,
    pub rewrite: RawRewrite,
    pub sendmail: RawSendmail,
    pub admin: RawAdmin,
    pub log: RawLog,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            server: RawServer::default(),
            clients: Vec::new(),
            queue: RawQueue::default(),
            postmark: RawPostmark::default(),
            upstreams: default_upstreams(),
            routing: RawRouting::default(),
            retry: RawRetry::default(),
            rewrite: RawRewrite::default(),
            sendmail: RawSendmail::default(),
            admin: RawAdmin::default(),
            log: RawLog::default(),
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawServer {
    #[serde(deserialize_with = "lenient::one_or_many")]
    pub listen: Vec<String>,
    #[serde(deserialize_with = "lenient::text")]
    pub hostname: String,
    #[serde(deserialize_with = "lenient::one_or_many")]
    pub allowed_networks: Vec<String>,
    /// Integer bytes or a size string; integers arrive here as their digits.
    #[serde(deserialize_with = "lenient::text")]
    pub max_message_size: String,
    pub max_recipients: i64,
    pub max_connections: i64,
    #[serde(deserialize_with = "lenient::text")]
    pub command_timeout: String,
    pub accept_auth: bool,
    pub allow_open_relay: bool,
    /// PEM chain and key for inbound STARTTLS; `""` = not set.
    #[serde(deserialize_with = "lenient::text")]
    pub tls_cert_file: String,
    #[serde(deserialize_with = "lenient::text")]
    pub tls_key_file: String,
    pub require_tls: bool,
    pub require_auth: bool,
    /// Per client IP for sessions without AUTH, e.g. `"600/m"`; `""` =
    /// unlimited.
    #[serde(deserialize_with = "lenient::text")]
    pub rate: String,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: strings(&["127.0.0.1:25", "[::1]:25"]),
            hostname: String::new(),
            allowed_networks: strings(&["127.0.0.0/8", "::1/128"]),
            max_message_size: "10MB".into(),
            max_recipients: 1000,
            max_connections: 1024,
            command_timeout: "5m".into(),
            accept_auth: false,
            allow_open_relay: false,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            require_tls: false,
            require_auth: false,
            rate: String::new(),
        }
    }
}

/// One `[[clients]]` entry: an app's AUTH credentials, the senders it may
/// use, its own routing and rate. An empty string means "not set".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClient {
    #[serde(default, deserialize_with = "lenient::text")]
    pub name: String,
    #[serde(default, deserialize_with = "lenient::text")]
    pub password_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub senders: Option<Value>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub upstream: String,
    #[serde(default, deserialize_with = "lenient::text")]
    pub stream: String,
    #[serde(default, deserialize_with = "lenient::text")]
    pub rate: String,
}

/// `[queue]`. `path` is the embedded store's; `url` to `lease` are the
/// shared (PostgreSQL) store's. An empty string means "not set".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawQueue {
    #[serde(deserialize_with = "lenient::text")]
    pub backend: String,
    #[serde(deserialize_with = "lenient::text")]
    pub path: String,
    #[serde(deserialize_with = "lenient::text")]
    pub url: String,
    #[serde(deserialize_with = "lenient::text")]
    pub url_file: String,
    #[serde(deserialize_with = "lenient::text")]
    pub ca_file: String,
    #[serde(deserialize_with = "lenient::text")]
    pub schema: String,
    #[serde(deserialize_with = "lenient::text")]
    pub lease: String,
    /// How long the delivery history keeps a finished message; `"0s"` off.
    #[serde(deserialize_with = "lenient::text")]
    pub history: String,
}

impl Default for RawQueue {
    fn default() -> Self {
        RawQueue {
            backend: "sqlite".into(),
            path: "/var/spool/postmark-relay".into(),
            url: String::new(),
            url_file: String::new(),
            ca_file: String::new(),
            schema: "postmark_relay".into(),
            lease: "2m".into(),
            history: "7d".into(),
        }
    }
}

/// `[postmark]`. An empty string means "not set".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPostmark {
    #[serde(deserialize_with = "lenient::text")]
    pub server_token: String,
    #[serde(deserialize_with = "lenient::text")]
    pub server_token_file: String,
}

/// `[upstreams.<name>]` tables by name.
pub(crate) type RawUpstreams = BTreeMap<String, RawUpstream>;

/// One `[upstreams.<name>]` table. Every key but `host` has a default, so a
/// user-defined upstream needs only its host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    #[serde(deserialize_with = "lenient::text")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: i64,
    #[serde(default = "default_tls", deserialize_with = "lenient::text")]
    pub tls: String,
    #[serde(default, deserialize_with = "lenient::text")]
    pub ca_file: String,
    #[serde(default = "default_connections")]
    pub connections: i64,
    #[serde(default, deserialize_with = "lenient::text")]
    pub server_token: String,
    #[serde(default = "default_timeout", deserialize_with = "lenient::text")]
    pub timeout: String,
    #[serde(default, deserialize_with = "lenient::one_or_many")]
    pub streams: Vec<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub smtp_access_key: String,
    #[serde(default, deserialize_with = "lenient::text")]
    pub smtp_secret_key: String,
    #[serde(default, deserialize_with = "lenient::text")]
    pub smtp_secret_key_file: String,
}

fn default_timeout() -> String {
    "60s".into()
}

fn default_port() -> i64 {
    587
}

fn default_tls() -> String {
    "starttls".into()
}

fn default_connections() -> i64 {
    4
}

impl RawUpstream {
    fn postmark(host: &str, connections: i64) -> Self {
        RawUpstream {
            host: host.into(),
            port: default_port(),
            tls: default_tls(),
            ca_file: String::new(),
            connections,
            server_token: String::new(),
            timeout: default_timeout(),
            streams: Vec::new(),
            smtp_access_key: String::new(),
            smtp_secret_key: String::new(),
            smtp_secret_key_file: String::new(),
        }
    }
}

/// The two Postmark endpoints every configuration starts with.
pub(crate) fn default_upstreams() -> RawUpstreams {
    BTreeMap::from([
        (
            TRANSACTIONAL.to_owned(),
            RawUpstream::postmark("smtp.postmarkapp.com", 4),
        ),
        (
            BROADCAST.to_owned(),
            RawUpstream::postmark("smtp-broadcasts.postmarkapp.com", 2),
        ),
    ])
}

/// `[routing]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRouting {
    #[serde(deserialize_with = "lenient::text")]
    pub default: String,
    #[serde(deserialize_with = "lenient::one_or_many")]
    pub broadcast_streams: Vec<String>,
    pub rules: Vec<RawRule>,
}

impl Default for RawRouting {
    fn default() -> Self {
        RawRouting {
            default: TRANSACTIONAL.into(),
            broadcast_streams: strings(&["broadcast", "broadcasts"]),
            rules: Vec::new(),
        }
    }
}

/// One `[[routing.rules]]` entry; absent conditions are skipped when
/// printing so the output reads like a hand-written rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub upstream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
}

/// `[retry]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRetry {
    #[serde(deserialize_with = "lenient::text")]
    pub initial_delay: String,
    #[serde(deserialize_with = "lenient::text")]
    pub max_delay: String,
    pub multiplier: f64,
    #[serde(deserialize_with = "lenient::text")]
    pub give_up_after: String,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            initial_delay: "5s".into(),
            max_delay: "15m".into(),
            multiplier: 2.0,
            give_up_after: "72h".into(),
        }
    }
}

/// `[rewrite]`; `sender = ""` (the default) turns rewriting off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRewrite {
    #[serde(deserialize_with = "lenient::one_or_many")]
    pub verified_domains: Vec<String>,
    #[serde(deserialize_with = "lenient::text")]
    pub sender: String,
}

/// `[sendmail]`: bare local recipients of `sendmail` made into addresses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawSendmail {
    /// Local name → one address, or several separated by commas.
    pub aliases: BTreeMap<String, String>,
    #[serde(deserialize_with = "lenient::text")]
    pub domain: String,
}

/// `[admin]`; `listen = ""` disables the endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAdmin {
    #[serde(deserialize_with = "lenient::text")]
    pub listen: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "127.0.0.1:9925".into(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLog {
    #[serde(deserialize_with = "lenient::text")]
    pub format: String,
    #[serde(deserialize_with = "lenient::text")]
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// This machine's host name, the default `server.hostname` (as Postfix's
/// `myhostname`): what the banner, `Received:`, the Message-IDs the relay
/// adds and sendmail's default sender domain say. `localhost` when the
/// kernel has none that fits in one word.
pub(crate) fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty() && !name.contains(char::is_whitespace) && name != "(none)")
        .unwrap_or_else(|| "localhost".into())
}
