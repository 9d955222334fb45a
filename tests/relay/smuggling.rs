//! End of DATA is only `<CR><LF>.<CR><LF>`: look-alikes never end a message
//! (no SMTP smuggling), and bare line endings are normalised to CRLF.

use std::time::Duration;

use crate::harness::*;

const SMUGGLED: &[u8] =
    b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n";

/// The end-of-data look-alikes from the public SMTP smuggling research
/// (the eleventh, `\r\n.` at the end of the connection, has its own test).
const PAYLOADS: [&[u8]; 10] = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\n\n.\r\n",
    b"\r.\r",
    b"\r\n.\n",
    b"\n.\r",
];

/// What went upstream after DATA, before the upstream unstuffed it, cannot
/// be read as two messages by any server: CRLF lines only, and the only
/// line that is exactly `.` is the final one (every other was stuffed).
fn assert_one_message_on_the_wire(raw: &[u8], payload: &[u8]) {
    let shown = String::from_utf8_lossy(raw);
    assert!(raw.ends_with(b"\r\n.\r\n"), "{payload:?}: end: {shown:?}");
    for (i, byte) in raw.iter().enumerate() {
        if *byte == b'\n' {
            assert!(
                i > 0 && raw[i - 1] == b'\r',
                "{payload:?}: bare LF at {i}: {shown:?}"
            );
        }
        if *byte == b'\r' {
            assert_eq!(
                raw.get(i + 1),
                Some(&b'\n'),
                "{payload:?}: bare CR at {i}: {shown:?}"
            );
        }
    }
    let lines: Vec<&[u8]> = raw.split(|b| *b == b'\n').collect();
    let dots: Vec<usize> = (0..lines.len()).filter(|&i| lines[i] == b".\r").collect();
    assert_eq!(dots, [lines.len() - 2], "{payload:?}: `.` lines: {shown:?}");
}

#[test]
fn end_of_data_look_alikes_do_not_end_the_message_or_smuggle_a_second_one() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    for (i, payload) in PAYLOADS.iter().enumerate() {
        let mut body =
            format!("From: app@example.com\r\nSubject: carrier-{i}\r\n\r\nfirst body").into_bytes();
        body.extend_from_slice(payload);
        body.extend_from_slice(SMUGGLED);
        let reply = send(relay.addr, "app@example.com", &["u@example.net"], &body);
        assert!(reply.starts_with("250"), "payload {payload:?}: {reply}");
        // Only one reply to one DATA: had the look-alike ended the message,
        // the smuggled commands would have been answered (and queued) too.
        let got = settle(&relay, &t, Duration::from_secs(20));
        assert_eq!(
            got.len(),
            i + 1,
            "payload {payload:?}: upstream got {got:#?}"
        );
        let m = &got[i];
        assert_eq!(m.rcpt_to, ["u@example.net"], "payload {payload:?}");
        assert_eq!(subject(m), format!("carrier-{i}"));
        // The fake's data is dot-unstuffed, so a relayed "." line would
        // show up as one; what matters is that the whole smuggling attempt,
        // up to its last line, is content of this single message.
        let text = String::from_utf8_lossy(&m.data);
        assert!(
            text.contains("MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n"),
            "payload {payload:?}: smuggled text not inside the message: {text:?}"
        );
        assert!(text.ends_with("evil\r\n"), "payload {payload:?}: {text:?}");
        assert_one_message_on_the_wire(&m.raw_data, payload);
    }
    assert!(b.messages().is_empty());
    assert!(t
        .messages()
        .iter()
        .all(|m| !m.rcpt_to.iter().any(|r| r == "victim@y")));
}

#[test]
fn bare_lf_lines_arrive_upstream_as_crlf() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        // The final CRLF belongs to the end-of-data sequence: a bare LF
        // followed by ".\r\n" is not one (see the smuggling test).
        b"Subject: x\nline\n\r\n",
    );
    assert!(reply.starts_with("250"), "{reply}");
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    let data = &got[0].data;
    for (i, byte) in data.iter().enumerate() {
        if *byte == b'\n' {
            assert!(
                i > 0 && data[i - 1] == b'\r',
                "bare LF at {i}: {:?}",
                String::from_utf8_lossy(data)
            );
        }
        if *byte == b'\r' {
            assert_eq!(data.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
    let text = String::from_utf8_lossy(data);
    assert!(text.contains("\r\nSubject: x\r\nline\r\n"), "{text:?}");
}

#[test]
fn crlf_dot_at_the_end_of_the_connection_is_not_an_end_of_data() {
    use std::io::{Read, Write};

    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let mut stream = std::net::TcpStream::connect(relay.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(b"EHLO c\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<u@example.net>\r\nDATA\r\nSubject: cut\r\n\r\nbody\r\n.")
        .unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut replies = String::new();
    let _ = stream.read_to_string(&mut replies);
    assert!(replies.contains("354"), "{replies}");
    assert!(
        !replies.contains("queued"),
        "a cut message was queued: {replies}"
    );
    // A complete message afterwards is the only one upstream.
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("whole"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(subject(&got[0]), "whole");
}
