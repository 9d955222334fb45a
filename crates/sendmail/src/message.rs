//! The message from stdin: reading it (with sendmail's lone-dot rule),
//! CRLF line endings, the header section (folded lines kept intact), and
//! the address lists in To/Cc/Bcc/From.

use std::io::{self, BufRead};

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

/// Every line ending (CRLF, bare LF, bare CR) becomes CRLF, and the last
/// line gets one, as SMTP requires.
pub fn to_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 32 + 2);
    let mut bytes = data.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'\r' => {
                bytes.next_if_eq(&b'\n');
                out.extend_from_slice(b"\r\n");
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
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
        let text = String::from_utf8_lossy(&self.raw);
        let value = text.split_once(':').map_or("", |(_, v)| v);
        value.replace("\r\n", "").trim().to_string()
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
    /// empty line, or at the first line that is neither a field nor a
    /// continuation (then the blank line is added when writing). A leading
    /// mbox `From ` line is dropped, as sendmail does.
    pub fn parse(data: &[u8]) -> Message {
        let mut headers: Vec<Header> = Vec::new();
        let mut rest = data;
        if rest.starts_with(b"From ") {
            rest = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(&[][..], |end| &rest[end + 2..]);
        }
        while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
            let line = &rest[..end + 2];
            if end == 0 {
                rest = &rest[2..];
                break;
            }
            if matches!(line[0], b' ' | b'\t') {
                match headers.last_mut() {
                    Some(h) => h.raw.extend_from_slice(line),
                    None => break,
                }
            } else if let Some(name) = field_name(line) {
                headers.push(Header {
                    name: name.to_string(),
                    raw: line.to_vec(),
                });
            } else {
                break;
            }
            rest = &rest[end + 2..];
        }
        Message {
            headers,
            body: rest.to_vec(),
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
            .flat_map(|h| parse_address_list(&h.value()))
            .collect()
    }

    /// Drops every field called `name` (any case).
    pub fn remove(&mut self, name: &str) {
        self.headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    /// Puts a field first in the header section.
    pub fn prepend(&mut self, name: &str, value: &str) {
        self.headers.insert(
            0,
            Header {
                name: name.to_string(),
                raw: format!("{name}: {value}\r\n").into_bytes(),
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

/// The field name of a header line, if it is one (`name:` with printable
/// ASCII and no spaces before the colon).
fn field_name(line: &[u8]) -> Option<&str> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let valid = !name.is_empty() && name.iter().all(|&b| b.is_ascii_graphic());
    valid.then(|| std::str::from_utf8(name).ok()).flatten()
}

/// A `From:` value: `"Name" <addr>` when a name is given, else the address.
pub fn from_value(name: Option<&str>, address: &str) -> String {
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        None => address.to_string(),
        Some(n) => {
            let plain = n
                .chars()
                .all(|c| c.is_alphanumeric() || " !#$%&'*+-/=?^_`{|}~".contains(c));
            if plain {
                format!("{n} <{address}>")
            } else {
                let escaped = n.replace('\\', "\\\\").replace('"', "\\\"");
                format!("\"{escaped}\" <{address}>")
            }
        }
    }
}

/// The addresses in an RFC 5322 address list, leniently: `a@b`,
/// `Name <a@b>`, `"Doe, J" <a@b>`, `a@b (comment)`, groups
/// (`team: a@b, c@d;`, `undisclosed-recipients:;`), separated by commas.
/// `<>` yields an empty address (the null sender).
pub fn parse_address_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut bare = String::new();
    let mut angle: Option<String> = None;
    let mut in_angle = false;
    let mut in_quote = false;
    let mut escaped = false;
    let mut comment_depth = 0usize;
    let finish = |bare: &mut String, angle: &mut Option<String>, out: &mut Vec<String>| {
        let address = match angle.take() {
            Some(a) => {
                // Drop an obsolete source route (`<@a,@b:user@c>`).
                let a = a.rsplit_once(':').map_or(a.as_str(), |(_, addr)| addr);
                Some(a.trim().to_string())
            }
            None => Some(bare.split_whitespace().collect::<String>()).filter(|a| !a.is_empty()),
        };
        out.extend(address);
        bare.clear();
    };
    for c in value.chars() {
        if escaped {
            escaped = false;
            push(&mut bare, &mut angle, in_angle, c);
            continue;
        }
        if comment_depth > 0 {
            match c {
                '\\' => escaped = true,
                '(' => comment_depth += 1,
                ')' => comment_depth -= 1,
                _ => {}
            }
            continue;
        }
        if in_quote {
            match c {
                '\\' => escaped = true,
                '"' => in_quote = false,
                _ => {}
            }
            push(&mut bare, &mut angle, in_angle, c);
            continue;
        }
        match c {
            '"' => {
                in_quote = true;
                push(&mut bare, &mut angle, in_angle, c);
            }
            '(' => comment_depth = 1,
            '<' if !in_angle => {
                in_angle = true;
                angle = Some(String::new());
            }
            '>' if in_angle => in_angle = false,
            ',' | ';' if !in_angle => finish(&mut bare, &mut angle, &mut out),
            // A group's display name ends here; its members follow.
            ':' if !in_angle => bare.clear(),
            c => push(&mut bare, &mut angle, in_angle, c),
        }
    }
    finish(&mut bare, &mut angle, &mut out);
    out
}

fn push(bare: &mut String, angle: &mut Option<String>, in_angle: bool, c: char) {
    match angle {
        Some(a) if in_angle => a.push(c),
        _ => bare.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn line_endings_become_crlf() {
        assert_eq!(to_crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd\r\n");
        assert_eq!(to_crlf(b"a\r\n\r\n"), b"a\r\n\r\n");
        assert_eq!(to_crlf(b"\n\n"), b"\r\n\r\n");
        assert_eq!(to_crlf(b""), b"");
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
    fn address_list_forms() {
        assert_eq!(parse_address_list("Name <a@b>, c@d"), ["a@b", "c@d"]);
        assert_eq!(
            parse_address_list("undisclosed-recipients:;"),
            Vec::<String>::new()
        );
        assert_eq!(
            parse_address_list("team: a@b, C <c@d>; e@f"),
            ["a@b", "c@d", "e@f"]
        );
        assert_eq!(parse_address_list("<@relay.example:a@b>"), ["a@b"]);
        assert_eq!(parse_address_list("\"q\\\"uoted\" <a@b>"), ["a@b"]);
        assert_eq!(parse_address_list("<>"), [""]);
        assert_eq!(parse_address_list(" , ,"), Vec::<String>::new());
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
        m.prepend("From", &from_value(Some("Web Shop"), "shop@x.com"));
        assert_eq!(
            m.to_bytes(),
            b"From: Web Shop <shop@x.com>\r\nTo: a@b\r\n\r\nbody\r\n"
        );
        assert_eq!(from_value(None, "a@b"), "a@b");
        assert_eq!(from_value(Some("Doe, J."), "a@b"), "\"Doe, J.\" <a@b>");
        assert_eq!(from_value(Some("  "), "a@b"), "a@b");
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
    }
}
