//! Text that goes on a header line or over SMTP: control characters
//! scrubbed, line endings made CRLF.

/// Text safe on one header line: every control character (CR, LF, tab,
/// NUL, ...) becomes a space, so client-chosen text can neither end a
/// header nor start a new one.
pub fn scrub(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Every line ending (CRLF, bare LF, bare CR) becomes CRLF, and a last line
/// without one gets one, as SMTP requires.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_spaces() {
        assert_eq!(scrub("app.local"), "app.local");
        assert_eq!(scrub("a\r\nBcc: x\t\u{0}\u{7f}"), "a  Bcc: x   ");
        assert_eq!(scrub("Jörg"), "Jörg");
    }

    #[test]
    fn line_endings_become_crlf() {
        assert_eq!(to_crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd\r\n");
        assert_eq!(to_crlf(b"a\r\n\r\n"), b"a\r\n\r\n");
        assert_eq!(to_crlf(b"\n\n"), b"\r\n\r\n");
        assert_eq!(to_crlf(b"\r\r\n"), b"\r\n\r\n");
        assert_eq!(to_crlf(b""), b"");
    }
}
