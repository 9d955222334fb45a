//! Fault injection: each fault hits exactly as often as asked, and the fake
//! works normally afterwards.

mod common;

use common::{bounded, builder, login, reply_of, TOKEN};
use mail_send::smtp::message::{Message, Parameters};
use relay_testkit::{FakeOptions, FakePostmark};
use std::time::Duration;

fn msg(body: &'static [u8]) -> Message<'static> {
    Message::new("app@example.com", vec!["a@example.net"], body)
}

#[tokio::test]
async fn failed_transactions_answer_the_given_reply_and_are_not_recorded() {
    let fake = FakePostmark::start(FakeOptions::default());
    fake.fail_next_transactions(1, (451, "4.3.0 try later"));
    fake.fail_next_transactions(1, (554, "5.6.0 bad data"));
    bounded(async {
        let mut client = login(&fake, TOKEN).await;
        let err = client.send(msg(b"one")).await.expect_err("451");
        assert_eq!(reply_of(&err), (451, "try later".to_owned()));
        let err = client.send(msg(b"two")).await.expect_err("554");
        assert_eq!(reply_of(&err).0, 554);
        client.send(msg(b"three")).await.expect("then accepted");
    })
    .await;
    let got = fake.wait_for(1, Duration::from_secs(1));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, b"three\r\n");
}

#[tokio::test]
async fn failed_mail_from_answers_the_given_reply() {
    let fake = FakePostmark::start(FakeOptions::default());
    fake.fail_mail_from(2, (451, "4.7.1 slow down"));
    bounded(async {
        let mut client = login(&fake, TOKEN).await;
        for _ in 0..2 {
            let err = client.send(msg(b"x")).await.expect_err("MAIL refused");
            assert_eq!(reply_of(&err), (451, "slow down".to_owned()));
        }
        client.send(msg(b"x")).await.expect("third MAIL accepted");
    })
    .await;
    assert_eq!(fake.messages().len(), 1);
}

#[tokio::test]
async fn rejected_recipient_is_refused_every_time_and_not_recorded() {
    let fake = FakePostmark::start(FakeOptions::default());
    fake.reject_recipient("Bad@example.net", (550, "5.1.1 no such user"));
    bounded(async {
        let mut client = login(&fake, TOKEN).await;
        let none = Parameters::default();
        client
            .mail_from("app@example.com", &none)
            .await
            .expect("MAIL");
        client
            .rcpt_to("a@example.net", &none)
            .await
            .expect("good RCPT");
        for _ in 0..2 {
            let err = client
                .rcpt_to("bad@example.net", &none)
                .await
                .expect_err("bad");
            assert_eq!(reply_of(&err), (550, "no such user".to_owned()));
        }
        client.data(&b"hi"[..]).await.expect("DATA");
    })
    .await;
    assert_eq!(fake.messages()[0].rcpt_to, ["a@example.net"]);
}

#[tokio::test]
async fn dropped_connections_get_no_greeting() {
    let fake = FakePostmark::start(FakeOptions::default());
    fake.drop_next_connections(2);
    bounded(async {
        for _ in 0..2 {
            assert!(builder(&fake).connect().await.is_err(), "dropped");
        }
        login(&fake, TOKEN).await;
    })
    .await;
    assert_eq!((fake.connections(), fake.logins()), (3, 1));
}

#[tokio::test]
async fn down_refuses_connections_then_recovers_on_the_same_port() {
    let fake = FakePostmark::start(FakeOptions::default());
    let port = fake.port();
    bounded(async {
        let mut open = login(&fake, TOKEN).await;
        fake.set_down(true);
        let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        assert_eq!(
            refused.expect_err("down").kind(),
            std::io::ErrorKind::ConnectionRefused
        );
        assert!(open.send(msg(b"x")).await.is_err(), "open connection cut");
        assert!(builder(&fake).connect().await.is_err());

        fake.set_down(false);
        assert_eq!(fake.port(), port);
        let mut client = login(&fake, TOKEN).await;
        client
            .send(msg(b"back"))
            .await
            .expect("send after recovery");
    })
    .await;
    assert_eq!(fake.messages().len(), 1);
    assert_eq!(fake.connections(), 2);
}
