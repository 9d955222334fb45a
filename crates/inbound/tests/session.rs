//! The session state machine driven over an in-memory stream, with a store
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
//! that records (or refuses) what it is given.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relay_inbound::{ReceivedMessage, Session, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct MemoryStore {
    messages: Mutex<Vec<ReceivedMessage>>,
    fail: bool,
}

impl Store for MemoryStore {
    type Error = std::io::Error;

    async fn append(&self, _: &str, _: u32, _: Vec<u8>) -> Result<(), std::io::Error> {
        Err(std::io::Error::other(
            "no chunks expected under a 1000-byte limit",
        ))
    }

    async fn discard(&self, _: &str) {}

    async fn store(&self, message: ReceivedMessage) -> Result<(), std::io::Error> {
        if self.fail {
            return Err(std::io::Error::other("disk full"));
        }
        self.messages.lock().unwrap().push(message);
        Ok(())
    }
}

/// The message as stored: head, then tail (these tests' messages are too
/// small for chunks).
fn data(m: &ReceivedMessage) -> Vec<u8> {
    assert_eq!(m.chunks, 0);
    [m.head.as_slice(), m.tail.as_slice()].concat()
}

fn settings() -> relay_config::Server {
    relay_config::Server {
        listen: vec![],
        hostname: "relay.test".into(),
        allowed_networks: vec![],
        max_message_size: 1000,
        max_recipients: 3,
        max_connections: 10,
        command_timeout: Duration::from_secs(5),
        accept_auth: false,
        allow_open_relay: false,
        tls: None,
        require_tls: false,
        require_auth: false,
        rate: None,
        clients: vec![],
    }
}

/// Runs a session over a duplex pipe, sends `input` (then closes our
/// side), and returns everything the server wrote plus the stored messages.
async fn converse_with(
    settings: relay_config::Server,
    store: MemoryStore,
    input: &[u8],
) -> (String, Vec<ReceivedMessage>) {
    let (mut client, server): (DuplexStream, DuplexStream) = tokio::io::duplex(1 << 20);
    let store = Arc::new(store);
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let session = Session::new(
        server,
        peer,
        Arc::new(settings),
        store.clone(),
        CancellationToken::new(),
    );
    let task = tokio::spawn(session.run());
    client.write_all(input).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut out))
        .await
        .expect("session did not close")
        .unwrap();
    task.await.unwrap().unwrap();
    let messages = store.messages.lock().unwrap().clone();
    (String::from_utf8_lossy(&out).into_owned(), messages)
}

async fn converse(input: &[u8]) -> (String, Vec<ReceivedMessage>) {
    converse_with(settings(), MemoryStore::default(), input).await
}

fn codes(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.len() >= 4 && &l[3..4] == " ")
        .map(|l| &l[..3])
        .collect()
}

fn body_of(m: &ReceivedMessage) -> Vec<u8> {
    // Our headers come first; the client's message follows the Message-ID/Date we add.
    let text = data(m);
    let pos = text
        .windows(9)
        .position(|w| w == b"Subject: ")
        .expect("client headers");
    text[pos..].to_vec()
}

#[tokio::test]
async fn a_pipelined_transaction_is_stored_and_answered_with_the_queue_id() {
    let (out, msgs) = converse(
        b"EHLO app\r\nMAIL FROM:<a@x.test> SIZE=20 BODY=8BITMIME\r\nRCPT TO:<b@y.test>\r\nDATA\r\nSubject: t\r\n\r\nhi\r\n.\r\nQUIT\r\n",
    )
    .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "250", "354", "250", "221"],
        "{out}"
    );
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert!(out.contains(&format!("queued as {}", m.id)));
    assert_eq!(m.sender, "a@x.test");
    assert_eq!(m.recipients, ["b@y.test"]);
    assert_eq!(m.size, b"Subject: t\r\n\r\nhi\r\n".len() as u64);
    let stored = data(m);
    let data = String::from_utf8_lossy(&stored);
    assert!(data.starts_with("Received: from app (127.0.0.1)"), "{data}");
    assert!(data.contains(&format!("id {}", m.id)));
    assert!(data.contains("\r\nDate: ") && data.contains("\r\nMessage-ID: <"));
    assert!(data.ends_with("Subject: t\r\n\r\nhi\r\n"));
}

#[tokio::test]
async fn ehlo_advertises_the_contract_extensions() {
    let (out, _) = converse(b"EHLO app\r\nQUIT\r\n").await;
    for ext in [
        "SIZE 1000",
        "8BITMIME",
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
    ] {
        assert!(out.contains(ext), "{ext} missing: {out}");
    }
    assert!(!out.contains("AUTH"), "AUTH offered without accept_auth");
}

#[tokio::test]
async fn the_null_sender_is_accepted_and_smtputf8_refused() {
    let (out, msgs) = converse(
        "EHLO a\r\nMAIL FROM:<> SMTPUTF8\r\nMAIL FROM:<>\r\nRCPT TO:<ü@y.test>\r\nRCPT TO:<u@y.test>\r\nDATA\r\nSubject: x\r\n\r\n.\r\nQUIT\r\n".as_bytes(),
    )
    .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "553", "250", "553", "250", "354", "250", "221"],
        "{out}"
    );
    assert_eq!(msgs[0].sender, "");
    assert_eq!(msgs[0].recipients, ["u@y.test"]);
}

#[tokio::test]
async fn mail_needs_helo_and_data_needs_a_recipient() {
    let (out, msgs) = converse(b"MAIL FROM:<a@x>\r\nEHLO a\r\nRCPT TO:<b@y>\r\nDATA\r\nMAIL FROM:<a@x>\r\nDATA\r\nMAIL FROM:<a@x>\r\nQUIT\r\n").await;
    assert_eq!(
        codes(&out),
        ["220", "503", "250", "503", "503", "250", "503", "503", "221"],
        "{out}"
    );
    assert!(msgs.is_empty());
}

#[tokio::test]
async fn size_limits_answer_552_and_the_session_stays_usable() {
    let mut input =
        b"EHLO a\r\nMAIL FROM:<a@x> SIZE=5000\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"
            .to_vec();
    input.extend(std::iter::repeat_n(b'x', 3000));
    input.extend_from_slice(b"\r\n.\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nSubject: s\r\n\r\nsmall\r\n.\r\nQUIT\r\n");
    let (out, msgs) = converse(&input).await;
    assert_eq!(
        codes(&out),
        ["220", "250", "552", "250", "250", "354", "552", "250", "250", "354", "250", "221"],
        "{out}"
    );
    assert!(out.contains("552 5.3.4"));
    assert_eq!(msgs.len(), 1);
}

#[tokio::test]
async fn too_many_recipients_get_452() {
    let (out, msgs) = converse(
        b"EHLO a\r\nMAIL FROM:<a@x>\r\nRCPT TO:<1@y>\r\nRCPT TO:<2@y>\r\nRCPT TO:<3@y>\r\nRCPT TO:<4@y>\r\nDATA\r\nSubject: s\r\n\r\n.\r\nQUIT\r\n",
    )
    .await;
    assert!(out.contains("452 4.5.3"), "{out}");
    assert_eq!(msgs[0].recipients.len(), 3);
}

#[tokio::test]
async fn addresses_with_cr_or_nul_are_refused() {
    let (out, msgs) =
        converse(b"EHLO a\r\nMAIL FROM:<a\rb@x>\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b\0@y>\r\nQUIT\r\n")
            .await;
    let c = codes(&out);
    assert_eq!(c[2], "501", "{out}");
    assert_eq!(c[4], "501", "{out}");
    assert!(msgs.is_empty());
}

#[tokio::test]
async fn an_overlong_command_line_gets_500_and_the_session_goes_on() {
    let mut input = b"EHLO a\r\nMAIL FROM:<".to_vec();
    input.extend(std::iter::repeat_n(b'a', 10_000));
    input.extend_from_slice(b"@x>\r\nNOOP\r\nQUIT\r\n");
    let (out, _) = converse(&input).await;
    assert_eq!(codes(&out), ["220", "250", "500", "250", "221"], "{out}");
}

#[tokio::test]
async fn a_store_failure_answers_452_and_never_250() {
    let store = MemoryStore {
        fail: true,
        ..Default::default()
    };
    let (out, _) = converse_with(
        settings(),
        store,
        b"EHLO a\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nSubject: s\r\n\r\n.\r\nQUIT\r\n",
    )
    .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "250", "354", "452", "221"],
        "{out}"
    );
    assert!(out.contains("452 4.3.1"));
}

#[tokio::test]
async fn smuggled_end_of_data_sequences_stay_inside_one_message() {
    let (out, msgs) = converse(
        b"EHLO a\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nSubject: s\r\n\r\none\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<c@y>\r\nDATA\r\nSubject: smuggled\r\n\r\n.\r\nQUIT\r\n",
    )
    .await;
    assert_eq!(msgs.len(), 1, "{out}");
    assert_eq!(msgs[0].recipients, ["b@y"]);
    assert!(String::from_utf8_lossy(&data(&msgs[0])).contains("Subject: smuggled"));
}

#[tokio::test]
async fn bdat_chunks_make_one_message() {
    let (out, msgs) = converse(b"EHLO a\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 12\r\nSubject: s\r\nBDAT 9 LAST\r\n\r\n.body\r\nQUIT\r\n").await;
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "250", "250", "250", "221"],
        "{out}"
    );
    assert_eq!(body_of(&msgs[0]), b"Subject: s\r\n\r\n.body\r\n");
}

#[tokio::test]
async fn rset_vrfy_noop_help_and_unknown_commands() {
    let (out, _) = converse(b"EHLO a\r\nMAIL FROM:<a@x>\r\nRSET\r\nRCPT TO:<b@y>\r\nVRFY x\r\nNOOP\r\nHELP\r\nFOO\r\nQUIT\r\n").await;
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "250", "503", "252", "250", "214", "500", "221"],
        "{out}"
    );
}

#[tokio::test]
async fn auth_is_offered_and_accepted_only_with_accept_auth() {
    let (out, _) = converse(b"EHLO a\r\nAUTH PLAIN AHUAcA==\r\nQUIT\r\n").await;
    assert_eq!(codes(&out)[2], "502", "{out}");
    let mut s = settings();
    s.accept_auth = true;
    let (out, _) = converse_with(
        s,
        MemoryStore::default(),
        b"EHLO a\r\nAUTH LOGIN\r\ndQ==\r\ncA==\r\nQUIT\r\n",
    )
    .await;
    assert!(out.contains("AUTH PLAIN LOGIN"), "{out}");
    assert_eq!(
        codes(&out),
        ["220", "250", "334", "334", "235", "221"],
        "{out}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_client_is_closed_with_421() {
    let (mut client, server) = tokio::io::duplex(1024);
    let mut s = settings();
    s.command_timeout = Duration::from_secs(30);
    let session = Session::new(
        server,
        "127.0.0.1:1".parse().unwrap(),
        Arc::new(s),
        Arc::new(MemoryStore::default()),
        CancellationToken::new(),
    );
    let task = tokio::spawn(session.run());
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    task.await.unwrap().unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("421 4.4.2"), "{out}");
}

#[tokio::test]
async fn shutdown_closes_an_idle_session_with_421() {
    let (mut client, server) = tokio::io::duplex(1024);
    let shutdown = CancellationToken::new();
    let session = Session::new(
        server,
        "127.0.0.1:1".parse().unwrap(),
        Arc::new(settings()),
        Arc::new(MemoryStore::default()),
        shutdown.clone(),
    );
    let task = tokio::spawn(session.run());
    let mut greeting = [0u8; 64];
    let _ = client.read(&mut greeting).await.unwrap();
    shutdown.cancel();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    task.await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&out).contains("421 4.3.0"));
}
