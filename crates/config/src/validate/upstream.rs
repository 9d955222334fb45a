//! `[upstreams.<name>]`: one Postmark (or test) SMTP endpoint each.

use std::net::IpAddr;
use std::path::PathBuf;

use super::token::{read_secret_file, secret};
use super::{count, positive_duration};
use crate::raw::RawUpstream;
use crate::report::Problems;
use crate::{SmtpToken, TlsMode, Upstream};

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
    let smtp_secret_key_file = match raw.smtp_secret_key_file.trim() {
        "" => None,
        path => Some(PathBuf::from(path)),
    };
    let smtp_token = smtp_token(raw, smtp_secret_key_file.as_deref(), &key, p);
    let streams = streams(&raw.streams, &key("streams"), p);
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
        streams: streams?,
        smtp_token: smtp_token?,
        smtp_secret_key_file,
    })
}

/// Both halves of an SMTP Token, or neither (the Server API Token is used
/// then); the Secret Key from `smtp_secret_key`, else its file.
fn smtp_token(
    raw: &RawUpstream,
    secret_key_file: Option<&std::path::Path>,
    key: &dyn Fn(&str) -> String,
    p: &mut Problems,
) -> Option<Option<SmtpToken>> {
    let access_key = secret(&raw.smtp_access_key);
    let secret_key = match (secret(&raw.smtp_secret_key), secret_key_file) {
        (Some(secret_key), _) => Some(secret_key),
        (None, Some(path)) => read_secret_file(path, &key("smtp_secret_key_file"), p)?,
        (None, None) => None,
    };
    match (access_key, secret_key) {
        (Some(access_key), Some(secret_key)) => Some(Some(SmtpToken {
            access_key,
            secret_key,
        })),
        (None, None) => Some(None),
        (Some(_), None) => {
            p.add(
                key("smtp_secret_key"),
                format!(
                    "{} is set but the Secret Key is not: an SMTP Token is an Access Key and a Secret Key together (Postmark: the stream → Settings → SMTP); set {} (or {}), or remove the Access Key to use the Server API Token",
                    key("smtp_access_key"),
                    key("smtp_secret_key"),
                    key("smtp_secret_key_file")
                ),
            );
            None
        }
        (None, Some(_)) => {
            p.add(
                key("smtp_access_key"),
                format!(
                    "the Secret Key is set but {} is not: an SMTP Token is an Access Key and a Secret Key together (Postmark: the stream → Settings → SMTP)",
                    key("smtp_access_key")
                ),
            );
            None
        }
    }
}

/// Message stream ids (Postmark's: letters, digits, `-` and `_`),
/// lowercased.
fn streams(items: &[String], key: &str, p: &mut Problems) -> Option<Vec<String>> {
    let mut ok = true;
    let mut streams = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let id = item.trim();
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            p.add(
                format!("{key}[{i}]"),
                format!("`{id}` is not a message stream id (letters, digits, - and _; e.g. \"outbound\")"),
            );
            ok = false;
        } else {
            streams.push(id.to_ascii_lowercase());
        }
    }
    ok.then_some(streams)
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
