//! Malformed commands: NUL, CR or LF inside addresses, addresses longer
//! than a command line may be, 8-bit garbage. Each gets a `5xx`; the
//! session goes on (or closes cleanly) and the daemon never panics.

use std::time::Duration;

use crate::harness::*;

/// (what it is, bytes sent, whether a valid MAIL goes first)
const HOSTILE: &[(&str, &[u8], bool)] = &[
    ("NUL in MAIL", b"MAIL FROM:<a\0b@example.com>\r\n", false),
    (
        "bare CR in MAIL",
        b"MAIL FROM:<a\rb@example.com>\r\n",
        false,
    ),
    ("NUL in RCPT", b"RCPT TO:<u\0@example.net>\r\n", true),
    ("bare CR in RCPT", b"RCPT TO:<u\r@example.net>\r\n", true),
    ("NUL in the verb", b"NO\0OP\r\n", false),
    ("8-bit verb", b"\xff\xfe\x80\x81 garbage\r\n", false),
    (
        "8-bit address",
        b"MAIL FROM:<\xff\xfe\x80@example.com>\r\n",
        false,
    ),
    (
        "8-bit RCPT",
        b"RCPT TO:<\xc3\x28\xa0@example.net>\r\n",
        true,
    ),
    ("NUL alone", b"\0\0\0\r\n", false),
    ("DATA before MAIL", b"DATA\r\n", false),
];

/// Reads replies until one ends (a line with a space after the code).
fn expect_5xx(c: &mut Client, what: &str) {
    let reply = c.read_reply();
    assert!(reply.starts_with('5'), "{what}: got {reply:?}");
}

#[test]
fn hostile_commands_get_5xx_and_the_session_survives() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let (mut c, _) = Client::connect(relay.addr);
    assert!(c.cmd("EHLO hostile.client").starts_with("250"));
    for (what, bytes, with_mail) in HOSTILE {
        if *with_mail {
            let r = c.cmd("MAIL FROM:<app@example.com>");
            assert!(r.starts_with("250"), "{what}: {r}");
        }
        c.send_raw(bytes);
        expect_5xx(&mut c, what);
        assert!(c.cmd("RSET").starts_with("250"), "{what}: session ended");
    }

    // An LF inside an address splits the command: both halves are refused,
    // and nothing after the LF is taken as a recipient.
    c.send_raw(b"MAIL FROM:<a\nRCPT TO:<victim@example.net>\r\n");
    expect_5xx(&mut c, "LF in MAIL (first half)");
    expect_5xx(&mut c, "LF in MAIL (second half)");
    assert!(c.cmd("MAIL FROM:<app@example.com>").starts_with("250"));
    c.send_raw(b"RCPT TO:<a\nMAIL FROM:<evil@example.org>\r\n");
    expect_5xx(&mut c, "LF in RCPT (first half)");
    expect_5xx(&mut c, "LF in RCPT (second half)");

    // Addresses longer than a command line may be (4096).
    let long = "a".repeat(5000);
    let r = c.cmd(&format!("MAIL FROM:<{long}@example.com>"));
    assert!(r.starts_with("500"), "overlong MAIL: {r}");
    assert!(c.cmd("RSET").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<app@example.com>").starts_with("250"));
    let r = c.cmd(&format!("RCPT TO:<{long}@example.net>"));
    assert!(r.starts_with("500"), "overlong RCPT: {r}");
    // Within the line limit but longer than any mailbox may be (RFC 5321
    // §4.5.3.1: 64 local + 255 domain).
    let r = c.cmd(&format!("RCPT TO:<{}@example.net>", "b".repeat(4000)));
    assert!(r.starts_with('5'), "4000-byte local part: {r}");

    // The same session still relays a normal message, to exactly the
    // recipient given, after all that.
    assert!(c.cmd("RSET").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<app@example.com>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<u@example.net>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send_raw(&message("after-hostile-commands"));
    let r = c.cmd(".");
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("QUIT").starts_with("221"));

    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].mail_from, "app@example.com");
    assert_eq!(got[0].rcpt_to, ["u@example.net"]);
    assert!(!relay.logs().iter().any(|l| l.contains("panicked")));
}
