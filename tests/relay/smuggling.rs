//! End of DATA is only `<CR><LF>.<CR><LF>`: look-alikes never end a message
//! (no SMTP smuggling), and bare line endings are normalised to CRLF.

use std::time::Duration;

use crate::harness::*;

const SMUGGLED: &[u8] =
    b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n";

const PAYLOADS: [&[u8]; 8] = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\n\n.\r\n",
    b"\r.\r",
];

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
        let got = settle(&t, i + 1, Duration::from_secs(20));
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
    let got = settle(&t, 1, Duration::from_secs(20));
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
