//! The message from stdin: reading it (with sendmail's lone-dot rule) and
//! the header section as sendmail edits it (Bcc removed, From added, every
//! other byte kept). Mail syntax (fields, folding, address lists) is
//! `relay_message`'s.

use std::io::{self, BufRead};

use relay_message::{address_list, fields, header_block, is_field_name, unfold, write_field};

/// Reads the message: to EOF, or (unless `ignore_dots`) up to a line that
/// holds only `.`, as sendmail does without `-i`.
pub fn read_message(input: &mut impl BufRead, ignore_dots: bool) -> io::Result<Vec<u8>> {
    let mut message = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(message);
        }
        if !ignore_dots && matches!(line.as_slice(), b"." | b".\n" | b".\r\n") {
            return Ok(message);
        }
        message.extend_from_slice(&line);
    }
}

/// One header field, with its continuation lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The field name as written.
    pub name: String,
    /// Every line of the field, CRLF-terminated, exactly as received.
    pub raw: Vec<u8>,
}

impl Header {
    /// The value with folding undone (continuation lines joined).
    pub fn value(&self) -> String {
        let value = self.raw.get(self.name.len() + 1..).unwrap_or_default();
        unfold(value)
    }
}

/// A message split into its header fields and the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header fields in order, so removing Bcc leaves the rest intact.
    pub headers: Vec<Header>,
    /// Everything after the header section's blank line (CRLF endings).
    pub body: Vec<u8>,
}

impl Message {
    /// Splits CRLF-normalised bytes. The header section ends at the first
    /// empty line, or at the first line that is neither a field (a strict
    /// RFC 5322 name, then a colon) nor a continuation: then the blank line
    /// is added when writing. A leading mbox `From ` line is dropped, as
    /// sendmail does.
    pub fn parse(data: &[u8]) -> Message {
        let mut rest = data;
        if rest.starts_with(b"From ") {
            rest = rest
                .iter()
                .position(|&b| b == b'\n')
                .and_then(|end| rest.get(end + 1..))
                .unwrap_or_default();
        }
        let block = header_block(rest);
        let mut headers: Vec<Header> = Vec::new();
        for field in fields(block) {
            let name = field.name(block).filter(|name| is_field_name(name));
            let Some(name) = name.and_then(|n| std::str::from_utf8(n).ok()) else {
                // Not a header: the body starts here, without a blank line.
                return Message {
                    headers,
                    body: rest.get(field.start..).unwrap_or_default().to_vec(),
                };
            };
            let mut raw = field.raw(block).to_vec();
            if !raw.ends_with(b"\n") {
                raw.extend_from_slice(b"\r\n");
            }
            headers.push(Header {
                name: name.to_string(),
                raw,
            });
        }
        let after = rest.get(block.len()..).unwrap_or_default();
        let body = after
            .strip_prefix(b"\r\n")
            .or_else(|| after.strip_prefix(b"\n"))
            .unwrap_or(after);
        Message {
            headers,
            body: body.to_vec(),
        }
    }

    /// Whether a field called `name` (any case) is present.
    pub fn has(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(name))
    }

    /// Every address in every field called one of `names`, in order.
    pub fn addresses(&self, names: &[&str]) -> Vec<String> {
        self.headers
            .iter()
            .filter(|h| names.iter().any(|n| h.name.eq_ignore_ascii_case(n)))
            .flat_map(|h| address_list(&h.value()))
            .collect()
    }

    /// Drops every field called `name` (any case).
    pub fn remove(&mut self, name: &str) {
        self.headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    /// Puts a field first in the header section.
    pub fn prepend(&mut self, name: &str, value: &str) {
        let mut raw = Vec::new();
        write_field(&mut raw, name, value.as_bytes(), b"\r\n");
        self.headers.insert(
            0,
            Header {
                name: name.to_string(),
                raw,
            },
        );
    }

    /// The message as bytes again: fields, blank line, body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out: Vec<u8> = Vec::with_capacity(self.body.len() + 1024);
        for h in &self.headers {
            out.extend_from_slice(&h.raw);
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_message::{mailbox, to_crlf};

    #[test]
    fn lone_dot_ends_input_without_i() {
        let input = b"Subject: x\n\nline\n.\nafter\n";
        let got = read_message(&mut &input[..], false).unwrap();
        assert_eq!(got, b"Subject: x\n\nline\n");
        let input = b"Subject: x\r\n\r\nline\r\n.\r\nafter\r\n";
        let got = read_message(&mut &input[..], false).unwrap();
        assert_eq!(got, b"Subject: x\r\n\r\nline\r\n");
        // At EOF without a newline, too.
        assert_eq!(read_message(&mut &b"a\n."[..], false).unwrap(), b"a\n");
        // Only a line of exactly one dot counts.
        let input = b"a\n..\n. \n.x\n";
        assert_eq!(read_message(&mut &input[..], false).unwrap(), input);
    }

    #[test]
    fn with_i_the_whole_input_is_read() {
        let input = b"Subject: x\n\nline\n.\nafter\n";
        assert_eq!(read_message(&mut &input[..], true).unwrap(), input);
    }

    #[test]
    fn recipients_from_folded_headers_and_lists() {
        let data = to_crlf(
            b"From: Shop <shop@x.com>\nTo: Ann <ann@y.com>, bob@z.com\nCc: \"Doe, Carl\" <carl@y.com>,\n dave@z.com (Dave)\nBcc:\n\teve@y.com\nSubject: hi\n\nTo: not@header.com\n",
        );
        let m = Message::parse(&data);
        assert_eq!(
            m.addresses(&["to", "CC", "bcc"]),
            [
                "ann@y.com",
                "bob@z.com",
                "carl@y.com",
                "dave@z.com",
                "eve@y.com"
            ]
        );
        assert_eq!(m.addresses(&["From"]), ["shop@x.com"]);
    }

    #[test]
    fn bcc_removal_keeps_everything_else_byte_for_byte() {
        let data = to_crlf(
            b"To: a@b\nBcc: secret@x.com,\n other@x.com\nSubject: s\nbcc: lower@x.com\n\nBcc: in body\n",
        );
        let mut m = Message::parse(&data);
        m.remove("Bcc");
        assert_eq!(
            m.to_bytes(),
            b"To: a@b\r\nSubject: s\r\n\r\nBcc: in body\r\n"
        );
    }

    #[test]
    fn from_is_added_first() {
        let mut m = Message::parse(b"To: a@b\r\n\r\nbody\r\n");
        assert!(!m.has("from"));
        m.prepend("From", &mailbox(Some("Web Shop"), "shop@x.com"));
        assert_eq!(
            m.to_bytes(),
            b"From: Web Shop <shop@x.com>\r\nTo: a@b\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn body_without_headers_or_blank_line() {
        let m = Message::parse(b"just text\r\nmore\r\n");
        assert!(m.headers.is_empty());
        assert_eq!(m.to_bytes(), b"\r\njust text\r\nmore\r\n");
        let m = Message::parse(b"Subject: s\r\nnot a header\r\n");
        assert_eq!(m.headers.len(), 1);
        assert_eq!(m.to_bytes(), b"Subject: s\r\n\r\nnot a header\r\n");
        let m = Message::parse(b"From me@x Mon Jan 1\r\nSubject: s\r\n\r\nb\r\n");
        assert_eq!(m.to_bytes(), b"Subject: s\r\n\r\nb\r\n");
        let m = Message::parse(b"Subject : s\r\nTo: a@b\r\n\r\nb\r\n");
        assert!(
            m.headers.is_empty(),
            "a space before the colon is not a field name"
        );
        let m = Message::parse(b" Date: x\r\nTo: a@b\r\n\r\n");
        assert!(m.headers.is_empty(), "a folded line is never a header");
        assert_eq!(m.to_bytes(), b"\r\n Date: x\r\nTo: a@b\r\n\r\n");
    }

    #[test]
    fn folded_lines_stay_with_their_field() {
        let data = b"Subject: hi\r\n Date: not a header\r\nTo: a@b\r\n\r\nbody\r\n";
        let m = Message::parse(data);
        let names: Vec<&str> = m.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["Subject", "To"]);
        assert!(!m.has("Date"));
        assert_eq!(m.headers[0].value(), "hi Date: not a header");
        assert_eq!(m.to_bytes(), data);
    }
}
