//! Helpers shared by the integration tests: a mail-send client that trusts
//! the fake's CA, and a time bound for every test.

#![allow(dead_code)] // each test binary uses a different subset

use mail_send::{Credentials, SmtpClient, SmtpClientBuilder};
use relay_testkit::FakePostmark;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub const TOKEN: &str = "server-token";

/// Upper bound for one whole test.
pub async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("test took longer than 30 s")
}

/// A STARTTLS client for the fake, trusting only its test CA.
pub fn builder(fake: &FakePostmark) -> SmtpClientBuilder<String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(fake.ca_file()).expect("open CA file") {
        roots.add(cert.expect("parse CA PEM")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    SmtpClientBuilder::new_with_tls_connector(
        "127.0.0.1".to_owned(),
        fake.port(),
        TlsConnector::from(Arc::new(config)),
    )
    .implicit_tls(false)
    .helo_host("client.test")
    .timeout(Duration::from_secs(10))
}

/// Connects with the same token as username and password.
pub async fn login(fake: &FakePostmark, token: &str) -> SmtpClient<TlsStream<TcpStream>> {
    builder(fake)
        .credentials(Credentials::new(token.to_owned(), token.to_owned()))
        .connect()
        .await
        .expect("connect, STARTTLS and AUTH")
}

/// The reply carried by a mail-send error, if it carries one.
pub fn reply_of(err: &mail_send::Error) -> (u16, String) {
    match err {
        mail_send::Error::UnexpectedReply(r) | mail_send::Error::AuthenticationFailed(r) => {
            (r.code(), r.message().to_owned())
        }
        other => panic!("expected an SMTP reply, got {other:?}"),
    }
}
