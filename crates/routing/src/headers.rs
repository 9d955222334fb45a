//! Just enough RFC 5322 header parsing to route a message: find a header,
//! unfold it, pull the address out of a `From:`-style value.
//!
//! Works on raw bytes and never panics: non-UTF-8 is decoded lossily, bare
//! LF line endings are accepted, lines without a colon are skipped.

/// The header block of a message (up to, not including, the first empty
/// line; the whole input if there is none).
pub fn header_block(message: &[u8]) -> &[u8] {
    let mut start = 0;
    for line in lines(message) {
        if line.is_empty() {
            return message.get(..start).unwrap_or(message);
        }
        start += line.len() + ending_len(message, start + line.len());
    }
    message
}

/// First header with this name (case-insensitive), value unfolded and
/// trimmed; lossy UTF-8.
pub fn find(message: &[u8], name: &str) -> Option<String> {
    fields(header_block(message))
        .find(|(field, _)| field.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, value)| String::from_utf8_lossy(&value).trim().to_owned())
}

/// Whether the message has this header (case-insensitive), even empty.
pub fn has(message: &[u8], name: &str) -> bool {
    fields(header_block(message)).any(|(field, _)| field.eq_ignore_ascii_case(name.as_bytes()))
}

/// The bare address from a From:-style value: `"Name" <a@b>` → `a@b`,
/// `a@b (c)` → `a@b`, `a@b` → `a@b`. Of a list, the first mailbox. `None`
/// when there is no address (`<>`, only a display name, empty).
pub fn address(value: &str) -> Option<String> {
    let mut scan = Scan::default();
    let mut angle: Option<usize> = None;
    let mut tokens: Vec<String> = Vec::new();
    let mut token = String::new();
    for (i, c) in value.char_indices() {
        let outside = scan.outside();
        let was_quoted = scan.in_quote;
        scan.step(c);
        match c {
            '<' if outside && angle.is_none() => angle = Some(i + 1),
            '>' if outside => {
                if let Some(start) = angle {
                    return non_empty(value.get(start..i).unwrap_or(""));
                }
            }
            ',' if outside && angle.is_none() => break,
            '(' if outside => {}
            c if outside && c.is_whitespace() => tokens.extend(take(&mut token)),
            _ if angle.is_none() && (outside || was_quoted || scan.in_quote) => token.push(c),
            _ => {}
        }
    }
    if let Some(start) = angle {
        // `<a@b` without the closing bracket: take what is there.
        return non_empty(value.get(start..).unwrap_or(""));
    }
    tokens.extend(take(&mut token));
    match tokens.iter().find(|t| t.contains('@')) {
        Some(addr) => Some(addr.clone()),
        None if tokens.len() == 1 => tokens.pop(),
        None => None,
    }
}

/// Tracks quoted strings and (nested) comments while scanning a value.
#[derive(Default)]
struct Scan {
    in_quote: bool,
    comment_depth: usize,
    escaped: bool,
}

impl Scan {
    /// Outside any quoted string or comment, before consuming the next char.
    fn outside(&self) -> bool {
        !self.in_quote && self.comment_depth == 0 && !self.escaped
    }

    fn step(&mut self, c: char) {
        if self.escaped {
            self.escaped = false;
            return;
        }
        match c {
            '\\' if self.in_quote || self.comment_depth > 0 => self.escaped = true,
            '"' if self.comment_depth == 0 => self.in_quote = !self.in_quote,
            '(' if !self.in_quote => self.comment_depth += 1,
            ')' if !self.in_quote && self.comment_depth > 0 => self.comment_depth -= 1,
            _ => {}
        }
    }
}

fn take(token: &mut String) -> Option<String> {
    (!token.is_empty()).then(|| std::mem::take(token))
}

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Header fields of a header block as (name, raw unfolded value). A line
/// starting with space or tab continues the previous field; a line without
/// a colon (and its continuations) is skipped.
fn fields(block: &[u8]) -> impl Iterator<Item = (&[u8], Vec<u8>)> {
    let mut lines = lines(block).peekable();
    std::iter::from_fn(move || loop {
        let line = lines.next()?;
        let continuation = |l: &&[u8]| l.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        let colon = line.iter().position(|b| *b == b':');
        let Some(colon) = colon.filter(|_| !continuation(&line)) else {
            while lines.next_if(continuation).is_some() {}
            continue;
        };
        let (name, rest) = line.split_at(colon);
        let mut value = rest.get(1..).unwrap_or_default().to_vec();
        while let Some(more) = lines.next_if(continuation) {
            value.extend_from_slice(more);
        }
        return Some((name.trim_ascii_end(), value));
    })
}

/// Lines without their `\n` or `\r\n` ending.
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(bytes).filter(|b| !b.is_empty());
    std::iter::from_fn(move || {
        let current = rest?;
        let (line, next) = match current.iter().position(|b| *b == b'\n') {
            Some(i) => (
                &current[..i],
                Some(&current[i + 1..]).filter(|n| !n.is_empty()),
            ),
            None => (current, None),
        };
        rest = next;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    })
}

/// Length of the line ending at `at` (`\r\n`, `\n`, or none at the end).
fn ending_len(message: &[u8], at: usize) -> usize {
    match message.get(at..) {
        Some([b'\r', b'\n', ..]) => 2,
        Some([b'\n', ..]) => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: \"Ann\" <ann@example.com>\r\nSubject: hello\r\n  world\r\nX-Empty:\r\n\r\nBody: not a header\r\n";

    #[test]
    fn header_block_stops_at_first_empty_line() {
        assert_eq!(
            header_block(MSG),
            &b"From: \"Ann\" <ann@example.com>\r\nSubject: hello\r\n  world\r\nX-Empty:\r\n"[..]
        );
        assert_eq!(header_block(b"A: 1\nB: 2\n\nbody"), b"A: 1\nB: 2\n");
        assert_eq!(
            header_block(b"A: 1\r\nB: 2"),
            b"A: 1\r\nB: 2",
            "no blank line: all headers"
        );
        assert_eq!(
            header_block(b"\r\nA: 1\r\n"),
            b"",
            "blank first line: no headers"
        );
        assert_eq!(header_block(b""), b"");
    }

    #[test]
    fn find_is_case_insensitive_unfolded_and_trimmed() {
        assert_eq!(find(MSG, "subject").as_deref(), Some("hello  world"));
        assert_eq!(
            find(MSG, "FROM").as_deref(),
            Some("\"Ann\" <ann@example.com>")
        );
        assert_eq!(find(MSG, "x-empty").as_deref(), Some(""));
        assert_eq!(find(MSG, "Body"), None, "body lines are not headers");
        assert_eq!(find(MSG, "Missing"), None);
    }

    #[test]
    fn find_returns_the_first_of_repeated_headers() {
        let msg = b"Received: one\r\nReceived: two\r\n\r\n";
        assert_eq!(find(msg, "received").as_deref(), Some("one"));
    }

    #[test]
    fn find_handles_bare_lf_tabs_and_space_before_colon() {
        let msg = b"Subject : a\n\tb\nTo: x@y\n\n";
        assert_eq!(find(msg, "Subject").as_deref(), Some("a\tb"));
        assert_eq!(find(msg, "To").as_deref(), Some("x@y"));
    }

    #[test]
    fn has_sees_empty_headers_and_not_body() {
        assert!(has(MSG, "X-EMPTY"));
        assert!(has(MSG, "subject"));
        assert!(!has(MSG, "Body"));
        assert!(!has(b"", "From"));
    }

    #[test]
    fn malformed_input_never_panics() {
        let inputs: [&[u8]; 9] = [
            b"",
            b"\r",
            b"\n",
            b":",
            b"no colon here\r\n continued: x\r\nA: 1\r\n\r\n",
            b" leading continuation\r\nA: 1",
            b"A: \xff\xfe bad utf8\r\n\r\n",
            b"\xff\xff: x\r\n",
            b"A:\r\r\r\n\r",
        ];
        for input in inputs {
            let _ = header_block(input);
            let _ = find(input, "A");
            let _ = has(input, "From");
        }
        assert_eq!(
            find(inputs[4], "A").as_deref(),
            Some("1"),
            "skips the colon-less line and its continuation"
        );
        assert_eq!(find(inputs[4], "continued"), None);
        assert_eq!(find(inputs[5], "A").as_deref(), Some("1"));
        assert_eq!(
            find(inputs[6], "a").as_deref(),
            Some("\u{fffd}\u{fffd} bad utf8")
        );
    }

    #[test]
    fn address_forms() {
        let cases = [
            ("\"Name\" <a@b>", Some("a@b")),
            ("a@b (c)", Some("a@b")),
            ("a@b", Some("a@b")),
            ("  <A@B.example>  ", Some("A@B.example")),
            ("Name <a@b>, Other <c@d>", Some("a@b")),
            ("a@b, c@d", Some("a@b")),
            (
                "\"Smith, John <x@y>\" <john@example.com>",
                Some("john@example.com"),
            ),
            (
                "(comment <no@no>) real@example.com",
                Some("real@example.com"),
            ),
            ("\"john doe\"@example.com", Some("\"john doe\"@example.com")),
            ("root", Some("root")),
            ("<a@b", Some("a@b")),
            ("<>", None),
            ("", None),
            ("Just A Name", None),
        ];
        for (value, expected) in cases {
            assert_eq!(address(value).as_deref(), expected, "{value:?}");
        }
    }
}
