//! The header block and its fields: where each field starts and ends, its
//! name, its value unfolded, and writing one.
//!
//! The rules every caller shares: the header block ends at the first empty
//! line (the whole input when there is none); a line starting with space or
//! tab continues the field before it and is never a field of its own, even
//! when it reads like one (`" Date: x"`); a line without a colon (with its
//! continuations) names no field. Bare LF endings are accepted, non-UTF-8
//! is read lossily.

/// The header block of a message: up to, not including, the first empty
/// line; the whole input if there is none. Fields are looked up here so
/// that body lines never count as headers.
pub fn header_block(message: &[u8]) -> &[u8] {
    let mut pos = 0;
    while let Some(rest) = message.get(pos..).filter(|r| !r.is_empty()) {
        let (line, next) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (rest.get(..i).unwrap_or_default(), pos + i + 1),
            None => (rest, message.len()),
        };
        if line.strip_suffix(b"\r").unwrap_or(line).is_empty() {
            return message.get(..pos).unwrap_or(message);
        }
        pos = next;
    }
    message
}

/// Where one field lies in a header block: byte offsets, so a caller can
/// copy, replace or drop it and leave every other byte as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// First byte of the field's first line.
    pub start: usize,
    /// The colon after the name; `None` for a span that is not a field (a
    /// line without a colon, or continuation lines with no field before
    /// them).
    pub colon: Option<usize>,
    /// Just past the line ending of its last line (folds included).
    pub end: usize,
}

impl Field {
    /// The name as written, before the colon (white space included, as in
    /// `Subject : x`); `None` when this span is not a field.
    pub fn name<'a>(&self, block: &'a [u8]) -> Option<&'a [u8]> {
        self.colon.and_then(|colon| block.get(self.start..colon))
    }

    /// Whether this is a field called `name` (case-insensitive, white space
    /// before the colon ignored).
    pub fn is(&self, block: &[u8], name: &str) -> bool {
        self.name(block)
            .is_some_and(|n| n.trim_ascii_end().eq_ignore_ascii_case(name.as_bytes()))
    }

    /// The whole span: name, value, folds and the final line ending.
    pub fn raw<'a>(&self, block: &'a [u8]) -> &'a [u8] {
        block.get(self.start..self.end).unwrap_or_default()
    }

    /// The value as written: after the colon, folds included, without the
    /// final line ending. Empty when this span is not a field.
    pub fn raw_value<'a>(&self, block: &'a [u8]) -> &'a [u8] {
        let from = self.colon.map_or(self.end, |colon| colon + 1);
        let value = block.get(from..self.end).unwrap_or_default();
        let value = value.strip_suffix(b"\n").unwrap_or(value);
        value.strip_suffix(b"\r").unwrap_or(value)
    }

    /// The value unfolded and trimmed, lossy UTF-8 (see [`unfold`]).
    pub fn value(&self, block: &[u8]) -> String {
        unfold(self.raw_value(block))
    }
}

/// Every span of a header block, in order; together they cover it byte
/// for byte. Fields and non-fields alike, so a rewriter can copy what it
/// does not understand.
pub fn fields(block: &[u8]) -> Fields<'_> {
    Fields { block, pos: 0 }
}

/// The spans of a header block; see [`fields`].
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    block: &'a [u8],
    pos: usize,
}

impl Iterator for Fields<'_> {
    type Item = Field;

    fn next(&mut self) -> Option<Field> {
        let block = self.block;
        let start = self.pos;
        if start >= block.len() {
            return None;
        }
        let first_end = line_end(block, start);
        // A continuation line never starts a field, whatever it contains.
        let colon = if continues(block, start) {
            None
        } else {
            block
                .get(start..first_end)
                .and_then(|line| line.iter().position(|b| *b == b':'))
                .map(|i| start + i)
        };
        let mut end = first_end;
        while end < block.len() && continues(block, end) {
            end = line_end(block, end);
        }
        self.pos = end;
        Some(Field { start, colon, end })
    }
}

/// Just past the `\n` of the line starting at `pos` (the end of `block` if
/// the line has none).
fn line_end(block: &[u8], pos: usize) -> usize {
    block
        .get(pos..)
        .and_then(|rest| rest.iter().position(|b| *b == b'\n'))
        .map_or(block.len(), |i| pos + i + 1)
}

/// Whether the line starting at `pos` is a continuation (folded) line.
fn continues(block: &[u8], pos: usize) -> bool {
    matches!(block.get(pos), Some(b' ' | b'\t'))
}

/// The first field called `name` (case-insensitive) in a header block: the
/// one [`find`] reads.
pub fn first_field(block: &[u8], name: &str) -> Option<Field> {
    fields(block).find(|f| f.is(block, name))
}

/// The first header called `name` (case-insensitive) in a message, its
/// value unfolded and trimmed, lossy UTF-8. Body lines are never headers.
pub fn find(message: &[u8], name: &str) -> Option<String> {
    let block = header_block(message);
    first_field(block, name).map(|f| f.value(block))
}

/// Whether the message has a header called `name` (case-insensitive), even
/// an empty one.
pub fn has(message: &[u8], name: &str) -> bool {
    first_field(header_block(message), name).is_some()
}

/// A field value with its folds undone (every line break removed, the white
/// space that starts the next line kept), trimmed, lossy UTF-8.
pub fn unfold(raw_value: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw_value.len());
    for line in raw_value.split(|b| *b == b'\n') {
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
    }
    String::from_utf8_lossy(&out).trim().to_owned()
}

/// Whether `name` is a field name as RFC 5322 writes it: one or more
/// printable US-ASCII characters, no space, no colon. Stricter than
/// [`Field::is`], for callers that must tell a header line from text.
pub fn is_field_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|b| b.is_ascii_graphic() && *b != b':')
}

/// The line ending a header block uses: `\n` when its first line ends in a
/// bare LF, else CRLF. Lines added to it should match.
pub fn line_ending(block: &[u8]) -> &'static [u8] {
    match block.iter().position(|b| *b == b'\n') {
        Some(i) if i == 0 || block.get(i - 1) != Some(&b'\r') => b"\n",
        _ => b"\r\n",
    }
}

/// Appends `Name: value` and `eol`. A value that does not start with white
/// space (or a fold) gets one space after the colon; the value is written
/// as given, folds included, so the caller keeps it to one field.
pub fn write_field(out: &mut Vec<u8>, name: &str, value: &[u8], eol: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    if !value.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
        out.push(b' ');
    }
    out.extend_from_slice(value);
    out.extend_from_slice(eol);
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
        assert_eq!(header_block(b"A: 1\r\n\r"), b"A: 1\r\n");
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

    /// Regression: a folded line that reads like a header (`Subject: hello`
    /// folded into ` Date: tomorrow`) is part of Subject, not a `Date:`, so
    /// the relay still adds the `Date:` the message lacks.
    #[test]
    fn folded_lines_that_look_like_headers_are_not_headers() {
        let msg =
            b"Subject: hello\r\n Date: tomorrow\r\n\tMessage-ID: <x@y>\r\nTo: a@b\r\n\r\nbody\r\n";
        assert!(!has(msg, "Date"));
        assert!(!has(msg, "Message-ID"));
        assert_eq!(find(msg, "Date"), None);
        assert_eq!(
            find(msg, "Subject").as_deref(),
            Some("hello Date: tomorrow\tMessage-ID: <x@y>")
        );
        assert!(has(msg, "To"));
        // Not at the very start either, where there is no field to continue.
        assert!(!has(b" Date: x\r\nTo: a@b\r\n\r\n", "Date"));
        assert!(!has(b"Subject: s\n Date: x\n\n", "date"));
    }

    #[test]
    fn fields_cover_the_block_with_their_spans() {
        let block = header_block(b"junk line\r\n cont: x\r\nFrom: a\r\n\tb\r\nTo : c\r\n\r\nbody");
        let spans: Vec<Field> = fields(block).collect();
        let raw: Vec<&[u8]> = spans.iter().map(|f| f.raw(block)).collect();
        assert_eq!(
            raw,
            [
                &b"junk line\r\n cont: x\r\n"[..],
                b"From: a\r\n\tb\r\n",
                b"To : c\r\n"
            ]
        );
        assert_eq!(spans[0].colon, None);
        assert_eq!(spans[0].name(block), None);
        assert_eq!(spans[1].name(block), Some(&b"From"[..]));
        assert_eq!(spans[1].raw_value(block), b" a\r\n\tb");
        assert_eq!(spans[1].value(block), "a\tb");
        assert!(spans[2].is(block, "to"));
        assert_eq!(spans[2].name(block), Some(&b"To "[..]));
        assert_eq!(first_field(block, "TO"), Some(spans[2]));
        assert_eq!(raw.concat(), block);
    }

    #[test]
    fn field_names_rfc_5322() {
        assert!(is_field_name(b"X-PM-Message-Stream"));
        assert!(is_field_name(b"."));
        assert!(!is_field_name(b""));
        assert!(!is_field_name(b"Subject "));
        assert!(!is_field_name(b"a:b"));
        assert!(!is_field_name(b"\xffname"));
    }

    #[test]
    fn line_endings_and_writing_fields() {
        assert_eq!(line_ending(b"A: 1\r\nB: 2\n"), b"\r\n");
        assert_eq!(line_ending(b"A: 1\nB: 2\r\n"), b"\n");
        assert_eq!(line_ending(b"\n"), b"\n");
        assert_eq!(line_ending(b"A: 1"), b"\r\n");
        let mut out = Vec::new();
        write_field(&mut out, "From", b"a@b", b"\r\n");
        write_field(&mut out, "Reply-To", b" a@b", b"\n");
        write_field(&mut out, "X", b"\r\n\tfolded", b"\r\n");
        assert_eq!(out, b"From: a@b\r\nReply-To: a@b\nX: \r\n\tfolded\r\n");
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
            let block = header_block(input);
            assert!(input.starts_with(block));
            for f in fields(block) {
                let _ = (f.name(block), f.raw(block), f.value(block));
            }
            let _ = find(input, "A");
            let _ = has(input, "From");
            let _ = line_ending(input);
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
}
