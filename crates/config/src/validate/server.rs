//! `[server]`: listen addresses, client networks and limits.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{count, positive_duration, socket_addr};
use crate::raw::RawServer;
use crate::report::Problems;
use crate::units;
use crate::Server;

pub(super) fn server(raw: &RawServer, p: &mut Problems) -> Option<Server> {
    let listen = list(&raw.listen, "server.listen", p, |text, key, p| {
        socket_addr(text, key, p)
    });
    let allowed_networks = list(&raw.allowed_networks, "server.allowed_networks", p, network);
    let hostname = hostname(&raw.hostname, p);
    let max_message_size = match units::parse_size(&raw.max_message_size) {
        Ok(0) => {
            p.add("server.max_message_size", "must be at least 1 byte");
            None
        }
        Ok(size) => Some(size),
        Err(e) => {
            p.add("server.max_message_size", e);
            None
        }
    };
    let max_recipients = count(raw.max_recipients, "server.max_recipients", p);
    let max_connections = count(raw.max_connections, "server.max_connections", p);
    let command_timeout = positive_duration(&raw.command_timeout, "server.command_timeout", p);
    if let (Some(listen), Some(networks)) = (&listen, &allowed_networks) {
        open_relay_guard(listen, networks, raw.allow_open_relay, p);
    }
    Some(Server {
        listen: listen?,
        hostname: hostname?,
        allowed_networks: allowed_networks?,
        max_message_size: max_message_size?,
        max_recipients: max_recipients?,
        max_connections: max_connections?,
        command_timeout: command_timeout?,
        accept_auth: raw.accept_auth,
        allow_open_relay: raw.allow_open_relay,
    })
}

/// Only what a client of the relay needs (`sendmail`): where it listens
/// and its host name, checked like [`server`] checks them.
pub(super) fn address(
    raw: &RawServer,
    p: &mut Problems,
) -> Option<(Vec<std::net::SocketAddr>, String)> {
    let listen = list(&raw.listen, "server.listen", p, |text, key, p| {
        socket_addr(text, key, p)
    });
    let hostname = hostname(&raw.hostname, p);
    Some((listen?, hostname?))
}

/// Refuses an open relay: listening beyond loopback while every client
/// network is allowed would let anyone on the internet send mail as your
/// Postmark server. `server.allow_open_relay = true` overrides it.
fn open_relay_guard(
    listen: &[std::net::SocketAddr],
    networks: &[IpNet],
    allowed: bool,
    p: &mut Problems,
) {
    let public = listen.iter().any(|a| !a.ip().is_loopback());
    let everyone = networks.iter().any(|n| n.prefix_len() == 0);
    if public && everyone && !allowed {
        p.add(
            "server.allowed_networks",
            "allows every client (0.0.0.0/0 or ::/0) while server.listen includes a non-loopback address: \
             that is an open relay anyone could send mail through with your Postmark token. \
             List only your clients' networks (e.g. a container network like 10.0.0.0/8), \
             or set server.allow_open_relay = true if something else guards the port",
        );
    }
}

/// Checks every element (`key[i]`), and that there is at least one.
fn list<T>(
    items: &[String],
    key: &str,
    p: &mut Problems,
    parse: impl Fn(&str, &str, &mut Problems) -> Option<T>,
) -> Option<Vec<T>> {
    if items.is_empty() {
        p.add(key, "needs at least one entry");
        return None;
    }
    let parsed: Vec<Option<T>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| parse(item, &format!("{key}[{i}]"), p))
        .collect();
    parsed.into_iter().collect()
}

/// A CIDR network; a bare address means just that host (/32 or /128).
fn network(text: &str, key: &str, p: &mut Problems) -> Option<IpNet> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(IpNet::from(ip));
    }
    p.add(
        key,
        format!("`{text}` is not a network (e.g. 10.0.0.0/8, fd00::/8 or a single address)"),
    );
    None
}

/// Goes into the banner and `Received:`, so it must be one word; empty
/// means this machine's host name.
fn hostname(text: &str, p: &mut Problems) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return Some(crate::raw::system_hostname());
    }
    if text.contains(char::is_whitespace) {
        p.add(
            "server.hostname",
            format!("`{text}` is not a host name (one word, e.g. relay.example.com)"),
        );
        return None;
    }
    Some(text.to_owned())
}
