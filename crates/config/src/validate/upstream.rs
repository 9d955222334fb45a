//! `[upstreams.<name>]`: one Postmark (or test) SMTP endpoint each.

use std::net::IpAddr;
use std::path::PathBuf;

use super::token::secret;
use super::{count, positive_duration};
use crate::raw::RawUpstream;
use crate::report::Problems;
use crate::{TlsMode, Upstream};

pub(super) fn upstream(name: &str, raw: &RawUpstream, p: &mut Problems) -> Option<Upstream> {
    let key = |field: &str| format!("upstreams.{name}.{field}");
    let host = raw.host.trim();
    if host.is_empty() || host.contains(char::is_whitespace) {
        p.add(
            key("host"),
            format!("`{host}` is not a host name or address"),
        );
    }
    let port = match u16::try_from(raw.port) {
        Ok(port) if port != 0 => Some(port),
        _ => {
            p.add(
                key("port"),
                format!(
                    "must be 1-65535 (Postmark listens on 25, 587 and 2525), got {}",
                    raw.port
                ),
            );
            None
        }
    };
    let tls = tls_mode(&raw.tls, host, &key("tls"), p);
    let ca_file = match raw.ca_file.trim() {
        "" => Some(None),
        path if PathBuf::from(path).is_file() => Some(Some(PathBuf::from(path))),
        path => {
            p.add(
                key("ca_file"),
                format!("{path} does not exist or is not a file"),
            );
            None
        }
    };
    let connections = count(raw.connections, &key("connections"), p);
    let timeout = positive_duration(&raw.timeout, &key("timeout"), p);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some(Upstream {
        host: host.to_owned(),
        port: port?,
        tls: tls?,
        ca_file: ca_file?,
        connections: connections?,
        server_token: secret(&raw.server_token),
        timeout: timeout?,
    })
}

/// `starttls` | `implicit` | `none`, where `none` is refused unless the host
/// is loopback: the token and every message would cross the network in
/// clear text.
fn tls_mode(text: &str, host: &str, key: &str, p: &mut Problems) -> Option<TlsMode> {
    match text.trim().to_ascii_lowercase().as_str() {
        "starttls" => Some(TlsMode::StartTls),
        "implicit" => Some(TlsMode::Implicit),
        "none" if is_loopback(host) => Some(TlsMode::None),
        "none" => {
            p.add(
                key,
                format!(
                    "\"none\" would send the server token and every message to `{host}` in clear text, \
                     so it is only allowed to a loopback host (localhost, 127.0.0.0/8, ::1); \
                     use \"starttls\" or \"implicit\""
                ),
            );
            None
        }
        _ => {
            p.add(
                key,
                format!("`{text}` is not a TLS mode; use \"starttls\", \"implicit\" or \"none\""),
            );
            None
        }
    }
}

/// `localhost`, 127.0.0.0/8 or ::1 (brackets allowed).
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "smtp.postmarkapp.com",
            "10.0.0.1",
            "localhost.example.com",
            "::2",
            "",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
