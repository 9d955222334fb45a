//! `[server]`: listen addresses, client networks and limits.

use std::net::IpAddr;

use ipnet::IpNet;

use std::path::PathBuf;

use super::{clients, count, positive_duration, socket_addr};
use crate::raw::{RawClient, RawServer};
use crate::report::Problems;
use crate::units;
use crate::{tls_server_config, Server, ServerTlsError, TlsFiles};

pub(super) fn server(
    raw: &RawServer,
    raw_clients: &[RawClient],
    p: &mut Problems,
) -> Option<Server> {
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
        open_relay_guard(
            listen,
            networks,
            raw.allow_open_relay || raw.require_auth,
            p,
        );
    }
    let tls = tls_files(raw, p);
    let rate = clients::rate(&raw.rate, "server.rate", p);
    let clients = clients::clients(raw_clients, p);
    if !clients::auth_keys(raw, raw_clients, p) {
        return None;
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
        tls: tls?,
        require_tls: raw.require_tls,
        require_auth: raw.require_auth,
        rate: rate?,
        clients: clients?,
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

/// `server.tls_cert_file` and `server.tls_key_file`: both or neither, and
/// when both, loaded once now so a bad file stops the start (exit 64)
/// instead of failing the first client's STARTTLS. `Some(None)`: not set.
fn tls_files(raw: &RawServer, p: &mut Problems) -> Option<Option<TlsFiles>> {
    let (cert, key) = (raw.tls_cert_file.trim(), raw.tls_key_file.trim());
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => {
            if raw.require_tls {
                p.add(
                    "server.require_tls",
                    "is true but server.tls_cert_file and server.tls_key_file are not set, \
                     so no client could ever start TLS; set both",
                );
                return None;
            }
            return Some(None);
        }
        (false, false) => {}
        _ => {
            let (set, unset) = if cert.is_empty() {
                ("server.tls_key_file", "server.tls_cert_file")
            } else {
                ("server.tls_cert_file", "server.tls_key_file")
            };
            p.add(
                set,
                format!("is set but {unset} is not: server.tls_cert_file and server.tls_key_file go together (set both, or neither)"),
            );
            return None;
        }
    }
    let files = TlsFiles {
        cert_file: PathBuf::from(cert),
        key_file: PathBuf::from(key),
    };
    match tls_server_config(&files.cert_file, &files.key_file) {
        Ok(_) => Some(Some(files)),
        Err(e) => {
            let (key, what) = match &e {
                ServerTlsError::Cert { .. } => (
                    "server.tls_cert_file",
                    "cannot be used as a PEM certificate chain",
                ),
                ServerTlsError::Key { .. } => {
                    ("server.tls_key_file", "cannot be used as a PEM private key")
                }
                ServerTlsError::Pair { .. } => {
                    ("server.tls_key_file", "does not fit server.tls_cert_file")
                }
            };
            p.add(key, format!("{what}: {e}"));
            None
        }
    }
}

/// Refuses an open relay: listening beyond loopback while every client
/// network is allowed would let anyone on the internet send mail as your
/// Postmark server. `server.allow_open_relay = true` overrides it, and so
/// does `server.require_auth` (then only `[[clients]]` can send).
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
             set server.require_auth = true with [[clients]] so only they can send, \
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
