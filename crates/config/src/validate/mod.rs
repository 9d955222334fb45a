//! Raw tables → the typed [`Config`]. Every check runs even after one
//! fails, and each problem names its key, so a user fixes everything in one
//! pass.

mod clients;
mod queue;
mod rewrite;
mod routing;
mod sendmail;
mod server;
mod token;
mod upstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::raw::{
    RawAdmin, RawClient, RawLog, RawPostmark, RawQueue, RawRetry, RawRewrite, RawRouting,
    RawSendmail, RawServer, RawUpstream,
};
use crate::report::Problems;
use crate::units;
use crate::{Admin, Config, Log, LogFormat, Retry};

/// Each table as read; `None` where the table itself could not be read
/// (its problem is already recorded).
pub(crate) struct Sections {
    pub server: Option<RawServer>,
    /// `[[clients]]`; validated with `[server]`, whose AUTH keys they
    /// decide about.
    pub clients: Vec<RawClient>,
    pub queue: Option<RawQueue>,
    pub postmark: Option<RawPostmark>,
    /// Every upstream name, even those whose table could not be read, so
    /// routing can still be checked against the full list.
    pub upstreams: BTreeMap<String, Option<RawUpstream>>,
    pub routing: Option<RawRouting>,
    pub retry: Option<RawRetry>,
    pub rewrite: Option<RawRewrite>,
    pub sendmail: Option<RawSendmail>,
    pub admin: Option<RawAdmin>,
    pub log: Option<RawLog>,
}

/// `[sendmail]` alone (see `crate::submission`).
pub(crate) fn sendmail_section(raw: &RawSendmail, p: &mut Problems) -> Option<crate::Sendmail> {
    sendmail::sendmail(raw, p)
}

/// `server.listen` and `server.hostname` alone (see `crate::submission`).
pub(crate) fn server_address(
    raw: &RawServer,
    p: &mut Problems,
) -> Option<(Vec<std::net::SocketAddr>, String)> {
    server::address(raw, p)
}

/// Checks every table; `None` if anything (here or earlier) was wrong.
/// `env_token` is `POSTMARK_SERVER_TOKEN`, injected so this stays pure.
pub(crate) fn validate(
    sections: &Sections,
    env_token: Option<&str>,
    p: &mut Problems,
) -> Option<Config> {
    let server = sections
        .server
        .as_ref()
        .and_then(|raw| server::server(raw, &sections.clients, p));
    let queue = sections.queue.as_ref().and_then(|raw| queue::queue(raw, p));
    let postmark = sections
        .postmark
        .as_ref()
        .and_then(|raw| token::postmark(raw, env_token, p));
    let mut upstreams = Some(BTreeMap::new());
    for (name, raw) in &sections.upstreams {
        let checked = raw
            .as_ref()
            .and_then(|raw| upstream::upstream(name, raw, p));
        match (checked, upstreams.as_mut()) {
            (Some(up), Some(map)) => {
                map.insert(name.clone(), up);
            }
            _ => upstreams = None,
        }
    }
    let mut routing = sections
        .routing
        .as_ref()
        .and_then(|raw| routing::routing(raw, &sections.upstreams, p));
    if let (Some(routing), Some(upstreams)) = (routing.as_mut(), upstreams.as_ref()) {
        routing.stream_upstreams = stream_upstreams(upstreams, p);
    }
    let client_routes = clients::routes(&sections.clients, &sections.upstreams, p);
    if let Some(routing) = routing.as_mut() {
        routing.clients = client_routes.unwrap_or_default();
    }
    let retry = sections.retry.as_ref().and_then(|raw| retry(raw, p));
    let rewrite = sections
        .rewrite
        .as_ref()
        .and_then(|raw| rewrite::rewrite(raw, p));
    let sendmail = sections
        .sendmail
        .as_ref()
        .and_then(|raw| sendmail::sendmail(raw, p));
    let admin = sections.admin.as_ref().and_then(|raw| admin(raw, p));
    let log = sections.log.as_ref().and_then(|raw| log(raw, p));

    let config = Config {
        server: server?,
        queue: queue?,
        postmark: postmark?,
        upstreams: upstreams?,
        routing: routing?,
        retry: retry?,
        admin: admin?,
        log: log?,
        rewrite: rewrite?,
        sendmail: sendmail?,
    };
    p.is_empty().then_some(config)
}

/// Stream → upstream from every `upstreams.<name>.streams`; a stream on
/// two upstreams is a problem naming both.
fn stream_upstreams(
    upstreams: &BTreeMap<String, crate::Upstream>,
    p: &mut Problems,
) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (name, upstream) in upstreams {
        for stream in &upstream.streams {
            match map.get(stream) {
                Some(other) => p.add(
                    format!("upstreams.{name}.streams"),
                    format!("stream `{stream}` is also in upstreams.{other}.streams: each stream goes to one upstream"),
                ),
                None => {
                    map.insert(stream.clone(), name.clone());
                }
            }
        }
    }
    map
}

fn retry(raw: &RawRetry, p: &mut Problems) -> Option<Retry> {
    let initial_delay = positive_duration(&raw.initial_delay, "retry.initial_delay", p);
    let max_delay = positive_duration(&raw.max_delay, "retry.max_delay", p);
    let give_up_after = positive_duration(&raw.give_up_after, "retry.give_up_after", p);
    let multiplier = if raw.multiplier.is_finite() && raw.multiplier >= 1.0 {
        Some(raw.multiplier)
    } else {
        p.add(
            "retry.multiplier",
            format!(
                "must be at least 1.0 (delays never shrink), got {}",
                raw.multiplier
            ),
        );
        None
    };
    if let (Some(initial), Some(max)) = (initial_delay, max_delay) {
        if initial > max {
            p.add(
                "retry.initial_delay",
                format!(
                    "{} is longer than retry.max_delay ({})",
                    raw.initial_delay, raw.max_delay
                ),
            );
            return None;
        }
    }
    Some(Retry {
        initial_delay: initial_delay?,
        max_delay: max_delay?,
        multiplier: multiplier?,
        give_up_after: give_up_after?,
    })
}

fn admin(raw: &RawAdmin, p: &mut Problems) -> Option<Admin> {
    let text = raw.listen.trim();
    if text.is_empty() {
        return Some(Admin { listen: None });
    }
    let listen = socket_addr(text, "admin.listen", p)?;
    Some(Admin {
        listen: Some(listen),
    })
}

fn log(raw: &RawLog, p: &mut Problems) -> Option<Log> {
    let format = match raw.format.trim().to_ascii_lowercase().as_str() {
        "text" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        _ => {
            p.add(
                "log.format",
                format!(
                    "`{}` is not a log format; use \"text\" or \"json\"",
                    raw.format
                ),
            );
            None
        }
    };
    let level = raw.level.trim();
    if level.is_empty() {
        p.add(
            "log.level",
            "must not be empty; e.g. \"info\" or \"postmark_relay=debug\"",
        );
        return None;
    }
    Some(Log {
        format: format?,
        level: level.to_owned(),
    })
}

/// A humantime duration longer than zero.
pub(super) fn positive_duration(text: &str, key: &str, p: &mut Problems) -> Option<Duration> {
    match units::parse_duration(text) {
        Ok(d) if d.is_zero() => {
            p.add(key, "must be longer than zero");
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            p.add(key, e);
            None
        }
    }
}

/// `127.0.0.1:25` or `[::1]:25`.
pub(super) fn socket_addr(text: &str, key: &str, p: &mut Problems) -> Option<SocketAddr> {
    match text.trim().parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            p.add(
                key,
                format!(
                    "`{text}` is not an IP address with a port (e.g. 127.0.0.1:25 or [::1]:25)"
                ),
            );
            None
        }
    }
}

/// An integer count of at least one that fits `usize`.
pub(super) fn count(value: i64, key: &str, p: &mut Problems) -> Option<usize> {
    match usize::try_from(value) {
        Ok(n) if n >= 1 => Some(n),
        _ => {
            p.add(key, format!("must be at least 1, got {value}"));
            None
        }
    }
}

/// The defined upstream names, for messages about unknown ones.
pub(super) fn upstream_names(upstreams: &BTreeMap<String, Option<RawUpstream>>) -> String {
    upstreams.keys().cloned().collect::<Vec<_>>().join(", ")
}
