//! The effective configuration as TOML for `postmark-relay config`, with
//! every token (and `[[clients]]` password hash) replaced by `***`. It loads
//! back to the same configuration except for those.

use crate::raw::{
    RawAdmin, RawClient, RawConfig, RawLog, RawPostmark, RawQueue, RawRetry, RawRewrite,
    RawRouting, RawRule, RawSendmail, RawServer, RawUpstream,
};
use crate::units::{format_duration, format_size};
use crate::{Config, LogFormat, QueueBackend, Secret, TlsMode};

/// Shown instead of a token that is set.
const REDACTED: &str = "***";

/// `config` as TOML in docs/REFERENCE.md's key names, durations and sizes in human
/// form, tokens as `"***"` (or `""` when not set).
pub fn to_redacted_toml(config: &Config) -> String {
    let raw = to_raw(config);
    match toml::to_string_pretty(&raw) {
        Ok(text) => format!("# Effective configuration; tokens are redacted.\n\n{text}"),
        // Unreachable for these plain structs, but never panic while printing.
        Err(e) => format!("# the configuration could not be printed: {e}\n"),
    }
}

fn to_raw(config: &Config) -> RawConfig {
    let server = &config.server;
    let route = |c: &crate::Client| config.routing.clients.get(&c.name);
    let rate = |r: Option<crate::Rate>| r.map(|r| r.to_string()).unwrap_or_default();
    RawConfig {
        server: RawServer {
            listen: strings(&server.listen),
            hostname: server.hostname.clone(),
            allowed_networks: strings(&server.allowed_networks),
            max_message_size: format_size(server.max_message_size),
            max_recipients: count(server.max_recipients),
            max_connections: count(server.max_connections),
            command_timeout: format_duration(server.command_timeout),
            accept_auth: server.accept_auth,
            allow_open_relay: server.allow_open_relay,
            tls_cert_file: path(server.tls.as_ref().map(|t| &t.cert_file)),
            tls_key_file: path(server.tls.as_ref().map(|t| &t.key_file)),
            require_tls: server.require_tls,
            require_auth: server.require_auth,
            rate: rate(server.rate),
        },
        clients: server
            .clients
            .iter()
            .map(|c| RawClient {
                name: c.name.clone(),
                password_hash: REDACTED.to_owned(),
                senders: (!c.senders.is_empty()).then(|| {
                    figment::value::Value::from(
                        c.senders
                            .iter()
                            .map(|g| g.as_str().to_owned())
                            .collect::<Vec<_>>(),
                    )
                }),
                upstream: route(c)
                    .and_then(|r| r.upstream.clone())
                    .unwrap_or_default(),
                stream: route(c).and_then(|r| r.stream.clone()).unwrap_or_default(),
                rate: rate(c.rate),
            })
            .collect(),
        queue: RawQueue {
            backend: match config.queue.backend {
                QueueBackend::Sqlite => "sqlite",
                QueueBackend::Postgres => "postgres",
            }
            .into(),
            path: config.queue.path.display().to_string(),
            url: config
                .queue
                .url
                .as_ref()
                .map(|url| redact_url(url.expose()))
                .unwrap_or_default(),
            // The URL it held is shown (password redacted) above.
            url_file: String::new(),
            ca_file: config
                .queue
                .ca_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            schema: config.queue.schema.clone(),
            lease: format_duration(config.queue.lease),
            history: format_duration(config.queue.history),
        },
        postmark: RawPostmark {
            server_token: redact(config.postmark.server_token.as_ref()),
            // The token it held is shown (redacted) above.
            server_token_file: String::new(),
        },
        upstreams: config
            .upstreams
            .iter()
            .map(|(name, up)| {
                let raw = RawUpstream {
                    host: up.host.clone(),
                    port: i64::from(up.port),
                    tls: tls_name(up.tls).into(),
                    ca_file: up
                        .ca_file
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    connections: count(up.connections),
                    server_token: redact(up.server_token.as_ref()),
                    timeout: format_duration(up.timeout),
                    streams: up.streams.clone(),
                    smtp_access_key: redact(up.smtp_token.as_ref().map(|t| &t.access_key)),
                    smtp_secret_key: redact(up.smtp_token.as_ref().map(|t| &t.secret_key)),
                    smtp_secret_key_file: up
                        .smtp_secret_key_file
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                };
                (name.clone(), raw)
            })
            .collect(),
        routing: RawRouting {
            default: config.routing.default.clone(),
            broadcast_streams: config.routing.broadcast_streams.clone(),
            rules: config
                .routing
                .rules
                .iter()
                .map(|rule| RawRule {
                    name: Some(rule.name.clone()),
                    sender: rule.sender.as_ref().map(|g| g.as_str().to_owned()),
                    from: rule.from.as_ref().map(|g| g.as_str().to_owned()),
                    header: rule.header.clone(),
                    value: rule.value.as_ref().map(|g| g.as_str().to_owned()),
                    upstream: rule.upstream.clone(),
                    stream: rule.stream.clone(),
                })
                .collect(),
        },
        retry: RawRetry {
            initial_delay: format_duration(config.retry.initial_delay),
            max_delay: format_duration(config.retry.max_delay),
            multiplier: config.retry.multiplier,
            give_up_after: format_duration(config.retry.give_up_after),
        },
        rewrite: RawRewrite {
            verified_domains: config.rewrite.verified_domains.clone(),
            sender: config.rewrite.sender.clone().unwrap_or_default(),
        },
        sendmail: RawSendmail {
            aliases: config
                .sendmail
                .aliases
                .iter()
                .map(|(name, addresses)| (name.clone(), addresses.join(", ")))
                .collect(),
            domain: config.sendmail.domain.clone().unwrap_or_default(),
        },
        admin: RawAdmin {
            listen: config
                .admin
                .listen
                .map(|a| a.to_string())
                .unwrap_or_default(),
        },
        log: RawLog {
            format: match config.log.format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }
            .into(),
            level: config.log.level.clone(),
        },
    }
}

fn path(p: Option<&std::path::PathBuf>) -> String {
    p.map(|p| p.display().to_string()).unwrap_or_default()
}

fn redact(token: Option<&Secret>) -> String {
    token.map(|_| REDACTED.to_owned()).unwrap_or_default()
}

/// A PostgreSQL URL with its password (in the user part or a `password=`
/// parameter) replaced by `***`; the rest is shown, since it tells which
/// database the relay uses.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{user}:{REDACTED}@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}={REDACTED}")
                    }
                    _ => param.to_owned(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

fn tls_name(tls: TlsMode) -> &'static str {
    match tls {
        TlsMode::StartTls => "starttls",
        TlsMode::Implicit => "implicit",
        TlsMode::None => "none",
    }
}

fn strings<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

/// Counts were validated from an `i64`, so they fit back.
fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
