//! The one scanner for quoted strings and comments in structured header
//! values (RFC 5322 §3.2): every parser of addresses and display names asks
//! it what a character is, so they all agree on where a `"`, `(` or `\`
//! starts and ends something.

/// What a character of a structured value is, given what came before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// Outside quoted strings and comments: specials (`<`, `>`, `,`, `:`,
    /// `;`) mean something here.
    Text,
    /// Inside a quoted string (its text, or a character a `\` escaped).
    Quoted,
    /// A quoted string's own syntax: its opening or closing `"`, or the `\`
    /// of an escape inside it. Part of the string as written, not of its
    /// text.
    QuoteMark,
    /// A comment, its (nested) parentheses and escapes included.
    Comment,
}

/// Tracks quoted strings, nested comments and `\` escapes while a value is
/// read one character at a time. Lenient: an unterminated quote or comment
/// runs to the end of the value.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    in_quote: bool,
    comment_depth: usize,
    /// The previous character was an escaping `\`.
    escaped: bool,
}

impl Scan {
    /// Classifies `c` and moves past it.
    pub(crate) fn step(&mut self, c: char) -> Part {
        if self.escaped {
            self.escaped = false;
            return if self.comment_depth > 0 {
                Part::Comment
            } else {
                Part::Quoted
            };
        }
        if self.comment_depth > 0 {
            match c {
                '\\' => self.escaped = true,
                '(' => self.comment_depth += 1,
                ')' => self.comment_depth -= 1,
                _ => {}
            }
            return Part::Comment;
        }
        if self.in_quote {
            return match c {
                '\\' => {
                    self.escaped = true;
                    Part::QuoteMark
                }
                '"' => {
                    self.in_quote = false;
                    Part::QuoteMark
                }
                _ => Part::Quoted,
            };
        }
        match c {
            '"' => {
                self.in_quote = true;
                Part::QuoteMark
            }
            '(' => {
                self.comment_depth = 1;
                Part::Comment
            }
            _ => Part::Text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(value: &str) -> String {
        let mut scan = Scan::default();
        value
            .chars()
            .map(|c| match scan.step(c) {
                Part::Text => 't',
                Part::Quoted => 'q',
                Part::QuoteMark => '"',
                Part::Comment => 'c',
            })
            .collect()
    }

    #[test]
    fn quotes_comments_and_escapes() {
        assert_eq!(parts(r#"a "b c" d"#), "tt\"qqq\"tt");
        assert_eq!(parts(r#""a\"b""#), "\"q\"qq\"");
        assert_eq!(parts("a (b (c) \\) d) e"), "ttcccccccccccctt");
        assert_eq!(parts(r#"("x") "(y)""#), "ccccct\"qqq\"");
        assert_eq!(
            parts(r"a\b"),
            "ttt",
            "no escapes outside quotes and comments"
        );
        assert_eq!(parts("x)"), "tt", "a stray `)` is text");
        assert_eq!(parts("\"unterminated <a@b>"), "\"qqqqqqqqqqqqqqqqqq");
        assert_eq!(parts("(((("), "cccc");
    }
}
