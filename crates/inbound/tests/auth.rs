//! Inbound STARTTLS and AUTH against `[[clients]]`, driven over an
//! in-memory duplex so a test can be a client from any address (here a
//! non-loopback one, which TCP tests on one host cannot be).
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use base64ct::{Base64, Encoding};
use relay_config::{Client, Secret, TlsFiles};
use relay_inbound::{InboundTls, RateLimits, ReceivedMessage, Session, Store};
use relay_testkit::ServerCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

const REMOTE: &str = "203.0.113.7:40000";
const LOCAL: &str = "127.0.0.1:40000";

#[derive(Default)]
struct MemoryStore {
    messages: Mutex<Vec<ReceivedMessage>>,
}

impl Store for MemoryStore {
    type Error = std::io::Error;

    async fn append(&self, _: &str, _: u32, _: Vec<u8>) -> Result<(), std::io::Error> {
        Err(std::io::Error::other("no chunks expected"))
    }

    async fn discard(&self, _: &str) {}

    async fn store(&self, message: ReceivedMessage) -> Result<(), std::io::Error> {
        self.messages.lock().unwrap().push(message);
        Ok(())
    }
}

/// An argon2id hash with tiny parameters: these tests check the protocol,
/// not argon2's cost.
fn hash(password: &str) -> String {
    let params = Params::new(8, 1, 1, None).unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes())
        .unwrap()
        .to_string()
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
        clients: vec![
            Client {
                name: "billing".into(),
                password_hash: Secret::new(hash("bill-pw")),
                senders: vec![],
                rate: None,
            },
            Client {
                name: "crm".into(),
                password_hash: Secret::new(hash("crm-pw")),
                senders: vec![],
                rate: None,
            },
        ],
    }
}

/// The relay's certificate, written where [`InboundTls`] reads it.
struct Pki {
    _dir: tempfile::TempDir,
    cert: ServerCert,
    tls: Arc<InboundTls>,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let cert = ServerCert::generate("relay-inbound test CA");
    let files = TlsFiles {
        cert_file: dir.path().join("cert.pem"),
        key_file: dir.path().join("key.pem"),
    };
    std::fs::write(&files.cert_file, &cert.cert_pem).unwrap();
    std::fs::write(&files.key_file, &cert.key_pem).unwrap();
    let tls = Arc::new(InboundTls::load(&files).unwrap());
    Pki {
        _dir: dir,
        cert,
        tls,
    }
}

struct Running {
    client: DuplexStream,
    store: Arc<MemoryStore>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn start(settings: relay_config::Server, tls: Option<&Pki>, peer: &str) -> Running {
    let (client, server) = tokio::io::duplex(1 << 16);
    let store = Arc::new(MemoryStore::default());
    let peer: SocketAddr = peer.parse().unwrap();
    let session = Session::new(
        server,
        peer,
        Arc::new(settings),
        store.clone(),
        CancellationToken::new(),
    )
    .with_tls(tls.map(|p| p.tls.clone()));
    Running {
        client,
        store,
        task: tokio::spawn(session.run()),
    }
}

/// Reads one complete reply (every line up to the one with `NNN `).
async fn reply<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .expect("no reply")
            .unwrap();
        assert!(
            n == 1,
            "connection closed after {:?}",
            String::from_utf8_lossy(&out)
        );
        out.push(byte[0]);
        if out.ends_with(b"\r\n") {
            let start = out[..out.len() - 2]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            if out.len() - start >= 6 && out[start + 3] == b' ' {
                return String::from_utf8(out).unwrap();
            }
        }
    }
}

/// Sends one command and returns its reply.
async fn cmd<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, line: &str) -> String {
    s.write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
    s.flush().await.unwrap();
    reply(s).await
}

fn plain(user: &str, password: &str) -> String {
    Base64::encode_string(format!("\0{user}\0{password}").as_bytes())
}

fn b64(s: &str) -> String {
    Base64::encode_string(s.as_bytes())
}

/// STARTTLS on `client`, trusting the test CA; returns the TLS stream and
/// the certificate the server presented.
async fn starttls(
    mut client: DuplexStream,
    pki: &Pki,
) -> (
    tokio_rustls::client::TlsStream<DuplexStream>,
    CertificateDer<'static>,
) {
    assert!(cmd(&mut client, "STARTTLS").await.starts_with("220 2.0.0"));
    let tls = connect(client, &pki.cert.ca_pem).await;
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    (tls, presented)
}

async fn connect(
    stream: DuplexStream,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<DuplexStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_remote_client_authenticates_after_starttls_and_its_name_goes_with_the_mail() {
    let pki = pki();
    let mut r = start(settings(), Some(&pki), REMOTE);
    assert!(reply(&mut r.client).await.starts_with("220 "));
    let ehlo = cmd(&mut r.client, "EHLO app").await;
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "AUTH offered in plain text: {ehlo}");
    let (mut tls, presented) = starttls(r.client, &pki).await;
    assert_eq!(presented.as_ref(), pki.cert.cert_der());

    // RFC 3207: the EHLO from before TLS is forgotten.
    assert!(cmd(&mut tls, "MAIL FROM:<a@x.test>")
        .await
        .starts_with("503 5.5.1"));
    let ehlo = cmd(&mut tls, "EHLO app").await;
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(cmd(&mut tls, "STARTTLS").await.starts_with("503 5.5.1"));
    assert_eq!(
        cmd(
            &mut tls,
            &format!("AUTH PLAIN {}", plain("billing", "bill-pw"))
        )
        .await,
        "235 2.7.0 Authentication succeeded\r\n"
    );
    assert!(cmd(&mut tls, "MAIL FROM:<a@x.test>")
        .await
        .starts_with("250"));
    assert!(cmd(&mut tls, "RCPT TO:<b@y.test>").await.starts_with("250"));
    assert!(cmd(&mut tls, "DATA").await.starts_with("354"));
    assert!(cmd(&mut tls, "Subject: t\r\n\r\nhi\r\n.")
        .await
        .starts_with("250 2.0.0 Ok: queued"));
    assert!(cmd(&mut tls, "QUIT").await.starts_with("221"));
    r.task.await.unwrap().unwrap();
    let stored = r.store.messages.lock().unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].client_name.as_deref(), Some("billing"));
}

#[tokio::test]
async fn wrong_or_unknown_credentials_get_535_and_the_session_may_retry() {
    let pki = pki();
    let r = start(settings(), Some(&pki), REMOTE);
    let mut client = r.client;
    reply(&mut client).await;
    cmd(&mut client, "EHLO app").await;
    let (mut tls, _) = starttls(client, &pki).await;
    cmd(&mut tls, "EHLO app").await;
    let invalid = "535 5.7.8 Authentication credentials invalid\r\n";
    assert_eq!(
        cmd(
            &mut tls,
            &format!("AUTH PLAIN {}", plain("billing", "crm-pw"))
        )
        .await,
        invalid
    );
    assert_eq!(
        cmd(
            &mut tls,
            &format!("AUTH PLAIN {}", plain("nobody", "bill-pw"))
        )
        .await,
        invalid
    );
    // Another client's identity as authzid is refused too.
    let act_as = Base64::encode_string(b"crm\0billing\0bill-pw");
    assert_eq!(
        cmd(&mut tls, &format!("AUTH PLAIN {act_as}")).await,
        invalid
    );
    // LOGIN, step by step; the session has not been closed.
    assert!(cmd(&mut tls, "AUTH LOGIN").await.starts_with("334 "));
    assert!(cmd(&mut tls, &b64("crm")).await.starts_with("334 "));
    assert!(cmd(&mut tls, &b64("crm-pw")).await.starts_with("235 2.7.0"));
    assert!(cmd(&mut tls, "AUTH LOGIN").await.starts_with("503 5.5.1"));
}

#[tokio::test]
async fn plain_text_auth_from_a_remote_client_is_538_but_loopback_may() {
    let pki = pki();
    let mut r = start(settings(), Some(&pki), REMOTE);
    reply(&mut r.client).await;
    cmd(&mut r.client, "EHLO app").await;
    assert_eq!(
        cmd(
            &mut r.client,
            &format!("AUTH PLAIN {}", plain("billing", "bill-pw"))
        )
        .await,
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
    assert!(cmd(&mut r.client, "AUTH LOGIN")
        .await
        .starts_with("538 5.7.11"));
    // Without require_tls or require_auth, anonymous mail still flows.
    assert!(cmd(&mut r.client, "MAIL FROM:<a@x.test>")
        .await
        .starts_with("250"));

    let mut r = start(settings(), None, LOCAL);
    reply(&mut r.client).await;
    let ehlo = cmd(&mut r.client, "EHLO app").await;
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    assert!(cmd(&mut r.client, "STARTTLS")
        .await
        .starts_with("502 5.5.1"));
    assert!(cmd(&mut r.client, "AUTH LOGIN bWlzdGFrZQ==")
        .await
        .starts_with("334 "));
    assert!(cmd(&mut r.client, "*").await.starts_with("501 5.7.0"));
    assert!(cmd(
        &mut r.client,
        &format!("AUTH PLAIN {}", plain("crm", "crm-pw"))
    )
    .await
    .starts_with("235"));
}

#[tokio::test]
async fn require_tls_stops_remote_clients_before_auth_and_mail_not_loopback() {
    let pki = pki();
    let mut s = settings();
    s.require_tls = true;
    let mut r = start(s.clone(), Some(&pki), REMOTE);
    reply(&mut r.client).await;
    cmd(&mut r.client, "EHLO app").await;
    let first = "530 5.7.0 Must issue a STARTTLS command first\r\n";
    assert_eq!(cmd(&mut r.client, "MAIL FROM:<a@x.test>").await, first);
    assert_eq!(
        cmd(
            &mut r.client,
            &format!("AUTH PLAIN {}", plain("billing", "bill-pw"))
        )
        .await,
        first
    );
    let (mut tls, _) = starttls(r.client, &pki).await;
    cmd(&mut tls, "EHLO app").await;
    assert!(cmd(&mut tls, "MAIL FROM:<a@x.test>")
        .await
        .starts_with("250"));

    let mut r = start(s, Some(&pki), LOCAL);
    reply(&mut r.client).await;
    cmd(&mut r.client, "EHLO app").await;
    assert!(cmd(&mut r.client, "MAIL FROM:<a@x.test>")
        .await
        .starts_with("250"));
}

#[tokio::test]
async fn require_auth_refuses_anonymous_mail_even_from_loopback() {
    let mut s = settings();
    s.require_auth = true;
    let mut r = start(s, None, LOCAL);
    reply(&mut r.client).await;
    cmd(&mut r.client, "EHLO app").await;
    assert_eq!(
        cmd(&mut r.client, "MAIL FROM:<a@x.test>").await,
        "530 5.7.0 Authentication required\r\n"
    );
    assert!(cmd(
        &mut r.client,
        &format!("AUTH PLAIN {}", plain("billing", "bill-pw"))
    )
    .await
    .starts_with("235"));
    assert!(cmd(&mut r.client, "MAIL FROM:<a@x.test>")
        .await
        .starts_with("250"));
}

/// CVE-2011-0411: commands pipelined after STARTTLS arrive in plain text
/// (a man in the middle can add them) and must not run after the upgrade.
#[tokio::test]
async fn commands_pipelined_after_starttls_are_discarded() {
    let pki = pki();
    let mut r = start(settings(), Some(&pki), REMOTE);
    reply(&mut r.client).await;
    cmd(&mut r.client, "EHLO app").await;
    r.client
        .write_all(
            b"STARTTLS\r\nEHLO evil\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\n",
        )
        .await
        .unwrap();
    assert!(reply(&mut r.client).await.starts_with("220 2.0.0"));
    let mut tls = connect(r.client, &pki.cert.ca_pem).await;
    // Had the injected EHLO and MAIL run, RCPT would be accepted and
    // their replies would come first.
    assert_eq!(
        cmd(&mut tls, "RCPT TO:<b@y.test>").await,
        "503 5.5.1 Send MAIL first\r\n"
    );
    assert!(cmd(&mut tls, "MAIL FROM:<a@x.test>")
        .await
        .starts_with("503 5.5.1 Send EHLO"));
    assert!(cmd(&mut tls, "QUIT").await.starts_with("221"));
    r.task.await.unwrap().unwrap();
    assert!(r.store.messages.lock().unwrap().is_empty());
}

/// Failed AUTH attempts add up per client address across sessions:
/// reconnecting does not reset them. The fourth is answered after a delay.
#[tokio::test]
async fn failures_after_the_third_from_one_address_are_answered_slowly() {
    let settings = Arc::new(settings());
    let limits = Arc::new(RateLimits::new(&settings));
    let session = |peer: &str| {
        let (client, server) = tokio::io::duplex(1 << 16);
        let session = Session::new(
            server,
            peer.parse().unwrap(),
            settings.clone(),
            Arc::new(MemoryStore::default()),
            CancellationToken::new(),
        )
        .with_rate_limits(limits.clone());
        tokio::spawn(session.run());
        client
    };
    let wrong = format!("AUTH PLAIN {}", plain("billing", "wrong"));
    let started = Instant::now();
    for _ in 0..3 {
        // A new session for each attempt, as a guesser would.
        let mut c = session(LOCAL);
        reply(&mut c).await;
        cmd(&mut c, "EHLO app").await;
        assert!(cmd(&mut c, &wrong).await.starts_with("535"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let mut c = session(LOCAL);
    reply(&mut c).await;
    cmd(&mut c, "EHLO app").await;
    let fourth = Instant::now();
    assert!(cmd(&mut c, &wrong).await.starts_with("535"));
    assert!(
        fourth.elapsed() >= Duration::from_secs(1),
        "{:?}",
        fourth.elapsed()
    );
    // Another address is not slowed down by them.
    let mut other = session("127.0.0.2:40000");
    reply(&mut other).await;
    cmd(&mut other, "EHLO app").await;
    let quick = Instant::now();
    assert!(cmd(&mut other, &wrong).await.starts_with("535"));
    assert!(
        quick.elapsed() < Duration::from_secs(1),
        "{:?}",
        quick.elapsed()
    );
}

#[tokio::test]
async fn a_reloaded_certificate_is_presented_to_new_sessions_and_a_bad_one_is_not() {
    let pki = pki();
    let files = pki.tls.files().clone();
    // A session in TLS before the reload goes on after it.
    let mut r = start(settings(), Some(&pki), REMOTE);
    reply(&mut r.client).await;
    cmd(&mut r.client, "EHLO app").await;
    let (mut before, _) = starttls(r.client, &pki).await;
    let renewed = ServerCert::generate("relay-inbound renewed CA");
    std::fs::write(&files.cert_file, &renewed.cert_pem).unwrap();
    std::fs::write(&files.key_file, &renewed.key_pem).unwrap();
    pki.tls.reload().unwrap();
    assert!(cmd(&mut before, "EHLO app").await.starts_with("250"));
    assert!(cmd(&mut before, "QUIT").await.starts_with("221"));
    let presented = |ca: String| {
        let tls = pki.tls.clone();
        async move {
            let (client, server) = tokio::io::duplex(1 << 16);
            let session = Session::new(
                server,
                REMOTE.parse().unwrap(),
                Arc::new(settings()),
                Arc::new(MemoryStore::default()),
                CancellationToken::new(),
            )
            .with_tls(Some(tls));
            tokio::spawn(session.run());
            let mut client = client;
            reply(&mut client).await;
            cmd(&mut client, "EHLO app").await;
            assert!(cmd(&mut client, "STARTTLS").await.starts_with("220"));
            let tls = connect(client, &ca).await;
            tls.get_ref().1.peer_certificates().unwrap()[0].clone()
        }
    };
    assert_eq!(
        presented(renewed.ca_pem.clone()).await.as_ref(),
        renewed.cert_der()
    );

    std::fs::write(&files.key_file, "garbage").unwrap();
    let err = pki.tls.reload().unwrap_err();
    assert!(err.to_string().contains("key.pem"), "{err}");
    assert_eq!(
        presented(renewed.ca_pem.clone()).await.as_ref(),
        renewed.cert_der()
    );
}
