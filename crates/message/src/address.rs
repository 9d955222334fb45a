//! Addresses in header values: reading address lists (`To:`, `Cc:`,
//! `From:`), a mailbox's display name, and writing a mailbox back with its
//! display name quoted as needed.
//!
//! Lenient, like the mail it reads: groups, comments, quoted strings,
//! obsolete source routes and spaces around `@` and `.` are understood; an
//! unterminated quote, comment or `<` runs to the end of the value; nothing
//! here fails.

use crate::scan::{Part, Scan};
use crate::text::scrub;

/// Every address in an RFC 5322 address list, in order: `a@b`,
/// `Name <a@b>`, `"Doe, J" <a@b>`, `a@b (comment)`, groups
/// (`team: a@b, c@d;`, `undisclosed-recipients:;`), separated by commas.
/// `<>` gives an empty address (the null sender); a mailbox with no
/// address at all (only a display name) gives nothing. Quoted local parts
/// are kept as written (`"john doe"@example.com`); a source route is
/// dropped (`<@relay:a@b>` → `a@b`).
pub fn address_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut mailbox = Mailbox::default();
    let mut scan = Scan::default();
    for c in value.chars() {
        match scan.step(c) {
            Part::Comment => mailbox.space(),
            Part::Quoted | Part::QuoteMark => mailbox.push(c),
            Part::Text => match c {
                '<' if mailbox.angle.is_none() => {
                    mailbox.angle = Some(String::new());
                    mailbox.in_angle = true;
                }
                '>' if mailbox.in_angle => mailbox.in_angle = false,
                ',' | ';' if !mailbox.in_angle => out.extend(mailbox.finish()),
                // A group's display name ends here; its members follow.
                ':' if !mailbox.in_angle => mailbox.group(),
                c if c.is_whitespace() => mailbox.space(),
                c => mailbox.push(c),
            },
        }
    }
    out.extend(mailbox.finish());
    out
}

/// The address of the first mailbox of a `From:`-style value:
/// `"Name" <a@b>` → `a@b`, `a@b (c)` → `a@b`, `Name <a@b>, c@d` → `a@b`.
/// `None` when it has no address (`<>`, only a display name, empty).
pub fn first_address(value: &str) -> Option<String> {
    address_list(value)
        .into_iter()
        .next()
        .filter(|a| !a.is_empty())
}

/// The display name of the first mailbox of a `From:`-style value, as
/// text: what comes before its `<` outside quotes and comments, with the
/// quoting undone (`"Doe, J" <a@b>` → `Doe, J`; `"Cron" Daemon <a@b>` →
/// `Cron Daemon`). `None` without angle brackets (`a@b`, `a@b (Name)`),
/// when the first mailbox ends before one, or when the name is empty.
pub fn display_name(value: &str) -> Option<String> {
    let mut scan = Scan::default();
    for (i, c) in value.char_indices() {
        match (scan.step(c), c) {
            (Part::Text, '<') => {
                let raw = value.get(..i).unwrap_or_default();
                let mut scan = Scan::default();
                let text: String = raw
                    .chars()
                    .filter(|&c| scan.step(c) != Part::QuoteMark)
                    .collect();
                let text = text.trim();
                return (!text.is_empty()).then(|| text.to_owned());
            }
            (Part::Text, ',') => return None,
            _ => {}
        }
    }
    None
}

/// Display-name text as it can stand before `<address>`: control
/// characters become spaces; words of letters, digits and
/// ``!#$%&'*+-/=?^_`{|}~`` stay as they are (so do encoded words,
/// `=?utf-8?q?J=C3=B6rg?=`, which quoting would keep from being decoded);
/// anything else becomes one quoted string, so no `@`, `,`, `<` or `"` in
/// it can be taken for an address or end it.
pub fn phrase(text: &str) -> String {
    let text = scrub(text);
    let text = text.trim();
    let plain = |c: char| c.is_alphanumeric() || c == ' ' || "!#$%&'*+-/=?^_`{|}~".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return text.to_owned();
    }
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// A mailbox as a header value: `Name <address>` (the name through
/// [`phrase`]) when there is a name, else the bare address.
pub fn mailbox(name: Option<&str>, address: &str) -> String {
    let name = name.map(scrub);
    match name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => format!("{} <{address}>", phrase(name)),
        None => address.to_owned(),
    }
}

/// One mailbox of a list being read.
#[derive(Debug, Default)]
struct Mailbox {
    /// Words outside angle brackets (the address, or a display name).
    tokens: Vec<String>,
    token: String,
    /// What is inside `<...>`, once a `<` was seen; it wins over `tokens`.
    angle: Option<String>,
    in_angle: bool,
}

impl Mailbox {
    fn push(&mut self, c: char) {
        match &mut self.angle {
            Some(angle) if self.in_angle => angle.push(c),
            // Text after `<...>` is not part of the address.
            Some(_) => {}
            None => self.token.push(c),
        }
    }

    /// White space or a comment: ends a word outside angle brackets.
    fn space(&mut self) {
        if self.angle.is_none() && !self.token.is_empty() {
            self.tokens.push(std::mem::take(&mut self.token));
        }
    }

    /// A group's name ended (`team:`): the words so far were not an address.
    fn group(&mut self) {
        self.tokens.clear();
        self.token.clear();
    }

    /// The address read so far, if any, and a fresh start.
    fn finish(&mut self) -> Option<String> {
        self.space();
        let mailbox = std::mem::take(self);
        match mailbox.angle {
            Some(angle) => Some(without_route(angle.trim()).trim().to_owned()),
            None => bare(mailbox.tokens),
        }
    }
}

/// `@a,@b:user@c` → `user@c` (RFC 5322 §4.4 obs-route).
fn without_route(angle: &str) -> &str {
    match angle.split_once(':') {
        Some((_, addr)) if angle.starts_with('@') => addr,
        _ => angle,
    }
}

/// The address of a mailbox written without angle brackets. One word is
/// the address; words joined by `.` or `@` (obsolete `john . doe @ x`) are
/// one address; otherwise the first word with an `@`, or none (a display
/// name alone, `Just A Name`).
fn bare(tokens: Vec<String>) -> Option<String> {
    if tokens.len() <= 1 {
        return tokens.into_iter().next();
    }
    let joins = tokens.windows(2).all(|pair| match pair {
        [a, b] => a.ends_with(['.', '@']) || b.starts_with(['.', '@']),
        _ => false,
    });
    if joins {
        return Some(tokens.concat());
    }
    tokens.into_iter().find(|t| t.contains('@') && t != "@")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_address_forms() {
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
            ("<a@b (comment)>", Some("a@b")),
            ("<@relay.example:a@b>", Some("a@b")),
            ("john . doe @ example.com", Some("john.doe@example.com")),
            ("a@b c", Some("a@b")),
            ("team: a@b, c@d;", Some("a@b")),
            ("<>", None),
            ("<>, a@b", None),
            ("", None),
            ("Just A Name", None),
            ("undisclosed-recipients:;", None),
        ];
        for (value, expected) in cases {
            assert_eq!(first_address(value).as_deref(), expected, "{value:?}");
        }
    }

    #[test]
    fn address_list_forms() {
        assert_eq!(address_list("Name <a@b>, c@d"), ["a@b", "c@d"]);
        assert_eq!(
            address_list("undisclosed-recipients:;"),
            Vec::<String>::new()
        );
        assert_eq!(
            address_list("team: a@b, C <c@d>; e@f"),
            ["a@b", "c@d", "e@f"]
        );
        assert_eq!(address_list("<@relay.example:a@b>"), ["a@b"]);
        assert_eq!(address_list("<@a,@b:c@d>"), ["c@d"]);
        assert_eq!(address_list("\"q\\\"uoted\" <a@b>"), ["a@b"]);
        assert_eq!(address_list("\"q\\\"uoted\"@b"), ["\"q\\\"uoted\"@b"]);
        assert_eq!(address_list("<>"), [""]);
        assert_eq!(address_list(" , ,"), Vec::<String>::new());
        assert_eq!(
            address_list("\"Doe, Carl\" <carl@y.com>, dave@z.com (Dave)"),
            ["carl@y.com", "dave@z.com"]
        );
        assert_eq!(address_list("<a@b> <c@d>, e@f"), ["a@b", "e@f"]);
        assert_eq!(address_list("Just A Name, a@b"), ["a@b"]);
    }

    #[test]
    fn display_names() {
        let cases = [
            ("\"Cron Daemon\" <root@localhost>", Some("Cron Daemon")),
            ("Cron Daemon <root@localhost>", Some("Cron Daemon")),
            ("\"Cron\" Daemon <root@localhost>", Some("Cron Daemon")),
            (
                "\"Smith, John <john@x.test>\" <john@x.test>",
                Some("Smith, John <john@x.test>"),
            ),
            (
                "\"O'Brien \\\"Ops\\\"\" <ops@x.test>",
                Some("O'Brien \"Ops\""),
            ),
            ("Cron (daemon) <a@b>", Some("Cron (daemon)")),
            (
                "=?utf-8?q?J=C3=B6rg?= <j@x.test>",
                Some("=?utf-8?q?J=C3=B6rg?="),
            ),
            ("Ann <a@x.test>, Bob <b@x.test>", Some("Ann")),
            ("a@x.test, Bob <b@x.test>", None),
            ("root@localhost (Cron Daemon)", None),
            ("<root@localhost>", None),
            ("\"\" <a@b>", None),
            ("\"unterminated <a@b>", None),
            ("", None),
        ];
        for (value, expected) in cases {
            assert_eq!(display_name(value).as_deref(), expected, "{value:?}");
        }
    }

    #[test]
    fn phrases_quote_only_what_needs_it() {
        assert_eq!(phrase("Web Shop"), "Web Shop");
        assert_eq!(phrase("Jörg"), "Jörg");
        assert_eq!(phrase("=?utf-8?q?J=C3=B6rg?="), "=?utf-8?q?J=C3=B6rg?=");
        assert_eq!(phrase("Doe, J."), "\"Doe, J.\"");
        assert_eq!(phrase("root@localhost"), "\"root@localhost\"");
        assert_eq!(phrase("O'Brien \"Ops\""), "\"O'Brien \\\"Ops\\\"\"");
        assert_eq!(phrase("back\\slash"), "\"back\\\\slash\"");
        assert_eq!(phrase("a\r\nBcc: x@y"), "\"a  Bcc: x@y\"");
        assert_eq!(phrase("  "), "\"\"");
    }

    #[test]
    fn mailboxes() {
        assert_eq!(mailbox(Some("Web Shop"), "a@b"), "Web Shop <a@b>");
        assert_eq!(mailbox(Some("Doe, J."), "a@b"), "\"Doe, J.\" <a@b>");
        assert_eq!(mailbox(None, "a@b"), "a@b");
        assert_eq!(mailbox(Some("  "), "a@b"), "a@b");
        assert_eq!(mailbox(Some("\r\n"), "a@b"), "a@b");
    }

    #[test]
    fn written_mailboxes_read_back() {
        for name in [
            "Web Shop",
            "Doe, J.",
            "O'Brien \"Ops\"",
            "x@y <z@w>, q",
            "back\\slash (c",
            "=?utf-8?q?x?=",
        ] {
            let value = mailbox(Some(name), "a@b.test");
            assert_eq!(address_list(&value), ["a@b.test"], "{value}");
            assert_eq!(display_name(&value).as_deref(), Some(name), "{value}");
        }
    }

    #[test]
    fn junk_never_panics() {
        for value in [
            "<",
            ">",
            "<<>>",
            "\"",
            "\\",
            "(",
            ")",
            ":",
            ";",
            ",",
            "@",
            "<@",
            "<@:",
            "\"\\",
            "(\\",
            "a\u{0}b",
            "<\u{fffd}@\u{fffd}>",
            "ü@ö",
        ] {
            let _ = (
                address_list(value),
                first_address(value),
                display_name(value),
            );
            let _ = (phrase(value), mailbox(Some(value), value));
        }
    }
}
