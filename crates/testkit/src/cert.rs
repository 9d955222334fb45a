//! Throw-away PKIs for tests: a test CA and a server certificate for
//! `localhost`, `127.0.0.1` and `::1` ([`ServerCert`], public so the relay's
//! own inbound STARTTLS tests present one), generated at start.
//! [`TestPki`] writes one into a temporary directory a fake owns;
//! [`crate::TestPostgres`] writes one into its data folder.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempfile::TempDir;

/// A freshly generated CA and a server certificate it signed.
pub struct ServerCert {
    /// The CA's certificate (PEM), for clients to trust.
    pub ca_pem: String,
    /// The server's certificate (PEM).
    pub cert_pem: String,
    /// The server's private key (PKCS#8 PEM).
    pub key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl ServerCert {
    /// Generates a CA named `ca_name` and a server certificate for
    /// `localhost`, `127.0.0.1` and `::1` signed by it.
    ///
    /// # Panics
    /// If key generation or signing fails: this is test scaffolding, and a
    /// test cannot go on without it.
    pub fn generate(ca_name: &str) -> ServerCert {
        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key).expect("self-sign CA");

        let key = KeyPair::generate().expect("generate server key");
        let names = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
        let mut params = CertificateParams::new(names).expect("server cert params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .expect("sign server cert");

        ServerCert {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// The server certificate in DER, e.g. to compare with what a client
    /// was shown.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// rustls configuration that presents this certificate.
    fn server_config(&self) -> ServerConfig {
        // An explicit provider, not the process default: the code under test
        // may install its own default, and two providers in one process make
        // `ServerConfig::builder()` panic.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone()], key_der)
            .expect("TLS server config")
    }
}

/// The generated files and the TLS server configuration built from them.
pub(crate) struct TestPki {
    /// Holds `ca.pem`, `server.pem` and `server-key.pem`; removed on drop.
    _dir: TempDir,
    ca_file: PathBuf,
    server_config: Arc<ServerConfig>,
}

impl TestPki {
    /// Generates the CA and the server certificate and writes them as PEM.
    ///
    /// # Panics
    /// If key generation, signing or writing the files fails.
    pub(crate) fn generate() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("fake-postmark-")
            .tempdir()
            .expect("create temp dir for the test PKI");
        let generated = ServerCert::generate("relay-testkit fake Postmark CA");
        let ca_file = dir.path().join("ca.pem");
        write(&ca_file, &generated.ca_pem);
        write(&dir.path().join("server.pem"), &generated.cert_pem);
        write(&dir.path().join("server-key.pem"), &generated.key_pem);
        TestPki {
            _dir: dir,
            ca_file,
            server_config: Arc::new(generated.server_config()),
        }
    }

    /// PEM file of the test CA, for clients to trust.
    pub(crate) fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// rustls configuration that presents the server certificate.
    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server_config)
    }
}

/// Writes `text` to `path`; panics naming the file if it cannot.
pub(crate) fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
