//! The headers the relay adds: `Received:` (always, with the queue id),
//! and `Date:` / `Message-ID:` when the client left them out (Postmark and
//! receiving servers expect both).

use std::net::IpAddr;
use std::time::SystemTime;

use relay_message::{has, rfc5322, scrub};

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
    if !has(&body, "Date") {
        head.push_str(&format!("Date: {date}\r\n"));
    }
    if !has(&body, "Message-ID") {
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

/// Client-chosen text (HELO name, recipient) as it can stand in the
/// `Received:` header: one line, at most 200 characters.
fn sanitize(s: &str) -> String {
    scrub(s).chars().take(200).collect()
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

    /// Regression: `Subject: hello` folded into a line ` Date: tomorrow`
    /// has no `Date:` (nor `Message-ID:`), so the relay adds both.
    #[test]
    fn folded_lines_that_look_like_headers_do_not_count() {
        let body =
            b"Subject: hello\r\n Date: tomorrow\r\n Message-ID: <x@y>\r\n\r\nbody\r\n".to_vec();
        let out = String::from_utf8(add_headers(body, &trace(&[]))).unwrap();
        assert!(
            out.contains("\r\nDate: Thu, 01 Jan 1970 00:00:00 +0000\r\n"),
            "{out}"
        );
        assert!(out.contains("\r\nMessage-ID: <ABC123."), "{out}");
        assert!(out
            .ends_with("Subject: hello\r\n Date: tomorrow\r\n Message-ID: <x@y>\r\n\r\nbody\r\n"));
    }

    #[test]
    fn control_characters_in_client_text_stay_on_one_line() {
        let rcpts = vec!["a@x.test\r\nBcc: evil@x.test".to_string()];
        let t = Trace {
            helo: "app\r\nX-Injected: yes",
            ..trace(&rcpts)
        };
        let out = String::from_utf8(add_headers(b"Subject: s\r\n\r\n".to_vec(), &t)).unwrap();
        assert!(
            out.starts_with("Received: from app  X-Injected: yes (127.0.0.1)\r\n"),
            "{out}"
        );
        assert!(out.contains("\tfor <a@x.test  Bcc: evil@x.test>;"), "{out}");
        assert!(!out.contains("\nX-Injected"));
        assert!(!out.contains("\nBcc"));
    }
}
