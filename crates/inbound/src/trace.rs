//! The headers the relay adds: `Received:` (always, with the queue id),
//! and `Date:` / `Message-ID:` when the client left them out (Postmark and
//! receiving servers expect both).

use std::net::IpAddr;
use std::time::SystemTime;

use crate::date::rfc5322;

/// What the `Received:` header says about the session.
pub struct Trace<'a> {
    pub id: &'a str,
    pub helo: &'a str,
    pub client: IpAddr,
    pub hostname: &'a str,
    /// `ESMTP` after EHLO, `SMTP` after HELO.
    pub protocol: &'a str,
    pub recipients: &'a [String],
    pub at: SystemTime,
}

/// Returns the message with our headers in front of it.
pub fn add_headers(body: Vec<u8>, t: &Trace<'_>) -> Vec<u8> {
    let date = rfc5322(t.at);
    let mut head = format!(
        "Received: from {} ({})\r\n\tby {} (postmark-relay) with {} id {}",
        sanitize(t.helo),
        t.client,
        t.hostname,
        t.protocol,
        t.id
    );
    if let [only] = t.recipients {
        head.push_str(&format!("\r\n\tfor <{}>", sanitize(only)));
    }
    head.push_str(&format!("; {date}\r\n"));
    if !has_header(&body, "date") {
        head.push_str(&format!("Date: {date}\r\n"));
    }
    if !has_header(&body, "message-id") {
        head.push_str(&format!(
            "Message-ID: <{}.{}@{}>\r\n",
            t.id,
            fastrand::u32(..),
            t.hostname
        ));
    }
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend(body);
    out
}

/// Keeps client-chosen text from breaking the header (no control bytes).
fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// Whether the header block (up to the first empty line) has `name`.
fn has_header(message: &[u8], name: &str) -> bool {
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return false;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            if line[..colon]
                .trim_ascii()
                .eq_ignore_ascii_case(name.as_bytes())
            {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace<'a>(rcpts: &'a [String]) -> Trace<'a> {
        Trace {
            id: "ABC123",
            helo: "app.local",
            client: "127.0.0.1".parse().unwrap(),
            hostname: "relay.test",
            protocol: "ESMTP",
            recipients: rcpts,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn adds_received_date_and_message_id_when_missing() {
        let rcpts = vec!["a@x.test".to_string()];
        let out = String::from_utf8(add_headers(
            b"Subject: s\r\n\r\nbody\r\n".to_vec(),
            &trace(&rcpts),
        ))
        .unwrap();
        assert!(out.starts_with("Received: from app.local (127.0.0.1)\r\n\tby relay.test (postmark-relay) with ESMTP id ABC123\r\n\tfor <a@x.test>; Thu, 01 Jan 1970"));
        assert!(out.contains("\r\nDate: Thu, 01 Jan 1970 00:00:00 +0000\r\n"));
        assert!(out.contains("\r\nMessage-ID: <ABC123."));
        assert!(out.ends_with("Subject: s\r\n\r\nbody\r\n"));
    }

    #[test]
    fn keeps_the_clients_date_and_message_id() {
        let body = b"DATE: x\r\nmessage-id: <m@x>\r\n\r\nDate: in body\r\n".to_vec();
        let out = String::from_utf8(add_headers(body, &trace(&[]))).unwrap();
        assert_eq!(out.matches("Date:").count(), 1, "{out}");
        assert_eq!(out.matches("Message-ID:").count(), 0);
    }

    #[test]
    fn body_lines_do_not_count_as_headers() {
        let out = String::from_utf8(add_headers(
            b"Subject: s\r\n\r\nDate: no\r\n".to_vec(),
            &trace(&[]),
        ))
        .unwrap();
        assert!(out.contains("\r\nDate: Thu"));
    }
}
