//! The fake against a real client: envelope and bytes recorded exactly, and
//! Postmark's AUTH, sender and recipient rules.

mod common;

use common::{bounded, builder, login, reply_of, TOKEN};
use mail_send::smtp::message::{Message, Parameters};
use mail_send::Credentials;
use relay_testkit::{FakeOptions, FakePostmark};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const BODY: &[u8] = b"From: App <app@example.com>\r\nTo: a@example.net\r\nSubject: hi\r\n\r\nline one\r\n.leading dot\r\n.\r\n..two dots\r\n\xc3\xa9 8bit\r\nlast line";

fn with_crlf(body: &[u8]) -> Vec<u8> {
    [body, b"\r\n"].concat()
}

#[tokio::test]
async fn good_login_relays_exact_bytes_and_envelope() {
    let fake = FakePostmark::start(FakeOptions::default());
    bounded(async {
        let mut client = login(&fake, TOKEN).await;
        let to = vec!["a@example.net", "b@example.org"];
        client
            .send(Message::new("app@example.com", to.clone(), BODY))
            .await
            .expect("first message");
        // A pooled client resets and re-greets between messages; the login
        // must survive both.
        client.rset().await.expect("RSET");
        client.ehlo("client.test").await.expect("EHLO again");
        client
            .send(Message::new(
                "app@example.com",
                vec!["c@example.net"],
                &b"x"[..],
            ))
            .await
            .expect("second message on the same connection");
    })
    .await;

    let got = fake.messages();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].mail_from, "app@example.com");
    assert_eq!(got[0].rcpt_to, ["a@example.net", "b@example.org"]);
    assert_eq!(got[0].data, with_crlf(BODY));
    assert!(got[0].tls);
    assert_eq!(got[0].auth_user.as_deref(), Some(TOKEN));
    assert_eq!(got[1].rcpt_to, ["c@example.net"]);
    assert_eq!(got[1].data, b"x\r\n");
    assert_eq!(got[0].conn_id, got[1].conn_id);
    assert_eq!(
        (fake.logins(), fake.connections(), fake.auth_failures()),
        (1, 1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pooled_clients_each_get_their_own_connection() {
    let fake = FakePostmark::start(FakeOptions::default());
    bounded(async {
        let mut tasks = Vec::new();
        for c in 0..8 {
            let mut client = login(&fake, TOKEN).await;
            tasks.push(tokio::spawn(async move {
                for m in 0..5 {
                    let to = format!("c{c}m{m}@example.net");
                    client
                        .send(Message::new(
                            "app@example.com",
                            vec![to.as_str()],
                            &b"hi"[..],
                        ))
                        .await
                        .expect("send");
                    client.rset().await.expect("RSET");
                }
            }));
        }
        for task in tasks {
            task.await.expect("client task");
        }
    })
    .await;
    let got = fake.wait_for(40, Duration::from_secs(5));
    assert_eq!(got.len(), 40);
    let mut ids: Vec<u64> = got.iter().map(|r| r.conn_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids, (1..=8).collect::<Vec<u64>>());
    assert_eq!((fake.connections(), fake.logins()), (8, 8));
}

#[tokio::test]
async fn auth_login_works_too() {
    let fake = FakePostmark::start(FakeOptions::default());
    bounded(async {
        let mut client = builder(&fake).connect().await.expect("connect + STARTTLS");
        let mut caps = client.ehlo("client.test").await.expect("EHLO");
        assert_ne!(caps.auth_mechanisms & smtp_proto::AUTH_PLAIN, 0);
        caps.auth_mechanisms &= smtp_proto::AUTH_LOGIN;
        assert_ne!(caps.auth_mechanisms, 0, "LOGIN advertised");
        let creds = Credentials::new(TOKEN, TOKEN);
        client
            .authenticate(&creds, &caps)
            .await
            .expect("AUTH LOGIN");
        client
            .send(Message::new(
                "app@example.com",
                vec!["a@example.net"],
                &b"hi"[..],
            ))
            .await
            .expect("send");
    })
    .await;
    assert_eq!(fake.messages()[0].auth_user.as_deref(), Some(TOKEN));
    assert_eq!(fake.logins(), 1);
}

#[tokio::test]
async fn wrong_password_gets_535_authentication_failed() {
    let fake = FakePostmark::start(FakeOptions::default());
    let err = bounded(async {
        builder(&fake)
            .credentials(Credentials::new(TOKEN.to_owned(), "other".to_owned()))
            .connect()
            .await
            .err()
    })
    .await
    .expect("login must fail");
    assert!(matches!(err, mail_send::Error::AuthenticationFailed(_)));
    let (code, text) = reply_of(&err);
    assert_eq!(code, 535);
    assert!(text.contains("Authentication failed"), "{text}");
    assert_eq!((fake.logins(), fake.auth_failures()), (0, 1));
}

#[tokio::test]
async fn account_token_gets_serverapi_key_required() {
    let fake = FakePostmark::start(FakeOptions {
        account_token: Some("account-token".into()),
        ..FakeOptions::default()
    });
    let err = bounded(async {
        builder(&fake)
            .credentials(Credentials::new(
                "account-token".to_owned(),
                "account-token".to_owned(),
            ))
            .connect()
            .await
            .err()
    })
    .await
    .expect("login must fail");
    let (code, text) = reply_of(&err);
    assert_eq!(code, 535);
    assert!(text.contains("ServerAPI key required"), "{text}");
    assert_eq!(fake.auth_failures(), 1);
}

#[tokio::test]
async fn mail_before_auth_gets_530() {
    let fake = FakePostmark::start(FakeOptions::default());
    let err = bounded(async {
        let mut client = builder(&fake).connect().await.expect("connect + STARTTLS");
        client
            .mail_from("app@example.com", &Parameters::default())
            .await
            .err()
    })
    .await
    .expect("MAIL must be refused");
    assert_eq!(reply_of(&err).0, 530);
}

#[tokio::test]
async fn unverified_sender_is_refused_at_mail_from_and_after_data() {
    let fake = FakePostmark::start(FakeOptions {
        unverified_domains: vec!["unverified.test".into()],
        ..FakeOptions::default()
    });
    bounded(async {
        let mut client = login(&fake, TOKEN).await;
        let err = client
            .send(Message::new(
                "x@Unverified.TEST",
                vec!["a@example.net"],
                &b"hi"[..],
            ))
            .await
            .expect_err("envelope sender refused");
        let (code, text) = reply_of(&err);
        assert_eq!(code, 550);
        assert!(text.contains("was not found in your domains"), "{text}");

        let header_only = b"From: <x@unverified.test>\r\n\r\nhi";
        let err = client
            .send(Message::new(
                "ok@example.com",
                vec!["a@example.net"],
                &header_only[..],
            ))
            .await
            .expect_err("From: header refused after DATA");
        assert_eq!(reply_of(&err).0, 550);

        // The connection is still usable after a refused DATA.
        client
            .send(Message::new(
                "ok@example.com",
                vec!["a@example.net"],
                &b"fine"[..],
            ))
            .await
            .expect("good sender on the same connection");
    })
    .await;
    let got = fake.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, b"fine\r\n");
}

#[tokio::test]
async fn fifty_first_recipient_gets_452() {
    let fake = FakePostmark::start(FakeOptions::default());
    bounded(async {
        let mut client = login(&fake, TOKEN).await;
        let none = Parameters::default();
        client
            .mail_from("app@example.com", &none)
            .await
            .expect("MAIL");
        for i in 0..50 {
            client
                .rcpt_to(&format!("r{i}@example.net"), &none)
                .await
                .expect("RCPT within the limit");
        }
        let err = client
            .rcpt_to("r50@example.net", &none)
            .await
            .expect_err("51st RCPT");
        assert_eq!(reply_of(&err), (452, "Too many recipients".to_owned()));
        client.data(&b"hi"[..]).await.expect("DATA for the 50");
    })
    .await;
    assert_eq!(fake.messages()[0].rcpt_to.len(), 50);
}

#[tokio::test]
async fn without_tls_auth_works_in_plain_text() {
    let fake = FakePostmark::start(FakeOptions {
        tls: false,
        ..FakeOptions::default()
    });
    bounded(async {
        let mut client = builder(&fake)
            .credentials(Credentials::new(TOKEN.to_owned(), TOKEN.to_owned()))
            .connect_plain()
            .await
            .expect("plain connect + AUTH");
        client
            .send(Message::new(
                "app@example.com",
                vec!["a@example.net"],
                &b"hi"[..],
            ))
            .await
            .expect("send");
    })
    .await;
    let got = fake.messages();
    assert!(!got[0].tls);
    assert_eq!(got[0].auth_user.as_deref(), Some(TOKEN));
}

/// Plain `#[test]`, raw socket: what a client sees before STARTTLS.
#[test]
fn plain_text_session_offers_starttls_but_no_auth() {
    let fake = FakePostmark::start(FakeOptions::default());
    let stream = TcpStream::connect(("127.0.0.1", fake.port())).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut out = stream.try_clone().expect("clone");
    let mut input = BufReader::new(stream);
    let mut read_reply = || {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            input.read_line(&mut line).expect("read reply");
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    };
    assert!(read_reply().starts_with("220 "));
    out.write_all(b"EHLO client.test\r\n").expect("write");
    let ehlo = read_reply();
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    out.write_all(b"MAIL FROM:<app@example.com>\r\n")
        .expect("write");
    assert!(read_reply().starts_with("530 "));
    out.write_all(b"QUIT\r\n").expect("write");
    assert!(read_reply().starts_with("221 "));
}

#[test]
fn wait_for_gives_up_after_its_timeout() {
    let fake = FakePostmark::start(FakeOptions::default());
    let start = Instant::now();
    assert!(fake.wait_for(1, Duration::from_millis(100)).is_empty());
    assert!(start.elapsed() < Duration::from_secs(2));
}
